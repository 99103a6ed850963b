/**
 * The jbd2 log scan on journals built in code (ext4 doc, journal.rst): superblock
 * validation with offsets, tag sizes per feature, transactions that wrap around the end
 * of the log, and where the scan stops.
 */
import { describe, expect, it } from 'vitest';
import {
  JBD2_COMMIT_BLOCK,
  JBD2_DESCRIPTOR_BLOCK,
  JBD2_FEATURE_INCOMPAT_64BIT,
  JBD2_FEATURE_INCOMPAT_CSUM_V2,
  JBD2_FEATURE_INCOMPAT_CSUM_V3,
  JBD2_FLAG_LAST_TAG,
  JBD2_FLAG_SAME_UUID,
  JBD2_MAGIC_NUMBER,
  JBD2_REVOKE_BLOCK,
  JBD2_SUPERBLOCK_V2,
  countCommittedTransactions,
  decodeJournalSuperblock,
  journalTagBytes,
  type JournalSuperblock,
} from '../../../src/fs/ext4/journal.js';
import type { Ext4Context } from '../../../src/fs/ext4/context.js';
import { expectImgError } from '../../helpers/expectImgError.js';

const BS = 1024;
const ctx = (): Ext4Context => ({ file: 'j.img', verifyChecksums: 'error', diagnostics: [] });

function superblock(fields: { maxlen?: number; first?: number; sequence?: number; start?: number; incompat?: number; blocktype?: number; blocksize?: number; magic?: number } = {}): Uint8Array {
  const b = new Uint8Array(BS);
  const v = new DataView(b.buffer);
  v.setUint32(0x0, fields.magic ?? JBD2_MAGIC_NUMBER);
  v.setUint32(0x4, fields.blocktype ?? JBD2_SUPERBLOCK_V2);
  v.setUint32(0xc, fields.blocksize ?? BS);
  v.setUint32(0x10, fields.maxlen ?? 64);
  v.setUint32(0x14, fields.first ?? 1);
  v.setUint32(0x18, fields.sequence ?? 7);
  v.setUint32(0x1c, fields.start ?? 1);
  v.setUint32(0x28, fields.incompat ?? 0);
  return b;
}

function header(type: number, seq: number): Uint8Array {
  const b = new Uint8Array(BS);
  const v = new DataView(b.buffer);
  v.setUint32(0, JBD2_MAGIC_NUMBER);
  v.setUint32(4, type);
  v.setUint32(8, seq);
  return b;
}

/** A descriptor block announcing `n` data blocks, tags laid out for `sb`'s features. */
function descriptor(sb: JournalSuperblock, seq: number, n: number, sameUuid = true): Uint8Array {
  const b = header(JBD2_DESCRIPTOR_BLOCK, seq);
  const v = new DataView(b.buffer);
  const v3 = (sb.s_feature_incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3) !== 0;
  let off = 12;
  for (let i = 0; i < n; i++) {
    const flags = (sameUuid || i > 0 ? JBD2_FLAG_SAME_UUID : 0) | (i === n - 1 ? JBD2_FLAG_LAST_TAG : 0);
    v.setUint32(off, 1000 + i);
    if (v3) v.setUint32(off + 4, flags);
    else v.setUint16(off + 6, flags);
    off += journalTagBytes(sb) + (flags & JBD2_FLAG_SAME_UUID ? 0 : 16);
  }
  return b;
}

/** A log of `len` blocks (block 0 the superblock) where `blocks` places the given ones. */
function log(blocks: Map<number, Uint8Array>) {
  return async (i: number) => ({ bytes: blocks.get(i) ?? new Uint8Array(BS), deviceOffset: i * BS });
}

describe('decodeJournalSuperblock', () => {
  it('reads the fields at their offsets', () => {
    const sb = decodeJournalSuperblock(superblock({ incompat: JBD2_FEATURE_INCOMPAT_64BIT }), ctx(), 4096);
    expect(sb).toMatchObject({ s_blocksize: BS, s_maxlen: 64, s_first: 1, s_sequence: 7, s_start: 1, s_feature_incompat: JBD2_FEATURE_INCOMPAT_64BIT });
  });
  it.each([
    ['h_magic', { magic: 0x12345678 }, 0x0],
    ['h_blocktype', { blocktype: JBD2_DESCRIPTOR_BLOCK }, 0x4],
    ['s_blocksize', { blocksize: 3000 }, 0xc],
    ['s_first', { first: 64 }, 0x14],
    ['s_start', { start: 70 }, 0x1c],
  ] as const)('%s out of range: CORRUPT_IMAGE at its offset', async (_field, fields, off) => {
    await expectImgError(() => decodeJournalSuperblock(superblock(fields), ctx(), 4096), 'CORRUPT_IMAGE', { file: 'j.img', offset: 4096 + off, deviceOffset: 4096 + off });
  });
});

describe('journalTagBytes', () => {
  it.each([
    [0, 8],
    [JBD2_FEATURE_INCOMPAT_64BIT, 12],
    [JBD2_FEATURE_INCOMPAT_CSUM_V2, 10],
    [JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_64BIT, 14],
    [JBD2_FEATURE_INCOMPAT_CSUM_V3, 16],
    [JBD2_FEATURE_INCOMPAT_CSUM_V3 | JBD2_FEATURE_INCOMPAT_64BIT, 16],
  ])('incompat %i: %i bytes', (incompat, bytes) => {
    expect(journalTagBytes(decodeJournalSuperblock(superblock({ incompat }), ctx(), 0))).toBe(bytes);
  });
});

describe('countCommittedTransactions', () => {
  it('an empty log (s_start 0) has none', async () => {
    const sb = decodeJournalSuperblock(superblock({ start: 0 }), ctx(), 0);
    expect(await countCommittedTransactions(sb, ctx(), log(new Map()))).toBe(0);
  });

  it.each([0, JBD2_FEATURE_INCOMPAT_64BIT, JBD2_FEATURE_INCOMPAT_CSUM_V3 | JBD2_FEATURE_INCOMPAT_64BIT])('descriptors, data, revoke and commit blocks (incompat %i); an uncommitted tail is not counted', async (incompat) => {
    const sb = decodeJournalSuperblock(superblock({ start: 5, sequence: 7, incompat }), ctx(), 0);
    const m = new Map<number, Uint8Array>();
    // Transaction 7: descriptor (3 tags, the first with its own UUID), 3 data blocks, commit.
    m.set(5, descriptor(sb, 7, 3, false));
    // Data blocks may look like anything, even a journal header: they are skipped, not read.
    m.set(6, header(JBD2_COMMIT_BLOCK, 99));
    m.set(9, header(JBD2_COMMIT_BLOCK, 7));
    // Transaction 8: a revoke block, then commit.
    m.set(10, header(JBD2_REVOKE_BLOCK, 8));
    m.set(11, header(JBD2_COMMIT_BLOCK, 8));
    // Transaction 9: a descriptor and its data, no commit.
    m.set(12, descriptor(sb, 9, 1));
    expect(await countCommittedTransactions(sb, ctx(), log(m))).toBe(2);
  });

  it('a transaction that wraps past the end of the log is followed from s_first', async () => {
    // Log blocks 1..15; transaction 3 starts at 14: descriptor at 14, data at 15 and 1, commit at 2.
    const sb = decodeJournalSuperblock(superblock({ maxlen: 16, start: 14, sequence: 3 }), ctx(), 0);
    const m = new Map<number, Uint8Array>([
      [14, descriptor(sb, 3, 2)],
      [2, header(JBD2_COMMIT_BLOCK, 3)],
      [3, header(JBD2_COMMIT_BLOCK, 4)],
    ]);
    expect(await countCommittedTransactions(sb, ctx(), log(m))).toBe(2);
  });

  it('stops at a block of an older sequence, and reads the log at most once around', async () => {
    const sb = decodeJournalSuperblock(superblock({ maxlen: 8, start: 1, sequence: 1 }), ctx(), 0);
    const m = new Map<number, Uint8Array>();
    // Every block a commit of the next sequence: the scan goes round once and stops.
    for (let i = 1; i < 8; i++) m.set(i, header(JBD2_COMMIT_BLOCK, i));
    let reads = 0;
    const counting = async (i: number) => {
      reads++;
      return log(m)(i);
    };
    expect(await countCommittedTransactions(sb, ctx(), counting)).toBe(7);
    expect(reads).toBe(7);
    m.set(3, header(JBD2_COMMIT_BLOCK, 1));
    expect(await countCommittedTransactions(sb, ctx(), log(m))).toBe(2);
  });
});
