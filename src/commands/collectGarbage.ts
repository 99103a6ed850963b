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
 * reads the growth factor each time it grows the space: the factor is set so that the next
 * growth lands on the target, and to 1 (no growth) as soon as a timer sees it there. The
 * size is what V8 makes of that (a space already larger stays so).
 */
export function holdYoungGeneration(newSpaceBytes: number): () => void {
  const setGrowth = (factor: number): void => {
    try {
      setFlagsFromString(`--semi-space-growth-factor=${factor}`);
    } catch {
      // Refused: memory is then what V8 makes of it.
    }
  };
  const size = (): number => getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')?.space_size ?? Infinity;
  const now = size();
  if (now >= newSpaceBytes) {
    setGrowth(1);
    return () => undefined;
  }
  // One growth step to the target: growing by 2 again and again overshoots it before a timer can stop it.
  setGrowth(Math.max(2, Math.round(newSpaceBytes / now)));
  const timer = setInterval(() => {
    if (size() < newSpaceBytes) return;
    setGrowth(1);
    clearInterval(timer);
  }, 5);
  timer.unref();
  return () => clearInterval(timer);
}
