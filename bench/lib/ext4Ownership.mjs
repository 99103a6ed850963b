// Opens the ext4 filesystem on an image (raw, or any chain: qcow2 overlay on its backing)
// and builds the block ownership table; prints a summary as JSON.
import { Ext4Fs, openChain } from '../../dist/index.js';

const chain = await openChain(process.argv[2]);
const fs = await Ext4Fs.open(chain.device, { file: process.argv[2] });
const own = await fs.blockOwnership();
const probe = Math.floor(fs.superblock.s_blocks_count / 2);
process.stdout.write(JSON.stringify({ runs: own.runCount, freeRuns: own.freeRuns.length, probe: own.ownerOf(probe) }));
await chain.close();
