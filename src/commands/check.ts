/**
 * `imgdedup check IMAGE`: a read-only structural check of the image (like
 * `qemu-img check`): refcounts against references, leaks, overlapping or
 * misaligned metadata, references past the end of the file.
 */
import { checkImage } from '../diskimage/checkImage.js';
import type { CheckResult } from '../diskimage/CheckResult.js';

export type { CheckResult, CheckError } from '../diskimage/CheckResult.js';

export interface CheckOptions {
  readonly image: string;
  readonly format?: string;
  readonly maxErrors?: number;
}

/** Checks IMAGE. The caller decides the exit code from `clean`. Throws what checkImage throws. */
export async function check(options: CheckOptions): Promise<CheckResult> {
  return checkImage(options.image, {
    ...(options.format !== undefined ? { format: options.format } : {}),
    ...(options.maxErrors !== undefined ? { maxErrors: options.maxErrors } : {}),
  });
}

/** Human-readable rendering of a CheckResult. */
export function formatCheck(r: CheckResult): string {
  const lines: string[] = [];
  for (const e of r.errors) {
    const label = e.kind === 'stale_refcount' ? 'STALE' : e.counts === 'leak' ? 'leaked' : e.counts === 'corruption' ? 'ERROR' : 'warning';
    lines.push(`${label} [${e.kind}] ${e.structure} at byte ${e.offset}: ${e.detail}`);
  }
  if (r.errorsOmitted > 0) lines.push(`... and ${r.errorsOmitted} more findings (not listed)`);
  if (r.clean) lines.push(`No errors were found on the image (${r.format}).`);
  else {
    if (r.corruptions > 0) lines.push(`${r.corruptions} errors were found on the image.`);
    if (r.leaks > 0) lines.push(`${r.leaks} leaked clusters were found on the image (wasted space, no harm to data).`);
    if (r.dirty) lines.push('The image has the dirty bit set (lazy refcounts): its refcounts are stale until `qemu-img check -r all` rebuilds them.');
  }
  if (r.checkedClusters > 0) lines.push(`${r.checkedClusters} host clusters checked.`);
  lines.push(`Image end offset: ${r.imageEndOffset}`);
  return lines.join('\n');
}
