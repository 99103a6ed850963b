/**
 * The fuzz target for update sources (src/updates/): open a (mutated) tar layer as the
 * `apply` command will, then read every entry and every file's content, twice (a dry
 * run, then the apply pass), skipping some content on the second pass. Runs inside a
 * pool worker (worker.ts).
 */
import { ImgdedupError, InternalError } from '../../../src/errors.js';
import { openUpdateSource } from '../../../src/updates/openUpdateSource.js';
import type { TargetInputs, TargetResult } from '../protocol.js';

/** Per pass: at most this many entries. */
const MAX_ENTRIES = 10_000;

/** 'ok' with the entries of a pass, or the typed error's code with the entries read before it. */
export async function tarTarget(input: TargetInputs['tar']): Promise<TargetResult> {
  let entries = 0;
  let n = 0;
  try {
    entries = await readTwice(input.file, (count) => (n = count));
  } catch (err) {
    if (err instanceof ImgdedupError && !(err instanceof InternalError)) return { outcome: err.code, entries: n };
    throw err;
  }
  return { outcome: 'ok', entries };
}

async function readTwice(file: string, progress: (n: number) => void): Promise<number> {
  const source = await openUpdateSource(file);
  let entries = 0;
  for (const pass of [0, 1]) {
    let n = 0;
    for await (const layer of source.layers()) {
      for await (const e of layer.entries()) {
        if (++n > MAX_ENTRIES) break;
        progress(n - 1);
        if (e.kind === 'file' && (pass === 0 || n % 2 === 0)) {
          let seen = 0;
          for await (const c of e.open()) seen += c.length;
          if (seen !== e.size) throw new Error(`entry gave ${seen} bytes, not its size ${e.size}`);
        }
      }
    }
    entries = Math.max(entries, n);
  }
  return entries;
}
