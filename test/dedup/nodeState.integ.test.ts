/**
 * The merge's equality of path states (src/dedup/nodeState.ts) is by what a user sees:
 * one tree made by mkfs.ext4 -d with inline_data and without has the same states, path
 * for path, in both directions, though debugfs shows one holding its small files and
 * directories inline (the system.data xattr) and the other in blocks. What a user sees
 * still counts: content and user xattrs.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { openChain } from '../../src/diskimage/openChain.js';
import { Ext4Fs } from '../../src/fs/ext4/Ext4Fs.js';
import { sameState, stateAt, type PathState } from '../../src/dedup/nodeState.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-nodestate-');
const opened: Array<{ close(): Promise<void> }> = [];
let inline: Ext4Fs;
let blocks: Ext4Fs;

/** An ext4 image of `tree` made by mkfs.ext4 with `features`, then the debugfs script `edits`. */
function mkfs(tree: string, name: string, features: string, edits: string): string {
  const img = join(tmp(), name);
  execFileSync('truncate', ['-s', '16M', img]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-I', '256', '-O', features, '-d', tree, img], { env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' } });
  execFileSync('debugfs', ['-w', '-f', '-', img], { input: edits, stdio: ['pipe', 'ignore', 'ignore'] });
  return img;
}

async function open(img: string): Promise<Ext4Fs> {
  const chain = await openChain(img);
  opened.push(chain);
  return Ext4Fs.open(chain.device, { file: img });
}

const at = async (fs: Ext4Fs, path: string): Promise<PathState> => (await stateAt(fs, new TextEncoder().encode(path)))!;

beforeAll(async () => {
  const tree = join(tmp(), 'tree');
  mkdirSync(join(tree, 'd/sub'), { recursive: true });
  writeFileSync(join(tree, 'd/f'), 'the same small content\n');
  writeFileSync(join(tree, 'd/g'), 'the same small content\n');
  writeFileSync(join(tree, 'd/h'), 'other small content!!\n');
  symlinkSync('../d/f', join(tree, 'd/l'));
  const edits = 'ea_set /d/f user.k v\nea_set /d user.k v\n';
  const a = mkfs(tree, 'inline.ext4', 'inline_data,^64bit', edits);
  const b = mkfs(tree, 'blocks.ext4', '^inline_data,^64bit', edits);
  // The oracle: debugfs shows the one tree stored both ways.
  const [fa, da, fb, db] = [...debugfsBatch(a, ['stat /d/f', 'stat /d/sub']), ...debugfsBatch(b, ['stat /d/f', 'stat /d/sub'])];
  expect(fa).toMatch(/Size of inline data/);
  expect(da).toMatch(/Size of inline data/);
  expect(fb).toMatch(/EXTENTS/);
  expect(db).toMatch(/EXTENTS/);
  inline = await open(a);
  blocks = await open(b);
}, 60_000);

afterAll(async () => {
  for (const c of opened) await c.close();
});

describe('sameState across inline data and blocks', () => {
  test.each(['/d/f', '/d/g', '/d/sub', '/d', '/d/l'])('%s is the same, inline against blocks and blocks against inline', async (path) => {
    expect(await sameState(await at(inline, path), await at(blocks, path))).toBe(true);
    expect(await sameState(await at(blocks, path), await at(inline, path))).toBe(true);
  });

  test('content and user xattrs still count', async () => {
    // f and g differ only by f's user.k; g and h only by content.
    expect(await sameState(await at(inline, '/d/f'), await at(blocks, '/d/g'))).toBe(false);
    expect(await sameState(await at(blocks, '/d/g'), await at(inline, '/d/f'))).toBe(false);
    expect(await sameState(await at(inline, '/d/g'), await at(blocks, '/d/h'))).toBe(false);
    expect(await sameState(await at(inline, '/d/sub'), await at(blocks, '/d'))).toBe(false);
  });
});
