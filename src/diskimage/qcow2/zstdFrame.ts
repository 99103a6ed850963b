/**
 * Length of one zstd frame (RFC 8878, section 3.1.1). qemu pads a compressed
 * cluster to a 512-byte sector boundary, and a zstd decoder would read that
 * padding as the start of another frame; so we cut the input at the frame's end.
 */

/** Returns the frame's length in bytes, or undefined if `data` does not hold a whole frame. */
export function zstdFrameLength(data: Uint8Array): number | undefined {
  if (data.length < 6 || data[0] !== 0x28 || data[1] !== 0xb5 || data[2] !== 0x2f || data[3] !== 0xfd) return undefined;
  const fhd = data[4]!;
  const fcsFlag = fhd >> 6;
  const singleSegment = (fhd >> 5) & 1;
  const checksum = (fhd >> 2) & 1;
  const dictIdFlag = fhd & 3;
  let pos = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictIdFlag]! + [singleSegment ? 1 : 0, 2, 4, 8][fcsFlag]!;
  // Each block advances by at least 3 bytes, so this loop ends.
  for (;;) {
    if (pos + 3 > data.length) return undefined;
    const header = data[pos]! | (data[pos + 1]! << 8) | (data[pos + 2]! << 16);
    const last = header & 1;
    const type = (header >> 1) & 3;
    const size = header >>> 3;
    if (type === 3) return undefined;
    pos += 3 + (type === 1 ? 1 : size);
    if (last) break;
  }
  pos += checksum ? 4 : 0;
  return pos <= data.length ? pos : undefined;
}
