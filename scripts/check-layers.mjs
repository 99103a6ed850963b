#!/usr/bin/env node
// Enforces the import direction of DESIGN.md ("Layering") and STYLE.md §1:
// cli.ts -> commands/ -> dedup/ -> blockdiff/, updates/ -> fs/ -> diskimage/ -> errors.ts.
// A module may import from its own layer or from layers below it, never above or sideways.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve, dirname, sep } from 'node:path';

const SRC = resolve(dirname(new URL(import.meta.url).pathname), '..', 'src');
const RANK = {
  'errors.ts': 0,
  diskimage: 1,
  fs: 2,
  blockdiff: 3,
  updates: 3,
  dedup: 4,
  ui: 4,
  commands: 5,
  'cli.ts': 6,
  'index.ts': 6,
};

function layerOf(file) {
  const top = relative(SRC, file).split(sep)[0];
  if (!(top in RANK)) throw new Error(`src/${relative(SRC, file)}: not in a known layer; add it to scripts/check-layers.mjs`);
  return top;
}

function* walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* walk(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

const problems = [];
for (const file of walk(SRC)) {
  const from = layerOf(file);
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/(?:import|export)\s[^'"]*?from\s+['"](\.[^'"]+)['"]/g)) {
    const target = resolve(dirname(file), m[1].replace(/\.js$/, '.ts'));
    if (!target.startsWith(SRC)) continue; // package.json and the like
    const to = layerOf(target);
    if (to === from) continue;
    if (RANK[to] >= RANK[from]) problems.push(`src/${relative(SRC, file)} imports src/${relative(SRC, target)}: ${from} may not depend on ${to}`);
  }
  if (from !== 'cli.ts' && /\bprocess\.(argv|exit|stdout|stderr)\b|\bconsole\./.test(text) && from !== 'ui') {
    problems.push(`src/${relative(SRC, file)}: only cli.ts and ui/ may print or touch argv/exit`);
  }
}
if (problems.length > 0) {
  console.error(`layering check failed:\n  ${problems.join('\n  ')}`);
  process.exit(1);
}
console.log('layering check: ok');
