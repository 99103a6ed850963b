/**
 * holdYoungGeneration keeps V8's new space at the size asked for: the rebase's speed (few
 * scavenges) and its peak memory (not V8's 32 MiB) both depend on it. Oracle: V8's own
 * heap statistics, in a fresh Node process (the flags it sets are process-wide).
 */
import { spawnSync } from 'node:child_process';
import { buildSync } from 'esbuild';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/run.js';

/** The new space's size (MiB) after a workload that keeps many young objects alive, with holdYoungGeneration(holdMiB) first (none if undefined). */
function newSpaceAfterWorkload(holdMiB: number | undefined): number {
  const script = `
    import { getHeapSpaceStatistics } from 'node:v8';
    import { holdYoungGeneration } from './src/commands/collectGarbage.ts';
    const size = () => getHeapSpaceStatistics().find((x) => x.space_name === 'new_space').space_size;
    const start = size();
    ${holdMiB === undefined ? '' : `holdYoungGeneration(${holdMiB} << 20);`}
    let keep = [];
    for (let round = 0; round < 150; round++) {
      for (let i = 0; i < 40000; i++) { keep.push({ i, s: 'x' + i }); if (keep.length > 200000) keep = []; }
      await new Promise((r) => setTimeout(r, 1));
    }
    console.log(JSON.stringify({ start, end: size() }));
  `;
  const out = buildSync({ stdin: { contents: script, resolveDir: ROOT, loader: 'ts' }, bundle: true, platform: 'node', format: 'esm', write: false });
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', out.outputFiles[0]!.text], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const { start, end } = JSON.parse(r.stdout) as { start: number; end: number };
  // The workload starts below every size asked for here (else the test proves nothing).
  expect(start).toBeLessThan(8 << 20);
  return end / 2 ** 20;
}

describe('holdYoungGeneration', () => {
  it('lets the new space grow to the size asked for and no further', () => {
    expect(newSpaceAfterWorkload(8)).toBe(8);
    expect(newSpaceAfterWorkload(16)).toBe(16);
  });

  it('is needed: left alone, V8 grows the new space past it under the same workload', () => {
    expect(newSpaceAfterWorkload(undefined)).toBeGreaterThan(16);
  });
});
