// The `apply` benchmark's inputs, built from real files of this machine and cached under
// the system temp directory (making them takes a while):
// - base: a 1 GiB ext4 filesystem (4 KiB blocks) made by mkfs.ext4 -d from a tree mirroring
//   /usr (share, bin, lib; a budget of APPLY_FILL_MIB), as raw and as qcow2;
// - updates/: an update as a directory tree: new files (a Python library, which the base
//   leaves out), existing files of the base replaced by other real files, and symlinks;
// - peer.debugfs: the same update as a `debugfs -w -f` script (mkdir, rm, write, symlink,
//   sif mode/uid/gid/mtime), payloads read from updates/ itself.
import { copyFileSync, existsSync, lstatSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync, readFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { listFiles } from '../../fixtures/listFiles.mjs';
import { mulberry32 } from '../../fixtures/prng.mjs';
import { sh } from './measure.mjs';

const VERSION = 1;
const DISK_MIB = 1024;
const FILL_MIB = Number(process.env.APPLY_FILL_MIB ?? 400);
/** New files taken from the Python library, and base files replaced (bytes cap). */
const NEW_FILES = 500;
const REPLACED_FILES = 200;
const REPLACED_MB = 30;
const SYMLINKS = 20;
/** Names debugfs's command parser takes without quoting trouble. */
const SAFE = /^[\w.+@,=-]+$/;

const safePath = (rel) => rel.split('/').every((c) => SAFE.test(c));

/**
 * @returns {{ dir: string, raw: string, qcow2: string, updates: string, script: string,
 *   newFiles: string[], replaced: string[], symlinks: string[], updateBytes: number }}
 *   paths inside the filesystem start with '/'.
 */
export function applyBenchInputs() {
  const dir = join(tmpdir(), `imgdedup-bench-cache-v${VERSION}`, `apply-${FILL_MIB}`);
  const meta = join(dir, 'inputs.json');
  const files = { dir, raw: join(dir, 'base.raw'), qcow2: join(dir, 'base.qcow2'), updates: join(dir, 'updates'), script: join(dir, 'peer.debugfs') };
  if (existsSync(meta)) return { ...files, ...JSON.parse(readFileSync(meta, 'utf8')) };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const python = readdirSync('/usr/lib').filter((n) => /^python3(\.\d+)?$/.test(n));

  // The base: real files from /usr up to the budget, Python left out (the update adds it).
  const tree = join(dir, 'tree');
  const baseFiles = [];
  let budget = FILL_MIB << 20;
  const sources = [...listFiles('/usr/share'), ...listFiles('/usr/bin'), ...listFiles('/usr/lib', { skipDirs: python })];
  for (const f of sources) {
    if (budget <= 0) break;
    if (f.size > 16 << 20 || f.size > budget) continue;
    const rel = relative('/usr', f.path);
    if (!safePath(rel)) continue;
    mkdirSync(join(tree, dirname(rel)), { recursive: true });
    try {
      copyFileSync(f.path, join(tree, rel));
    } catch {
      continue; // unreadable or vanished
    }
    budget -= f.size;
    baseFiles.push({ rel, size: f.size });
  }
  const tmpRaw = `${files.raw}.tmp`;
  sh('truncate', ['-s', `${DISK_MIB}M`, tmpRaw]);
  const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-U', '7c2d7d5f-9b1f-4b9f-8e2a-1d2e3f4a5b6c', '-E', 'hash_seed=4b2c3d4e-5f60-4b7c-9d8e-0f1a2b3c4d5e', '-d', tree, tmpRaw], {
    env: { ...process.env, E2FSPROGS_FAKE_TIME: '1600000000' },
    encoding: 'utf8',
  });
  if (mk.status !== 0) throw new Error(`mkfs.ext4 failed: ${mk.stderr}`);
  rmSync(tree, { recursive: true, force: true });
  sh('qemu-img', ['convert', '-O', 'qcow2', tmpRaw, `${files.qcow2}.tmp`]);
  renameSync(tmpRaw, files.raw);
  renameSync(`${files.qcow2}.tmp`, files.qcow2);

  // The update, as a tree and as a debugfs script.
  const up = files.updates;
  const script = [];
  const newFiles = [];
  const replaced = [];
  const symlinks = [];
  const madeDirs = new Set();
  const baseDirs = new Set(baseFiles.flatMap((f) => f.rel.split('/').slice(0, -1).map((_, i, a) => a.slice(0, i + 1).join('/'))));
  let updateBytes = 0;
  const attrs = (rel, st) => [
    `sif "/${rel}" mode 0${(st.mode & 0o170000 | st.mode & 0o7777).toString(8)}`,
    `sif "/${rel}" uid ${st.uid}`,
    `sif "/${rel}" gid ${st.gid}`,
    `sif "/${rel}" mtime @${Math.floor(st.mtimeMs / 1000)}`,
  ];
  const ensureDir = (relDir) => {
    if (relDir === '.' || relDir === '' || madeDirs.has(relDir)) return;
    ensureDir(dirname(relDir));
    mkdirSync(join(up, relDir), { recursive: true });
    madeDirs.add(relDir);
    if (!baseDirs.has(relDir)) script.push(`mkdir "/${relDir}"`);
  };
  // New: every other file of the Python library (spread over its packages).
  const pyFiles = python.flatMap((p) => listFiles(join('/usr/lib', p), { skipDirs: ['__pycache__'] })).filter((f, i) => i % 2 === 0);
  for (const f of pyFiles) {
    if (newFiles.length >= NEW_FILES) break;
    const rel = relative('/usr', f.path);
    if (!safePath(rel) || f.size > 8 << 20) continue;
    ensureDir(dirname(rel));
    try {
      copyFileSync(f.path, join(up, rel));
    } catch {
      continue;
    }
    newFiles.push('/' + rel);
    updateBytes += f.size;
    script.push(`write "${join(up, rel)}" "/${rel}"`);
  }
  // Replaced: base files of 16 KiB..2 MiB, each by the content of another (seeded) pick.
  const rnd = mulberry32(9);
  const candidates = baseFiles.filter((f) => f.size >= 16 << 10 && f.size <= 2 << 20);
  let replacedBytes = 0;
  for (const f of candidates) {
    if (replaced.length >= REPLACED_FILES || replacedBytes >= REPLACED_MB * 1e6) break;
    if (rnd() > 0.1) continue;
    const donor = candidates[Math.floor(rnd() * candidates.length)];
    if (donor.rel === f.rel) continue;
    ensureDir(dirname(f.rel));
    copyFileSync(join('/usr', donor.rel), join(up, f.rel));
    replaced.push('/' + f.rel);
    replacedBytes += donor.size;
    script.push(`rm "/${f.rel}"`, `write "${join(up, f.rel)}" "/${f.rel}"`);
  }
  updateBytes += replacedBytes;
  // Symlinks to some of the new files, beside them.
  for (let i = 0; i < SYMLINKS && i < newFiles.length; i++) {
    const target = newFiles[i * Math.floor(newFiles.length / SYMLINKS)];
    const link = `${target}.link${i}`;
    const linkTarget = target.slice(target.lastIndexOf('/') + 1);
    symlinkSync(linkTarget, join(up, link));
    symlinks.push(link);
    script.push(`symlink "${link}" "${linkTarget}"`);
  }
  // Attributes as the tree has them (files, symlinks, and the directories it names).
  const entries = [...newFiles, ...replaced, ...symlinks].map((p) => p.slice(1));
  for (const rel of [...madeDirs, ...entries]) script.push(...attrs(rel, lstatSync(join(up, rel))));
  writeFileSync(files.script, script.join('\n') + '\n');
  const info = { newFiles, replaced, symlinks, updateBytes };
  writeFileSync(meta, JSON.stringify(info));
  return { ...files, ...info };
}

/** Apparent and allocated size of a file, for the report. */
export function sizes(file) {
  const st = statSync(file);
  return { apparent: st.size, allocated: st.blocks * 512 };
}
