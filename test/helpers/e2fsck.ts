/**
 * The strict fsck oracle (DESIGN.md invariants): `e2fsck -fn` must exit 0 AND print
 * nothing but its version line, the five "Pass N:" lines and the summary line.
 */
import { expect } from 'vitest';
import { run } from './run.js';

export interface StrictFsckResult {
  readonly clean: boolean;
  readonly status: number;
  /** Lines beyond the allowed ones. */
  readonly extra: readonly string[];
  readonly output: string;
}

const ALLOWED = [
  /^e2fsck \d/, // version line
  /^Pass [1-5]: /,
  /^\S+: \d+\/\d+ files \([\d.]+% non-contiguous\), \d+\/\d+ blocks$/, // summary
];

/** Runs `e2fsck -fn` on a raw filesystem image (optionally at a byte offset). */
export function strictFsck(image: string, options: { offset?: number } = {}): StrictFsckResult {
  const target = options.offset ? `${image}?offset=${options.offset}` : image;
  const r = run('e2fsck', ['-fn', target], { env: { E2FSCK_CONFIG: '/dev/null' } });
  const output = r.stdout + r.stderr;
  const lines = output.split('\n').filter((l) => l.trim() !== '');
  const extra = lines.filter((l) => !ALLOWED.some((re) => re.test(l)));
  return { clean: r.status === 0 && extra.length === 0, status: r.status, extra, output };
}

/** Asserts the strict oracle, printing e2fsck's output on failure. */
export function expectStrictFsckClean(image: string, options: { offset?: number } = {}): void {
  const r = strictFsck(image, options);
  expect(r.clean, `e2fsck -fn ${image}:\n${r.output}`).toBe(true);
}
