// Walks the whole tree of the ext4 filesystem on an image and stats every entry (what the
// rebase does per client to know its paths): prints a summary as JSON.
import { Ext4Fs, openChain } from '../../dist/index.js';

const chain = await openChain(process.argv[2]);
const fs = await Ext4Fs.open(chain.device, { file: process.argv[2] });
let entries = 0;
let bytes = 0;
for await (const e of fs.walk()) {
  const st = fs.statOf(await fs.readInode(e.ino));
  entries++;
  bytes += st.size;
}
process.stdout.write(JSON.stringify({ entries, bytes }));
await chain.close();
