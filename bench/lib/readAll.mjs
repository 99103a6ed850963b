// Reads a whole image (through its backing chain) sequentially in 8 MiB chunks.
import { openChain } from '../../dist/index.js';

const chain = await openChain(process.argv[2]);
const chunk = 8 * 1024 * 1024;
let sum = 0;
for (let pos = 0; pos < chain.device.size; pos += chunk) {
  const buf = await chain.device.read(pos, Math.min(chunk, chain.device.size - pos));
  sum = (sum + buf[0] + buf[buf.length - 1]) | 0;
}
await chain.close();
process.stdout.write(String(sum));
