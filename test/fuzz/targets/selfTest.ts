/**
 * Test-only fuzz targets with known faults, so harness.test.ts can prove that the pool
 * stops a hang and an unbounded allocation and reports each. Never used on images.
 */
import { CorruptImageError } from '../../../src/errors.js';
import type { TargetInputs, TargetResult } from '../protocol.js';

export const selfTestTargets = {
  'self:ok': async (input: TargetInputs['self:ok']): Promise<TargetResult> => ({ outcome: 'ok', entries: input.entries }),
  'self:throw': async (input: TargetInputs['self:throw']): Promise<TargetResult> => {
    if (input.typed) throw new CorruptImageError('CORRUPT_IMAGE', { file: 'self.img', structure: 'self', offset: 7 });
    throw new TypeError('an untyped error from a parser');
  },
  /** Ends 'ok' but leaves a rejected promise nobody handles (an error the caller never sees). */
  'self:stray': async (_input: TargetInputs['self:stray']): Promise<TargetResult> => {
    void Promise.reject(new RangeError('a dropped promise rejected'));
    return { outcome: 'ok' };
  },
  /** A synchronous endless loop: only terminating the thread stops it. */
  'self:spin': async (_input: TargetInputs['self:spin']): Promise<TargetResult> => {
    let x = 0;
    for (;;) x = (x + 1) | 0;
  },
  /** A promise that never settles: the thread is idle, the case never ends. */
  'self:stall': (_input: TargetInputs['self:stall']): Promise<TargetResult> => new Promise<never>(() => {}),
  /** Unbounded growth of the JS heap (a list that a looping parser keeps appending to). */
  'self:heap': async (_input: TargetInputs['self:heap']): Promise<TargetResult> => {
    const kept: number[][] = [];
    for (;;) kept.push(new Array<number>(4096).fill(kept.length + 0.5));
  },
  /** Unbounded growth outside the JS heap (buffers read and kept), yielding between reads as I/O would. */
  'self:buffers': async (_input: TargetInputs['self:buffers']): Promise<TargetResult> => {
    const kept: Buffer[] = [];
    for (;;) {
      kept.push(Buffer.alloc(4 << 20, kept.length + 1));
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
  },
} as const;
