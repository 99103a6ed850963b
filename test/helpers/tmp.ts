/** Temporary directories for generated fixtures, removed after the suite. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

/** A fresh temp dir, removed when the calling test file finishes. */
export function useTempDir(prefix = 'imgdedup-test-'): () => string {
  let dir: string | undefined;
  afterAll(() => {
    if (dir !== undefined && !process.env.KEEP_TMP) rmSync(dir, { recursive: true, force: true });
  });
  return () => {
    dir ??= mkdtempSync(join(tmpdir(), prefix));
    return dir;
  };
}
