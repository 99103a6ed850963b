/**
 * AtomicOutput: a temporary file next to the destination, registered for removal on
 * interruption until it is renamed into place or aborted.
 */
import { describe, expect, test } from 'vitest';
import { existsSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { AtomicOutput } from '../../src/diskimage/AtomicOutput.js';
import { pendingTempFiles, removeTempFilesSync } from '../../src/diskimage/tempFiles.js';
import { useTempDir } from '../helpers/tmp.js';

const tmp = useTempDir('imgdedup-atomic-');

describe('AtomicOutput and the temporary-file registry', () => {
  test('registered while written; renamed into place and forgotten on commit', async () => {
    const path = join(tmp(), 'a.img');
    const out = await AtomicOutput.create(path);
    expect(pendingTempFiles()).toEqual([out.tempPath]);
    await out.write(0, new TextEncoder().encode('data'));
    await out.commit();
    expect(pendingTempFiles()).toEqual([]);
    expect(readFileSync(path, 'utf8')).toBe('data');
    expect(existsSync(out.tempPath)).toBe(false);
  });

  test('forgotten and removed on abort', async () => {
    const path = join(tmp(), 'b.img');
    const out = await AtomicOutput.create(path);
    await out.abort();
    expect(pendingTempFiles()).toEqual([]);
    expect(existsSync(out.tempPath)).toBe(false);
    expect(existsSync(path)).toBe(false);
  });

  test('removeTempFilesSync (what the signal handler runs) removes an output being written', async () => {
    const dir = join(tmp(), 'c');
    mkdirSync(dir);
    const out = await AtomicOutput.create(join(dir, 'c.img'));
    await out.write(0, new Uint8Array(4096).fill(7));
    expect(readdirSync(dir)).toHaveLength(1);
    removeTempFilesSync();
    expect(readdirSync(dir)).toEqual([]);
    expect(pendingTempFiles()).toEqual([]);
    await out.abort();
  });
});
