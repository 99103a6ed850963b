/**
 * Format probing against images made by qemu-img (and by the partitioning and mkfs
 * tools): formats we do not read are refused as UNSUPPORTED_FORMAT, named, where
 * qemu-img itself recognises them; ordinary raw disks stay raw; `-f raw` still forces raw.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openImage, probeFormat } from '../../src/diskimage/openImage.js';
import { openChain } from '../../src/diskimage/openChain.js';
import { checkImage } from '../../src/diskimage/checkImage.js';
import { mulberry32 } from '../../fixtures/prng.mjs';
import { qemuImg, qemuIo } from '../helpers/qemu.js';
import { imgdedup, run, sh } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { expectImgError } from '../helpers/expectImgError.js';

const tmp = useTempDir('imgdedup-probe-');
const MiB = 1 << 20;

/** qemu-img's own verdict on a file's format (from `qemu-img info`, or its refusal to open it). */
function qemuProbe(file: string): string {
  const r = run('qemu-img', ['info', '--output=json', file]);
  if (r.status === 0) return (JSON.parse(r.stdout) as { format: string }).format;
  return r.stderr;
}

/** A raw source with recognisable data, for `qemu-img convert -O <fmt>`. */
let source: string;
beforeAll(() => {
  source = join(tmp(), 'source.raw');
  const rnd = mulberry32(0xf0e1);
  writeFileSync(source, Uint8Array.from({ length: 2 * MiB }, (_, i) => (i < MiB ? Math.floor(rnd() * 256) : 0)));
});

interface QemuMade {
  name: string;
  make: (file: string) => void;
  qemuFormat: string;
  format: string;
  structure: string;
  /** Offset of the magic; a function of the file size for trailers. */
  offset: (size: number) => number;
}

const create = (fmt: string, ...opts: string[]) => (file: string) => qemuImg('create', '-q', '-f', fmt, ...opts, file, '4M');
const convert = (fmt: string, ...opts: string[]) => (file: string) => qemuImg('convert', '-O', fmt, ...opts, source, file);
const at = (n: number) => () => n;

const QEMU_MADE: QemuMade[] = [
  { name: 'VHD dynamic (create)', make: create('vpc'), qemuFormat: 'vpc', format: 'VHD', structure: 'vhd.footer.cookie', offset: at(0) },
  { name: 'VHD dynamic (convert)', make: convert('vpc'), qemuFormat: 'vpc', format: 'VHD', structure: 'vhd.footer.cookie', offset: at(0) },
  // qemu probes a fixed VHD as raw (it looks at the head only); the footer is what gives it away.
  { name: 'VHD fixed (convert)', make: convert('vpc', '-o', 'subformat=fixed'), qemuFormat: 'raw', format: 'VHD', structure: 'vhd.footer.cookie', offset: (size) => size - 512 },
  { name: 'VHDX (create)', make: create('vhdx'), qemuFormat: 'vhdx', format: 'VHDX', structure: 'vhdx.file_identifier.signature', offset: at(0) },
  { name: 'VHDX (convert)', make: convert('vhdx'), qemuFormat: 'vhdx', format: 'VHDX', structure: 'vhdx.file_identifier.signature', offset: at(0) },
  { name: 'VDI (create)', make: create('vdi'), qemuFormat: 'vdi', format: 'VDI', structure: 'vdi.header.signature', offset: at(0x40) },
  { name: 'VDI static (convert)', make: convert('vdi', '-o', 'static=on'), qemuFormat: 'vdi', format: 'VDI', structure: 'vdi.header.signature', offset: at(0x40) },
  { name: 'QED (create)', make: create('qed'), qemuFormat: 'qed', format: 'QED', structure: 'qed.header.magic', offset: at(0) },
  { name: 'QED (convert)', make: convert('qed'), qemuFormat: 'qed', format: 'QED', structure: 'qed.header.magic', offset: at(0) },
  { name: 'Parallels (create)', make: create('parallels'), qemuFormat: 'parallels', format: 'Parallels', structure: 'parallels.header.magic', offset: at(0) },
  { name: 'Parallels (convert)', make: convert('parallels'), qemuFormat: 'parallels', format: 'Parallels', structure: 'parallels.header.magic', offset: at(0) },
  { name: 'qcow version 1 (create)', make: create('qcow'), qemuFormat: 'qcow', format: 'QCOW (version 1)', structure: 'qcow.header.version', offset: at(4) },
];

const latin1 = (s: string) => Buffer.from(s, 'latin1');

/** Heads built by hand for the formats qemu-img cannot write (or, for LUKS, only slowly). */
interface HandMade {
  name: string;
  bytes: () => Buffer;
  /** What `qemu-img info` says about it (a format name, or a pattern of its refusal), where qemu probes it. */
  qemu?: RegExp;
  format: string;
  structure: string;
  offset: (size: number) => number;
}

const HAND_MADE: HandMade[] = [
  {
    name: 'Bochs redolog',
    bytes: () => {
      // bochs.c: magic[32], type[16], subtype[16], version, header size, then catalog, bitmap, extent, reserved, disk size.
      const b = Buffer.alloc(512 + 4 * 32, 0xff);
      b.fill(0, 0, 512);
      latin1('Bochs Virtual HD Image\0').copy(b, 0);
      latin1('Redolog\0').copy(b, 32);
      latin1('Growing\0').copy(b, 48);
      b.writeUInt32LE(0x00020000, 64);
      b.writeUInt32LE(512, 68);
      b.writeUInt32LE(32, 72);
      b.writeUInt32LE(1, 76);
      b.writeUInt32LE(32768, 80);
      b.writeBigUInt64LE(BigInt(MiB), 88);
      return b;
    },
    qemu: /^bochs$/,
    format: 'Bochs',
    structure: 'bochs.header.magic',
    offset: at(0),
  },
  {
    name: 'cloop V2.0',
    bytes: () => {
      // The shell preamble padded to 128 bytes, block size and count (big-endian), then n+1 offsets.
      const b = Buffer.alloc(128 + 8 + 16);
      latin1('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n').copy(b, 0);
      b.writeUInt32BE(65536, 128);
      b.writeUInt32BE(1, 132);
      b.writeBigUInt64BE(BigInt(b.length), 136);
      b.writeBigUInt64BE(BigInt(b.length), 144);
      return b;
    },
    qemu: /^cloop$/,
    format: 'cloop',
    structure: 'cloop.header.preamble',
    offset: at(0),
  },
  {
    name: 'LUKS1 header',
    bytes: () => {
      const b = Buffer.alloc(64 * 1024);
      latin1('LUKS\xba\xbe').copy(b, 0);
      b.writeUInt16BE(1, 6);
      latin1('aes').copy(b, 8);
      latin1('xts-plain64').copy(b, 40);
      return b;
    },
    // qemu picks its luks driver (and then refuses this header, which has no key slots).
    qemu: /LUKS/,
    format: 'LUKS1',
    structure: 'luks.header.magic',
    offset: at(0),
  },
  {
    name: 'LUKS2 header',
    bytes: () => {
      // LUKS2 on-disk format: magic, version 2, hdr_size (u64 BE), ... checksum algorithm, label; JSON area follows.
      const b = Buffer.alloc(64 * 1024);
      latin1('LUKS\xba\xbe').copy(b, 0);
      b.writeUInt16BE(2, 6);
      b.writeBigUInt64BE(16384n, 8);
      latin1('sha256').copy(b, 72);
      latin1('SKUL\xba\xbe').copy(b, 16384);
      b.writeUInt16BE(2, 16384 + 6);
      return b;
    },
    format: 'LUKS2',
    structure: 'luks.header.magic',
    offset: at(0),
  },
  {
    name: 'dmg (UDIF koly trailer)',
    bytes: () => {
      // Apple UDIF: data, then the 512-byte koly block: signature, version 4, headerSize 512 (big-endian).
      const b = Buffer.alloc(MiB);
      const k = b.length - 512;
      latin1('koly').copy(b, k);
      b.writeUInt32BE(4, k + 4);
      b.writeUInt32BE(512, k + 8);
      return b;
    },
    format: 'DMG',
    structure: 'dmg.koly.signature',
    offset: (size) => size - 512,
  },
];

async function expectRefused(file: string, format: string, structure: string, offset: number): Promise<void> {
  const data = { file, structure, offset, format };
  const e = await expectImgError(() => probeFormat(file), 'UNSUPPORTED_FORMAT', data);
  expect(e.message).toContain(`${format} images are not supported (supported: qcow2, VMDK, raw)`);
  expect(e.message).toContain('-f raw');
  await expectImgError(() => openImage(file), 'UNSUPPORTED_FORMAT', data);
  await expectImgError(() => openChain(file), 'UNSUPPORTED_FORMAT', data);
  await expectImgError(() => checkImage(file), 'UNSUPPORTED_FORMAT', data);
  // An explicit format still forces raw: the bytes as they are.
  const raw = await openImage(file, { format: 'raw' });
  try {
    expect(raw.format).toBe('raw');
    const size = Math.min(raw.size, 4096);
    expect(Buffer.from(await raw.read(0, size)).equals(readFileSync(file).subarray(0, size))).toBe(true);
  } finally {
    await raw.close();
  }
}

describe('formats qemu-img writes are refused, named', () => {
  test.each(QEMU_MADE)('$name', async (c) => {
    const file = join(tmp(), `${c.name.replace(/\W+/g, '_')}.img`);
    c.make(file);
    expect(qemuProbe(file)).toBe(c.qemuFormat);
    await expectRefused(file, c.format, c.structure, c.offset(readFileSync(file).length));
  });
});

describe('hand-built heads of formats qemu-img cannot write are refused, named', () => {
  test.each(HAND_MADE)('$name', async (c) => {
    const file = join(tmp(), `${c.name.replace(/\W+/g, '_')}.img`);
    const bytes = c.bytes();
    writeFileSync(file, bytes);
    if (c.qemu !== undefined) expect(qemuProbe(file)).toMatch(c.qemu);
    await expectRefused(file, c.format, c.structure, c.offset(bytes.length));
  });
});

describe('a recorded backing format we do not read is refused by name', () => {
  test('a qcow2 overlay on a VHDX base recorded as -F vhdx', async () => {
    const base = join(tmp(), 'named-base.vhdx');
    const top = join(tmp(), 'named-top.qcow2');
    qemuImg('create', '-q', '-f', 'vhdx', base, '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'vhdx', top);
    const e = await expectImgError(() => openChain(top), 'UNSUPPORTED_FORMAT', { file: base, format: 'VHDX' });
    expect(e.message).toContain('format "vhdx" (VHDX) is not supported');
  });
  test('a qcow2 overlay on a VHD base with no recorded format: the probe refuses it', async () => {
    const base = join(tmp(), 'probed-base.vhd');
    const top = join(tmp(), 'probed-top.qcow2');
    qemuImg('create', '-q', '-f', 'vpc', base, '4M');
    qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'vpc', top);
    // Drop the backing format extension (its type becomes an unknown one, which readers ignore).
    const b = readFileSync(top);
    const pos = b.indexOf(Buffer.from([0xe2, 0x79, 0x2a, 0xca]));
    expect(pos).toBeGreaterThan(0);
    b.writeUInt32BE(0x12345678, pos);
    writeFileSync(top, b);
    await expectImgError(() => openChain(top), 'UNSUPPORTED_FORMAT', { file: base, structure: 'vhd.footer.cookie', offset: 0, format: 'VHD' });
  });
});

describe('ordinary raw disks stay raw', () => {
  function rawDisk(name: string): string {
    const file = join(tmp(), name);
    writeFileSync(file, Buffer.alloc(8 * MiB));
    return file;
  }
  test.each([
    ['an MBR-partitioned disk', (f: string) => sh('sfdisk', ['-q', f], { input: 'label: dos\nstart=2048, size=4096, type=83\n' })],
    ['a GPT-partitioned disk', (f: string) => sh('sgdisk', ['-n', '1:2048:+2M', f])],
    ['a bare ext4 file system', (f: string) => sh('mkfs.ext4', ['-q', '-F', f])],
    ['a bare FAT file system', (f: string) => sh('mkfs.vfat', [f])],
    ['an all-zero disk', () => undefined],
    ['seeded random bytes', (f: string) => writeFileSync(f, readFileSync(source))],
  ])('%s', async (name, make) => {
    const file = rawDisk(`${name.replace(/\W+/g, '_')}.raw`);
    make(file);
    expect(qemuProbe(file)).toBe('raw');
    expect(await probeFormat(file)).toBe('raw');
    const image = await openImage(file);
    expect(image.format).toBe('raw');
    await image.close();
  });

  test('a qcow2 and a VMDK are still theirs (their tails are not looked at)', async () => {
    const q = join(tmp(), 'plain.qcow2');
    qemuImg('create', '-q', '-f', 'qcow2', q, '4M');
    qemuIo(q, ['write -P 0x11 0 64k']);
    expect(await probeFormat(q)).toBe('qcow2');
    const v = join(tmp(), 'plain.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', v, '4M');
    expect(await probeFormat(v)).toBe('vmdk');
  });
});

describe('the CLI', () => {
  test('refuses a VHDX with exit 2 and the message, and reads it with -f raw', () => {
    const file = join(tmp(), 'cli.vhdx');
    qemuImg('create', '-q', '-f', 'vhdx', file, '4M');
    const r = imgdedup(['info', file]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('[UNSUPPORTED_FORMAT]');
    expect(r.stderr).toContain('VHDX images are not supported (supported: qcow2, VMDK, raw); convert with qemu-img convert -O qcow2, or pass -f raw to read the bytes as raw');
    const raw = imgdedup(['info', '-f', 'raw', file]);
    expect(raw.status, raw.stderr).toBe(0);
    expect(raw.stdout).toMatch(/file format: raw/);
  });
});
