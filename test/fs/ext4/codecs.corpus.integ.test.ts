/**
 * The encoders on the e2fsprogs test images (test/helpers/corpus.ts): every superblock,
 * group descriptor, inode, extent node (root and block) and xattr area or block that decodes with its
 * checksum verified re-encodes to the bytes on disk, the modelled fields scrambled in the
 * starting bytes. These images come from two decades of e2fsprogs and kernels, many
 * damaged on purpose: odd extra_isize values, huge_file inodes, rev 0 filesystems.
 * Xattr areas and blocks round-trip too (the decoded value offsets are kept), except on
 * the few images whose planted damage the encoder replaces with a valid form.
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { findE2fsprogsCorpus, noteMissingCorpus } from '../../helpers/corpus.js';
import type { Ext4Context } from '../../../src/fs/ext4/context.js';
import { fsReader } from '../../../src/fs/ext4/context.js';
import { decodeSuperblock, encodeSuperblock, type Superblock } from '../../../src/fs/ext4/superblock.js';
import { decodeGroupDescriptor, descriptorBlockLocation, encodeGroupDescriptor, type GroupDescriptor } from '../../../src/fs/ext4/groupDescriptors.js';
import { decodeInode, encodeInode } from '../../../src/fs/ext4/inode.js';
import { decodeExtentNode, encodeExtentNode, extentNodeCapacity, walkExtentTree } from '../../../src/fs/ext4/extents.js';
import { decodeInodeXattrs, decodeXattrBlock, encodeInodeXattrs, encodeXattrBlock } from '../../../src/fs/ext4/xattr.js';
import { ImgdedupError } from '../../../src/errors.js';
import { modelledInodeBytes } from './codecImages.js';

const corpus = findE2fsprogsCorpus();
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const same = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
/** Asserts equal bytes, printing hex only on a mismatch (the corpus has 600,000 inodes). */
function expectSame(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (!same(actual, expected)) expect(hex(actual), what).toBe(hex(expected));
}

/** Runs `f`, returning undefined for a typed decode error (a damaged structure is skipped). */
function attempt<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch (e) {
    if (e instanceof ImgdedupError) return undefined;
    throw e;
  }
}

/**
 * Images whose xattrs do not re-encode to their bytes, and why: the encoder writes the
 * valid form instead of the damage these e2fsprogs tests plant.
 */
const XATTR_NOT_ROUND_TRIPPED: Readonly<Record<string, string>> = {
  f_ea_checks: 'an entry with a wrong e_hash',
  f_ea_signed_hash: 'hashes of a non-ASCII name with signed chars (pre-6.2 kernels); the encoder writes the unsigned hash, which e2fsck accepts too',
  f_ea_value_crash: 'values that overlap the entries or each other',
  f_inode_ea_collision: 'values that overlap each other',
};

interface Counts {
  superblocks: number;
  descriptors: number;
  inodes: number;
  roots: number;
  blockNodes: number;
  xattrAreas: number;
  xattrBlocks: number;
  otherLayouts: Set<string>;
}

/** Round-trips every structure of one image that decodes cleanly; returns what was checked. */
async function roundTripImage(name: string, bytes: Uint8Array, counts: Counts): Promise<void> {
  const ctx: Ext4Context = { file: name, verifyChecksums: 'error', diagnostics: [] };
  const sbBytes = bytes.subarray(1024, 2048);
  const sb: Superblock | undefined = attempt(() => decodeSuperblock(sbBytes, ctx));
  if (sb === undefined) return;
  const csum = (sb.s_feature_ro_compat & 0x400) !== 0;
  const scrambledSb = sbBytes.slice();
  const written: Array<[number, number]> = [[0x0c, 8], [0x2c, 8], [0x3a, 4], [0x5a, 14], [0xe8, 4], [0x160, 4], [0x178, 8], [0x274, 2]];
  if (sb.s_feature_incompat & 0x80) written.push([0x158, 4]);
  if (csum) written.push([0x3fc, 4]);
  // Rev 0 superblocks have no feature words: the decoder reads 0, the encoder writes 0 over whatever is there.
  if (sb.s_rev_level === 0) return;
  for (const [off, len] of written) scrambledSb.fill(0x5c, off, off + len);
  expect(hex(encodeSuperblock({ ...sb, raw: scrambledSb })), `${name}: superblock`).toBe(hex(sbBytes));
  counts.superblocks++;
  const perBlock = sb.blockSize / sb.descSize;
  const groups: Array<GroupDescriptor | undefined> = [];
  for (let g = 0; g < sb.groupCount; g++) {
    const off = descriptorBlockLocation(sb, Math.floor(g / perBlock)) * sb.blockSize + (g % perBlock) * sb.descSize;
    if (off + sb.descSize > bytes.length) break;
    const db = bytes.subarray(off, off + sb.descSize);
    const gd = attempt(() => decodeGroupDescriptor(db, g, sb, ctx, off));
    groups.push(gd);
    if (gd === undefined) continue;
    const scrambled = db.slice();
    scrambled.fill(0x3c, 0, 0x20);
    if (sb.descSize >= 64) scrambled.fill(0x3c, 0x20, 0x3c);
    expect(hex(encodeGroupDescriptor({ ...gd, raw: scrambled }, g, sb)), `${name}: group ${g}`).toBe(hex(db));
    counts.descriptors++;
  }
  const env = {
    ctx,
    blockSize: sb.blockSize,
    blocksCount: sb.s_blocks_count,
    metadataCsum: csum,
    readBlocks: async (b: number, n: number): Promise<Uint8Array> => {
      const out = new Uint8Array(n * sb.blockSize);
      out.set(bytes.subarray(b * sb.blockSize, Math.min(bytes.length, (b + n) * sb.blockSize)));
      return out;
    },
  };
  for (const [g, gd] of groups.entries()) {
    if (gd === undefined) continue;
    for (let i = 0; i < sb.s_inodes_per_group; i++) {
      const ino = g * sb.s_inodes_per_group + i + 1;
      const off = gd.bg_inode_table * sb.blockSize + i * sb.s_inode_size;
      if (ino > sb.s_inodes_count || off + sb.s_inode_size > bytes.length) break;
      const ib = bytes.subarray(off, off + sb.s_inode_size);
      // Never-used inodes (all zeros) are most of the corpus: one per group is enough.
      if (i > 0 && ib.every((b) => b === 0)) continue;
      const inode = attempt(() => decodeInode(ib, ino, sb, ctx, off));
      if (inode === undefined) continue;
      const zero = ib.every((b, k) => b === 0 || k === 0x7c || k === 0x7d || k === 0x82 || k === 0x83);
      const scrambled = ib.slice();
      for (const k of modelledInodeBytes(sb.s_inode_size, inode.i_extra_isize, csum && !zero, Number.isSafeInteger(inode.i_size))) scrambled[k] = ~scrambled[k]! & 0xff;
      expectSame(encodeInode(inode, sb, { raw: scrambled }), ib, `${name}: inode ${ino}`);
      counts.inodes++;
      if (inode.i_flags & 0x80000 && inode.i_links_count > 0) {
        const root = attempt(() => decodeExtentNode(fsReader(ctx, inode.i_block, 'root', off + 0x28), 4));
        if (root !== undefined) {
          const s = inode.i_block.slice();
          s.fill(0xa5, 0, 12);
          for (let k = 0; k < root.header.eh_entries; k++) s.fill(0xa5, 12 + 12 * k, 12 + 12 * k + (root.header.eh_depth > 0 ? 10 : 12));
          expect(hex(encodeExtentNode(root, 4, { raw: s })), `${name}: extent root of ${ino}`).toBe(hex(inode.i_block));
          counts.roots++;
          if (root.header.eh_depth > 0) {
            // Every block node the walk reaches with its checksum verified (a damaged tree stops the walk).
            const nodes: number[] = [];
            try {
              for await (const _ of walkExtentTree(env, ino, inode.i_block, off + 0x28, inode.csumSeed, (n) => nodes.push(n.pblk))) void _;
            } catch (e) {
              if (!(e instanceof ImgdedupError)) throw e;
            }
            for (const pblk of nodes) {
              const nb = bytes.subarray(pblk * sb.blockSize, (pblk + 1) * sb.blockSize);
              const cap = extentNodeCapacity(sb.blockSize);
              const node = attempt(() => decodeExtentNode(fsReader(ctx, nb, 'node', pblk * sb.blockSize), cap));
              if (node === undefined) continue;
              const sc = nb.slice();
              sc.fill(0xa5, 0, 12);
              for (let k = 0; k < node.header.eh_entries; k++) sc.fill(0xa5, 12 + 12 * k, 12 + 12 * k + (node.header.eh_depth > 0 ? 10 : 12));
              if (csum) sc.fill(0xa5, 12 + 12 * node.header.eh_max, 16 + 12 * node.header.eh_max);
              expectSame(encodeExtentNode(node, cap, { raw: sc, ...(csum ? { tail: { seed: inode.csumSeed } } : {}) }), nb, `${name}: extent block ${pblk} of ${ino}`);
              counts.blockNodes++;
            }
          }
        }
      }
      if (inode.i_links_count === 0) continue;
      const xs = attempt(() => decodeInodeXattrs(inode.raw, inode.i_extra_isize, ctx, ino, off));
      if (xs !== undefined && xs.length > 0 && xs.every((x) => x.valueInum === undefined)) {
        const start = 128 + inode.i_extra_isize;
        const area = inode.raw.subarray(start);
        if (same(encodeInodeXattrs(xs, area.length), area)) counts.xattrAreas++;
        else {
          counts.otherLayouts.add(name);
          if (process.env.SHOW_LAYOUTS) process.stderr.write(`${name} inode ${ino} area\n${hex(encodeInodeXattrs(xs, area.length))}\n${hex(area)}\n`);
        }
      }
      const acl = inode.i_file_acl;
      if (acl !== 0 && (acl + 1) * sb.blockSize <= bytes.length) {
        const xb = bytes.subarray(acl * sb.blockSize, (acl + 1) * sb.blockSize);
        const dec = attempt(() => decodeXattrBlock(xb, acl, ctx, { metadataCsum: csum, csumSeed: sb.csumSeed }));
        if (dec !== undefined && dec.xattrs.every((x) => x.valueInum === undefined)) {
          const out = attempt(() => encodeXattrBlock(dec.xattrs, { refcount: dec.header.h_refcount, blockNo: acl, seed: sb.csumSeed, metadataCsum: csum, blockSize: sb.blockSize, zeroBlockHash: dec.header.h_hash === 0 }));
          if (out !== undefined && same(out, xb)) counts.xattrBlocks++;
          else {
            counts.otherLayouts.add(name);
            if (process.env.SHOW_LAYOUTS) process.stderr.write(`${name} block ${acl}\n${out ? hex(out).slice(0, 400) : 'no fit'}\n${hex(xb).slice(0, 400)}\n`);
          }
        }
      }
    }
  }
}

describe(`encoders on the e2fsprogs test images${noteMissingCorpus('e2fsprogs test images', corpus !== undefined, 'see test/helpers/corpus.ts', false)}`, () => {
  test.skipIf(corpus === undefined)('every structure that decodes re-encodes to its bytes', async () => {
    const counts: Counts = { superblocks: 0, descriptors: 0, inodes: 0, roots: 0, blockNodes: 0, xattrAreas: 0, xattrBlocks: 0, otherLayouts: new Set() };
    for (const name of corpus!.names) {
      const bytes = new Uint8Array(gunzipSync(readFileSync(join(corpus!.dir, `${name}.img.gz`))));
      if (bytes.length < 2048) continue;
      await roundTripImage(name, bytes, counts);
    }
    process.stderr.write(`[codecs corpus] ${JSON.stringify({ ...counts, otherLayouts: [...counts.otherLayouts] })}\n`);
    expect([...counts.otherLayouts].sort()).toEqual(Object.keys(XATTR_NOT_ROUND_TRIPPED).sort());
    expect(counts.superblocks).toBeGreaterThan(100);
    expect(counts.inodes).toBeGreaterThan(10_000);
    expect(counts.blockNodes).toBeGreaterThan(10);
    expect(counts.xattrBlocks).toBeGreaterThan(20);
    expect(counts.xattrAreas).toBeGreaterThan(20);
  });
});
