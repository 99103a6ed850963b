/** Bounded concurrency for the I/O of one read: enough requests in flight to keep the thread pool busy, never an unbounded fan-out. */

/** Requests (file reads, inflations) one image read keeps in flight: libuv's thread pool has 4 threads. */
export const THREAD_POOL_REQUESTS = 4;

/**
 * Runs `tasks` with at most `limit` in flight, started in order. After a failure no
 * further task starts; rejects with the first failure once the running ones settle.
 */
export async function runLimited(tasks: readonly (() => Promise<void>)[], limit: number): Promise<void> {
  if (tasks.length <= 1) return tasks[0]?.();
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < tasks.length) {
      try {
        await tasks[next++]!();
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const workers: Promise<void>[] = [];
  for (let i = 0; i < Math.min(limit, tasks.length); i++) workers.push(worker());
  const results = await Promise.allSettled(workers);
  for (const r of results) if (r.status === 'rejected') throw r.reason;
}
