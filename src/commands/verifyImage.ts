/**
 * `--verify` of apply and rebase: an output read back through its own chain (an overlay
 * through its backing file), as the next user of it would. Its root filesystem opens with
 * every checksum verified, every directory and inode of it reads, its bitmaps agree with
 * the ownership the reader computes from the inodes, and, where e2fsck is installed,
 * `e2fsck -fn` has nothing to say about it. This also catches damage that BASE had in
 * places the update did not touch and that the output carries.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockDevice } from '../diskimage/BlockDevice.js';
import { openChain } from '../diskimage/openChain.js';
import { SliceDevice } from '../diskimage/SliceDevice.js';
import { VerificationError } from '../errors.js';
import { Ext4Fs } from '../fs/ext4/Ext4Fs.js';

/**
 * Checks the ext4 filesystem at bytes [start, start + length) of image `out`. Throws
 * VERIFY_FAILED naming the output and what was found (the output is left in place for
 * inspection).
 */
export async function verifyImage(out: string, target: { readonly start: number; readonly length: number }): Promise<void> {
  const chain = await openChain(out);
  try {
    const fs = await Ext4Fs.open(new SliceDevice(chain.device, target.start, target.length, { file: out }), { file: out });
    // Every directory listed and every inode's record checked (as readInode checks it).
    for await (const listing of fs.listings({ stat: true })) void listing;
    const own = await fs.blockOwnership();
    const used = await fs.layout.usedBlocks();
    for (const [s, n] of used.runs()) {
      for (let b = s; b < s + n; b++) {
        if (own.isFree(b)) throw new VerificationError({ file: out, structure: `ext4.block_bitmap`, detail: `block ${b} is marked in use but nothing owns it (outputs left in place for inspection)` });
      }
    }
    await strictFsck(out, new SliceDevice(chain.device, target.start, target.length, { file: out }));
  } catch (err) {
    if (err instanceof VerificationError) throw err;
    throw new VerificationError({ file: out, detail: `reading the output back failed: ${err instanceof Error ? err.message : String(err)} (outputs left in place for inspection)` });
  } finally {
    await chain.close();
  }
}

/** Lines `e2fsck -fn` prints on a filesystem with nothing to say: the version, the five passes, the summary. */
const FSCK_QUIET = [/^e2fsck \d/, /^Pass [1-5]: /, /^\S+: \d+\/\d+ files \([\d.]+% non-contiguous\), \d+\/\d+ blocks$/];

/**
 * The strict oracle, where e2fsck is installed: the filesystem copied to a temporary raw
 * file (e2fsck reads no qcow2 or VMDK), `e2fsck -fn` on it must exit 0 and print nothing
 * beyond FSCK_QUIET. Throws VERIFY_FAILED with e2fsck's findings. Without e2fsck, nothing.
 */
async function strictFsck(name: string, fs: BlockDevice): Promise<void> {
  const probe = spawnSync('e2fsck', ['-V'], { stdio: 'ignore' });
  if (probe.error !== undefined) return;
  const dir = await mkdtemp(join(tmpdir(), 'imgdedup-verify-'));
  const raw = join(dir, 'fs.raw');
  try {
    const fh = await open(raw, 'w');
    try {
      await fh.truncate(fs.size);
      for await (const e of fs.allocation()) {
        if (e.kind !== 'data') continue;
        for (let off = e.offset; off < e.offset + e.length; off += 4 << 20) {
          const n = Math.min(4 << 20, e.offset + e.length - off);
          await fh.write(await fs.read(off, n), 0, n, off);
        }
      }
    } finally {
      await fh.close();
    }
    const r = spawnSync('e2fsck', ['-fn', raw], { encoding: 'utf8', env: { ...process.env, E2FSCK_CONFIG: '/dev/null' } });
    const extra = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.trim() !== '' && !FSCK_QUIET.some((re) => re.test(l)));
    if (r.status !== 0 || extra.length > 0) {
      throw new VerificationError({ file: name, structure: 'ext4', detail: `e2fsck -fn found problems (exit ${r.status}): ${extra.slice(0, 5).join(' | ')} (outputs left in place for inspection)` });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
