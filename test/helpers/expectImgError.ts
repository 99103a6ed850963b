/** Asserts that a call fails with a typed ImgdedupError of a given code and data. */
import { expect } from 'vitest';
import { ImgdedupError, type ErrorCode } from '../../src/errors.js';

export async function expectImgError(
  fn: () => unknown,
  code: ErrorCode,
  data: Record<string, unknown> = {},
): Promise<ImgdedupError> {
  let caught: unknown;
  try {
    await fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, `expected ${code}, but nothing was thrown`).toBeDefined();
  expect(caught, `expected an ImgdedupError ${code}, got ${String(caught)}`).toBeInstanceOf(ImgdedupError);
  const e = caught as ImgdedupError;
  expect(e.code, e.message).toBe(code);
  expect(e.data).toMatchObject(data);
  return e;
}
