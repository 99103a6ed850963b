/**
 * Progress display for long work. On a TTY it redraws one line on stderr; without
 * one (CI logs, pipes) it prints a plain line at most every 10% or 5 seconds.
 * Library code only calls the `ProgressCallback` it is given.
 */
import type { Output } from './output.js';
import { formatBytes } from './format.js';

/** What library code reports: bytes (or items) done out of total. */
export type ProgressCallback = (done: number, total: number) => void;

export interface ProgressReporter {
  readonly update: ProgressCallback;
  done(): void;
}

/** A reporter for `label`; silent when `enabled` is false (e.g. --json or --quiet). */
export function createProgress(label: string, output: Output, enabled: boolean, unit: 'bytes' | 'items' = 'bytes'): ProgressReporter {
  if (!enabled) return { update: () => undefined, done: () => undefined };
  const fmt = (n: number) => (unit === 'bytes' ? formatBytes(n) : String(n));
  const start = Date.now();
  let lastDraw = 0;
  let lastPct = -10;
  let drawn = false;
  return {
    update(done, total) {
      const now = Date.now();
      const pct = total > 0 ? Math.floor((done / total) * 100) : 100;
      if (output.stderrIsTTY) {
        if (now - lastDraw < 100 && done < total) return;
        lastDraw = now;
        drawn = true;
        process.stderr.write(`\r${label}: ${pct}% (${fmt(done)} / ${fmt(total)})\x1b[K`);
      } else if (pct >= lastPct + 10 || now - lastDraw >= 5000) {
        lastPct = pct;
        lastDraw = now;
        output.err(`${label}: ${pct}% (${fmt(done)} / ${fmt(total)})`);
      }
    },
    done() {
      const secs = ((Date.now() - start) / 1000).toFixed(1);
      if (output.stderrIsTTY && drawn) process.stderr.write(`\r${label}: done in ${secs}s\x1b[K\n`);
    },
  };
}
