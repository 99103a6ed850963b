/**
 * A raw image: the file is the disk. Node exposes no SEEK_HOLE/SEEK_DATA, so the
 * whole file is reported as data; zero detection happens where it pays (convert).
 * A file shorter than the virtual size cannot happen: size is the file size.
 */
import type { ByteRange, Extent } from '../BlockDevice.js';
import type { DiskImage } from '../DiskImage.js';
import { ImageFile } from '../ImageFile.js';
import { normalizeRange } from '../extents.js';

export class RawImage implements DiskImage {
  readonly format = 'raw' as const;
  readonly clusterSize = 512;
  readonly backing = undefined;
  readonly warnings: readonly string[] = [];

  private constructor(private readonly file: ImageFile) {}

  /** Opens a raw image read-only. Throws IO. */
  static async open(path: string): Promise<RawImage> {
    return new RawImage(await ImageFile.open(path));
  }

  get path(): string {
    return this.file.path;
  }
  get size(): number {
    return this.file.size;
  }
  get fileSize(): number {
    return this.file.size;
  }
  get details() {
    return {};
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    return this.file.readUpTo(offset, length);
  }

  /** Fills `target` from `offset`; bytes past the end read as zeros. */
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    const avail = Math.max(0, Math.min(target.length, this.file.size - offset));
    if (avail > 0) await this.file.readInto(target.subarray(0, avail), offset);
    target.fill(0, avail);
  }

  async *allocation(range?: ByteRange): AsyncGenerator<Extent> {
    const r = normalizeRange(this.size, range);
    if (r.length > 0) yield { offset: r.offset, length: r.length, kind: 'data', hostOffset: r.offset };
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
