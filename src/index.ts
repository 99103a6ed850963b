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
export { readPartitionTable, type Partition, type PartitionScheme, type PartitionTable } from './diskimage/partition/readPartitionTable.js';
export { detectFilesystem, type FilesystemName } from './diskimage/detectFilesystem.js';
export type { ImageWriter, ImageWriterSummary } from './diskimage/ImageWriter.js';
export { Qcow2Writer, type Qcow2WriterOptions } from './diskimage/qcow2/Qcow2Writer.js';
export { RawWriter } from './diskimage/raw/RawWriter.js';
export { copyDevice } from './diskimage/convertImage.js';
export { CowDevice, type CowDeviceOptions, type CowEmitOptions, type CowEmitStats } from './diskimage/cow/CowDevice.js';
export { Ext4Fs } from './fs/ext4/Ext4Fs.js';
