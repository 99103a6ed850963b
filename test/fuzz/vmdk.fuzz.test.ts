/**
 * Mutation fuzzing of the VMDK reader, VMDK chains and the VMDK check (see harness.ts
 * for the contract and knobs). Seed images are made at test time by qemu-img
 * (monolithicSparse, twoGbMaxExtentSparse, monolithicFlat, streamOptimized, a delta
 * child, zeroed grains) and by our own writer. The mutator knows the VMDK 5.0 layout,
 * found here by decoding the files directly (independent of src/): little-endian
 * header/footer fields, grain directory and grain table entries (primary and
 * redundant), stream markers, and line-level edits of the descriptor text.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { useTempDir } from '../helpers/tmp.js';
import { openChain } from '../../src/diskimage/openChain.js';
import { SparseVmdkWriter, writeStreamOptimizedVmdk } from '../../src/diskimage/vmdk/VmdkWriter.js';
import { FUZZ_SEED, describeFailures, fuzzImage, mutate, type Region } from './harness.js';
import { useCasePool } from './pool.js';


/** Cases per seed image: 10 seeds x 150 keeps this file near 10 s on 2 shared cores. FUZZ_CASES overrides. */
const CASES = process.env.FUZZ_CASES !== undefined ? Number(process.env.FUZZ_CASES) : 150;

const tmp = useTempDir('imgdedup-fuzz-vmdk-');
const pool = useCasePool();

const KDMV = 0x564d444b;
const GD_AT_END = 0xffffffffffffffffn;

/** VMDK 5.0 SparseExtentHeader fields: [byte offset, width]. */
const HEADER_FIELDS: readonly (readonly [number, 1 | 2 | 4 | 8])[] = [
  [4, 4], // version
  [8, 4], // flags
  [12, 8], // capacity
  [20, 8], // grainSize
  [28, 8], // descriptorOffset
  [36, 8], // descriptorSize
  [44, 4], // numGTEsPerGT
  [48, 8], // rgdOffset
  [56, 8], // gdOffset
  [64, 8], // overHead
  [72, 1], // uncleanShutdown
  [77, 2], // compressAlgorithm
];

/**
 * Regions of a VMDK file, by name: `text:*` (descriptor text, line-mutated; `text:file`
 * is a whole descriptor file that may grow or shrink), `header`/`footer` (header
 * fields), `gd`/`rgd`/`gt[i]`/`rgt[i]` (u32 entries), `marker:*` (stream markers).
 */
function vmdkRegions(path: string): Region[] {
  const b = readFileSync(path);
  if (b.length < 512 || b.readUInt32LE(0) !== KDMV) return [{ name: 'text:file', offset: 0, length: b.length }];
  const regions: Region[] = [{ name: 'header', offset: 0, length: 512 }];
  const descOff = Number(b.readBigUInt64LE(28));
  const descSize = Number(b.readBigUInt64LE(36));
  if (descOff > 0 && descSize > 0) regions.push({ name: 'text:embedded', offset: descOff * 512, length: descSize * 512 });
  let h = 0;
  let gdRaw = b.readBigUInt64LE(56);
  const stream = (b.readUInt32LE(8) & (1 << 17)) !== 0;
  // A stream-optimized extent ends with a footer marker (type 3), a header copy and end-of-stream.
  const f = b.length - 1536;
  if (stream && f >= 512 && b.readUInt32LE(f + 12) === 3) {
    regions.push({ name: 'marker:footer', offset: f, length: 16 }, { name: 'footer', offset: f + 512, length: 512 }, { name: 'marker:eos', offset: f + 1024, length: 16 });
    if (gdRaw === GD_AT_END) {
      h = f + 512;
      gdRaw = b.readBigUInt64LE(h + 56);
    }
  } else if (stream && b.length >= 1024) {
    // qemu writes the grain directory's offset into the header and ends with end-of-stream only.
    regions.push({ name: 'marker:eos', offset: b.length - 512, length: 16 });
  }
  const capacity = Number(b.readBigUInt64LE(h + 12));
  const grainSize = Number(b.readBigUInt64LE(h + 20));
  const gdEntries = Math.ceil(capacity / (grainSize * 512));
  const grainMarkers = new Set<number>();
  for (const [name, sector] of [['gd', Number(gdRaw)], ['rgd', Number(b.readBigUInt64LE(h + 48))]] as const) {
    if (sector === 0) continue;
    regions.push({ name, offset: sector * 512, length: gdEntries * 4 });
    if (stream) regions.push({ name: `marker:${name}`, offset: sector * 512 - 512, length: 16 });
    for (let i = 0; i < Math.min(gdEntries, 8); i++) {
      const gt = b.readUInt32LE(sector * 512 + i * 4);
      if (gt === 0 || gt * 512 + 2048 > b.length) continue;
      const tname = name === 'gd' ? `gt[${i}]` : `rgt[${i}]`;
      regions.push({ name: tname, offset: gt * 512, length: 2048 });
      if (stream) regions.push({ name: `marker:${tname}`, offset: gt * 512 - 512, length: 16 });
      for (let j = 0; j < 512 && grainMarkers.size < 8; j++) {
        const gte = b.readUInt32LE(gt * 512 + j * 4);
        if (gte > 1 && stream) grainMarkers.add(gte);
      }
    }
  }
  // A grain marker (lba u64, size u32) and the start of its zlib stream.
  for (const s of grainMarkers) regions.push({ name: `marker:grain@${s}`, offset: s * 512, length: 44 });
  return regions.filter((r) => r.offset >= 0 && r.offset + r.length <= b.length);
}

const CREATE_TYPES = ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat', 'streamOptimized', 'vmfs', 'vmfsSparse', 'seSparse', 'custom', 'fullDevice', '', 'monolithicsparse', '"'];
const EXTENT_TYPES = ['SPARSE', 'FLAT', 'ZERO', 'VMFS', 'VMFSSPARSE', 'SESPARSE', 'VMFSRAW', 'sparse', ''];
const NUMBERS = ['0', '1', '2', '7', '8', '512', '4294967295', '4294967296', '9007199254740991', '9007199254740993', '99999999999999999999999', '-1', '1e3', '0x10', '00000001', ''];
const HEX = ['ffffffff', '00000000', 'fffffffe', '123456789', 'zzzz', '', '"', '-1', '0x1'];

/** Line-level edits of descriptor text; `names` are file names to point extents and hints at. */
function mutateText(text: string, rnd: () => number, names: readonly string[]): { text: string; what: string } {
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
  const lines = text.split('\n');
  const li = Math.floor(rnd() * lines.length);
  const line = lines[li]!;
  const op = Math.floor(rnd() * 13);
  switch (op) {
    case 0:
      lines.splice(li, 1);
      return { text: lines.join('\n'), what: `delete line ${li}` };
    case 1:
      lines.splice(li, 0, line);
      return { text: lines.join('\n'), what: `duplicate line ${li}` };
    case 2: {
      const lj = Math.floor(rnd() * lines.length);
      [lines[li], lines[lj]] = [lines[lj]!, line];
      return { text: lines.join('\n'), what: `swap lines ${li},${lj}` };
    }
    case 3: {
      // Garble: a random printable/odd char, a stray quote, or a cut line.
      const p = Math.floor(rnd() * (line.length + 1));
      const c = pick(['"', '=', '#', ' ', '\r', '\t', '\u00ff', '\u0000', 'x', '\\']);
      lines[li] = rnd() < 0.3 ? line.slice(0, p) : line.slice(0, p) + c + line.slice(p + 1);
      return { text: lines.join('\n'), what: `garble line ${li}@${p} ${JSON.stringify(c)}` };
    }
    case 4:
    case 5: {
      // Change one number (extent sizes and offsets, version, geometry).
      const runs = [...text.matchAll(/\d+/g)];
      if (runs.length === 0) return { text, what: 'no number' };
      const m = pick(runs);
      const v = rnd() < 0.3 ? String(Math.floor(rnd() * 2 ** (1 + Math.floor(rnd() * 40)))) : pick(NUMBERS);
      return { text: text.slice(0, m.index) + v + text.slice(m.index + m[0].length), what: `number @${m.index} ${m[0]}->${v}` };
    }
    case 6: {
      const v = pick(CREATE_TYPES);
      return { text: text.replace(/createType\s*=.*/, `createType="${v}"`), what: `createType=${v}` };
    }
    case 7: {
      const key = pick(['CID', 'parentCID']);
      const v = rnd() < 0.4 ? Math.floor(rnd() * 2 ** 32).toString(16) : pick(HEX);
      const re = new RegExp(`^${key}\\s*=.*$`, 'm');
      return { text: re.test(text) ? text.replace(re, `${key}=${v}`) : `${text}\n${key}=${v}`, what: `${key}=${v}` };
    }
    case 8: {
      // Rewrite an extent line: type, file name, offset.
      const ext = lines.findIndex((l) => /^(RW|RDONLY|NOACCESS)\s/.test(l));
      if (ext === -1) return { text, what: 'no extent line' };
      const parts = /^(\S+)\s+(\S+)\s+(\S+)\s*("[^"]*")?\s*(\S+)?/.exec(lines[ext]!);
      // An earlier edit of this case may have cut the line below three fields.
      if (parts === null) return { text, what: `extent line ${ext} too short to rewrite` };
      const type = rnd() < 0.5 ? pick(EXTENT_TYPES) : parts[3];
      const name = rnd() < 0.5 ? `"${pick(names)}"` : (parts[4] ?? '');
      const off = rnd() < 0.5 ? (parts[5] ?? '') : pick(NUMBERS);
      lines[ext] = `${parts[1]} ${parts[2]} ${type} ${name} ${off}`.trimEnd();
      return { text: lines.join('\n'), what: `extent line ${ext} -> ${lines[ext]}` };
    }
    case 9: {
      // Add a second extent line (a ZERO or a copy with another file/offset).
      const ext = lines.findIndex((l) => /^(RW|RDONLY|NOACCESS)\s/.test(l));
      const add = rnd() < 0.5 || ext === -1 ? `RW ${pick(NUMBERS)} ZERO` : `${lines[ext]!.replace(/"[^"]*"/, `"${pick(names)}"`)}`;
      lines.splice(ext === -1 ? li : ext + 1, 0, add);
      return { text: lines.join('\n'), what: `add extent ${add}` };
    }
    case 10: {
      const v = pick(names);
      const re = /^parentFileNameHint\s*=.*$/m;
      const what = `parentFileNameHint=${v}`;
      return { text: re.test(text) ? text.replace(re, rnd() < 0.2 ? '' : `parentFileNameHint="${v}"`) : text.replace(/^(createType.*)$/m, `$1\nparentFileNameHint="${v}"`), what };
    }
    case 11:
      // Quotes: remove them all, or unbalance one line.
      return rnd() < 0.5 ? { text: text.replaceAll('"', ''), what: 'strip quotes' } : { text: lines.map((l, i) => (i === li ? l.replace('"', '') : l)).join('\n'), what: `unquote line ${li}` };
    default:
      return rnd() < 0.5 ? { text: text.replaceAll('\n', '\r\n'), what: 'CRLF' } : { text: `${text.slice(0, 10)}\u0000${text.slice(10)}`, what: 'NUL' };
  }
}

function writeLe(bytes: Buffer, at: number, width: 1 | 2 | 4 | 8, v: bigint): void {
  if (at + width > bytes.length) return;
  if (width === 8) bytes.writeBigUInt64LE(BigInt.asUintN(64, v), at);
  else if (width === 4) bytes.writeUInt32LE(Number(BigInt.asUintN(32, v)), at);
  else if (width === 2) bytes.writeUInt16LE(Number(BigInt.asUintN(16, v)), at);
  else bytes[at] = Number(BigInt.asUintN(8, v));
}

/** A format-aware mutator: 1-3 edits, each in one region, chosen by the region's kind. */
function vmdkMutator(names: readonly string[]) {
  return (buf: Buffer, regions: readonly Region[], rnd: () => number): { bytes: Buffer; done: string[] } => {
    const pick = <T>(a: readonly T[]): T => a[Math.floor(rnd() * a.length)]!;
    let bytes = buf;
    const done: string[] = [];
    const n = 1 + Math.floor(rnd() * 3);
    for (let k = 0; k < n; k++) {
      const r = pick(regions);
      const sectors = BigInt(Math.floor(bytes.length / 512));
      const otherSector = () => BigInt(Math.floor(pick(regions).offset / 512));
      const interesting = (): bigint =>
        pick([0n, 1n, 2n, 3n, sectors, sectors - 1n, sectors + 1n, otherSector(), otherSector() + 1n, 0xffffffffn, 1n << 32n, (1n << 53n) / 512n, GD_AT_END, BigInt(Math.floor(rnd() * Number(sectors + 1n)))]);
      if (r.name.startsWith('text:')) {
        if (r.offset >= bytes.length) continue;
        const raw = bytes.subarray(r.offset, Math.min(bytes.length, r.offset + r.length));
        const nul = raw.indexOf(0);
        const { text, what } = mutateText(raw.subarray(0, nul === -1 ? raw.length : nul).toString('latin1'), rnd, names);
        const enc = Buffer.from(text, 'latin1');
        if (r.name === 'text:file') bytes = enc;
        else {
          // Embedded: keep the file's layout; pad with NULs or cut at the region's end.
          const fit = Buffer.alloc(r.length);
          enc.copy(fit, 0, 0, Math.min(enc.length, r.length));
          bytes = Buffer.from(bytes);
          fit.copy(bytes, r.offset);
        }
        done.push(`${r.name}: ${what}`);
      } else if (r.name === 'header' || r.name === 'footer') {
        const [off, width] = pick(HEADER_FIELDS);
        const v = off === 8 ? pick([0n, 1n, 3n, 7n, 0x10000n, 0x20000n, 0x30003n, 0x30001n, 0x8n, 0xffffffffn]) : off === 4 ? pick([0n, 1n, 2n, 3n, 4n]) : off === 20 ? pick([0n, 1n, 7n, 8n, 9n, 16n, 128n, 1n << 18n, 1n << 19n]) : interesting();
        writeLe(bytes, r.offset + off, width, v);
        done.push(`${r.name}.${off}=0x${v.toString(16)}`);
      } else if (r.name.startsWith('marker:')) {
        // {u64 val (numSectors or lba), u32 size, u32 type}; grain markers are followed by zlib data.
        const op = Math.floor(rnd() * 4);
        if (op === 0) writeLe(bytes, r.offset, 8, interesting());
        else if (op === 1) writeLe(bytes, r.offset + 8, 4, pick([0n, 1n, 12n, 500n, 0x10000n, 0x20000n, 0x7fffffffn, 0xffffffffn]));
        else if (op === 2) writeLe(bytes, r.offset + 12, 4, pick([0n, 1n, 2n, 3n, 4n, 0xffffffffn]));
        else {
          const p = r.offset + 12 + Math.floor(rnd() * Math.max(1, r.length - 12));
          if (p < bytes.length) bytes[p] = Math.floor(rnd() * 256);
        }
        done.push(`${r.name} op${op}`);
      } else if (r.name === 'gd' || r.name === 'rgd' || /^r?gt\[/.test(r.name)) {
        const entries = Math.max(1, Math.floor(r.length / 4));
        const i = Math.floor(rnd() * entries);
        const at = r.offset + i * 4;
        const op = Math.floor(rnd() * 3);
        if (op === 0) writeLe(bytes, at, 4, interesting());
        else if (op === 1) {
          // Duplicate another entry (two tables or grains at one place).
          const j = Math.floor(rnd() * entries);
          if (r.offset + j * 4 + 4 <= bytes.length) writeLe(bytes, at, 4, BigInt(bytes.readUInt32LE(r.offset + j * 4)));
        } else writeLe(bytes, at, 4, BigInt(Math.floor(rnd() * 2 ** 32)));
        done.push(`${r.name}[${i}] op${op}`);
      } else {
        const m = mutate(bytes, [r], rnd);
        bytes = m.bytes;
        done.push(...m.done);
      }
    }
    // Rarely, cut the file (a truncated download or a crashed writer).
    if (rnd() < 0.05) {
      const len = Math.floor(rnd() * bytes.length);
      bytes = bytes.subarray(0, len);
      done.push(`truncate ${len}`);
    }
    return { bytes, done };
  };
}

interface Seed {
  readonly name: string;
  /** The pristine file that is mutated. */
  readonly file: string;
  /** Where the mutated copy is written. */
  readonly target: string;
  /** The file opened, when it is not the target (a descriptor over a mutated extent, a child over a mutated parent). */
  readonly open?: string;
}
const SEED_NAMES = [
  'qemu monolithicSparse',
  'qemu twoGbMaxExtentSparse: descriptor',
  'qemu twoGbMaxExtentSparse: extent',
  'qemu monolithicFlat: descriptor',
  'qemu streamOptimized',
  'qemu delta child',
  'qemu delta: mutated parent',
  'qemu zeroed_grain=on',
  'ours monolithicSparse (zeroed grains, 4 KiB grains)',
  'ours streamOptimized',
] as const;
const seeds = new Map<string, Seed>();
const names: string[] = [];

/** Keeps a pristine copy of `f` and returns its path. */
function keep(f: string): string {
  const p = `${f}.seed`;
  copyFileSync(f, p);
  return p;
}

beforeAll(async () => {
  const d = tmp();
  const raw = join(d, 'src.raw');
  const writes = ['write -P 1 0 96k', 'write -P 2 1M 64k', 'write -z 2M 64k', 'write -P 3 3M 8k', 'write -P 4 40M 64k'];
  qemuImg('create', '-q', '-f', 'raw', raw, '48M');
  qemuIo(raw, writes.filter((w) => !w.includes('-z')), 'raw');
  const vmdk = (name: string, opts: string, size = '48M', w = writes): string => {
    const f = join(d, name);
    qemuImg('create', '-q', '-f', 'vmdk', '-o', opts, f, size);
    if (w.length) qemuIo(f, w, 'vmdk');
    return f;
  };
  // Mutated copies are written beside the pristine files, so descriptors' relative names resolve.
  const mono = vmdk('mono.vmdk', 'subformat=monolithicSparse');
  seeds.set(SEED_NAMES[0], { name: SEED_NAMES[0], file: keep(mono), target: mono });
  const two = vmdk('two.vmdk', 'subformat=twoGbMaxExtentSparse');
  seeds.set(SEED_NAMES[1], { name: SEED_NAMES[1], file: keep(two), target: two });
  const twoX = vmdk('twox.vmdk', 'subformat=twoGbMaxExtentSparse');
  const twoXExtent = join(d, 'twox-s001.vmdk');
  seeds.set(SEED_NAMES[2], { name: SEED_NAMES[2], file: keep(twoXExtent), target: twoXExtent, open: twoX });
  const flat = vmdk('flat.vmdk', 'subformat=monolithicFlat', '4M', ['write -P 5 0 64k']);
  seeds.set(SEED_NAMES[3], { name: SEED_NAMES[3], file: keep(flat), target: flat });
  const stream = join(d, 'stream.vmdk');
  qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, stream);
  seeds.set(SEED_NAMES[4], { name: SEED_NAMES[4], file: keep(stream), target: stream });
  const parent = vmdk('parent.vmdk', 'subformat=monolithicSparse');
  const child = join(d, 'child.vmdk');
  qemuImg('create', '-q', '-f', 'vmdk', '-b', 'parent.vmdk', '-F', 'vmdk', child);
  qemuIo(child, ['write -P 7 64k 64k', 'write -P 8 40M 4k'], 'vmdk');
  seeds.set(SEED_NAMES[5], { name: SEED_NAMES[5], file: keep(child), target: child });
  // Another chain whose parent is the one mutated (CID, header, tables); the child stays intact.
  const parent2 = vmdk('parent2.vmdk', 'subformat=monolithicSparse');
  const child2 = join(d, 'child2.vmdk');
  qemuImg('create', '-q', '-f', 'vmdk', '-b', 'parent2.vmdk', '-F', 'vmdk', child2);
  qemuIo(child2, ['write -P 6 128k 4k'], 'vmdk');
  seeds.set(SEED_NAMES[6], { name: SEED_NAMES[6], file: keep(parent2), target: parent2, open: child2 });
  const zg = vmdk('zeroed.vmdk', 'subformat=monolithicSparse,zeroed_grain=on');
  seeds.set(SEED_NAMES[7], { name: SEED_NAMES[7], file: keep(zg), target: zg });
  // Our writer: grains written out of order, zeroed grains, 4 KiB grains (many grain tables).
  const oursMono = join(d, 'ours-mono.vmdk');
  const w = await SparseVmdkWriter.create(oursMono, 8 << 20, { grainSizeSectors: 8, zeroedGrains: true, cid: 0x1234abcd });
  for (const g of [1500, 3, 0, 700, 2047]) await w.writeGrain(g, new Uint8Array(4096).fill(g & 0xff));
  for (const g of [5, 1024]) w.writeZeroGrain(g);
  await w.commit();
  seeds.set(SEED_NAMES[8], { name: SEED_NAMES[8], file: keep(oursMono), target: oursMono });
  const oursStream = join(d, 'ours-stream.vmdk');
  const src = await openChain(raw, { format: 'raw' });
  try {
    await writeStreamOptimizedVmdk(src.device, oursStream, { grainSizeSectors: 16, cid: 0x5678 });
  } finally {
    await src.close();
  }
  seeds.set(SEED_NAMES[9], { name: SEED_NAMES[9], file: keep(oursStream), target: oursStream });
  // Names the mutator may point extents and parent hints at: siblings, itself, missing, outside.
  names.push('parent.vmdk', 'mono.vmdk', 'two-s001.vmdk', 'flat-flat.vmdk', 'stream.vmdk', 'missing.vmdk', '../nowhere.vmdk', '', 'child.vmdk', basename(d));
});

describe('VMDK mutation fuzzing: only ImgdedupErrors, bounded time and memory', () => {
  it('the seed images open and read as qemu-img made them', async () => {
    // Sanity: every seed opens cleanly (so the fuzzer starts from valid images), and the
    // regions found include the structures the mutator aims at.
    for (const s of seeds.values()) {
      const chain = await openChain(s.open ?? s.target);
      await chain.close();
    }
    const kinds = (n: string) => vmdkRegions(seeds.get(n)!.file).map((r) => r.name.replace(/[[@].*/, ''));
    expect(kinds(SEED_NAMES[0])).toEqual(expect.arrayContaining(['header', 'text:embedded', 'gd', 'rgd', 'gt', 'rgt']));
    expect(kinds(SEED_NAMES[1])).toEqual(['text:file']);
    expect(kinds(SEED_NAMES[4])).toEqual(expect.arrayContaining(['header', 'text:embedded', 'marker:eos', 'marker:gd', 'marker:gt', 'marker:grain', 'gd', 'gt', 'rgd']));
    expect(kinds(SEED_NAMES[9])).toEqual(expect.arrayContaining(['header', 'footer', 'marker:footer', 'marker:eos', 'marker:gd', 'marker:gt', 'marker:grain', 'gd', 'gt']));
  });

  it.each(SEED_NAMES.map((n, i) => [n, i] as const))('%s', async (name, i) => {
    const s = seeds.get(name)!;
    const r = await fuzzImage({
      name,
      pool,
      seedImage: s.file,
      target: s.target,
      ...(s.open !== undefined ? { open: s.open } : {}),
      regions: vmdkRegions(s.file),
      cases: CASES,
      seed: FUZZ_SEED + 31337 + i * 7919,
      mutator: vmdkMutator(names),
    });
    // Leave the pristine image in place for the next test's sanity.
    writeFileSync(s.target, readFileSync(s.file));
    expect(r.failures, describeFailures(name, r.failures)).toEqual([]);
    // The mutations must reach past the header: some cases must still open and walk.
    if (process.env.FUZZ_REPLAY === undefined) expect(r.outcomes.ok ?? 0, JSON.stringify(r.outcomes)).toBeGreaterThan(0);
  });
});
