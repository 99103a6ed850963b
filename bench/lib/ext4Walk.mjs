// Walks the whole tree of the ext4 filesystem on an image and stats every entry (what the
// rebase does per client to know its paths), a directory at a time (Ext4Fs.listings: the
// entries' inodes read in batches, their stat fields in place): prints a summary as JSON.
import { Ext4Fs, openChain } from '../../dist/index.js';

const chain = await openChain(process.argv[2]);
const fs = await Ext4Fs.open(chain.device, { file: process.argv[2] });
let entries = 0;
let bytes = 0;
for await (const l of fs.listings({ stat: true })) {
  for (let i = 0; i < l.count; i++) bytes += l.size[i];
  entries += l.count;
}
process.stdout.write(JSON.stringify({ entries, bytes }));
await chain.close();
