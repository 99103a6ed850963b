// A 2 GiB ext4 image holding 100,000 small files (100 directories x 10 subdirectories x
// 100 files of 0..2,000 bytes, seeded), and a qcow2 overlay on it in which ~1,000 of those
// files were edited in place (their first block overwritten, no inode touched). Both are
// cached under the system temp directory between runs: making them takes a while.
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mulberry32 } from '../../fixtures/prng.mjs';
import { sh } from './measure.mjs';

const VERSION = 1;
const DIRS = 100;
const SUBDIRS = 10;
const FILES = 100;
/** Every EDIT_EVERY-th file is edited in the overlay. */
const EDIT_EVERY = 97;
/** File content byte: edits use any other pattern, so every edit changes the file. */
const FILL = 0x78;

const pathOf = (i) => `/d${Math.floor(i / (SUBDIRS * FILES))}/s${Math.floor(i / FILES) % SUBDIRS}/f${i}`;

/** @returns {{ base: string, overlay: string, files: number, edited: number }} */
export function smallFilesImage() {
  const dir = join(tmpdir(), `imgdedup-bench-cache-v${VERSION}`);
  const base = join(dir, 'small-files.raw');
  const overlay = join(dir, 'small-files-edited.qcow2');
  const meta = join(dir, 'small-files.json');
  if (existsSync(meta)) return { base, overlay, ...JSON.parse(sh('cat', [meta])) };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const tree = join(dir, 'tree');
  const rnd = mulberry32(100000);
  const n = DIRS * SUBDIRS * FILES;
  const sizes = [];
  for (let i = 0; i < n; i++) {
    const p = join(tree, pathOf(i));
    if (i % FILES === 0) mkdirSync(join(p, '..'), { recursive: true });
    const size = Math.floor(rnd() * 2000);
    sizes.push(size);
    writeFileSync(p, Buffer.alloc(size, FILL));
  }
  const tmpBase = `${base}.tmp`;
  sh('truncate', ['-s', '2G', tmpBase]);
  const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-U', '6b1c6c4e-8a0e-4a8e-9d6e-0c1f2a3b4c5d', '-E', 'hash_seed=3a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d', '-d', tree, tmpBase], {
    env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' },
    encoding: 'utf8',
  });
  if (mk.status !== 0) throw new Error(`mkfs.ext4 failed: ${mk.stderr}`);
  rmSync(tree, { recursive: true, force: true });
  renameSync(tmpBase, base);
  // The first block of every EDIT_EVERY-th non-empty file, from debugfs (the oracle).
  const picked = [];
  for (let i = 0; i < n; i += EDIT_EVERY) if (sizes[i] > 0) picked.push(pathOf(i));
  const listing = spawnSync('debugfs', ['-f', '-', base], { input: picked.map((p) => `blocks ${p}`).join('\n') + '\n', encoding: 'utf8', maxBuffer: 1 << 26 });
  const blocks = listing.stdout.split('\n').filter((l) => /^\d+/.test(l)).map((l) => Number(l.split(' ')[0]));
  if (blocks.length !== picked.length) throw new Error(`debugfs listed ${blocks.length} of ${picked.length} files' blocks`);
  const tmpOverlay = `${overlay}.tmp`;
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', tmpOverlay]);
  const writes = [];
  blocks.forEach((b, k) => writes.push('-c', `write -P ${1 + (k % 100)} ${b * 4096} 512`));
  sh('qemu-io', ['-t', 'writeback', ...writes, tmpOverlay]);
  renameSync(tmpOverlay, overlay);
  const info = { files: n, edited: blocks.length };
  writeFileSync(meta, JSON.stringify(info));
  return { base, overlay, ...info };
}
