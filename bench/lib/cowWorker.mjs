// One run of the copy-on-write bench, in its own process so its peak RSS is its own:
// N scattered writes into a CowDevice over BASE, emitted as a qcow2 overlay OUT.
// Args: BASE OUT WRITES BUDGET_BYTES CLUSTER_BYTES. Prints a JSON line of timings.
import { CowDevice, Qcow2Writer, openChain } from '../../dist/index.js';
import { basename } from 'node:path';
import { cowWrites } from './cowWrites.mjs';

const [base, out, n, budget, cluster] = process.argv.slice(2);
const chain = await openChain(base);
const dev = new CowDevice(chain.device, { memoryBudgetBytes: Number(budget) });
try {
  const t0 = performance.now();
  for (const w of cowWrites(Number(n), chain.device.size)) await dev.write(w.offset, new Uint8Array(w.length).fill(w.pattern));
  const t1 = performance.now();
  const writer = await Qcow2Writer.create(out, { size: dev.size, clusterSize: Number(cluster), backing: { name: basename(base), format: 'qcow2' } });
  const stats = await dev.emitTo(writer);
  await writer.commit();
  const t2 = performance.now();
  console.log(JSON.stringify({ writeMs: t1 - t0, emitMs: t2 - t1, spilledBytes: dev.spilledBytes, unitsWritten: stats.unitsWritten }));
} finally {
  await dev.close();
  await chain.close();
}
