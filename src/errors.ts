/**
 * Typed errors with stable codes. Every failure that reaches the user is an
 * ImgdedupError: its class picks the exit code, its `code` names the fault and
 * never changes, and its `data` carries the facts (file, structure, byte offset).
 * Only cli.ts catches everything; library code throws these and never prints.
 */

/** Exit codes, by error category. Documented in README.md ("Exit codes"). */
export const EXIT = {
  OK: 0,
  USAGE: 1,
  INVALID_INPUT: 2,
  CONFLICT: 3,
  VERIFY: 4,
  IO: 5,
  INTERNAL: 70,
} as const;

/** Every stable error code, with the category (and so exit code) it belongs to. */
export const ERROR_CODES = {
  USAGE: 'UsageError',
  CORRUPT_IMAGE: 'CorruptImageError',
  TRUNCATED: 'CorruptImageError',
  BAD_CHECKSUM: 'CorruptImageError',
  BACKING_CHAIN_LOOP: 'CorruptImageError',
  BACKING_CHAIN_TOO_DEEP: 'CorruptImageError',
  BACKING_FILE_MISSING: 'CorruptImageError',
  EXTENT_FILE_MISSING: 'CorruptImageError',
  PARENT_CID_MISMATCH: 'CorruptImageError',
  IMAGE_MARKED_CORRUPT: 'CorruptImageError',
  CHECK_FAILED: 'CorruptImageError',
  UNKNOWN_FORMAT: 'UnsupportedError',
  UNSUPPORTED_FEATURE: 'UnsupportedError',
  UNSUPPORTED_FORMAT: 'UnsupportedError',
  ENCRYPTED: 'UnsupportedError',
  DIRTY_FILESYSTEM: 'RefusedError',
  OUTPUT_EXISTS: 'RefusedError',
  SIZE_MISMATCH: 'RefusedError',
  UNCLEAN_SHUTDOWN: 'RefusedError',
  NO_SPACE: 'RefusedError',
  BAD_UPDATE: 'RefusedError',
  WRITE_REFUSED: 'RefusedError',
  WRONG_BASE: 'RefusedError',
  MERGE_CONFLICT: 'ConflictError',
  VERIFY_FAILED: 'VerificationError',
  IO: 'IoError',
  INTERNAL: 'InternalError',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/**
 * Facts about an error. The three offsets name one place (README, "Errors"): for input
 * errors `offset` is absolute within `file` (given only where known); for structures
 * of a guest filesystem `deviceOffset` is the byte of the guest disk (the whole virtual
 * disk, partitions included) and `fsOffset` the byte within the filesystem.
 */
export interface ErrorData {
  readonly file?: string;
  readonly structure?: string;
  /** Byte offset within `file`: where `dd skip=` on the file lands. */
  readonly offset?: number;
  /** Byte offset within the guest disk (for guest-filesystem structures). */
  readonly deviceOffset?: number;
  /** Byte offset within the guest filesystem (from its first byte, as debugfs counts). */
  readonly fsOffset?: number;
  readonly expected?: string | number;
  readonly actual?: string | number;
  readonly detail?: string;
  readonly [key: string]: unknown;
}

function formatValue(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Builds the one-line message from the data, so message and data never disagree. */
export function formatMessage(code: ErrorCode, data: ErrorData): string {
  const where: string[] = [];
  if (data.structure !== undefined) where.push(data.structure);
  // Each offset only when it adds something: a raw image's file bytes are its disk bytes,
  // and a filesystem on the whole disk starts at disk byte 0.
  if (data.offset !== undefined) where.push(`at byte ${data.offset}`);
  if (data.deviceOffset !== undefined && data.offset === undefined) where.push(`at disk byte ${data.deviceOffset}`);
  else if (data.deviceOffset !== undefined && data.deviceOffset !== data.offset) where.push(`(disk byte ${data.deviceOffset})`);
  if (data.fsOffset !== undefined && data.fsOffset !== data.deviceOffset) where.push(`(filesystem byte ${data.fsOffset})`);
  let msg = data.file !== undefined ? `${data.file}: ` : '';
  if (where.length > 0) msg += `${where.join(' ')}: `;
  msg += data.detail ?? code.toLowerCase().replace(/_/g, ' ');
  const facts: string[] = [];
  if (data.expected !== undefined) facts.push(`expected ${formatValue(data.expected)}`);
  if (data.actual !== undefined) facts.push(`got ${formatValue(data.actual)}`);
  if (facts.length > 0) msg += ` (${facts.join(', ')})`;
  return msg;
}

export abstract class ImgdedupError extends Error {
  abstract readonly exitCode: number;
  constructor(
    readonly code: ErrorCode,
    readonly data: ErrorData = {},
    message: string = formatMessage(code, data),
  ) {
    super(message);
    this.name = new.target.name;
  }

  toJSON(): { code: ErrorCode; data: ErrorData; message: string } {
    return { code: this.code, data: this.data, message: this.message };
  }
}

/** Bad command line. Exit 1. */
export class UsageError extends ImgdedupError {
  readonly exitCode = EXIT.USAGE;
  constructor(detail: string, data: ErrorData = {}) {
    super('USAGE', { ...data, detail });
  }
}

type CorruptCode =
  | 'CORRUPT_IMAGE'
  | 'TRUNCATED'
  | 'BAD_CHECKSUM'
  | 'BACKING_CHAIN_LOOP'
  | 'BACKING_CHAIN_TOO_DEEP'
  | 'BACKING_FILE_MISSING'
  | 'EXTENT_FILE_MISSING'
  | 'PARENT_CID_MISMATCH'
  | 'IMAGE_MARKED_CORRUPT'
  | 'CHECK_FAILED';

/** The input is malformed. Exit 2. */
export class CorruptImageError extends ImgdedupError {
  readonly exitCode = EXIT.INVALID_INPUT;
  constructor(code: CorruptCode, data: ErrorData) {
    super(code, data);
  }
}

/** The input is valid but uses something we do not handle. Exit 2. */
export class UnsupportedError extends ImgdedupError {
  readonly exitCode = EXIT.INVALID_INPUT;
  constructor(code: 'UNKNOWN_FORMAT' | 'UNSUPPORTED_FEATURE' | 'UNSUPPORTED_FORMAT' | 'ENCRYPTED', data: ErrorData) {
    super(code, data);
  }
}

/**
 * We could proceed but must not (dirty filesystem, output exists, an update that does not
 * fit or names a path outside the filesystem, a filesystem the writer cannot keep correct).
 * Exit 2.
 */
export class RefusedError extends ImgdedupError {
  readonly exitCode = EXIT.INVALID_INPUT;
  constructor(code: 'DIRTY_FILESYSTEM' | 'OUTPUT_EXISTS' | 'SIZE_MISMATCH' | 'UNCLEAN_SHUTDOWN' | 'NO_SPACE' | 'BAD_UPDATE' | 'WRITE_REFUSED' | 'WRONG_BASE', data: ErrorData) {
    super(code, data);
  }
}

/** A rebase met a conflict under `--conflict fail`. Exit 3. */
export class ConflictError extends ImgdedupError {
  readonly exitCode = EXIT.CONFLICT;
  constructor(data: ErrorData) {
    super('MERGE_CONFLICT', data);
  }
}

/** An output failed its own verification. Exit 4. */
export class VerificationError extends ImgdedupError {
  readonly exitCode = EXIT.VERIFY;
  constructor(data: ErrorData) {
    super('VERIFY_FAILED', data);
  }
}

/** The operating system refused an I/O operation. Exit 5. */
export class IoError extends ImgdedupError {
  readonly exitCode = EXIT.IO;
  constructor(data: ErrorData & { errno?: string }) {
    super('IO', data);
  }
}

/** A bug: our own invariant did not hold. Exit 70. */
export class InternalError extends ImgdedupError {
  readonly exitCode = EXIT.INTERNAL;
  constructor(detail: string, data: ErrorData = {}) {
    super('INTERNAL', { ...data, detail });
  }
}

/** What the operating system said, in words (no errno names, syscalls or quoted paths). */
const ERRNO_TEXT: Readonly<Record<string, string>> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'a component of the path is not a directory',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large',
  EROFS: 'read-only file system',
  EEXIST: 'file exists',
  EIO: 'input/output error',
  ELOOP: 'too many levels of symbolic links',
  ENAMETOOLONG: 'file name too long',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  EBUSY: 'device or resource busy',
  EXDEV: 'not on the same file system',
  ENXIO: 'no such device or address',
  ENODEV: 'no such device',
  EINVAL: 'invalid argument',
  ETXTBSY: 'text file busy',
};

/**
 * The OS's reason without Node's decoration: Node messages read
 * "ENOENT: no such file or directory, realpath 'x'", which names the syscall and
 * may name a temporary path rather than the user's.
 */
export function describeOsError(err: unknown): string {
  const e = err as Partial<NodeJS.ErrnoException> | undefined;
  const code = typeof e?.code === 'string' ? e.code : undefined;
  if (code !== undefined && ERRNO_TEXT[code] !== undefined) return ERRNO_TEXT[code];
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const m = /^[A-Z0-9_]+: (.*?)(?:, [a-z_0-9]+(?: '.*)?)?$/s.exec(message);
  return m !== null ? m[1]! : message;
}

/** Wraps a Node system error (ENOENT, EACCES, ENOSPC, ...) as an IoError naming the file. */
export function wrapIoError(err: unknown, file: string, operation: string): ImgdedupError {
  if (err instanceof ImgdedupError) return err;
  const e = err as NodeJS.ErrnoException;
  return new IoError({
    file,
    detail: `cannot ${operation}: ${describeOsError(err)}`,
    ...(typeof e?.code === 'string' ? { errno: e.code } : {}),
  });
}

/** The exit code for anything thrown: ImgdedupErrors by category, anything else is a bug. */
export function exitCodeFor(err: unknown): number {
  return err instanceof ImgdedupError ? err.exitCode : EXIT.INTERNAL;
}
