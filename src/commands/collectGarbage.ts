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
 * Lets V8's young generation grow to `semiSpaceBytes` per semi-space, then keeps it there
 * (its semi-spaces otherwise double up to 16 MiB each as allocation goes on): for the
 * rebase's clients, whose reads and comparisons allocate fast, so that peak memory stays
 * bounded. Smaller means more collections (each copies what is still alive), larger more
 * memory. Node has no other way to set it once running: growth is stopped from a timer
 * that watches the space's size.
 */
export function holdYoungGeneration(semiSpaceBytes: number): () => void {
  const setGrowth = (factor: number): void => {
    try {
      setFlagsFromString(`--semi-space-growth-factor=${factor}`);
    } catch {
      // Refused: memory is then what V8 makes of it.
    }
  };
  const reached = (): boolean => (getHeapSpaceStatistics().find((x) => x.space_name === 'new_space')?.space_size ?? Infinity) >= semiSpaceBytes;
  if (reached()) {
    setGrowth(1);
    return () => undefined;
  }
  // V8's own default, in case an earlier run in this process held it.
  setGrowth(2);
  const timer = setInterval(() => {
    if (!reached()) return;
    setGrowth(1);
    clearInterval(timer);
  }, 5);
  timer.unref();
  return () => clearInterval(timer);
}
