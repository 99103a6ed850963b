/**
 * The update named on the command line, told apart by what it is (issue 9, "Update
 * sources"): a file is one tar layer (compression from its magic bytes); a directory
 * holding only .tar, .tar.gz, .tgz and .tar.zst files is those layers, applied in name
 * order; any other directory is a tree that mirrors the root filesystem.
 */
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RefusedError, wrapIoError } from '../errors.js';
import { treeLayer } from './treeSource.js';
import type { UpdateLayer, UpdateSource } from './UpdateEntry.js';

/** Names of layer files in a directory of layers. */
export const LAYER_FILE_NAME = /\.(tar|tar\.gz|tgz|tar\.zst)$/;

/** Byte order of names (as `ls` with LC_ALL=C sorts), not the locale's. */
function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/** The layer files of `dir` in name order, or undefined if it is not a directory of layers only. */
async function layerFiles(dir: string): Promise<string[] | undefined> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw wrapIoError(err, dir, 'read the update directory');
  }
  if (names.length === 0 || !names.some((n) => LAYER_FILE_NAME.test(n))) return undefined;
  const others = names.filter((n) => !LAYER_FILE_NAME.test(n));
  if (others.length > 0) {
    // A tree holding a file named like a layer, or layers beside a stray README: either way a guess could write the wrong thing.
    throw new RefusedError('BAD_UPDATE', {
      file: dir,
      detail: `the update directory holds tar layers (${names.find((n) => LAYER_FILE_NAME.test(n))}) and other entries (${others.slice(0, 3).join(', ')}${others.length > 3 ? ', ...' : ''}): give a directory of layers only, or a tree without layer files at its top`,
    });
  }
  for (const n of names) {
    const st = await stat(join(dir, n)).catch((err: unknown) => {
      throw wrapIoError(err, join(dir, n), 'read the layer');
    });
    if (!st.isFile()) return undefined;
  }
  return names.sort(byteOrder).map((n) => join(dir, n));
}

/**
 * Opens the update at `path`. Throws IO for a path that does not exist or cannot be read,
 * BAD_UPDATE for something that is neither a file nor a directory, or an empty or
 * bzip2/xz-compressed layer file. Entries are only read (and validated) when iterated.
 */
export async function openUpdateSource(path: string): Promise<UpdateSource> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw wrapIoError(err, path, 'read the update');
  }
  const warnings: string[] = [];
  const warn = (m: string): void => {
    if (!warnings.includes(m)) warnings.push(m);
  };
  // Loaded only for tar layers: tar-stream and the decompressors cost tens of milliseconds of start-up a tree does not need.
  if (st.isFile()) {
    const { layerCompression, tarLayer } = await import('./tarLayer.js');
    const compression = await layerCompression(path);
    const layer = tarLayer(path, warn);
    return { describe: `tar layer ${path}${compression === 'none' ? '' : ` (${compression})`}`, kind: 'tar-layers', warnings, layers: () => once([layer]) };
  }
  if (!st.isDirectory()) throw new RefusedError('BAD_UPDATE', { file: path, detail: 'the update must be a directory tree, a tar layer or a directory of tar layers' });
  const files = await layerFiles(path);
  if (files !== undefined) {
    const { layerCompression, tarLayer } = await import('./tarLayer.js');
    // Each file's compression is checked now, so a bad one fails before any entry is read.
    for (const f of files) await layerCompression(f);
    return { describe: `${files.length} tar layer${files.length === 1 ? '' : 's'} in ${path}`, kind: 'tar-layers', warnings, layers: () => once(files.map((f) => tarLayer(f, warn))) };
  }
  // One layer for every pass (the space check, then the apply): its first walk is replayed, not repeated.
  const tree = treeLayer(path, warn);
  return { describe: `directory tree ${path}`, kind: 'tree', warnings, layers: () => once([tree]) };
}

async function* once(layers: readonly UpdateLayer[]): AsyncGenerator<UpdateLayer> {
  yield* layers;
}
