/**
 * zstd decompression off the event loop. Node 20's zlib has no zstd, and fzstd (pure
 * JavaScript) would run on the main thread, where a compressed image's reads would
 * serialise everything else (the ext4 work, the other images' I/O) and leave the second
 * core idle. A few worker threads, started on first use and unref'd (they never keep the
 * process alive), decompress one cluster per request; a worker that dies fails its
 * requests and is replaced on the next one.
 */
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';

/** Workers at most (each holds one cluster's input and output at a time). */
const MAX_WORKERS = Math.max(1, Math.min(2, availableParallelism()));

interface Pending {
  readonly resolve: (out: Uint8Array) => void;
  readonly reject: (err: Error) => void;
}

interface Slot {
  readonly worker: Worker;
  readonly pending: Map<number, Pending>;
}

/** The worker's code: CommonJS (an eval'd worker), fzstd loaded from where this module finds it. */
function workerSource(fzstdPath: string): string {
  return `
const { parentPort } = require('node:worker_threads');
const { decompress } = require(${JSON.stringify(fzstdPath)});
parentPort.on('message', (m) => {
  try {
    const out = decompress(m.raw, new Uint8Array(m.size));
    const copy = out.byteOffset === 0 && out.byteLength === out.buffer.byteLength ? out : out.slice();
    parentPort.postMessage({ id: m.id, out: copy }, [copy.buffer]);
  } catch (e) {
    parentPort.postMessage({ id: m.id, error: String((e && e.message) || e) });
  }
});`;
}

let source: string | undefined;
const slots: Slot[] = [];
let nextId = 0;
let turn = 0;

function startWorker(): Slot {
  const require = createRequire(import.meta.url);
  source ??= workerSource(require.resolve('fzstd'));
  // worker_threads loaded with the first compressed cluster, not at startup.
  const { Worker: WorkerThread } = require('node:worker_threads') as typeof import('node:worker_threads');
  const worker: Worker = new WorkerThread(source, { eval: true });
  worker.unref();
  const slot: Slot = { worker, pending: new Map() };
  worker.on('message', (m: { id: number; out?: Uint8Array; error?: string }) => {
    const p = slot.pending.get(m.id);
    if (p === undefined) return;
    slot.pending.delete(m.id);
    if (m.out !== undefined) p.resolve(m.out);
    else p.reject(new Error(m.error ?? 'zstd worker failed'));
  });
  const fail = (err: Error): void => {
    const i = slots.indexOf(slot);
    if (i >= 0) slots.splice(i, 1);
    for (const p of slot.pending.values()) p.reject(err);
    slot.pending.clear();
  };
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`zstd worker exited (code ${code})`)));
  return slot;
}

/**
 * Decompresses one zstd frame into at most `size` bytes, on a worker thread. Rejects
 * with the decompressor's message (the caller makes it a typed error naming the image).
 */
export function zstdDecompressOffThread(frame: Uint8Array, size: number): Promise<Uint8Array> {
  if (slots.length < MAX_WORKERS) slots.push(startWorker());
  const slot = slots[turn++ % slots.length]!;
  const id = nextId++;
  // A copy of the frame (the caller's bytes belong to a larger batch read) is moved to the worker.
  const raw = frame.slice();
  return new Promise<Uint8Array>((resolve, reject) => {
    // Pending requests keep the worker referenced until their answers arrive.
    slot.worker.ref();
    const settle = (): void => {
      if (slot.pending.size === 0) slot.worker.unref();
    };
    slot.pending.set(id, {
      resolve: (out) => {
        settle();
        resolve(out);
      },
      reject: (err) => {
        settle();
        reject(err);
      },
    });
    slot.worker.postMessage({ id, raw, size }, [raw.buffer]);
  });
}
