/**
 * The e2fsprogs test images (../shared/corpus/ext4-e2fsprogs, mostly corrupt): the reader
 * must never crash, hang or throw anything but an ImgdedupError. On the clean ones
 * (`e2fsck -fn` exits 0) a full walk and content read must succeed and equal `debugfs rdump`.
 */
import { readdirSync, readFileSync, writeFileSync, mkdirSync, readlinkSync, rmSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { ImgdedupError } from '../../../src/errors.js';
import { useTempDir } from '../../helpers/tmp.js';
import { run } from '../../helpers/run.js';
import { ROOT } from '../../helpers/run.js';

const CORPUS = join(ROOT, '..', 'shared', 'corpus', 'ext4-e2fsprogs');
const tmp = useTempDir('imgdedup-ext4-corpus-');
const PER_IMAGE_MS = 60_000;
const CONCURRENCY = 1;

interface Outcome {
  name: string;
  clean: boolean;
  result: 'ok' | 'typed-error' | 'untyped' | 'timeout' | 'mismatch';
  detail?: string;
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
  const clean = isCleanPerExpect(name) && run('timeout', ['20', 'e2fsck', '-fn', image], { env: { E2FSCK_CONFIG: '/dev/null' } }).status === 0;
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
        return { name, clean, result: 'typed-error', detail: `${err.code} ${err.message}`, ms: Date.now() - t0 };
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

/**
 * Runs shard `shard` of `shards` (images by sorted index modulo `shards`), one image at a
 * time: the work is CPU-bound in one thread, so parallelism comes from vitest running the
 * shard files in separate workers.
 */
export function corpusShardTest(shard: number, shards: number): void {
test(`corpus images, shard ${shard + 1}/${shards}: typed errors only, bounded time; clean images read fully and equal rdump`, async () => {
  const all = readdirSync(CORPUS).filter((n) => n.endsWith('.img.gz')).map((n) => n.slice(0, -'.img.gz'.length)).sort();
  expect(all.length).toBe(197);
  // The slow images (large directory trees) are spread over the shards explicitly.
  const slow = ['f_many_subdirs', 'f_h_normal', 'f_h_unsigned', 'f_h_badnode', 'f_h_reindex'];
  const names = all.filter((n, i) => (slow.includes(n) ? slow.indexOf(n) : i) % shards === shard);
  const outcomes: Outcome[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < names.length) {
        const name = names[next++]!;
        outcomes.push(await check(name));
      }
    }),
  );
  const bad = outcomes.filter((o) => o.result === 'untyped' || o.result === 'timeout' || o.result === 'mismatch' || (o.clean && o.result !== 'ok' && !o.detail?.includes('UNSUPPORTED_FEATURE')));
  expect(bad, JSON.stringify(bad, null, 1)).toEqual([]);
  // 17 images are clean per the README; all but the bigalloc and ea_inode ones must read fully.
  const clean = outcomes.filter((o) => o.clean);
  expect(clean.length).toBeGreaterThanOrEqual(5);
  expect(clean.filter((o) => o.result === 'ok').length).toBeGreaterThanOrEqual(clean.length - 2);
  if (process.env.CORPUS_REPORT) {
    writeFileSync(`${process.env.CORPUS_REPORT}.${shard}`, JSON.stringify(outcomes.sort((a, b) => a.name.localeCompare(b.name)), null, 1));
  }
}, 300_000);
}
