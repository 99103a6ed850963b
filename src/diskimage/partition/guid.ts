/**
 * GUIDs as GPT stores them (UEFI 2.10, appendix A "GUID and Time Formats"): the
 * first three fields (TimeLow, TimeMid, TimeHighAndVersion) are little-endian, the
 * last eight bytes are stored in textual order. The textual form is upper-case,
 * as sfdisk and sgdisk print it.
 */
import { InternalError } from '../../errors.js';

const hex = (b: number): string => b.toString(16).padStart(2, '0');

/** The textual form of the 16 bytes at `bytes[0..16)`. */
export function decodeGuid(bytes: Uint8Array): string {
  if (bytes.length < 16) throw new InternalError(`decodeGuid needs 16 bytes, got ${bytes.length}`);
  const b = (i: number): string => hex(bytes[i]!);
  const s =
    b(3) + b(2) + b(1) + b(0) + '-' + b(5) + b(4) + '-' + b(7) + b(6) + '-' + b(8) + b(9) + '-' +
    b(10) + b(11) + b(12) + b(13) + b(14) + b(15);
  return s.toUpperCase();
}

const GUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The 16 on-disk bytes of a textual GUID. Throws INTERNAL for a malformed string (a caller bug). */
export function encodeGuid(text: string): Uint8Array {
  if (!GUID_TEXT.test(text)) throw new InternalError(`not a GUID: ${text}`);
  const h = text.replace(/-/g, '');
  const raw = Uint8Array.from({ length: 16 }, (_, i) => parseInt(h.slice(2 * i, 2 * i + 2), 16));
  // Swap the three little-endian fields back.
  const order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
  return Uint8Array.from(order, (i) => raw[i]!);
}

export const ZERO_GUID = '00000000-0000-0000-0000-000000000000';
