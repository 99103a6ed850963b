/** The library API: the disk-image layer and the typed errors. */
export * from './errors.js';
export type { BlockDevice, ClosableDevice, Extent, ExtentKind, ByteRange } from './diskimage/BlockDevice.js';
export type { DiskImage, ImageFormat, BackingRef } from './diskimage/DiskImage.js';
export { ChainDevice } from './diskimage/ChainDevice.js';
export { SliceDevice } from './diskimage/SliceDevice.js';
export { openChain, resolveBackingPath, type ImageChain } from './diskimage/openChain.js';
export { openImage, detectFormat, probeFormat } from './diskimage/openImage.js';
export { RawImage } from './diskimage/raw/RawImage.js';
export { Qcow2Image } from './diskimage/qcow2/Qcow2Image.js';
