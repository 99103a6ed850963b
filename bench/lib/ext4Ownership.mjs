// Opens an ext4 filesystem in a raw image and builds the block ownership table.
import { RawImage } from '../../dist/index.js';
import { Ext4Fs } from '../../dist/index.js';

const img = await RawImage.open(process.argv[2]);
const fs = await Ext4Fs.open(img, { file: process.argv[2] });
const own = await fs.blockOwnership();
const probe = Math.floor(fs.superblock.s_blocks_count / 2);
process.stdout.write(JSON.stringify({ runs: own.runCount, freeRuns: own.freeRuns.length, probe: own.ownerOf(probe) }));
await img.close();
