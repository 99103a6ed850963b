/**
 * PAX extended-header records (POSIX.1-2008, pax "Extended Header Records"), decoded from
 * the raw bytes. tar-stream parses the container; its own record decoder turns every
 * value into UTF-8 text, which destroys binary xattr values (security.capability) and
 * non-UTF-8 names (GNU tar's hdrcharset=BINARY), so the records are read here as bytes.
 * A record is "LEN KEY=VALUE\n", LEN counting the whole record in decimal.
 */
import { badEntry, type EntryContext, NAME_MAX_BYTES } from './entryPath.js';
import type { EntryTime, EntryXattr } from './UpdateEntry.js';

/** Keywords as latin1 text (byte for byte), values as bytes. */
export type PaxRecords = Map<string, Uint8Array>;

/** Decodes one extended header's data; throws BAD_UPDATE (at `ctx`) for a malformed record. */
export function decodePaxRecords(buf: Uint8Array, ctx: EntryContext): PaxRecords {
  const records: PaxRecords = new Map();
  let p = 0;
  while (p < buf.length) {
    // Some writers pad the data with NULs; anything after them is no record.
    if (buf[p] === 0) {
      if (buf.subarray(p).some((b) => b !== 0)) throw badEntry(ctx, 'PAX header', `a NUL byte where a PAX record should start, at byte ${p} of the extended header`);
      break;
    }
    let sp = p;
    while (sp < buf.length && sp - p < 20 && buf[sp]! >= 0x30 && buf[sp]! <= 0x39) sp++;
    const len = Number(Buffer.from(buf.subarray(p, sp)).toString('latin1'));
    if (sp === p || buf[sp] !== 0x20 || !Number.isSafeInteger(len) || len <= sp - p + 1 || p + len > buf.length || buf[p + len - 1] !== 0x0a) {
      throw badEntry(ctx, 'PAX header', `malformed PAX record at byte ${p} of the extended header`);
    }
    const kv = buf.subarray(sp + 1, p + len - 1);
    const eq = kv.indexOf(0x3d);
    if (eq <= 0) throw badEntry(ctx, 'PAX header', `PAX record without a keyword at byte ${p} of the extended header`);
    if (kv.subarray(0, eq).includes(0)) throw badEntry(ctx, 'PAX header', `a PAX keyword with a NUL byte at byte ${p} of the extended header`);
    records.set(Buffer.from(kv.subarray(0, eq)).toString('latin1'), kv.subarray(eq + 1));
    p += len;
  }
  return records;
}

/** `global` overridden by `local`; an empty value cancels a keyword (pax: "the value is deleted"), except an xattr's, which may be empty. */
export function mergePax(global: PaxRecords | undefined, local: PaxRecords | undefined): PaxRecords {
  const out: PaxRecords = new Map(global);
  for (const [k, v] of local ?? []) out.set(k, v);
  for (const [k, v] of out) if (v.length === 0 && !isXattrKey(k)) out.delete(k);
  return out;
}

const SCHILY_XATTR = 'SCHILY.xattr.';
const LIBARCHIVE_XATTR = 'LIBARCHIVE.xattr.';

function isXattrKey(k: string): boolean {
  return k.startsWith(SCHILY_XATTR) || k.startsWith(LIBARCHIVE_XATTR);
}

export function paxText(v: Uint8Array): string {
  return Buffer.from(v).toString('latin1');
}

/** A decimal PAX number (uid, gid, size), or BAD_UPDATE. */
export function paxInteger(records: PaxRecords, key: string, ctx: EntryContext, entry: Uint8Array): number | undefined {
  const v = records.get(key);
  if (v === undefined) return undefined;
  const t = paxText(v);
  const n = Number(t);
  if (!/^\d{1,16}$/.test(t) || !Number.isSafeInteger(n)) throw badEntry(ctx, entry, `PAX ${key} is not a number: ${JSON.stringify(t.slice(0, 40))}`);
  return n;
}

/** A PAX time ("1700000000.123456789", possibly negative) to the nanosecond, or BAD_UPDATE. */
export function paxTime(records: PaxRecords, key: string, ctx: EntryContext, entry: Uint8Array): EntryTime | undefined {
  const v = records.get(key);
  if (v === undefined) return undefined;
  const t = paxText(v);
  const m = /^(-?)(\d{1,15})(?:\.(\d*))?$/.exec(t);
  if (m === null) throw badEntry(ctx, entry, `PAX ${key} is not a time: ${JSON.stringify(t.slice(0, 40))}`);
  let sec = Number(m[2]);
  let nsec = Number((m[3] ?? '').padEnd(9, '0').slice(0, 9));
  if (m[1] === '-') {
    // -1.25 is 1.25 s before the epoch: sec -2, nsec 750,000,000.
    sec = -sec;
    if (nsec > 0) {
      sec -= 1;
      nsec = 1_000_000_000 - nsec;
    }
  }
  return { sec, nsec };
}

/** Undoes libarchive's %XX escaping of xattr names in LIBARCHIVE.xattr.NAME keys. */
function percentDecode(latin1: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < latin1.length; i++) {
    if (latin1[i] === '%' && /^[0-9a-fA-F]{2}$/.test(latin1.slice(i + 1, i + 3))) {
      out.push(parseInt(latin1.slice(i + 1, i + 3), 16));
      i += 2;
    } else out.push(latin1.charCodeAt(i) & 0xff);
  }
  return Uint8Array.from(out);
}

/**
 * The xattrs of an entry: SCHILY.xattr.NAME (GNU tar, star: name and value raw bytes) and
 * LIBARCHIVE.xattr.NAME (bsdtar: name %-escaped, value base64). bsdtar writes both for
 * one attribute; one name gives one xattr (SCHILY's value, which is not re-encoded).
 * A name that is empty or over 255 bytes is BAD_UPDATE.
 */
export function paxXattrs(records: PaxRecords, ctx: EntryContext, entry: Uint8Array): EntryXattr[] {
  const byName = new Map<string, EntryXattr>();
  for (const [k, v] of records) {
    let name: Uint8Array;
    let value: Uint8Array;
    if (k.startsWith(LIBARCHIVE_XATTR)) {
      name = percentDecode(k.slice(LIBARCHIVE_XATTR.length));
      const b64 = paxText(v);
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(b64)) throw badEntry(ctx, entry, `PAX ${k} is not base64`);
      value = Uint8Array.from(Buffer.from(b64, 'base64'));
    } else if (k.startsWith(SCHILY_XATTR)) {
      name = Uint8Array.from(Buffer.from(k.slice(SCHILY_XATTR.length), 'latin1'));
      value = v;
    } else continue;
    if (name.length === 0 || name.length > NAME_MAX_BYTES) throw badEntry(ctx, entry, `an xattr name of ${name.length} bytes (PAX ${JSON.stringify(k.slice(0, 60))}); it must be 1 to ${NAME_MAX_BYTES} bytes`);
    const key = Buffer.from(name).toString('latin1');
    if (k.startsWith(SCHILY_XATTR) || !byName.has(key)) byName.set(key, { name, value: Uint8Array.from(value) });
  }
  return [...byName.values()];
}
