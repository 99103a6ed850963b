/**
 * Orders asynchronous operations on a shared structure: a write runs alone, after
 * every operation issued before it; reads run concurrently with each other, after
 * the writes issued before them. So results follow issue order, as with a disk.
 */
export class ReadWriteQueue {
  private lastWrite: Promise<unknown> = Promise.resolve();
  private readonly activeReads = new Set<Promise<unknown>>();

  read<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.lastWrite.then(fn);
    const settled = p.then(
      () => undefined,
      () => undefined,
    );
    this.activeReads.add(settled);
    void settled.then(() => this.activeReads.delete(settled));
    return p;
  }

  write<T>(fn: () => Promise<T>): Promise<T> {
    const p = Promise.all([this.lastWrite, ...this.activeReads]).then(fn);
    this.lastWrite = p.then(
      () => undefined,
      () => undefined,
    );
    return p;
  }
}
