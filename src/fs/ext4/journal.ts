/**
 * The jbd2 journal's state, read-only (ext4 doc, journal.rst): the journal superblock, and
 * how many committed transactions wait in the log to be replayed. A reader that ignores
 * them shows the filesystem as it was before those transactions; this module only counts
 * them, it never replays. All journal fields are big-endian.
 */
import { fsReader, type Ext4Context } from './context.js';

/** journal.rst, "Block Header": h_magic of every journal metadata block. */
export const JBD2_MAGIC_NUMBER = 0xc03b3998;
/** journal.rst, h_blocktype values. */
export const JBD2_DESCRIPTOR_BLOCK = 1;
export const JBD2_COMMIT_BLOCK = 2;
export const JBD2_SUPERBLOCK_V1 = 3;
export const JBD2_SUPERBLOCK_V2 = 4;
export const JBD2_REVOKE_BLOCK = 5;
/** journal.rst, s_feature_incompat. */
export const JBD2_FEATURE_INCOMPAT_64BIT = 0x2;
export const JBD2_FEATURE_INCOMPAT_CSUM_V2 = 0x8;
export const JBD2_FEATURE_INCOMPAT_CSUM_V3 = 0x10;
export const JBD2_FEATURE_INCOMPAT_FAST_COMMIT = 0x20;
/** journal.rst, t_flags of a descriptor block tag. */
export const JBD2_FLAG_SAME_UUID = 0x2;
export const JBD2_FLAG_LAST_TAG = 0x8;
/** Fast-commit blocks at the end of the log when s_num_fc_blks is 0 (journal.rst, "Fast commits"). */
const JBD2_DEFAULT_FAST_COMMIT_BLOCKS = 256;

/** The journal superblock fields this module uses, with the spec's names. */
export interface JournalSuperblock {
  readonly h_blocktype: number;
  readonly s_blocksize: number;
  readonly s_maxlen: number;
  readonly s_first: number;
  readonly s_sequence: number;
  /** Block of the first transaction to replay; 0 when the log is empty. */
  readonly s_start: number;
  readonly s_feature_incompat: number;
  readonly s_num_fc_blks: number;
}

/**
 * Decodes the journal superblock (block 0 of the journal). Throws CORRUPT_IMAGE (bad magic
 * or block type, impossible sizes).
 */
export function decodeJournalSuperblock(bytes: Uint8Array, ctx: Ext4Context, deviceOffset: number): JournalSuperblock {
  const r = fsReader(ctx, bytes, 'jbd2.superblock', deviceOffset);
  const magic = r.u32be(0x0, 'h_magic');
  if (magic !== JBD2_MAGIC_NUMBER) r.fail(0x0, 'h_magic', 'not a jbd2 journal superblock', { expected: '0xc03b3998', actual: `0x${magic.toString(16)}` });
  const h_blocktype = r.u32be(0x4, 'h_blocktype');
  if (h_blocktype !== JBD2_SUPERBLOCK_V1 && h_blocktype !== JBD2_SUPERBLOCK_V2) r.fail(0x4, 'h_blocktype', 'not a journal superblock', { expected: '3 or 4', actual: h_blocktype });
  const v2 = h_blocktype === JBD2_SUPERBLOCK_V2;
  const s_blocksize = r.u32be(0xc, 's_blocksize');
  if (s_blocksize < 1024 || s_blocksize > 65536 || (s_blocksize & (s_blocksize - 1)) !== 0) r.fail(0xc, 's_blocksize', 'journal block size out of range', { actual: s_blocksize });
  const s_maxlen = r.u32be(0x10, 's_maxlen');
  const s_first = r.u32be(0x14, 's_first');
  if (s_first === 0 || s_first >= s_maxlen) r.fail(0x14, 's_first', 'first log block outside the journal', { expected: `1..${s_maxlen - 1}`, actual: s_first });
  const s_start = r.u32be(0x1c, 's_start');
  if (s_start !== 0 && (s_start < s_first || s_start >= s_maxlen)) r.fail(0x1c, 's_start', 'log start outside the journal', { expected: `${s_first}..${s_maxlen - 1}`, actual: s_start });
  return {
    h_blocktype,
    s_blocksize,
    s_maxlen,
    s_first,
    s_sequence: r.u32be(0x18, 's_sequence'),
    s_start,
    s_feature_incompat: v2 ? r.u32be(0x28, 's_feature_incompat') : 0,
    s_num_fc_blks: v2 ? r.u32be(0x54, 's_num_fc_blks') : 0,
  };
}

/** Bytes of one descriptor-block tag (journal.rst, "Descriptor Block"). */
export function journalTagBytes(sb: JournalSuperblock): number {
  if (sb.s_feature_incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3) return 16;
  // journal_block_tag_t: t_blocknr, t_checksum (16-bit), t_flags (16-bit), t_blocknr_high (64bit only).
  let n = 12;
  if (sb.s_feature_incompat & JBD2_FEATURE_INCOMPAT_CSUM_V2) n += 2;
  return sb.s_feature_incompat & JBD2_FEATURE_INCOMPAT_64BIT ? n : n - 4;
}

/** How many data blocks a descriptor block announces (each follows it in the log). */
function descriptorDataBlocks(block: Uint8Array, sb: JournalSuperblock, ctx: Ext4Context, deviceOffset: number): number {
  const r = fsReader(ctx, block, 'jbd2.descriptor', deviceOffset);
  const tagBytes = journalTagBytes(sb);
  const csum = (sb.s_feature_incompat & (JBD2_FEATURE_INCOMPAT_CSUM_V2 | JBD2_FEATURE_INCOMPAT_CSUM_V3)) !== 0;
  // With checksums the block ends in a 4-byte jbd2_journal_block_tail.
  const end = block.length - (csum ? 4 : 0);
  const v3 = (sb.s_feature_incompat & JBD2_FEATURE_INCOMPAT_CSUM_V3) !== 0;
  let off = 12;
  let n = 0;
  while (off + tagBytes <= end) {
    const flags = v3 ? r.u32be(off + 4, 't_flags') : r.u16be(off + 6, 't_flags');
    n++;
    off += tagBytes;
    if (!(flags & JBD2_FLAG_SAME_UUID)) off += 16;
    if (flags & JBD2_FLAG_LAST_TAG) break;
  }
  return n;
}

/**
 * Committed transactions in the log from s_start, as recovery's scan pass finds them:
 * descriptor, data and revoke blocks of sequence s_sequence, s_sequence+1, ..., each
 * closed by a commit block; the scan stops at the first block that is not the next
 * expected one. `readLogBlock(i)` reads journal block i (0 is the superblock). Every
 * step advances, and the scan covers the log at most once.
 */
export async function countCommittedTransactions(sb: JournalSuperblock, ctx: Ext4Context, readLogBlock: (i: number) => Promise<{ bytes: Uint8Array; deviceOffset: number }>): Promise<number> {
  if (sb.s_start === 0) return 0;
  const fc = sb.s_feature_incompat & JBD2_FEATURE_INCOMPAT_FAST_COMMIT ? sb.s_num_fc_blks || JBD2_DEFAULT_FAST_COMMIT_BLOCKS : 0;
  const last = Math.max(sb.s_first + 1, sb.s_maxlen - fc);
  const logBlocks = last - sb.s_first;
  const wrap = (i: number): number => (i >= last ? sb.s_first + ((i - sb.s_first) % logBlocks) : i);
  let seq = sb.s_sequence;
  let blk = sb.s_start;
  let committed = 0;
  let walked = 0;
  while (walked < logBlocks) {
    const { bytes, deviceOffset } = await readLogBlock(blk);
    const r = fsReader(ctx, bytes, 'jbd2.block', deviceOffset);
    if (r.u32be(0, 'h_magic') !== JBD2_MAGIC_NUMBER || r.u32be(8, 'h_sequence') !== seq) break;
    const type = r.u32be(4, 'h_blocktype');
    let step = 1;
    if (type === JBD2_DESCRIPTOR_BLOCK) step += descriptorDataBlocks(bytes, sb, ctx, deviceOffset);
    else if (type === JBD2_COMMIT_BLOCK) {
      committed++;
      seq = (seq + 1) >>> 0;
    } else if (type !== JBD2_REVOKE_BLOCK) break;
    walked += step;
    blk = wrap(blk + step);
  }
  return committed;
}
