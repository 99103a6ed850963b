/**
 * A full garbage collection, between the clients of a rebase. Each client's work leaves
 * buffers behind (its diff's reads, its layer's copies, its overlay's chunks) that V8
 * frees only when it next collects, late for memory outside its heap; collected before
 * the next client starts, they do not add to its peak, so peak memory follows one client
 * whatever the fleet's size. Node exposes no collection call without --expose-gc: the
 * flag is set at run time and the function taken from a fresh context (the only effect
 * of the flag). Costs tens of milliseconds per call; a no-op where that is refused.
 */
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | null | undefined;

export function collectGarbage(): void {
  if (gc === undefined) {
    try {
      setFlagsFromString('--expose-gc');
      const fn: unknown = runInNewContext('gc');
      gc = typeof fn === 'function' ? (fn as () => void) : null;
    } catch {
      gc = null;
    }
  }
  gc?.();
}

/**
 * Brings V8's young generation (its new space: both semi-spaces) to `newSpaceBytes` and
 * keeps it there: for the rebase, whose reads, comparisons and writer allocate fast. Too
 * small and it is collected hundreds of times a second, each scavenge copying what is still
 * alive (a fixed 4 MiB new space cost a rebase 700 scavenges, a fifth of its main thread);
 * left to itself it doubles up to 32 MiB, which peak memory cannot afford. Node has no way
 * to set its size once running (--max-semi-space-size is read at start-up only), but V8
 * reads its growth factor each time it grows the space, and grows it after scavenges in
 * which much survives. So, here and now: bursts of short-lived objects kept alive across a
 * few scavenges, each making V8 double the space, until it reaches the target; then a
 * factor of 1 (it never grows again). Done synchronously: a timer watching the size came
 * too late to stop the next doubling. Costs a few milliseconds. A space already larger
 * stays so.
 */
export function holdYoungGeneration(newSpaceBytes: number): void {
  const setGrowth = (factor: number): void => {
    try {
      setFlagsFromString(`--semi-space-growth-factor=${factor}`);
    } catch {
      // Refused: memory is then what V8 makes of it.
    }
  };
  const size = (): number => getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')?.space_size ?? Infinity;
  // Each burst keeps about half the space's capacity alive across its scavenges: enough for
  // V8 to double the space once, not twice (bursts of twice the capacity grew it 1 -> 8 MiB).
  setGrowth(2);
  for (let tries = 0; tries < 64 && size() < newSpaceBytes; tries++) {
    let kept: Array<{ readonly i: number }> = [];
    for (let i = 0, n = Math.ceil(size() / 64); i < n; i++) kept.push({ i });
    kept = [];
  }
  setGrowth(1);
}
