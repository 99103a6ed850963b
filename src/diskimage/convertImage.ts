/**
 * Copies the guest content of a BlockDevice into an ImageWriter, the engine of
 * `imgdedup convert`. Only ranges some layer stores are read (allocation maps),
 * in large chunks with the next chunk read while the current one is written;
 * all-zero units are detected by content and skipped. With a `base`, the output
 * is an overlay on it: units whose content equals the base's are skipped, and
 * units that are zero in the source but not in the base are written as zeros
 * (like `qemu-img convert -B`).
 */
import type { BlockDevice, ByteRange } from './BlockDevice.js';
import type { ImageWriter } from './ImageWriter.js';
import { InternalError } from '../errors.js';

export interface CopyDeviceOptions {
  /** The output's backing content; the output then holds only what differs from it. */
  readonly base?: BlockDevice;
  /** Bytes read per chunk (rounded down to the writer's unit). Default 4 MiB. */
  readonly chunkBytes?: number;
  /** Called after each chunk with bytes examined so far and the total to examine. */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface CopyDeviceStats {
  /** Guest bytes examined (ranges stored by the source or the base). */
  readonly bytesExamined: number;
  /** Allocation units (clusters, or subclusters with extended L2) written with data. */
  readonly unitsWritten: number;
  /** Units skipped because the source reads zeros there (and, with a base, so does the base). */
  readonly zeroUnitsSkipped: number;
  /** Units written as explicit zeros over non-zero base content. */
  readonly zeroUnitsWritten: number;
  /** Units skipped because they equal the base (with a base only). */
  readonly unchangedUnits: number;
}

const DEFAULT_CHUNK = 4 * 1024 * 1024;
/** Chunk reads kept in flight ahead of the writer. */
const READ_AHEAD = 2;
/** Writer calls kept in flight. */
const WRITE_AHEAD = 4;

/** Ascending, unit-aligned, merged ranges that `device` stores data in, clipped to `size`. */
async function* dataRanges(device: BlockDevice, unit: number, size: number): AsyncGenerator<ByteRange> {
  let cur: { start: number; end: number } | undefined;
  for await (const e of device.allocation({ offset: 0, length: size })) {
    if (e.kind !== 'data') continue;
    const start = Math.floor(e.offset / unit) * unit;
    const end = Math.min(size, Math.ceil((e.offset + e.length) / unit) * unit);
    if (cur !== undefined && start <= cur.end) cur.end = Math.max(cur.end, end);
    else {
      if (cur !== undefined) yield { offset: cur.start, length: cur.end - cur.start };
      cur = { start, end };
    }
  }
  if (cur !== undefined) yield { offset: cur.start, length: cur.end - cur.start };
}

/** The union of two ascending range streams, merged where they overlap or touch. */
async function* unionRanges(a: AsyncIterator<ByteRange>, b: AsyncIterator<ByteRange> | undefined): AsyncGenerator<ByteRange> {
  let ra = await a.next();
  let rb = b ? await b.next() : ({ done: true, value: undefined } as const);
  let cur: { start: number; end: number } | undefined;
  for (;;) {
    let next: ByteRange;
    if (!ra.done && (rb.done || ra.value.offset <= rb.value.offset)) {
      next = ra.value;
      ra = await a.next();
    } else if (!rb.done) {
      next = rb.value;
      rb = await b!.next();
    } else break;
    const end = next.offset + next.length;
    if (cur !== undefined && next.offset <= cur.end) cur.end = Math.max(cur.end, end);
    else {
      if (cur !== undefined) yield { offset: cur.start, length: cur.end - cur.start };
      cur = { start: next.offset, end };
    }
  }
  if (cur !== undefined) yield { offset: cur.start, length: cur.end - cur.start };
}

function rangesToVisit(src: BlockDevice, base: BlockDevice | undefined, unit: number, size: number): AsyncGenerator<ByteRange> {
  return unionRanges(dataRanges(src, unit, size)[Symbol.asyncIterator](), base ? dataRanges(base, unit, Math.min(size, base.size))[Symbol.asyncIterator]() : undefined);
}

/**
 * Copies `src` into `writer` (which must have `src.size`). Reads only stored
 * ranges; the writer gets unit-aligned data runs and zero runs. Returns counts.
 * Throws INTERNAL on a size mismatch, and whatever the source and writer throw.
 */
export async function copyDevice(src: BlockDevice, writer: ImageWriter, options: CopyDeviceOptions = {}): Promise<CopyDeviceStats> {
  const size = writer.size;
  if (src.size !== size) throw new InternalError('copyDevice: writer and source sizes differ', { expected: src.size, actual: size });
  const unit = writer.unitSize;
  const base = options.base;
  const chunk = Math.max(unit, Math.floor((options.chunkBytes ?? DEFAULT_CHUNK) / unit) * unit);
  const zeros = Buffer.alloc(unit);

  let total = 0;
  if (options.onProgress) for await (const r of rangesToVisit(src, base, unit, size)) total += r.length;

  let done = 0;
  let unitsWritten = 0;
  let zeroUnitsSkipped = 0;
  let zeroUnitsWritten = 0;
  let unchangedUnits = 0;

  const readChunk = (offset: number, length: number) =>
    Promise.all([src.read(offset, length), base ? base.read(offset, length) : Promise.resolve(undefined)]);

  // Writer calls run concurrently (each unit is written once, so order does not
  // matter); at most WRITE_AHEAD are in flight, so buffers stay bounded.
  const inflight: Promise<void>[] = [];
  const track = async (p: Promise<void>) => {
    p.catch(() => undefined); // a rejection surfaces when awaited below
    inflight.push(p);
    while (inflight.length > WRITE_AHEAD) await inflight.shift();
  };

  for await (const range of rangesToVisit(src, base, unit, size)) {
    const rangeEnd = range.offset + range.length;
    let pos = range.offset;
    // Keep READ_AHEAD chunk reads in flight while the current chunk is written.
    const queue: ReturnType<typeof readChunk>[] = [];
    let readPos = pos;
    const refill = () => {
      while (queue.length < READ_AHEAD && readPos < rangeEnd) {
        const n = Math.min(chunk, rangeEnd - readPos);
        const p = readChunk(readPos, n);
        p.catch(() => undefined); // rejections surface when awaited below
        queue.push(p);
        readPos += n;
      }
    };
    refill();
    while (pos < rangeEnd) {
      const len = Math.min(chunk, rangeEnd - pos);
      const [srcData, baseData] = await queue.shift()!;
      const nextPos = pos + len;
      refill();
      const s = Buffer.from(srcData.buffer, srcData.byteOffset, srcData.byteLength);
      const b = baseData ? Buffer.from(baseData.buffer, baseData.byteOffset, baseData.byteLength) : undefined;
      // Runs of units of one kind become one writer call.
      let runKind: 'data' | 'zero' | undefined;
      let runStart = 0;
      const flush = async (at: number) => {
        if (runKind === 'data') await track(writer.write(pos + runStart, srcData.subarray(runStart, at)));
        else if (runKind === 'zero') await track(writer.writeZeros(pos + runStart, at - runStart));
        runKind = undefined;
      };
      for (let off = 0; off < len; off += unit) {
        const end = Math.min(len, off + unit);
        const n = end - off;
        let kind: 'data' | 'zero' | undefined;
        const isZero = s.compare(zeros, 0, n, off, end) === 0;
        if (b !== undefined && s.compare(b, off, end, off, end) === 0) {
          unchangedUnits++;
        } else if (isZero) {
          if (b !== undefined) {
            kind = 'zero';
            zeroUnitsWritten++;
          } else zeroUnitsSkipped++;
        } else {
          kind = 'data';
          unitsWritten++;
        }
        if (kind !== runKind) {
          await flush(off);
          runKind = kind;
          runStart = off;
        }
      }
      await flush(len);
      pos = nextPos;
      done += len;
      options.onProgress?.(done, total);
    }
  }
  while (inflight.length > 0) await inflight.shift();
  return { bytesExamined: done, unitsWritten, zeroUnitsSkipped, zeroUnitsWritten, unchangedUnits };
}
