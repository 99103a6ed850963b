/**
 * Extended attributes of a host directory tree, read with getfattr (package "attr"):
 * Node has no xattr API, and a native addon could fail to build on a fresh machine. One
 * `getfattr -R` run per walk reads the whole tree (one process, not one per file); its
 * output names each file as it was given, with control characters and '\' as \ooo octal
 * escapes (attr's quote()), so names come back as bytes, non-UTF-8 ones included.
 */
import { spawn } from 'node:child_process';
import { IoError } from '../errors.js';
import type { EntryXattr } from './UpdateEntry.js';

/** The xattrs of every file under a root that has any, keyed by the file's path (bytes as latin1 text). */
export type XattrMap = ReadonlyMap<string, readonly EntryXattr[]>;

/** What `readHostXattrs` found: the map, or why there is none (getfattr is missing). */
export type HostXattrs = { readonly ok: true; readonly map: XattrMap } | { readonly ok: false; readonly reason: string };

/** Undoes attr's quote(): "\ooo" is one byte; everything else is itself. */
export function unquoteGetfattr(text: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === '\\' && /^[0-7]{3}$/.test(text.slice(i + 1, i + 4))) {
      out.push(parseInt(text.slice(i + 1, i + 4), 8) & 0xff);
      i += 3;
    } else out.push(text.charCodeAt(i) & 0xff);
  }
  return Uint8Array.from(out);
}

/**
 * Parses `getfattr -d -e base64` output (read as latin1 so every byte is one char):
 * "# file: NAME" starts a file, then "name=0sBASE64" (or "name" alone, an empty value)
 * per attribute, and a blank line ends it.
 */
export function parseGetfattrDump(latin1: string): Map<string, EntryXattr[]> {
  const map = new Map<string, EntryXattr[]>();
  let current: EntryXattr[] | undefined;
  for (const line of latin1.split('\n')) {
    if (line.startsWith('# file: ')) {
      current = [];
      map.set(Buffer.from(unquoteGetfattr(line.slice(8))).toString('latin1'), current);
    } else if (line === '') {
      current = undefined;
    } else if (current !== undefined) {
      const eq = line.indexOf('=');
      const name = unquoteGetfattr(eq < 0 ? line : line.slice(0, eq));
      const raw = eq < 0 ? '' : line.slice(eq + 1);
      // -e base64 writes "0s" + base64; a value that is not is a getfattr we do not know.
      if (raw !== '' && !raw.startsWith('0s')) throw new IoError({ detail: `getfattr printed an attribute value not in base64: ${JSON.stringify(line.slice(0, 80))}` });
      current.push({ name, value: Uint8Array.from(Buffer.from(raw.slice(2), 'base64')) });
    }
  }
  return map;
}

/**
 * Reads the xattrs of `root` and everything under it, not following symlinks (and
 * reading a symlink's own). Returns `ok: false` when getfattr is not installed; throws
 * IO when it fails for another reason than a filesystem without xattr support.
 */
export async function readHostXattrs(root: string): Promise<HostXattrs> {
  const args = ['-R', '-P', '-h', '-d', '-m', '-', '-e', 'base64', '--absolute-names', '--', root];
  return new Promise<HostXattrs>((resolve, reject) => {
    const child = spawn('getfattr', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') resolve({ ok: false, reason: 'getfattr is not installed (Debian/Ubuntu package "attr"): the tree\'s extended attributes were not read' });
      else reject(new IoError({ file: root, detail: `cannot run getfattr: ${e.message}` }));
    });
    child.on('close', (code) => {
      const stderr = Buffer.concat(err).toString('utf8').trim();
      // A filesystem without xattrs (some tmpfs, 9p) makes getfattr complain per file; that means "none".
      const unsupported = stderr.split('\n').every((l) => l === '' || /Operation not supported/.test(l));
      if (code !== 0 && !unsupported) {
        reject(new IoError({ file: root, detail: `getfattr failed: ${stderr.split('\n')[0] ?? `exit ${code}`}` }));
        return;
      }
      try {
        resolve({ ok: true, map: parseGetfattrDump(Buffer.concat(out).toString('latin1')) });
      } catch (e) {
        reject(e instanceof IoError ? new IoError({ ...e.data, file: root }) : e);
      }
    });
  });
}
