// The least any Node program writing an `apply` output must do, for the apply benchmark's
// floor: start Node, walk the update tree and read every file (synchronous calls, as our
// tree source does), write BYTES bytes to a temp file, fsync it and rename it into place.
// No filesystem logic at all. Usage: node nodeFloor.mjs TREE OUT BYTES
import { closeSync, fsyncSync, lstatSync, openSync, readdirSync, readlinkSync, readSync, renameSync, writeSync } from 'node:fs';
import { join } from 'node:path';

const [tree, out, bytesArg] = process.argv.slice(2);
const bytes = Number(bytesArg);
const chunk = Buffer.alloc(1 << 20);
const tmp = `${out}.tmp`;
const fd = openSync(tmp, 'w');
let written = 0;

function write(n) {
  while (n > 0 && written < bytes) {
    const k = Math.min(n, chunk.length, bytes - written);
    writeSync(fd, chunk, 0, k, written);
    written += k;
    n -= k;
  }
}

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    const st = lstatSync(p);
    if (st.isDirectory()) walk(p);
    else if (st.isSymbolicLink()) readlinkSync(p);
    else if (st.isFile()) {
      const f = openSync(p, 'r');
      let n;
      while ((n = readSync(f, chunk, 0, chunk.length, null)) > 0) write(n);
      closeSync(f);
    }
  }
}

walk(tree);
write(bytes - written);
fsyncSync(fd);
closeSync(fd);
renameSync(tmp, out);
