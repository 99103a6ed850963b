/**
 * Bounds-checked reads of on-disk structures. Every failure is a CorruptImageError
 * that names the file, the structure and the absolute byte offset, so a parser never
 * has to remember where its buffer came from.
 */
import { CorruptImageError, type ErrorData } from '../errors.js';

export interface ByteReaderContext {
  /** The file the bytes were read from, for error messages. */
  readonly file: string;
  /** The structure name, e.g. `qcow2.header`. */
  readonly structure: string;
  /** Absolute byte offset of `bytes[0]` within `file`. */
  readonly base: number;
  /** Extra facts to attach to every error (e.g. deviceOffset base). */
  readonly extra?: ErrorData;
}

/** Converts a bigint to a number, refusing values above 2^53 as corrupt. */
export function toSafeNumber(value: bigint, ctx: ErrorData): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < 0n) {
    throw new CorruptImageError('CORRUPT_IMAGE', {
      ...ctx,
      detail: 'value does not fit in 53 bits',
      actual: `0x${value.toString(16)}`,
    });
  }
  return Number(value);
}

export class ByteReader {
  private readonly view: DataView;

  constructor(
    readonly bytes: Uint8Array,
    readonly ctx: ByteReaderContext,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get length(): number {
    return this.bytes.byteLength;
  }

  /** Error data for a field at relative offset `rel`. */
  at(rel: number, field?: string): ErrorData & { file: string; structure: string } {
    return {
      ...this.ctx.extra,
      file: this.ctx.file,
      structure: field === undefined ? this.ctx.structure : `${this.ctx.structure}.${field}`,
      offset: this.ctx.base + rel,
    };
  }

  /** Throws CORRUPT_IMAGE for a field at relative offset `rel`. */
  fail(rel: number, field: string, detail: string, extra: ErrorData = {}): never {
    throw new CorruptImageError('CORRUPT_IMAGE', { ...this.at(rel, field), detail, ...extra });
  }

  private check(rel: number, size: number, field?: string): void {
    if (!Number.isInteger(rel) || rel < 0 || rel + size > this.bytes.byteLength) {
      throw new CorruptImageError('TRUNCATED', {
        ...this.at(rel, field),
        detail: `structure ends before its ${size}-byte field (${this.bytes.byteLength} bytes available)`,
      });
    }
  }

  u8(rel: number, field?: string): number {
    this.check(rel, 1, field);
    return this.view.getUint8(rel);
  }
  u16be(rel: number, field?: string): number {
    this.check(rel, 2, field);
    return this.view.getUint16(rel, false);
  }
  u16le(rel: number, field?: string): number {
    this.check(rel, 2, field);
    return this.view.getUint16(rel, true);
  }
  u32be(rel: number, field?: string): number {
    this.check(rel, 4, field);
    return this.view.getUint32(rel, false);
  }
  u32le(rel: number, field?: string): number {
    this.check(rel, 4, field);
    return this.view.getUint32(rel, true);
  }
  /** Raw 64-bit big-endian value, for fields that are bit sets (feature flags, table entries). */
  u64beBig(rel: number, field?: string): bigint {
    this.check(rel, 8, field);
    return this.view.getBigUint64(rel, false);
  }
  u64leBig(rel: number, field?: string): bigint {
    this.check(rel, 8, field);
    return this.view.getBigUint64(rel, true);
  }
  /** 64-bit big-endian value as a number; CORRUPT_IMAGE above 2^53. */
  u64be(rel: number, field?: string): number {
    return toSafeNumber(this.u64beBig(rel, field), this.at(rel, field));
  }
  u64le(rel: number, field?: string): number {
    return toSafeNumber(this.u64leBig(rel, field), this.at(rel, field));
  }
  /** A sub-slice (no copy), bounds-checked. */
  slice(rel: number, length: number, field?: string): Uint8Array {
    this.check(rel, length, field);
    return this.bytes.subarray(rel, rel + length);
  }
  /** A sub-reader over [rel, rel+length) whose errors keep absolute offsets. */
  sub(rel: number, length: number, structure: string): ByteReader {
    return new ByteReader(this.slice(rel, length, structure), {
      ...this.ctx,
      structure,
      base: this.ctx.base + rel,
    });
  }
}
