/**
 * The tar stream inside a layer file: plain, gzip (RFC 1952, node:zlib) or zstd (RFC 8878,
 * fzstd's streaming decoder), told apart by magic bytes, never by the file's name (the
 * OCI media types allow exactly these three). Output is streamed with bounded memory.
 */
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { Decompress } from 'fzstd';
import { RefusedError } from '../errors.js';

export type LayerCompression = 'none' | 'gzip' | 'zstd';

/** gzip's ID1 ID2 (RFC 1952 2.3.1). */
const GZIP_MAGIC = [0x1f, 0x8b];
/** A zstd frame's magic number 0xFD2FB528, little-endian (RFC 8878 3.1.1). */
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd];
const BZIP2_MAGIC = [0x42, 0x5a, 0x68];
const XZ_MAGIC = [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00];

/** zstd's own default limit on a frame's window (ZSTD_WINDOWLOG_LIMIT_DEFAULT = 27): what `zstd -d` accepts without --memory. */
export const ZSTD_MAX_WINDOW_BYTES = 1 << 27;

function hasMagic(head: Uint8Array, magic: readonly number[]): boolean {
  return head.length >= magic.length && magic.every((b, i) => head[i] === b);
}

/** The compression of a layer from its first bytes; BAD_UPDATE for bzip2 and xz, which OCI layers never use. */
export function detectCompression(head: Uint8Array, file: string): LayerCompression {
  if (hasMagic(head, GZIP_MAGIC)) return 'gzip';
  if (hasMagic(head, ZSTD_MAGIC)) return 'zstd';
  if (hasMagic(head, BZIP2_MAGIC) || hasMagic(head, XZ_MAGIC)) {
    throw new RefusedError('BAD_UPDATE', { file, offset: 0, detail: `${hasMagic(head, XZ_MAGIC) ? 'xz' : 'bzip2'}-compressed layers are not supported (OCI layers are plain, gzip or zstd)` });
  }
  return 'none';
}

/**
 * The window a zstd frame header asks for (RFC 8878 3.1.1.1: window descriptor, or the
 * content size of a single-segment frame); undefined if `head` is too short to tell.
 */
export function zstdWindowBytes(head: Uint8Array): number | undefined {
  if (head.length < 6 || !hasMagic(head, ZSTD_MAGIC)) return undefined;
  const fhd = head[4]!;
  const singleSegment = (fhd >> 5) & 1;
  if (!singleSegment) {
    const wd = head[5]!;
    const base = 2 ** (10 + (wd >> 3));
    return base + (base / 8) * (wd & 7);
  }
  const dictBytes = [0, 1, 2, 4][fhd & 3]!;
  const fcsBytes = [1, 2, 4, 8][fhd >> 6]!;
  const at = 5 + dictBytes;
  if (head.length < at + fcsBytes) return undefined;
  let size = 0;
  for (let i = fcsBytes - 1; i >= 0; i--) size = size * 256 + head[at + i]!;
  return fcsBytes === 2 ? size + 256 : size;
}

/** Where a decompression error is reported: the compressed byte reached, as far as known. */
function badData(file: string, offset: number, what: string, err: unknown): RefusedError {
  const why = err instanceof Error ? err.message : String(err);
  return new RefusedError('BAD_UPDATE', { file, offset, detail: `the ${what} data is corrupt or truncated: ${why}` });
}

async function* gunzip(input: AsyncIterable<Uint8Array>, file: string): AsyncGenerator<Uint8Array> {
  const source = Readable.from(input, { objectMode: false });
  const z = createGunzip({ chunkSize: 1 << 18 });
  source.on('error', (err) => z.destroy(err));
  source.pipe(z);
  try {
    for await (const chunk of z as AsyncIterable<Buffer>) yield chunk;
  } catch (err) {
    if (err instanceof RefusedError) throw err;
    throw badData(file, z.bytesWritten, 'gzip', err);
  } finally {
    source.destroy();
    z.destroy();
  }
}

/**
 * fzstd decodes every complete block of a push and hands them over at once, however much
 * they inflate (a 4-byte RLE block is up to 128 KiB): so the input goes in in small slices,
 * which bounds one push's output (2 KiB in, at most 64 MiB out) whatever the data.
 */
const ZSTD_SLICE_BYTES = 2048;

async function* unzstd(input: AsyncIterable<Uint8Array>, file: string): AsyncGenerator<Uint8Array> {
  let out: Uint8Array[] = [];
  const d = new Decompress((chunk) => {
    out.push(chunk);
  });
  let consumed = 0;
  let head: Uint8Array | undefined = new Uint8Array(0);
  const push = (bytes: Uint8Array, final: boolean): void => {
    try {
      d.push(bytes, final);
    } catch (err) {
      throw badData(file, consumed, 'zstd', err);
    }
    consumed += bytes.length;
  };
  for await (const chunk of input) {
    if (head !== undefined) {
      // The first frame's window, before fzstd allocates it (up to 2 GiB it would).
      head = Buffer.concat([head, chunk]);
      const window = zstdWindowBytes(head);
      if (window === undefined && head.length < 32) continue;
      if (window !== undefined && window > ZSTD_MAX_WINDOW_BYTES) {
        throw new RefusedError('BAD_UPDATE', { file, offset: 0, detail: `the zstd frame asks for a ${window}-byte window; the limit is ${ZSTD_MAX_WINDOW_BYTES} (zstd's default)` });
      }
      const all: Uint8Array = head;
      head = undefined;
      yield* feed(all);
      continue;
    }
    yield* feed(chunk);
  }
  if (head !== undefined && head.length > 0) yield* feed(head);
  push(new Uint8Array(0), true);
  yield* take();

  function* take(): Generator<Uint8Array> {
    const got = out;
    out = [];
    yield* got;
  }
  function* feed(chunk: Uint8Array): Generator<Uint8Array> {
    for (let at = 0; at < chunk.length; ) {
      const part = chunk.subarray(at, at + ZSTD_SLICE_BYTES);
      at += part.length;
      push(part, false);
      yield* take();
    }
  }
}

/** The tar bytes of a layer whose compressed bytes are `input`. */
export function decompressLayer(input: AsyncIterable<Uint8Array>, compression: LayerCompression, file: string): AsyncIterable<Uint8Array> {
  if (compression === 'gzip') return gunzip(input, file);
  if (compression === 'zstd') return unzstd(input, file);
  return input;
}
