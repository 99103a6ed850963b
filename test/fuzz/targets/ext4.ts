/**
 * The fuzz target for ext4 (src/fs/ext4): everything a read-only command does with a
 * filesystem, on bytes in memory. Runs inside a pool worker (worker.ts); the seed
 * sanity test in ext4.fuzz.test.ts runs `exercise` directly.
 */
import type { BlockDevice, ByteRange, Extent } from '../../../src/diskimage/BlockDevice.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { ImgdedupError, InternalError } from '../../../src/errors.js';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import type { TargetInputs, TargetResult } from '../protocol.js';

/** Per case: at most this many walk entries and this many content bytes read. */
export const MAX_ENTRIES = 1500;
const MAX_BYTES = 4 << 20;

/** A BlockDevice over bytes in memory; reads past the end are zeros (the reader must bound them itself). */
export class BytesDevice implements BlockDevice {
  constructor(private readonly bytes: Uint8Array) {}
  get size(): number {
    return this.bytes.length;
  }
  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    if (offset < this.bytes.length) out.set(this.bytes.subarray(offset, Math.min(this.bytes.length, offset + length)));
    return out;
  }
  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = range ?? { offset: 0, length: this.size };
    if (r.length > 0) yield { offset: r.offset, length: r.length, kind: 'data' };
  }
}

/** Throws `err` unless it is an expected, typed error; returns its code. */
function expected(err: unknown): string {
  if (err instanceof ImgdedupError && !(err instanceof InternalError)) return err.code;
  throw err;
}

/**
 * Everything a read-only command does, each phase going on after typed errors of the
 * previous ones: walk the tree reading every file (bounded), symlink and xattr list,
 * look up paths, build block ownership, free runs and the write refusal.
 */
export async function exercise(fs: Ext4Fs, rnd: () => number): Promise<{ codes: string[]; entries: number }> {
  const codes: string[] = [];
  const phase = async (f: () => Promise<void>): Promise<void> => {
    try {
      await f();
    } catch (err) {
      codes.push(expected(err));
    }
  };
  let entries = 0;
  let budget = MAX_BYTES;
  await phase(async () => {
    for await (const e of fs.walk()) {
      if (++entries > MAX_ENTRIES) break;
      await phase(async () => {
        const inode = await fs.readInode(e.ino);
        const st = fs.statOf(inode);
        await fs.xattrsOf(inode);
        if (st.type === 'symlink') await fs.readlink(e.ino);
        else if (st.type === 'file' || st.type === 'unknown') {
          let nExt = 0;
          for await (const x of fs.extentsOf(inode)) if (++nExt > 10_000 || x.len < 0) break;
          if (budget <= 0) return;
          for await (const chunk of fs.readFile(e.ino)) if ((budget -= chunk.length) <= 0) break;
          if (st.size > 0) await fs.readOf(inode, Math.floor(rnd() * st.size), 4096 + Math.floor(rnd() * 65536));
        }
      });
    }
  });
  await phase(async () => {
    for (const p of ['/dir/sub/deep', '/big/a-rather-long-directory-entry-name-number-150', '/nonexistent']) await fs.lookup(p);
  });
  await phase(async () => {
    await fs.blockOwnership();
  });
  await phase(async () => {
    for await (const _r of fs.freeBlockRuns());
  });
  await phase(async () => {
    await fs.writeRefusal();
  });
  return { codes, entries };
}

/** One case: open the bytes under the policy and exercise; the outcome is the first code, 'open:<code>', or 'ok'. */
export async function ext4Target(input: TargetInputs['ext4']): Promise<TargetResult> {
  let fs: Ext4Fs;
  try {
    fs = await Ext4Fs.open(new BytesDevice(input.bytes), { file: 'fuzz.img', verifyChecksums: input.policy });
  } catch (err) {
    return { outcome: `open:${expected(err)}`, entries: 0 };
  }
  const r = await exercise(fs, mulberry32(input.seed));
  return { outcome: r.codes[0] ?? 'ok', entries: r.entries };
}
