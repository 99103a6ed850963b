// Makes dist/imgdedup.cjs.cache, the V8 code cache src/launcher.cts runs the command-line
// program from: the script compiled as a run compiles it (its functions are compiled when
// first called; compiling all of them with --no-lazy would change V8's flags, and V8
// rejects a cache made under other flags). The file starts with the SHA-256 of the source
// (V8 itself checks only the length) and the SHA-256 of the V8 data that follows (V8 runs
// damaged data). Run by the build (tsup.config.ts, onSuccess).
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Script } from 'node:vm';

const main = new URL('../dist/imgdedup.cjs', import.meta.url).pathname;
// As the launcher reads it: the shebang line emptied, the CommonJS wrapper around it.
const source = readFileSync(main, 'utf8').replace(/^#!.*/, '');
const wrap = createRequire(import.meta.url)('node:module').wrap;
const data = new Script(wrap(source), { filename: main }).createCachedData();
const sha256 = (b) => createHash('sha256').update(b).digest();
writeFileSync(`${main}.cache.tmp`, Buffer.concat([sha256(source), sha256(data), data]));
renameSync(`${main}.cache.tmp`, `${main}.cache`);
