/**
 * The writer remembers the directories it resolved: a path put after the directory it goes
 * through was replaced (by a symlink, by another directory) lands where the path leads now,
 * as debugfs reads the result, and the strict e2fsck oracle holds (a stale resolution would
 * link the file into a freed directory inode).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import type { NodeContent } from '../../../src/fs/ext4/Ext4Writer.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch, parseStat } from './debugfsOracle.js';
import { debugfsCat, writeImage } from './writerHarness.js';

const tmp = useTempDir('imgdedup-writer-resolved-');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const file = (text: string): NodeContent => ({ kind: 'file', size: enc(text).length, data: async function* () { yield enc(text); } });
const attrs = { mode: 0o644, uid: 0, gid: 0 };

test('paths resolved before a directory on them was replaced follow the replacement', async () => {
  const src = join(tmp(), 'src');
  mkdirSync(join(src, 'a/b'), { recursive: true });
  mkdirSync(join(src, 'c/b'), { recursive: true });
  writeFileSync(join(src, 'a/b/old'), 'old\n');
  const image = join(tmp(), 'base.raw');
  makeExt4Image(image, src, { args: ['-b', '4096', '-N', '256'], sizeMiB: 8 });
  const out = join(tmp(), 'out.raw');
  await writeImage(image, out, async (w) => {
    await w.put(enc('/a/b/one'), file('one\n'), attrs);
    // /a becomes a symlink to /c: /a/b is now /c/b.
    await w.put(enc('/a'), { kind: 'symlink', target: enc('c') }, { ...attrs, mode: 0o777 });
    await w.put(enc('/a/b/two'), file('two\n'), attrs);
    await w.put(enc('/a/b/keep'), file('keep\n'), attrs);
    await w.put(enc('/c/kept'), file('kept\n'), attrs);
    await w.put(enc('/a/kept2'), file('kept2\n'), attrs);
    // /c/b is replaced by a new, empty directory: /a/b/three goes into that one.
    await w.put(enc('/c/b'), file('x\n'), attrs);
    await w.remove(enc('/c/b'));
    await w.put(enc('/c/b'), { kind: 'dir' }, { ...attrs, mode: 0o755 });
    await w.put(enc('/a/b/three'), file('three\n'), attrs);
  });
  expectStrictFsckClean(out);
  const [a, kept2, three, gone] = debugfsBatch(out, ['stat /a', 'stat /c/kept2', 'stat /c/b/three', 'stat /a/b/one']);
  expect(parseStat(a!).type).toBe('symlink');
  expect(parseStat(kept2!).type).toBe('regular');
  expect(parseStat(three!).type).toBe('regular');
  expect(gone).not.toMatch(/Inode: \d+/);
  expect(debugfsCat(out, '/c/b/three', join(tmp(), 'three')).toString()).toBe('three\n');
  // /c/b was replaced after "two" and "keep" were written into it: only "three" is there now.
  const [ls] = debugfsBatch(out, ['ls -p /c/b']);
  expect(ls!.split('\n').filter((l) => /^\/\d+\//.test(l)).map((l) => l.split('/')[5]).filter((n) => n !== '.' && n !== '..' && n !== '')).toEqual(['three']);
});
