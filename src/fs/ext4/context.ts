/**
 * What every ext4 decoder needs besides bytes: the file name for error messages, the
 * checksum policy, the diagnostics list that 'warn' mode fills, and where the filesystem
 * lies. Decoders work in filesystem bytes (from the filesystem's first byte); the error
 * data they build names the same place three ways (README, "Errors"): `fsOffset` within
 * the filesystem, `deviceOffset` on the guest disk (the partition's start added), and
 * `offset` in the image file when that is known (a raw image without a backing file,
 * whose file bytes are the disk's bytes).
 */
import { ByteReader, type ByteReaderContext } from '../../diskimage/ByteReader.js';
import { CorruptImageError, type ErrorData } from '../../errors.js';

/** How checksum mismatches are handled: throw BAD_CHECKSUM, or record a diagnostic and go on. */
export type ChecksumPolicy = 'error' | 'warn';

/** A problem that 'warn' mode let pass. */
export interface Ext4Diagnostic {
  readonly code: 'BAD_CHECKSUM';
  readonly structure: string;
  /** Byte of the guest disk. */
  readonly deviceOffset: number;
  readonly message: string;
}

/** Where the filesystem lies, so that errors name bytes a user can seek to. */
export interface FsLocation {
  /** Byte of the guest disk at which the filesystem starts (a partition's start, --offset). */
  readonly diskStart: number;
  /** Whether the image file's bytes are the disk's bytes (a raw image without a backing file). */
  readonly fileIsDisk: boolean;
}

export interface Ext4Context {
  readonly file: string;
  readonly verifyChecksums: ChecksumPolicy;
  readonly diagnostics: Ext4Diagnostic[];
  /** Default: the filesystem is the whole of `file` (offset = deviceOffset = fsOffset). */
  readonly location?: FsLocation;
}

/** The error offsets of filesystem byte `fsOffset`. */
export function locate(ctx: Ext4Context, fsOffset: number): { offset?: number; deviceOffset: number; fsOffset: number } {
  const deviceOffset = (ctx.location?.diskStart ?? 0) + fsOffset;
  return { ...((ctx.location?.fileIsDisk ?? true) ? { offset: deviceOffset } : {}), deviceOffset, fsOffset };
}

/** A ByteReader over filesystem bytes whose errors carry the offsets of `locate`. */
export class FsByteReader extends ByteReader {
  constructor(
    bytes: Uint8Array,
    c: ByteReaderContext,
    private readonly fsCtx: Ext4Context,
  ) {
    super(bytes, c);
  }
  override at(rel: number, field?: string): ErrorData & { file: string; structure: string } {
    const { offset: fsOffset, ...rest } = super.at(rel, field);
    return { ...rest, ...locate(this.fsCtx, fsOffset ?? this.ctx.base + rel) };
  }
  override sub(rel: number, length: number, structure: string): FsByteReader {
    return new FsByteReader(this.slice(rel, length, structure), { ...this.ctx, structure, base: this.ctx.base + rel }, this.fsCtx);
  }
}

/** A reader over bytes read from filesystem byte `fsOffset`. */
export function fsReader(ctx: Ext4Context, bytes: Uint8Array, structure: string, fsOffset: number): FsByteReader {
  const c: ByteReaderContext = { file: ctx.file, structure, base: fsOffset };
  return new FsByteReader(bytes, c, ctx);
}

/** Error data for an ext4 structure at filesystem byte `fsOffset`. */
export function fsAt(ctx: Ext4Context, structure: string, fsOffset: number, extra: ErrorData = {}): ErrorData {
  return { file: ctx.file, structure, ...locate(ctx, fsOffset), ...extra };
}

/** Throws CORRUPT_IMAGE for an ext4 structure at filesystem byte `fsOffset`. */
export function fsCorrupt(ctx: Ext4Context, structure: string, fsOffset: number, detail: string, extra: ErrorData = {}): never {
  throw new CorruptImageError('CORRUPT_IMAGE', fsAt(ctx, structure, fsOffset, { detail, ...extra }));
}

const hex = (v: number): string => `0x${(v >>> 0).toString(16).padStart(8, '0')}`;

/**
 * Compares a stored checksum with the computed one. On mismatch: BAD_CHECKSUM under
 * 'error', a diagnostic under 'warn'. Returns whether it matched.
 */
export function checkChecksum(ctx: Ext4Context, structure: string, fsOffset: number, stored: number, computed: number): boolean {
  if (stored >>> 0 === computed >>> 0) return true;
  const data = fsAt(ctx, structure, fsOffset, { detail: 'checksum mismatch', expected: hex(computed), actual: hex(stored) });
  if (ctx.verifyChecksums === 'error') throw new CorruptImageError('BAD_CHECKSUM', data);
  const message = new CorruptImageError('BAD_CHECKSUM', data).message;
  // A structure is checked each time it is read (a lookup, then the listing), but is one failure.
  let met = diagnosed.get(ctx.diagnostics);
  if (met === undefined) diagnosed.set(ctx.diagnostics, (met = new Set()));
  if (met.has(message)) return false;
  met.add(message);
  ctx.diagnostics.push({ code: 'BAD_CHECKSUM', structure, deviceOffset: locate(ctx, fsOffset).deviceOffset, message });
  return false;
}

/** The messages already in each diagnostics list (checkChecksum records each failure once). */
const diagnosed = new WeakMap<Ext4Diagnostic[], Set<string>>();
