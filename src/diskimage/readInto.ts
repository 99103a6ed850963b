/**
 * Reading a BlockDevice into a caller's buffer: through the device's own readInto
 * when it has one (no allocation, no copy), else through read and one copy.
 */
import type { BlockDevice } from './BlockDevice.js';

/** Fills all of `target` with the device's bytes at guest `offset`. Throws what the device throws. */
export async function readInto(device: BlockDevice, target: Uint8Array, offset: number): Promise<void> {
  if (device.readInto !== undefined) return device.readInto(target, offset);
  target.set(await device.read(offset, target.length));
}

