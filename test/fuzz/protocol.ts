/**
 * The messages between the fuzz case pool (pool.ts, in the test's thread) and its
 * workers (worker.ts): which target to run on what input, and how the case ended.
 * Types only, so both sides share them without pulling each other in.
 */

/** What each target takes; a case names one target and passes its input. */
export interface TargetInputs {
  /** Open `open` as an image chain and run every reader on it, then check each of `checkFiles`. */
  image: { readonly open: string; readonly checkFiles: readonly string[]; readonly seed: number };
  /** Open `bytes` as an ext4 filesystem under `policy` and run every read-only operation. */
  ext4: { readonly bytes: Uint8Array; readonly policy: 'error' | 'warn'; readonly seed: number };
  /** Open `file` as an update source (a tar layer) and read every entry and every file's content. */
  tar: { readonly file: string };
  /** Test-only targets that prove the pool's bounds (targets/selfTest.ts). */
  'self:ok': { readonly entries: number };
  'self:throw': { readonly typed: boolean };
  'self:stray': Record<string, never>;
  'self:spin': Record<string, never>;
  'self:stall': Record<string, never>;
  'self:heap': Record<string, never>;
  'self:buffers': Record<string, never>;
}
export type TargetName = keyof TargetInputs;

/** What a target returns when it ends without throwing. */
export interface TargetResult {
  /** 'ok', or the code of the first (expected) typed error a target caught and went on after. */
  readonly outcome: string;
  /** How far the case got (e.g. directory entries walked); 0 when the target does not count. */
  readonly entries?: number;
}

export interface CaseRequest {
  readonly id: number;
  readonly target: TargetName;
  readonly input: unknown;
}

export type WorkerMessage =
  | { readonly kind: 'ready' }
  | {
      readonly kind: 'done';
      readonly id: number;
      /** 'ok', an ImgdedupError code, or 'FAIL' (anything else escaped: `error` has its stack). */
      readonly outcome: string;
      readonly error?: string;
      readonly entries: number;
      /** Time inside the worker, from receiving the case to its end. */
      readonly ms: number;
      /** V8's committed heap of the worker at the case's end (the heap only grows to hold a peak). */
      readonly heapBytes: number;
    };
