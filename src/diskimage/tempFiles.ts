/**
 * The process-wide list of temporary files not yet renamed into place or removed.
 * Whoever creates a temporary output registers it here, so that the program's
 * entry point can remove them all when the process is interrupted (SIGINT,
 * SIGTERM) and no `finally` block gets to run. Library code never exits the
 * process; cli.ts installs the signal handlers and calls removeTempFilesSync.
 */
import { mkdirSync, rmdirSync, unlinkSync } from 'node:fs';

const pending = new Set<string>();
/** Set once the running command's outputs are all in place (see markOutputsComplete). */
let complete = false;
/** Temporary directories, removed (when empty) after the files, innermost first. */
const pendingDirs: string[] = [];

/** Records directory `path` to remove if it is empty when the process is interrupted. */
export function registerTempDir(path: string): void {
  pendingDirs.push(path);
}

/**
 * Creates directory `path`, registered for removal first and created synchronously, so
 * that an interrupt at any moment removes it (an asynchronous mkdir could still complete
 * after the handler ran). On failure it is forgotten again; throws what mkdir throws.
 */
export function makeTempDirSync(path: string): void {
  registerTempDir(path);
  try {
    mkdirSync(path);
  } catch (err) {
    unregisterTempDir(path);
    throw err;
  }
}

/** Forgets directory `path`. */
export function unregisterTempDir(path: string): void {
  const i = pendingDirs.lastIndexOf(path);
  if (i >= 0) pendingDirs.splice(i, 1);
}

/** Records `path` as a temporary file to remove if the process is interrupted. */
export function registerTempFile(path: string): void {
  pending.add(path);
}

/** Forgets `path` (it was renamed into place or removed). */
export function unregisterTempFile(path: string): void {
  pending.delete(path);
}

/** The temporary files currently registered. */
export function pendingTempFiles(): readonly string[] {
  return [...pending];
}

/**
 * Removes every registered temporary file, synchronously (a signal handler
 * cannot wait for promises). Files already gone are ignored. Never throws.
 */
export function removeTempFilesSync(): void {
  for (const path of pending) {
    try {
      unlinkSync(path);
    } catch {
      // Already removed, or never created: nothing left behind either way.
    }
    pending.delete(path);
  }
  for (const dir of pendingDirs.splice(0).reverse()) {
    try {
      rmdirSync(dir);
    } catch {
      // Not empty, or gone: left as it is.
    }
  }
}

/**
 * Records that the command's outputs are all in place: what is left (printing its report)
 * must not end in an "interrupted" exit status, which tells a script that nothing was
 * written. The entry point then lets a signal's first delivery finish the command.
 */
export function markOutputsComplete(): void {
  complete = true;
}

/** Whether markOutputsComplete was called. */
export function outputsComplete(): boolean {
  return complete;
}
