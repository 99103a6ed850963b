/**
 * Runs fuzz cases where a hang or an unbounded allocation can be stopped: in a
 * worker_threads Worker, reused for case after case, terminated (and replaced) when a
 * case passes its time bound or its memory bound.
 *
 * - Time: a timer in this thread; at `caseMs` the worker is terminated, which stops
 *   even a synchronous endless loop. The case is a TIMEOUT finding; it is not re-run.
 * - JS heap: the worker's resourceLimits; reaching them kills it with
 *   ERR_WORKER_OUT_OF_MEMORY, an OUT_OF_MEMORY finding.
 * - Everything else (buffers live outside the JS heap): this thread samples the
 *   process's resident set every few milliseconds while a case runs (it is idle, waiting)
 *   and terminates the worker once the growth since the case began passes `rssMb`, a
 *   MEMORY finding. The peak growth is reported for every case.
 *
 * One case runs at a time, so the process's RSS growth belongs to that case. Cases in
 * one vitest file run one after another in its worker; vitest runs files in parallel.
 *
 * The worker runs TypeScript sources: worker.ts and what it imports (src/, the targets)
 * are bundled by esbuild (tsup's own bundler) into node_modules/.cache, with packages
 * left as imports so they resolve from node_modules as they do for dist/.
 */
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll } from 'vitest';
import type { CaseRequest, TargetInputs, TargetName, WorkerMessage } from './protocol.js';

export interface CaseBounds {
  /** Wall time per case, from handing it to the worker to its reply. */
  readonly caseMs: number;
  /** The worker's old-generation heap (resourceLimits.maxOldGenerationSizeMb). */
  readonly heapMb: number;
  /** Growth of the process's resident set during one case. */
  readonly rssMb: number;
}

/**
 * Defaults generous for loaded machines (the slowest case seen took 1 s at load average 20
 * on 2 cores; a failed CI run lands nothing, so CI gets more headroom), tight enough to stop a hang.
 */
export const BOUNDS: CaseBounds = {
  caseMs: Number(process.env.FUZZ_CASE_MS ?? (process.env.CI === 'true' ? 5000 : 2000)),
  heapMb: Number(process.env.FUZZ_HEAP_MB ?? 256),
  rssMb: Number(process.env.FUZZ_RSS_MB ?? 512),
};

/** Outcomes that are findings: an untyped error, a hang, memory, a dead worker. */
export const FINDINGS = ['FAIL', 'TIMEOUT', 'OUT_OF_MEMORY', 'MEMORY', 'CRASH'] as const;

export interface CaseResult {
  /** 'ok', an ImgdedupError code (or what the target made of it), or one of FINDINGS. */
  readonly outcome: string;
  /** Set exactly for findings: what went wrong (a stack, the bound that was passed). */
  readonly failure?: string;
  /** Wall time of the case, measured here. */
  readonly ms: number;
  readonly entries: number;
  /** Peak growth of the process's resident set while the case ran. */
  readonly rssGrowth: number;
  /** The worker's committed JS heap at the case's end (0 when it was killed). */
  readonly heapBytes: number;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SAMPLE_MS = 5;
const MiB = 2 ** 20;

let bundled: Promise<string> | undefined;

/** Bundles worker.ts once per process; the file is named by its content, so parallel test files share it safely. */
function workerBundle(): Promise<string> {
  bundled ??= (async () => {
    const out = await build({
      entryPoints: [fileURLToPath(new URL('./worker.ts', import.meta.url))],
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      packages: 'external',
      sourcemap: 'inline',
      write: false,
      logLevel: 'error',
      absWorkingDir: ROOT,
    });
    const text = out.outputFiles[0]!.text;
    const dir = `${ROOT}node_modules/.cache/imgdedup-fuzz`;
    const file = `${dir}/worker-${createHash('sha256').update(text).digest('hex').slice(0, 16)}.mjs`;
    if (!existsSync(file)) {
      mkdirSync(dir, { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, text);
      renameSync(tmp, file);
      // Bundles of older sources (a day unused) are not needed any more.
      for (const name of readdirSync(dir)) {
        const p = `${dir}/${name}`;
        if (p !== file && Date.now() - statSync(p).mtimeMs > 86_400_000) rmSync(p, { force: true });
      }
    }
    return file;
  })();
  return bundled;
}

type Event = { kind: 'message'; msg: WorkerMessage } | { kind: 'error'; err: Error & { code?: string } } | { kind: 'exit'; code: number };

/** One live worker and where its events go. */
interface Live {
  readonly worker: Worker;
  /** The running case's handler; events between cases are kept in `idle`. */
  onEvent?: (e: Event) => void;
  idle?: string;
  dead: boolean;
}

export class CasePool {
  private live: Live | undefined;
  private dying: Promise<unknown> = Promise.resolve();
  private nextId = 0;
  private queue: Promise<unknown> = Promise.resolve();
  /** Workers started (1 + one per case that killed its worker). */
  spawned = 0;

  constructor(readonly bounds: CaseBounds = BOUNDS) {}

  /** Runs one case, after those already queued; resolves with how it ended (findings included), never rejects for the case's sake. */
  run<K extends TargetName>(target: K, input: TargetInputs[K]): Promise<CaseResult> {
    // One case at a time: the RSS sampled belongs to it, and one worker runs it.
    const result = this.queue.then(() => this.runNow(target, input));
    this.queue = result.catch(() => undefined);
    return result;
  }

  private async runNow<K extends TargetName>(target: K, input: TargetInputs[K]): Promise<CaseResult> {
    const live = await this.worker();
    if (live.idle !== undefined) {
      // The worker died after the previous case replied (something that case left running): report it once, here.
      const failure = `${live.idle}; this case did not run, the previous one left this behind`;
      this.kill(live);
      return { outcome: 'CRASH', failure, ms: 0, entries: 0, rssGrowth: 0, heapBytes: 0 };
    }
    const id = ++this.nextId;
    const { caseMs, rssMb } = this.bounds;
    return new Promise<CaseResult>((resolve) => {
      const rss0 = process.memoryUsage.rss();
      let peak = rss0;
      const t0 = performance.now();
      const sample = (): number => {
        peak = Math.max(peak, process.memoryUsage.rss());
        return peak - rss0;
      };
      const finish = (r: Omit<CaseResult, 'ms' | 'rssGrowth'>, kill: boolean): void => {
        clearTimeout(timer);
        clearInterval(sampler);
        live.onEvent = undefined;
        if (kill) this.kill(live);
        resolve({ ...r, ms: performance.now() - t0, rssGrowth: sample() });
      };
      const timer = setTimeout(() => {
        finish({ outcome: 'TIMEOUT', failure: `still running after ${caseMs} ms: worker terminated (a hang, or a loop in the reader)`, entries: 0, heapBytes: 0 }, true);
      }, caseMs);
      const sampler = setInterval(() => {
        const growth = sample();
        if (growth > rssMb * MiB) finish({ outcome: 'MEMORY', failure: `process RSS grew by ${(growth / MiB).toFixed(0)} MiB during the case (limit ${rssMb} MiB): worker terminated`, entries: 0, heapBytes: 0 }, true);
      }, SAMPLE_MS);
      live.onEvent = (e) => {
        if (e.kind === 'message' && e.msg.kind === 'done' && e.msg.id === id) {
          const m = e.msg;
          finish({ outcome: m.outcome, ...(m.error !== undefined ? { failure: m.error } : {}), entries: m.entries, heapBytes: m.heapBytes }, false);
        } else if (e.kind === 'error' && e.err.code === 'ERR_WORKER_OUT_OF_MEMORY') {
          finish({ outcome: 'OUT_OF_MEMORY', failure: `${e.err.message} (heap limit ${this.bounds.heapMb} MiB)`, entries: 0, heapBytes: 0 }, true);
        } else if (e.kind === 'error') {
          finish({ outcome: 'CRASH', failure: `worker error: ${e.err.stack ?? e.err.message}`, entries: 0, heapBytes: 0 }, true);
        } else if (e.kind === 'exit') {
          finish({ outcome: 'CRASH', failure: `worker exited (code ${e.code}) during the case`, entries: 0, heapBytes: 0 }, true);
        }
      };
      const req: CaseRequest = { id, target, input };
      live.worker.postMessage(req);
    });
  }

  /** Terminates the worker; the pool can be used again (it starts a new one). */
  async close(): Promise<void> {
    if (this.live) this.kill(this.live);
    await this.dying;
  }

  private kill(live: Live): void {
    live.dead = true;
    if (this.live === live) this.live = undefined;
    this.dying = Promise.all([this.dying, live.worker.terminate()]);
  }

  /** The live worker, or a new one once the last killed one has gone (never two at once). */
  private async worker(): Promise<Live> {
    if (this.live && !this.live.dead) return this.live;
    await this.dying;
    const file = await workerBundle();
    const worker = new Worker(file, {
      resourceLimits: { maxOldGenerationSizeMb: this.bounds.heapMb, maxYoungGenerationSizeMb: 32 },
      execArgv: ['--enable-source-maps'],
    });
    this.spawned++;
    const live: Live = { worker, dead: false };
    await new Promise<void>((resolve, reject) => {
      const dispatch = (e: Event): void => {
        if (live.onEvent) live.onEvent(e);
        else if (e.kind === 'message' && e.msg.kind === 'ready') resolve();
        else if (e.kind !== 'message' && !live.dead) {
          const why = e.kind === 'error' ? `worker error between cases: ${e.err.stack ?? e.err.message}` : `worker exited (code ${e.code}) between cases`;
          live.idle ??= why;
          // Before 'ready' this is the bundle failing to load: not a finding, a broken harness.
          reject(new Error(why));
        }
      };
      worker.on('message', (msg: WorkerMessage) => dispatch({ kind: 'message', msg }));
      worker.on('error', (err: Error) => dispatch({ kind: 'error', err }));
      worker.on('exit', (code: number) => dispatch({ kind: 'exit', code }));
    });
    this.live = live;
    return live;
  }
}

/** A pool for the calling test file, started on first use and closed after the file. */
export function useCasePool(bounds: CaseBounds = BOUNDS): CasePool {
  const pool = new CasePool(bounds);
  afterAll(() => pool.close());
  return pool;
}
