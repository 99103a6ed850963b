/**
 * The tar stream inside a layer file: plain, gzip (RFC 1952, node:zlib) or zstd (RFC 8878,
 * fzstd's streaming decoder), told apart by magic bytes, never by the file's name (the
 * OCI media types allow exactly these three). Output is streamed with bounded memory.
 */
import { createGunzip } from 'node:zlib';
import { Readable } from 'node:stream';
import { Decompress } from 'fzstd';
import xxhash from 'xxhash-wasm';
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

/** A piece of a zstd stream to push, or the end of a frame (with the checksum it stores, if any). */
type ZstdPiece = { readonly kind: 'bytes'; readonly bytes: Uint8Array } | { readonly kind: 'frameEnd'; readonly checksum: number | undefined };

/**
 * Cuts a zstd stream so that each piece completes at most one block (RFC 8878 3.1.1.2:
 * a 3-byte block header, then Block_Size bytes, or 1 for an RLE block). fzstd decodes
 * every complete block of a push and hands them all over at once, however much they
 * inflate (a 4-byte RLE block is 128 KiB): one block per push bounds its output to one
 * block's 128 KiB, whatever the data. Frame headers are read for their length and window
 * (refused over ZSTD_MAX_WINDOW_BYTES, before fzstd allocates it); skippable frames
 * (3.1.2) pass whole. Bytes that are not zstd go to fzstd as they are, which refuses them.
 */
class ZstdCutter {
  private state: 'magic' | 'frameHeader' | 'blockHeader' | 'block' | 'checksum' | 'skippableSize' | 'skip' | 'opaque' = 'magic';
  /** Bytes still to come in the current state. */
  private need = 4;
  /** Header bytes gathered (magic, frame header, block header, skippable size). */
  private held: number[] = [];
  private hasChecksum = false;
  private lastBlock = false;
  private offset = 0;
  private checksum: number[] = [];

  constructor(private readonly file: string) {}

  /**
   * Splits `chunk` into pieces, each completing at most one block, and marks where a
   * frame ends (after its last block, or after its checksum: RFC 8878 3.1.1, the low 32
   * bits of XXH64 of the frame's content, little-endian).
   */
  *cut(chunk: Uint8Array): Generator<ZstdPiece> {
    let from = 0;
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'opaque') {
        i = chunk.length;
        break;
      }
      if (this.state === 'block' || this.state === 'skip' || this.state === 'checksum') {
        const n = Math.min(this.need, chunk.length - i);
        if (this.state === 'checksum') this.checksum.push(...chunk.subarray(i, i + n));
        i += n;
        this.need -= n;
        if (this.need > 0) break;
        if (this.state === 'block') {
          // A block ends here: cut.
          if (i > from) yield { kind: 'bytes', bytes: chunk.subarray(from, i) };
          from = i;
          if (this.lastBlock && !this.hasChecksum) yield { kind: 'frameEnd', checksum: undefined };
          if (this.lastBlock) this.enter(this.hasChecksum ? 'checksum' : 'magic', 4);
          else this.enter('blockHeader', 3);
        } else {
          if (this.state === 'checksum') {
            const c = this.checksum;
            yield { kind: 'frameEnd', checksum: (c[0]! | (c[1]! << 8) | (c[2]! << 16) | (c[3]! << 24)) >>> 0 };
            this.checksum = [];
          }
          this.enter('magic', 4);
        }
        continue;
      }
      this.held.push(chunk[i++]!);
      if (--this.need > 0) continue;
      this.headerDone();
    }
    this.offset += chunk.length;
    if (from < chunk.length) yield { kind: 'bytes', bytes: chunk.subarray(from) };
  }

  private enter(state: ZstdCutter['state'], need: number): void {
    this.state = state;
    this.need = need;
    this.held = [];
  }

  private headerDone(): void {
    const h = this.held;
    if (this.state === 'magic') {
      if (h[0] === 0x28 && h[1] === 0xb5 && h[2] === 0x2f && h[3] === 0xfd) {
        this.state = 'frameHeader';
        this.need = 1; // the descriptor, which tells the header's length
      } else if ((h[0]! & 0xf0) === 0x50 && h[1] === 0x2a && h[2] === 0x4d && h[3] === 0x18) this.enter('skippableSize', 4);
      else this.state = 'opaque';
      return;
    }
    if (this.state === 'frameHeader') {
      const fhd = h[4]!;
      const singleSegment = (fhd >> 5) & 1;
      const length = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [singleSegment, 2, 4, 8][fhd >> 6]!;
      if (h.length < length) {
        this.need = length - h.length;
        return;
      }
      const window = zstdWindowBytes(Uint8Array.from(h));
      if (window !== undefined && window > ZSTD_MAX_WINDOW_BYTES) {
        throw new RefusedError('BAD_UPDATE', { file: this.file, offset: this.offset, detail: `the zstd frame asks for a ${window}-byte window; the limit is ${ZSTD_MAX_WINDOW_BYTES} (zstd's default)` });
      }
      this.hasChecksum = ((fhd >> 2) & 1) === 1;
      this.enter('blockHeader', 3);
      return;
    }
    if (this.state === 'blockHeader') {
      const v = h[0]! | (h[1]! << 8) | (h[2]! << 16);
      this.lastBlock = (v & 1) === 1;
      const type = (v >> 1) & 3;
      const size = v >>> 3;
      // RLE: one byte on the wire; reserved type 3: fzstd refuses it.
      if (type === 3) this.state = 'opaque';
      else this.enter('block', type === 1 ? 1 : size);
      return;
    }
    if (this.state === 'skippableSize') {
      this.enter('skip', (h[0]! | (h[1]! << 8) | (h[2]! << 16)) + h[3]! * 2 ** 24);
      if (this.need === 0) this.enter('magic', 4);
    }
  }
}

async function* unzstd(input: AsyncIterable<Uint8Array>, file: string): AsyncGenerator<Uint8Array> {
  let out: Uint8Array[] = [];
  const d = new Decompress((chunk) => {
    out.push(chunk);
  });
  const cutter = new ZstdCutter(file);
  // fzstd does not check the content checksum; a flipped bit would pass as data.
  const xx = await xxhash();
  let hash = xx.create64(0n);
  let consumed = 0;
  const push = (bytes: Uint8Array, final: boolean): void => {
    try {
      d.push(bytes, final);
    } catch (err) {
      throw badData(file, consumed, 'zstd', err);
    }
    consumed += bytes.length;
  };
  for await (const chunk of input) {
    for (const piece of cutter.cut(chunk)) {
      if (piece.kind === 'frameEnd') {
        const actual = Number(hash.digest() & 0xffffffffn);
        if (piece.checksum !== undefined && piece.checksum !== actual) {
          throw new RefusedError('BAD_UPDATE', { file, offset: consumed, detail: 'the zstd frame\'s content checksum does not match its data (corrupt)', expected: piece.checksum, actual });
        }
        hash = xx.create64(0n);
        continue;
      }
      push(piece.bytes, false);
      const got = out;
      out = [];
      for (const c of got) hash.update(c);
      yield* got;
    }
  }
  push(new Uint8Array(0), true);
  yield* out;
}

/** The tar bytes of a layer whose compressed bytes are `input`. */
export function decompressLayer(input: AsyncIterable<Uint8Array>, compression: LayerCompression, file: string): AsyncIterable<Uint8Array> {
  if (compression === 'gzip') return gunzip(input, file);
  if (compression === 'zstd') return unzstd(input, file);
  return input;
}
