/**
 * What every ext4 decoder needs besides bytes: the file name for error messages, the
 * checksum policy, and the diagnostics list that 'warn' mode fills. fs code never
 * knows the offset within the image file (the device may be a partition of a qcow2
 * chain), so `offset` and `deviceOffset` both hold the byte offset within the device.
 */
import { ByteReader, type ByteReaderContext } from '../../diskimage/ByteReader.js';
import { CorruptImageError, type ErrorData } from '../../errors.js';

/** How checksum mismatches are handled: throw BAD_CHECKSUM, or record a diagnostic and go on. */
export type ChecksumPolicy = 'error' | 'warn';

/** A problem that 'warn' mode let pass. */
export interface Ext4Diagnostic {
  readonly code: 'BAD_CHECKSUM';
  readonly structure: string;
  readonly deviceOffset: number;
  readonly message: string;
}

export interface Ext4Context {
  readonly file: string;
  readonly verifyChecksums: ChecksumPolicy;
  readonly diagnostics: Ext4Diagnostic[];
}

/** A ByteReader whose errors carry `deviceOffset` (equal to `offset`) as well. */
export class FsByteReader extends ByteReader {
  override at(rel: number, field?: string): { file: string; structure: string; offset: number } {
    const a = super.at(rel, field);
    return { ...a, deviceOffset: a.offset } as { file: string; structure: string; offset: number };
  }
  override sub(rel: number, length: number, structure: string): FsByteReader {
    return new FsByteReader(this.slice(rel, length, structure), { ...this.ctx, structure, base: this.ctx.base + rel });
  }
}

/** A reader over bytes read from device byte `deviceOffset`. */
export function fsReader(ctx: Ext4Context, bytes: Uint8Array, structure: string, deviceOffset: number): FsByteReader {
  const c: ByteReaderContext = { file: ctx.file, structure, base: deviceOffset };
  return new FsByteReader(bytes, c);
}

/** Error data for an ext4 structure at a device byte offset. */
export function fsAt(ctx: Ext4Context, structure: string, deviceOffset: number, extra: ErrorData = {}): ErrorData {
  return { file: ctx.file, structure, offset: deviceOffset, deviceOffset, ...extra };
}

/** Throws CORRUPT_IMAGE for an ext4 structure at a device byte offset. */
export function fsCorrupt(ctx: Ext4Context, structure: string, deviceOffset: number, detail: string, extra: ErrorData = {}): never {
  throw new CorruptImageError('CORRUPT_IMAGE', fsAt(ctx, structure, deviceOffset, { detail, ...extra }));
}

const hex = (v: number): string => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;

/**
 * Compares a stored checksum with the computed one. On mismatch: BAD_CHECKSUM under
 * 'error', a diagnostic under 'warn'. Returns whether it matched.
 */
export function checkChecksum(ctx: Ext4Context, structure: string, deviceOffset: number, stored: number, computed: number): boolean {
  if (stored >>> 0 === computed >>> 0) return true;
  const data = fsAt(ctx, structure, deviceOffset, { detail: 'checksum mismatch', expected: hex(computed), actual: hex(stored) });
  if (ctx.verifyChecksums === 'error') throw new CorruptImageError('BAD_CHECKSUM', data);
  ctx.diagnostics.push({
    code: 'BAD_CHECKSUM',
    structure,
    deviceOffset,
    message: new CorruptImageError('BAD_CHECKSUM', data).message,
  });
  return false;
}
