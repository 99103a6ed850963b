/**
 * File names, symlink targets and xattr names are bytes, not text: `ls` and `diff` on an
 * ext4 image whose names are not all UTF-8 (`caf\xe9` and `caf\xe8` once both showed as
 * `caf\uFFFD`). Oracles: `debugfs ls -p` and `rdump` read byte for byte (their output taken
 * as latin1, one char per byte), `debugfs ea_get` by raw name, and GNU `ls
 * --quoting-style=c` on the source tree for the display form.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, test } from 'vitest';
import { makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { makeOverlay } from '../../fixtures/ext4/diffScenarios.js';
import { RawImage } from '../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../src/fs/ext4/Ext4Fs.js';
import { CLI, imgdedup, sh } from '../helpers/run.js';
import { expectImgError } from '../helpers/expectImgError.js';
import { ls } from '../../src/commands/ls.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-names-');
/** A latin1 string is a lossless view of bytes: one char per byte. */
const raw = (s: string): Buffer => Buffer.from(s, 'latin1');
const b64 = (s: string): string => raw(s).toString('base64');

/** Runs debugfs commands given as raw bytes (a command file, so names pass unchanged). */
function debugfsRaw(image: string, commands: readonly string[], write = false): string {
  const r = spawnSync('debugfs', [...(write ? ['-w'] : []), '-f', '-', image], { input: raw(commands.join('\n') + '\n'), encoding: 'latin1' });
  if (r.status !== 0) throw new Error(`debugfs: ${r.stderr}`);
  return r.stdout;
}

/** Every path below the root with its inode, by `debugfs ls -p <ino>` (names as latin1). */
function debugfsTree(image: string): Map<string, number> {
  const out = new Map<string, number>();
  const visit = (ino: number, prefix: string): void => {
    const text = debugfsRaw(image, [`ls -p <${ino}>`]);
    // `/ino/mode/uid/gid/name/size/`: a name holds no '/', but may hold a newline.
    for (const m of text.matchAll(/(?:^|\n)\/(\d+)\/(\d+)\/\d+\/\d+\/([^/]*)\/\d*\/(?=\n)/g)) {
      const [child, mode, name] = [Number(m[1]), parseInt(m[2]!, 8), m[3]!];
      if (child === 0 || name === '.' || name === '..') continue;
      out.set(`${prefix}/${name}`, child);
      if ((mode & 0o170000) === 0o040000) visit(child, `${prefix}/${name}`);
    }
  };
  visit(2, '');
  return out;
}

/** The exact bytes an ls/diff JSON entry names: `xBytes` when present, else the UTF-8 of `x`. */
function bytesOf(e: Record<string, unknown>, field: string): string {
  const b = e[`${field}Bytes`];
  if (b !== undefined) {
    expect((e[field] as string).startsWith('"'), `${field} ${String(e[field])} has ${field}Bytes, so it is quoted`).toBe(true);
    return Buffer.from(b as string, 'base64').toString('latin1');
  }
  expect((e[field] as string).startsWith('"')).toBe(false);
  return Buffer.from(e[field] as string, 'utf8').toString('latin1');
}

const NAMES = ['caf\xe9', 'caf\xe8', 'caf\xc3\xa9', 'a\nb', 'q"b', 'back\\slash', 'esc\x1b[31m', 'c1\xc2\x9b', 'plain'];
let src = '';
let image = '';

beforeAll(() => {
  const d = tmp();
  src = join(d, 'src');
  mkdirSync(src);
  for (const n of NAMES) writeFileSync(Buffer.concat([raw(src), raw(`/${n}`)]), `${n.length}\n`);
  mkdirSync(Buffer.concat([raw(src), raw('/d\xe9')]));
  writeFileSync(Buffer.concat([raw(src), raw('/d\xe9/caf\xe9')]), 'inside\n');
  symlinkSync(raw('tgt\xff'), Buffer.concat([raw(src), raw('/ln')]));
  symlinkSync(raw('d\xe9/caf\xe9'), Buffer.concat([raw(src), raw('/ln2')]));
  image = join(d, 'A.raw');
  makeExt4Image(image, src, { args: ['-b', '4096'], sizeMiB: 8 });
  debugfsRaw(image, ['ea_set /plain user.caf\xe9 v1', 'ea_set /plain user.\xff\xfe v2', 'ea_set /plain user.caf\xe8 v3'], true);
}, 60_000);

describe('ls: names are bytes', () => {
  test('lists caf\\xe9 and caf\\xe8 as two entries, escaped as GNU ls --quoting-style=c escapes them', () => {
    const r = imgdedup(['ls', image, '/']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const ours = r.stdout.split('\n').filter((l) => l !== '');
    // GNU ls quotes every name in c style; ours quotes only those that need escapes.
    const gnu = execFileSync('ls', ['-a', '--quoting-style=c', src], { env: { ...process.env, LC_ALL: 'C.UTF-8' }, encoding: 'utf8' })
      .split('\n')
      .filter((l) => l !== '' && l !== '"."' && l !== '".."')
      .map((l) => (l.includes('\\') ? l : l.slice(1, -1)));
    expect([...ours].sort()).toEqual([...gnu, 'lost+found'].sort());
    expect(ours).toContain('"caf\\351"');
    expect(ours).toContain('"caf\\350"');
    expect(ours).toContain('café');
    expect(ours).toContain('"a\\nb"');
    // One line per entry: no name can add a line.
    expect(ours.length).toBe([...debugfsTree(image).keys()].filter((p) => p.lastIndexOf('/') === 0).length);
  });

  test('-R --json: every path, in byte order, with pathBytes/nameBytes exactly when quoted, equal to debugfs byte for byte', () => {
    const r = imgdedup(['ls', '-R', '--json', image, '/']);
    expect(r.status).toBe(0);
    const entries = JSON.parse(r.stdout) as Array<Record<string, unknown>>;
    const tree = debugfsTree(image);
    const ours = new Map(entries.map((e) => [bytesOf(e, 'path'), e.ino]));
    expect(ours.size).toBe(entries.length);
    expect(ours).toEqual(tree);
    for (const e of entries) expect(bytesOf(e, 'path').endsWith(`/${bytesOf(e, 'name')}`)).toBe(true);
    const top = entries.filter((e) => bytesOf(e, 'path').lastIndexOf('/') === 0).map((e) => raw(bytesOf(e, 'name')));
    expect(top).toEqual([...top].sort(Buffer.compare));
    expect(entries.find((e) => e.path === '"/caf\\351"')).toMatchObject({ pathBytes: b64('/caf\xe9'), name: '"caf\\351"', nameBytes: b64('caf\xe9') });
    expect(entries.find((e) => e.path === '/café')).not.toHaveProperty('pathBytes');
  });

  test('symlink targets are bytes: -l escapes them, --json carries targetBytes equal to the rdump link', () => {
    const dump = join(tmp(), 'rdump');
    mkdirSync(dump);
    sh('debugfs', ['-R', `rdump / ${dump}`, image]);
    const long = imgdedup(['ls', '-l', image, '/']);
    expect(long.stdout).toMatch(/ ln -> "tgt\\377"\n/);
    expect(long.stdout).toMatch(/ ln2 -> "d\\351\/caf\\351"\n/);
    const entries = JSON.parse(imgdedup(['ls', '--json', image, '/']).stdout) as Array<Record<string, unknown>>;
    for (const n of ['ln', 'ln2']) {
      const e = entries.find((x) => x.name === n)!;
      expect(raw(bytesOf(e, 'target'))).toEqual(readlinkSync(join(dump, n), { encoding: 'buffer' }));
    }
  });

  test('PATH is matched as bytes: UTF-8, quoted as a whole, or quoted per component', () => {
    const tree = debugfsTree(image);
    const whole = imgdedup(['ls', '--json', image, '"/d\\351/caf\\351"']);
    expect(whole.status).toBe(0);
    expect(JSON.parse(whole.stdout)).toMatchObject([{ path: '"/d\\351/caf\\351"', ino: tree.get('/d\xe9/caf\xe9') }]);
    const component = imgdedup(['ls', image, '/"d\\351"']);
    expect(component.stdout).toBe('"caf\\351"\n');
    const utf8 = imgdedup(['ls', '--json', image, '/café']);
    expect(JSON.parse(utf8.stdout)[0].ino).toBe(tree.get('/caf\xc3\xa9'));
    const missing = imgdedup(['ls', image, '/"caf\\347"']);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toContain('"/caf\\347": no such file or directory');
  });

  test('xattr names are bytes: each one ea_get finds by its raw name, with the same value', async () => {
    const dev = await RawImage.open(image);
    try {
      const fs = await Ext4Fs.open(dev, { file: image });
      const xs = await fs.xattrs((await fs.lookup('/plain'))!);
      const names = xs.map((x) => Buffer.from(x.name).toString('latin1'));
      expect([...names].sort()).toEqual(['user.caf\xe8', 'user.caf\xe9', 'user.\xff\xfe'].sort());
      const shown = debugfsRaw(image, names.map((n) => `ea_get /plain ${n}`)).split(/^debugfs: .*$/m).slice(1);
      // `NAME (len) = "value"`: found by the raw name, else an error message.
      xs.forEach((x, i) => expect(/ = "(.*)"$/.exec(shown[i]!.trim())?.[1], names[i]).toBe(Buffer.from(x.value).toString('latin1')));
    } finally {
      await dev.close();
    }
  });
});

/**
 * Runs the CLI with `args` and then one argument given as raw bytes (`printf` escapes, e.g.
 * '/caf\351'), as a shell passes `$'/caf\xe9'`: spawnSync takes strings only, which
 * it encodes as UTF-8. `nodeFlags` go before the script, as a wrapper might add them.
 */
function imgdedupRawArg(args: readonly string[], printfArg: string, nodeFlags: readonly string[] = []): { status: number; stdout: string; stderr: string } {
  const r = spawnSync('bash', ['-c', 'exec "$@" "$(printf "$RAW_ARG")"', 'bash', process.execPath, ...nodeFlags, CLI, ...args], {
    env: { ...process.env, RAW_ARG: printfArg },
    encoding: 'utf8',
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe('ls: a PATH that is not UTF-8 is taken as the bytes given', () => {
  test.each([
    ['one name', '/caf\\351', '/caf\xe9'],
    ['two names, a directory and a file in it', '/d\\351/caf\\351', '/d\xe9/caf\xe9'],
    ['with a node flag before the script', '/caf\\351', '/caf\xe9', ['--no-warnings']],
  ])('%s: lists the file it names', (_what, printfArg, path, nodeFlags: readonly string[] = []) => {
    const tree = debugfsTree(image);
    const r = imgdedupRawArg(['ls', '--json', image], printfArg, nodeFlags);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject([{ ino: tree.get(path), pathBytes: b64(path) }]);
  });

  test('a missing one is named in the quoted form ls prints, from its bytes', () => {
    const r = imgdedupRawArg(['ls', image], '/caf\\347');
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('"/caf\\347": no such file or directory');
    expect(r.stderr).not.toContain('\uFFFD');
  });

  test('when the bytes cannot be recovered (no /proc), the error says how to give them', async () => {
    const e = await expectImgError(() => ls({ image, path: '/caf\uFFFD' }), 'USAGE');
    expect(e.message).toContain('/caf\uFFFD: no such file or directory (PATH held bytes that are not UTF-8');
    expect(e.message).toContain('the quoted form ls prints, with an octal escape for each such byte');
    // Recovered bytes are PATH itself: a missing one is named by them, with no hint.
    const missing = await expectImgError(() => ls({ image, path: '/caf\uFFFD', pathBytes: raw('/caf\xe7') }), 'USAGE');
    expect(missing.message).toMatch(/: "\/caf\\347": no such file or directory$/);
    let found = 0;
    await ls({ image, path: '/caf\uFFFD', pathBytes: raw('/caf\xe9'), onEntry: (x) => (found = x.ino) });
    expect(found).toBe(debugfsTree(image).get('/caf\xe9'));
  });
});

describe('diff: names are bytes', () => {
  let B = '';
  beforeAll(() => {
    B = join(tmp(), 'B.raw');
    copyFileSync(image, B);
    debugfsRaw(B, ['rm /caf\xe9'], true);
    sh('qemu-img', ['convert', '-O', 'qcow2', image, join(tmp(), 'A.qcow2')]);
    makeOverlay(B, join(tmp(), 'A.qcow2'), join(tmp(), 'B.qcow2'));
  }, 60_000);

  test.each([
    ['two raw images (whole trees compared)', () => [image, B]],
    ['B as a qcow2 overlay (incremental)', () => [join(tmp(), 'A.qcow2'), join(tmp(), 'B.qcow2')]],
  ])('%s: exactly the deletion of caf\\xe9 is reported', (_what, files) => {
    const [a, b] = files();
    const ta = debugfsTree(image);
    const tb = debugfsTree(B);
    const removed = [...ta.keys()].filter((p) => !tb.has(p));
    const added = [...tb.keys()].filter((p) => !ta.has(p));
    expect({ removed, added }).toEqual({ removed: ['/caf\xe9'], added: [] });
    const text = imgdedup(['diff', a!, b!]);
    expect(text.stderr).toBe('');
    expect(text.stdout.split('\n').filter((l) => /^[ADM] /.test(l))).toEqual(['D "/caf\\351"']);
    const j = JSON.parse(imgdedup(['diff', '--json', a!, b!]).stdout);
    const fs = j.filesystems[0];
    expect(fs.removed.map((e: Record<string, unknown>) => bytesOf(e, 'path'))).toEqual(removed);
    expect(fs.removed[0]).toMatchObject({ path: '"/caf\\351"', pathBytes: b64('/caf\xe9'), ino: ta.get('/caf\xe9') });
    expect([...fs.added, ...fs.modified]).toEqual([]);
  });
});
