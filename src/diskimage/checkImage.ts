/**
 * Structural check of one image file, dispatched by format. A raw image has no
 * metadata and is trivially clean; VMDK is not supported yet.
 */
import { stat } from 'node:fs/promises';
import { wrapIoError } from '../errors.js';
import type { CheckResult } from './CheckResult.js';
import { probeFormat, unknownFormatError } from './openImage.js';
import { checkQcow2 } from './qcow2/checkQcow2.js';
import { checkVmdk } from './vmdk/checkVmdk.js';

export interface CheckImageOptions {
  /** Check as this format instead of probing. */
  readonly format?: string;
  /** Most findings listed (counts stay exact). Default 1000. */
  readonly maxErrors?: number;
}

/**
 * Checks the image at `path` (this layer only; backing files are not opened).
 * Returns the findings; throws UNSUPPORTED_FORMAT/UNKNOWN_FORMAT, IO, and what the
 * format's checker throws when the image cannot be checked at all.
 */
export async function checkImage(path: string, options: CheckImageOptions = {}): Promise<CheckResult> {
  const format = options.format ?? (await probeFormat(path));
  switch (format) {
    case 'qcow2':
      return checkQcow2(path, options.maxErrors !== undefined ? { maxErrors: options.maxErrors } : {});
    case 'raw': {
      const size = await stat(path).then(
        (s) => s.size,
        (err: unknown) => {
          throw wrapIoError(err, path, 'stat');
        },
      );
      return { file: path, format: 'raw', clean: true, dirty: false, corruptions: 0, leaks: 0, errors: [], errorsOmitted: 0, checkedClusters: 0, imageEndOffset: size };
    }
    case 'vmdk':
      return checkVmdk(path, options.maxErrors !== undefined ? { maxErrors: options.maxErrors } : {});
    default:
      throw unknownFormatError(path, format);
  }
}
