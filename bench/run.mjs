// `npm run bench`: runs every bench/*.bench.mjs in turn; each prints ratios against
// its peer tool measured in the same run. BENCH_ONLY=name runs one of them.
import { readdirSync } from 'node:fs';
import { spawnSync } from 'node:child_process';

const dir = new URL('.', import.meta.url).pathname;
const only = process.env.BENCH_ONLY;
let failed = 0;
for (const f of readdirSync(dir).filter((n) => n.endsWith('.bench.mjs')).sort()) {
  if (only && !f.startsWith(only)) continue;
  console.log(`\n# ${f}`);
  const r = spawnSync(process.execPath, [dir + f], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exit(failed ? 1 : 0);
