/**
 * Corrupt and unsupported VMDK input: each validation rule fails with its typed
 * error, naming the structure and byte offset. Inputs are qemu-img-made images,
 * patched at known offsets.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync, unlinkSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { useTempDir } from '../../helpers/tmp.js';
import { qemuImg, qemuIo } from '../../helpers/qemu.js';
import { expectImgError } from '../../helpers/expectImgError.js';
import { VmdkImage } from '../../../src/diskimage/vmdk/VmdkImage.js';

const tmp = useTempDir('imgdedup-vmdkc-');
let n = 0;

/** A monolithicSparse image with data, and its bytes. */
function sparse(): { path: string; bytes: Buffer } {
  const path = join(tmp(), `c${n++}.vmdk`);
  qemuImg('create', '-q', '-f', 'vmdk', path, '8M');
  qemuIo(path, ['write -P 0x5a 0 1M'], 'vmdk');
  return { path, bytes: readFileSync(path) };
}
function patched(bytes: Buffer, edit: (b: Buffer) => void): string {
  const b = Buffer.from(bytes);
  edit(b);
  const path = join(tmp(), `p${n++}.vmdk`);
  writeFileSync(path, b);
  return path;
}
async function readAllOf(path: string): Promise<Buffer> {
  const img = await VmdkImage.open(path);
  try {
    return Buffer.from(await img.read(0, img.size));
  } finally {
    await img.close();
  }
}

describe('corrupt VMDK input', () => {
  it('a sparse header with a bad version: CORRUPT_IMAGE at byte 4', async () => {
    const { bytes } = sparse();
    const p = patched(bytes, (b) => b.writeUInt32LE(9, 4));
    await expectImgError(() => VmdkImage.open(p), 'CORRUPT_IMAGE', { file: p, structure: 'vmdk.header.version', offset: 4 });
  });

  it('a file that is neither a sparse extent nor a descriptor: CORRUPT_IMAGE at byte 0', async () => {
    const { bytes } = sparse();
    const p = patched(bytes.subarray(0, 4096), (b) => b.write('XXXX', 0, 'latin1'));
    await expectImgError(() => VmdkImage.open(p), 'CORRUPT_IMAGE', { file: p, structure: 'vmdk.descriptor', offset: 0 });
  });

  it('COWD extents are refused as UNSUPPORTED_FORMAT, named', async () => {
    const { bytes } = sparse();
    const p = patched(bytes, (b) => b.write('COWD', 0, 'latin1'));
    const e = await expectImgError(() => VmdkImage.open(p), 'UNSUPPORTED_FORMAT', { structure: 'vmdk.header.magicNumber', offset: 0 });
    expect(e.message).toContain('COWD');
  });

  it('the unclean-shutdown flag: UNCLEAN_SHUTDOWN at byte 72', async () => {
    const { bytes } = sparse();
    const p = patched(bytes, (b) => (b[72] = 1));
    await expectImgError(() => VmdkImage.open(p), 'UNCLEAN_SHUTDOWN', { structure: 'vmdk.header.uncleanShutdown', offset: 72 });
  });

  it('a primary grain directory outside the file falls back to the redundant one, with a warning', async () => {
    const { path, bytes } = sparse();
    const p = patched(bytes, (b) => b.writeBigUInt64LE(0xfffffffn, 56));
    const img = await VmdkImage.open(p);
    try {
      expect(img.warnings.join('\n')).toMatch(/primary grain directory is damaged.*redundant/);
      expect(img.details.grainDirectory).toBe('redundant');
    } finally {
      await img.close();
    }
    expect((await readAllOf(p)).equals(await readAllOf(path))).toBe(true);
  });

  it('both grain directories outside the file: CORRUPT_IMAGE at gdOffset (byte 56)', async () => {
    const { bytes } = sparse();
    const p = patched(bytes, (b) => {
      b.writeBigUInt64LE(0xfffffffn, 56);
      b.writeBigUInt64LE(0xfffffffn, 48);
    });
    await expectImgError(() => VmdkImage.open(p), 'CORRUPT_IMAGE', { structure: 'vmdk.header.gdOffset', offset: 56 });
  });

  it('a grain table entry outside the file: CORRUPT_IMAGE at the GTE', async () => {
    const { bytes } = sparse();
    const gdSector = Number(bytes.readBigUInt64LE(56));
    const rgdSector = Number(bytes.readBigUInt64LE(48));
    const gt = bytes.readUInt32LE(gdSector * 512);
    const rgt = bytes.readUInt32LE(rgdSector * 512);
    const p = patched(bytes, (b) => {
      b.writeUInt32LE(0x7fffffff, gt * 512 + 4);
      b.writeUInt32LE(0x7fffffff, rgt * 512 + 4);
    });
    await expectImgError(() => readAllOf(p), 'CORRUPT_IMAGE', { structure: 'vmdk.gt[0][1]', offset: gt * 512 + 4 });
  });

  it('descriptor garbage: CORRUPT_IMAGE at the offending line', async () => {
    const { bytes } = sparse();
    const at = bytes.indexOf('version=1');
    const p = patched(bytes, (b) => b.write('@@@=garb', at, 'latin1'));
    await expectImgError(() => VmdkImage.open(p), 'CORRUPT_IMAGE', { structure: 'vmdk.descriptor', offset: at });
  });

  it('a bad CID: CORRUPT_IMAGE at the CID line', async () => {
    const { bytes } = sparse();
    const at = bytes.indexOf('CID=');
    const p = patched(bytes, (b) => b.write('CID=zz', at, 'latin1'));
    await expectImgError(() => VmdkImage.open(p), 'CORRUPT_IMAGE', { structure: 'vmdk.descriptor.CID', offset: at });
  });

  it.each(['vmfsSparse', 'seSparse'])('createType %s is refused as UNSUPPORTED_FORMAT, named', async (type) => {
    const { bytes } = sparse();
    const at = bytes.indexOf('createType=');
    const end = bytes.indexOf('\n', at);
    const p = patched(bytes, (b) => {
      const line = `createType="${type}"`.padEnd(end - at, ' ');
      b.write(line, at, 'latin1');
    });
    const e = await expectImgError(() => VmdkImage.open(p), 'UNSUPPORTED_FORMAT', { structure: 'vmdk.descriptor.createType', offset: at, actual: type });
    expect(e.message).toContain(type);
  });

  it('a missing extent file: EXTENT_FILE_MISSING at the descriptor line', async () => {
    const desc = join(tmp(), 'miss.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentFlat', desc, '8M');
    const text = readFileSync(desc, 'latin1');
    const at = text.indexOf('RW ');
    unlinkSync(join(tmp(), 'miss-f001.vmdk'));
    const e = await expectImgError(() => VmdkImage.open(desc), 'EXTENT_FILE_MISSING', { file: desc, structure: 'vmdk.descriptor.extent[0]', offset: at, line: 'RW 16384 FLAT "miss-f001.vmdk" 0' });
    expect(e.exitCode).toBe(2);
  });

  it('a flat extent beyond its file: CORRUPT_IMAGE at the descriptor line', async () => {
    const desc = join(tmp(), 'short.vmdk');
    qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', desc, '8M');
    truncateSync(join(tmp(), 'short-flat.vmdk'), 4 * 1024 * 1024);
    const at = readFileSync(desc, 'latin1').indexOf('RW ');
    await expectImgError(() => VmdkImage.open(desc), 'CORRUPT_IMAGE', { structure: 'vmdk.descriptor.extent[0]', offset: at });
  });

  it('a stream-optimized extent whose footer is missing: CORRUPT_IMAGE at the footer', async () => {
    const raw = join(tmp(), 'so.raw');
    qemuImg('create', '-q', '-f', 'raw', raw, '8M');
    qemuIo(raw, ['write -P 1 0 1M'], 'raw');
    const so = join(tmp(), 'so.vmdk');
    qemuImg('convert', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, so);
    const bytes = readFileSync(so);
    // Claim GD_AT_END in the header: the reader must then find a footer marker, and there is none.
    const p = patched(bytes, (b) => b.writeBigUInt64LE(0xffffffffffffffffn, 56));
    await expectImgError(() => VmdkImage.open(p), 'CORRUPT_IMAGE', { structure: 'vmdk.footer', offset: bytes.length - 1536 });
  });
});
