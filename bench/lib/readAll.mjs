// Reads a whole image (through its backing chain) sequentially in 8 MiB chunks into one
// reused buffer (readInto, as convert reads), and prints a checksum of the bytes read.
import { openChain } from '../../dist/index.js';

const chain = await openChain(process.argv[2]);
const chunk = 8 * 1024 * 1024;
const buf = new Uint8Array(chunk);
let sum = 0;
for (let pos = 0; pos < chain.device.size; pos += chunk) {
  const piece = buf.subarray(0, Math.min(chunk, chain.device.size - pos));
  await chain.device.readInto(piece, pos);
  sum = (sum + piece[0] + piece[piece.length - 1]) | 0;
}
await chain.close();
process.stdout.write(String(sum));
