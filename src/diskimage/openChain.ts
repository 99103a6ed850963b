/**
 * Opens an image and its whole backing chain, in one place: backing names are
 * resolved against the child's directory, recorded backing formats are honoured
 * (a raw backing file is never probed), loops are detected by real path, and the
 * depth is bounded.
 */
import { dirname, isAbsolute, resolve } from 'node:path';
import { realpath } from 'node:fs/promises';
import type { DiskImage } from './DiskImage.js';
import { ChainDevice } from './ChainDevice.js';
import { openImage } from './openImage.js';
import { CorruptImageError, UnsupportedError, wrapIoError } from '../errors.js';

export interface OpenChainOptions {
  /** Most layers allowed, overlay included. Default 64. */
  readonly maxDepth?: number;
  /** Open as this format instead of probing the top image. */
  readonly format?: string;
  /**
   * A chain already open: when this one reaches the file at its top, its layers are used
   * instead of being opened again (one set of caches and file handles for a base many
   * overlays share), and this chain's close leaves them open.
   */
  readonly below?: ImageChain;
}

export interface ImageChain {
  /** layers[0] is the image named; the last is the base. */
  readonly layers: readonly DiskImage[];
  readonly device: ChainDevice;
  /** Warnings of every layer. */
  readonly warnings: readonly string[];
  close(): Promise<void>;
}

/**
 * Whether the chain's file holds the disk's bytes at the disk's offsets (one raw layer):
 * errors can then give a file offset too.
 */
export function fileIsDisk(chain: ImageChain): boolean {
  return chain.layers.length === 1 && chain.layers[0]!.format === 'raw';
}

/** Resolves a backing name stored in `childPath` as qemu does: relative to the child's directory. */
export function resolveBackingPath(childPath: string, name: string): string {
  return isAbsolute(name) ? name : resolve(dirname(childPath), name);
}

/** `path` with symlinks resolved, or made absolute where it cannot be (a file not there yet): for telling whether two names are one file. */
export function realFilePath(path: string): Promise<string> {
  return realpath(path).catch(() => resolve(path));
}

/**
 * The layer of `chain` that is the file at `path` (symlinks resolved), or undefined: an
 * output must never replace a file a chain reads (every overlay on it would change).
 */
export async function layerAtPath(chain: ImageChain, path: string): Promise<DiskImage | undefined> {
  const target = await realFilePath(path);
  for (const l of chain.layers) if ((await realFilePath(l.path)) === target) return l;
  return undefined;
}

/**
 * Opens `path` and every backing file below it.
 * Throws BACKING_FILE_MISSING, BACKING_CHAIN_LOOP, BACKING_CHAIN_TOO_DEEP, UNSUPPORTED_FORMAT
 * (protocol backing names such as nbd: or json:), and whatever each layer's opener throws.
 */
export async function openChain(path: string, options: OpenChainOptions = {}): Promise<ImageChain> {
  const maxDepth = options.maxDepth ?? 64;
  const layers: DiskImage[] = [];
  const seen = new Set<string>();
  /** Layers taken from `options.below` (not ours to close). */
  let borrowed = 0;
  const belowTop = options.below !== undefined ? await realpath(options.below.layers[0]!.path).catch(() => undefined) : undefined;
  try {
    let current = path;
    let format = options.format;
    for (;;) {
      const real = await realpath(current).catch((err: unknown) => {
        const child = layers[layers.length - 1];
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && child?.backing !== undefined) {
          throw new CorruptImageError('BACKING_FILE_MISSING', {
            file: child.path,
            structure: child.backing.structure,
            offset: child.backing.offset,
            detail: `backing file "${child.backing.name}" not found (resolved to ${current})`,
            backing: current,
          });
        }
        throw wrapIoError(err, current, 'open');
      });
      if (seen.has(real)) {
        const child = layers[layers.length - 1]!;
        throw new CorruptImageError('BACKING_CHAIN_LOOP', {
          file: child.path,
          structure: child.backing!.structure,
          offset: child.backing!.offset,
          detail: `backing chain loops back to ${current}`,
        });
      }
      if (layers.length >= maxDepth) {
        const child = layers[layers.length - 1]!;
        throw new CorruptImageError('BACKING_CHAIN_TOO_DEEP', {
          file: child.path,
          structure: child.backing!.structure,
          offset: child.backing!.offset,
          detail: `backing chain deeper than ${maxDepth} layers`,
        });
      }
      seen.add(real);
      if (real === belowTop && options.below !== undefined) {
        const child = layers[layers.length - 1];
        child?.verifyParent?.(options.below.layers[0]!);
        layers.push(...options.below.layers);
        borrowed = options.below.layers.length;
        break;
      }
      const image = await openImage(current, format !== undefined ? { format } : {});
      const child = layers[layers.length - 1];
      layers.push(image);
      child?.verifyParent?.(image);
      const backing = image.backing;
      if (backing === undefined) break;
      if (/^[a-z][a-z0-9+.-]*:/i.test(backing.name) && !/^[a-z]:[\\/]/i.test(backing.name) && !backing.name.startsWith('file:')) {
        throw new UnsupportedError('UNSUPPORTED_FORMAT', {
          file: image.path,
          structure: backing.structure,
          offset: backing.offset,
          detail: `backing file "${backing.name}" uses a protocol; only local files are supported`,
        });
      }
      current = resolveBackingPath(image.path, backing.name.replace(/^file:/, ''));
      format = backing.format;
    }
  } catch (err) {
    await Promise.allSettled(layers.slice(0, layers.length - borrowed).map((l) => l.close()));
    throw err;
  }
  const device = new ChainDevice(layers);
  const own = layers.slice(0, layers.length - borrowed);
  return {
    layers,
    device,
    warnings: own.flatMap((l) => l.warnings),
    close: async () => {
      if (borrowed === 0) return device.close();
      for (const l of own) await l.close();
    },
  };
}
