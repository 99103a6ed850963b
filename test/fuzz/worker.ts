/**
 * A fuzz pool worker (bundled and started by pool.ts): runs one case per message, in
 * order, and replies how it ended. Only ImgdedupErrors other than InternalError are
 * expected outcomes; anything else that escapes is 'FAIL' with its stack. Hangs and
 * unbounded memory are not handled here: the pool terminates this thread for them.
 */
import { parentPort } from 'node:worker_threads';
import { ImgdedupError, InternalError } from '../../src/errors.js';
import type { CaseRequest, TargetInputs, TargetName, TargetResult, WorkerMessage } from './protocol.js';
import { TARGETS } from './targets/index.js';

const port = parentPort;
if (port === null) throw new Error('worker.ts runs as a worker thread (see pool.ts)');

function run<K extends TargetName>(target: K, input: TargetInputs[K]): Promise<TargetResult> {
  return TARGETS[target](input);
}

function explain(err: unknown): string {
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}

/** Errors nobody awaited (a promise a parser dropped): they belong to the case that made them. */
let strays: string[] = [];
process.on('unhandledRejection', (err) => strays.push(`unhandled rejection: ${explain(err)}`));
process.on('uncaughtException', (err) => strays.push(`uncaught exception: ${explain(err)}`));

port.on('message', async (req: CaseRequest) => {
  const t0 = performance.now();
  let result: { outcome: string; entries: number; error?: string };
  try {
    const r = await run(req.target, req.input as TargetInputs[typeof req.target]);
    result = { outcome: r.outcome, entries: r.entries ?? 0 };
  } catch (err) {
    if (err instanceof ImgdedupError && !(err instanceof InternalError)) result = { outcome: err.code, entries: 0 };
    else result = { outcome: 'FAIL', entries: 0, error: explain(err) };
  }
  // One turn of the event loop, so a rejection the case left unhandled is reported now, with it.
  await new Promise((resolve) => setImmediate(resolve));
  if (strays.length > 0 && result.outcome !== 'FAIL') result = { outcome: 'FAIL', entries: result.entries, error: strays.join('\n') };
  strays = [];
  const done: WorkerMessage = { kind: 'done', id: req.id, ...result, ms: performance.now() - t0, heapBytes: process.memoryUsage().heapTotal };
  port.postMessage(done);
});

port.postMessage({ kind: 'ready' } satisfies WorkerMessage);
