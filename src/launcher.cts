#!/usr/bin/env node
/**
 * The `imgdedup` executable: runs the command-line program (cli.ts, bundled into one
 * CommonJS file, imgdedup.cjs) from V8's code cache when there is one for this Node.
 * Compiling a megabyte of JavaScript costs 25-35 ms of every run, a tenth of an `ls -R`
 * of 100,000 files; with the cache made at build time (scripts/compile-cache.mjs) a run
 * starts at about Node's own start-up time. A cache this V8 rejects (another Node
 * version), or none, costs nothing but that time: the source is compiled as usual.
 * Nothing is written at run time. V8 checks only a cached script's length, and runs damaged
 * cache bytes (a flipped bit crashes it): the cache file starts with the SHA-256 of the
 * source it was made from and the SHA-256 of the V8 data after them, and is used only
 * when both match.
 */
import fs = require('node:fs');
import path = require('node:path');
import vm = require('node:vm');
import nodeModule = require('node:module');
import crypto = require('node:crypto');
import v8 = require('node:v8');

/** Bytes of a SHA-256; the cache file starts with two (the source's, the V8 data's). */
const HASH_BYTES = 32;

/**
 * V8 optimises a function once it has run bytecode worth this budget (default 67,584), a
 * setting made for long-lived servers. A run of this tool lasts seconds, and on a 2-core
 * machine the optimising compiler's threads take their CPU from the work itself: a rebase
 * of the benchmark fleet had 1,310 functions compiled (about 2.5 s of background CPU) at
 * the default, 690 at this budget. Set before the program is loaded.
 */
const INTERRUPT_BUDGET = 300_000;
// The flag is V8 11's (Node 20, the machines this was measured on); later V8s count
// invocations instead and print an error for a flag they do not know: left alone there.
if (process.versions.v8.startsWith('11.')) v8.setFlagsFromString(`--interrupt-budget=${INTERRUPT_BUDGET}`);

const main = path.join(__dirname, 'imgdedup.cjs');
/** A file of the installation is missing: one line and exit 70 (cli.ts says the same of a module required later). */
function incomplete(what: string): never {
  process.stderr.write(`imgdedup: installation incomplete: ${what}; reinstall (npm ci)\n`);
  process.exit(70);
}
if (!fs.existsSync(main)) incomplete(`${main} is missing`);
// A shebang is valid only at the very start of a script, not inside the CommonJS wrapper (the line is kept: line numbers in stacks stay right).
const source = fs.readFileSync(main, 'utf8').replace(/^#!.*/, '');
let cachedData: Buffer | undefined;
try {
  const file = fs.readFileSync(`${main}.cache`);
  const data = file.subarray(2 * HASH_BYTES);
  const sha256 = (b: string | Buffer): Buffer => crypto.createHash('sha256').update(b).digest();
  if (data.length > 0 && sha256(source).equals(file.subarray(0, HASH_BYTES)) && sha256(data).equals(file.subarray(HASH_BYTES, 2 * HASH_BYTES))) cachedData = data;
} catch {
  cachedData = undefined;
}
const script = new vm.Script(nodeModule.wrap(source), { filename: main, ...(cachedData ? { cachedData } : {}) });
const run = script.runInThisContext() as (exports: object, require: NodeJS.Require, module: { exports: object }, filename: string, dirname: string) => void;
const mod = { exports: {} };
try {
  run.call(mod.exports, mod.exports, nodeModule.createRequire(main), mod, main, path.dirname(main));
} catch (err) {
  // A dependency the program requires as it loads (commander) is not in node_modules.
  if ((err as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') incomplete(`cannot find module ${/Cannot find module '([^']+)'/.exec((err as Error).message)?.[1] ?? (err as Error).message}`);
  throw err;
}
