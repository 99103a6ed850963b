/**
 * The e2fsprogs test images (mostly corrupt; see test/helpers/corpus.ts for where they come
 * from). Every image reads fully, without error, except those named in corpusAllowedErrors.ts,
 * which must fail with exactly the typed error listed there. On the clean ones (expect.1 and
 * `e2fsck -fn` agree) the walk and every file's content must equal `debugfs rdump`. Nothing
 * may crash, hang or throw anything but an ImgdedupError.
 */
import { readFileSync, writeFileSync, mkdirSync, readlinkSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { ImgdedupError } from '../../../src/errors.js';
import { useTempDir } from '../../helpers/tmp.js';
import { run } from '../../helpers/run.js';
import { findE2fsprogsCorpus, noteMissingCorpus } from '../../helpers/corpus.js';
import { ALLOWED_ERRORS } from './corpusAllowedErrors.js';

const corpus = findE2fsprogsCorpus();
const CORPUS = corpus?.dir ?? '';
const tmp = useTempDir('imgdedup-ext4-corpus-');
const PER_IMAGE_MS = 60_000;

interface Outcome {
  name: string;
  clean: boolean;
  result: 'ok' | 'typed-error' | 'untyped' | 'timeout' | 'mismatch';
  detail?: string;
  /** For typed errors: the code and the structure named. */
  code?: string;
  structure?: string;
  ms: number;
}

const CLEAN_LINE = /^(Pass [1-5]: .*|\S+: \d+\/\d+ files .*|Exit status is 0|)$/;

/** Clean per the corpus README: expect.1 holds only the Pass lines, the summary and exit status 0. */
function isCleanPerExpect(name: string): boolean {
  try {
    return readFileSync(join(CORPUS, `${name}.expect.1`), 'utf8').split('\n').every((l) => CLEAN_LINE.test(l));
  } catch {
    return false;
  }
}

/**
 * Everything a read-only command might do: walk, stat, xattrs, read every symlink and the
 * content of every file, block ownership, the write refusal. With `rdumpDir`, each file is
 * compared with debugfs's dump; otherwise only mapped ranges are read (a corrupt i_size
 * could name petabytes of holes).
 */
async function exercise(fs: Ext4Fs, rdumpDir: string | undefined): Promise<string | undefined> {
  for await (const e of fs.walk()) {
    const inode = await fs.readInode(e.ino);
    const st = fs.statOf(inode);
    const shown = Buffer.from(e.path).toString();
    // Names are bytes: the dump's host path is built from them, not from their text.
    const dumped = rdumpDir !== undefined ? Buffer.concat([Buffer.from(rdumpDir), Buffer.from(e.path)]) : undefined;
    await fs.xattrsOf(inode);
    if (st.type === 'file') {
      if (dumped !== undefined) {
        const theirs = readFileSync(dumped);
        let off = 0;
        for await (const p of fs.readFile(e.ino)) {
          if (!Buffer.from(p).equals(theirs.subarray(off, off + p.length))) return shown;
          off += p.length;
        }
        if (off !== theirs.length) return shown;
      } else {
        await fs.readOf(inode, 0, 65536);
        for await (const x of fs.extentsOf(inode)) await fs.readOf(inode, x.lblk * fs.blockSize, Math.min(x.len * fs.blockSize, 16 << 20));
      }
    } else if (st.type === 'symlink') {
      const target = Buffer.from(await fs.readlink(e.ino));
      if (dumped !== undefined && !readlinkSync(dumped, { encoding: 'buffer' }).equals(target)) return shown;
    }
  }
  await fs.blockOwnership();
  await fs.writeRefusal();
  return undefined;
}

async function check(name: string): Promise<Outcome> {
  const t0 = Date.now();
  const dir = join(tmp(), name);
  mkdirSync(dir);
  const image = join(dir, 'fs.img');
  writeFileSync(image, gunzipSync(readFileSync(join(CORPUS, `${name}.img.gz`))));
  // e2fsck -fn loops on some corrupt images, so only the README's clean ones are confirmed with it.
  let clean = false;
  if (isCleanPerExpect(name)) {
    const fsck = run('timeout', ['120', 'e2fsck', '-fn', image], { env: { E2FSCK_CONFIG: '/dev/null' } });
    // A timeout must not quietly downgrade a clean image to the weaker corrupt-image check.
    if (fsck.status === 124) return { name, clean: true, result: 'timeout', detail: 'e2fsck -fn took over 120 s', ms: Date.now() - t0 };
    clean = fsck.status === 0;
  }
  let rdumpDir: string | undefined;
  if (clean) {
    rdumpDir = join(dir, 'rdump');
    mkdirSync(rdumpDir);
    run('debugfs', ['-R', `rdump / ${rdumpDir}`, image]);
  }
  const dev = await RawImage.open(image);
  let timer: NodeJS.Timeout | undefined;
  try {
    const work = (async (): Promise<Outcome> => {
      // Read-only commands run with checksum warnings ('warn'); clean images are read strictly
      // and compared with rdump. A second, strict run is needed only where 'warn' recorded a
      // mismatch (otherwise both runs do the same): it must then fail with BAD_CHECKSUM.
      let diagnostics = 0;
      try {
        const fs = await Ext4Fs.open(dev, { file: image, verifyChecksums: clean ? 'error' : 'warn' });
        const bad = await exercise(fs, rdumpDir);
        diagnostics = fs.diagnostics.length;
        if (bad !== undefined) return { name, clean, result: 'mismatch', detail: bad, ms: Date.now() - t0 };
      } catch (err) {
        if (!(err instanceof ImgdedupError)) return { name, clean, result: 'untyped', detail: String((err as Error).stack ?? err), ms: Date.now() - t0 };
        return { name, clean, result: 'typed-error', code: err.code, structure: err.data.structure, detail: err.message, ms: Date.now() - t0 };
      }
      if (diagnostics > 0) {
        try {
          await exercise(await Ext4Fs.open(dev, { file: image, verifyChecksums: 'error' }), undefined);
          return { name, clean, result: 'mismatch', detail: `'warn' recorded ${diagnostics} checksum mismatches but 'error' did not throw`, ms: Date.now() - t0 };
        } catch (err) {
          if (!(err instanceof ImgdedupError)) return { name, clean, result: 'untyped', detail: String((err as Error).stack ?? err), ms: Date.now() - t0 };
          if (err.code !== 'BAD_CHECKSUM') return { name, clean, result: 'mismatch', detail: `strict run: ${err.code} instead of BAD_CHECKSUM`, ms: Date.now() - t0 };
        }
      }
      return { name, clean, result: 'ok', ms: Date.now() - t0 };
    })();
    const timeout = new Promise<Outcome>((resolve) => {
      timer = setTimeout(() => resolve({ name, clean, result: 'timeout', ms: Date.now() - t0 }), PER_IMAGE_MS);
    });
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
    await dev.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What is wrong with one outcome, judged against ALLOWED_ERRORS; undefined if nothing. */
function problemWith(o: Outcome): string | undefined {
  const allowed = ALLOWED_ERRORS[o.name];
  const label = `${o.name}${o.clean ? ' (clean)' : ''}`;
  if (o.result === 'ok') return allowed ? `${label}: reads without error now; remove it from ALLOWED_ERRORS (listed for: ${allowed.why})` : undefined;
  if (o.result === 'typed-error' && allowed && o.code === allowed.code && o.structure === allowed.structure) return undefined;
  const want = allowed ? ` (allowed only: ${allowed.code} at ${allowed.structure})` : ' (not in ALLOWED_ERRORS: must read fully)';
  return `${label}: ${o.result}${o.code ? ` ${o.code}` : ''}${want}: ${o.detail ?? ''}`;
}

/**
 * Runs shard `shard` of `shards` (images by sorted index modulo `shards`), one image at a
 * time: the work is CPU-bound in one thread, so parallelism comes from vitest running the
 * shard files in separate workers. Without the corpus the suite is skipped with a note
 * (a failure under CI=true).
 */
export function corpusShardTest(shard: number, shards: number): void {
  const note = noteMissingCorpus(
    'the e2fsprogs test images',
    corpus !== undefined,
    'Run `node fixtures/fetch-e2fsprogs-tests.mjs` (Debian/Ubuntu apt; fills ~/.cache/imgdedup/e2fsprogs-tests), or provide ../shared/corpus/ext4-e2fsprogs or $IMGDEDUP_CORPUS/ext4-e2fsprogs.',
    true,
  );
  describe.skipIf(corpus === undefined)(`e2fsprogs corpus${note}`, () => {
    test(`shard ${shard + 1}/${shards}: typed errors only where listed, bounded time; clean images read fully and equal rdump`, async () => {
      const all = corpus!.names;
      expect(all.length, `${corpus!.source}: images missing`).toBe(corpus!.declared);
      // The slow images (large directory trees) are spread over the shards explicitly.
      const slow = ['f_many_subdirs', 'f_h_normal', 'f_h_unsigned', 'f_h_badnode', 'f_h_reindex'];
      const names = all.filter((n, i) => (slow.includes(n) ? slow.indexOf(n) : i) % shards === shard);
      const outcomes: Outcome[] = [];
      for (const name of names) outcomes.push(await check(name));
      if (process.env.CORPUS_REPORT) {
        writeFileSync(`${process.env.CORPUS_REPORT}.${shard}`, JSON.stringify(outcomes, null, 1));
      }
      const problems = outcomes.map(problemWith).filter((p) => p !== undefined);
      expect(problems, `${corpus!.source}:\n${problems.join('\n')}`).toEqual([]);
      // Clean images are the ones compared with rdump (15 in either corpus): make sure some were.
      expect(outcomes.filter((o) => o.clean && o.result === 'ok').length).toBeGreaterThanOrEqual(5);
    }, 300_000);
  });
}
