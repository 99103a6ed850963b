/**
 * The VMDK text descriptor (VMDK 5.0, "The Descriptor File"): header lines
 * (version, CID, parentCID, createType, parentFileNameHint), extent lines
 * (`ACCESS SIZE TYPE "FILENAME" [OFFSET]`) and the disk database (`ddb.key = "value"`).
 * Every parsed line keeps its absolute byte offset so errors can name it.
 */
import { CorruptImageError, UnsupportedError } from '../../errors.js';
import {
  VMDK_CID_NOPARENT,
  VMDK_CREATE_TYPES_SUPPORTED,
  VMDK_CREATE_TYPES_UNSUPPORTED,
  VMDK_DESCRIPTOR_SIGNATURE,
  VMDK_EXTENT_ACCESS,
  VMDK_EXTENT_TYPES_SUPPORTED,
} from './constants.js';

export type VmdkExtentAccess = (typeof VMDK_EXTENT_ACCESS)[number];
export type VmdkExtentType = (typeof VMDK_EXTENT_TYPES_SUPPORTED)[number];

export interface VmdkExtentLine {
  readonly access: VmdkExtentAccess;
  /** Extent size in sectors. */
  readonly size: number;
  readonly type: VmdkExtentType;
  /** The extent file as written (relative to the descriptor's directory); undefined for ZERO. */
  readonly fileName: string | undefined;
  /** Offset in sectors within a FLAT/VMFS extent file. */
  readonly offset: number;
  /** The line as written, and its absolute byte offset in the descriptor's file. */
  readonly line: string;
  readonly lineOffset: number;
}

export interface VmdkDescriptor {
  readonly version: number;
  readonly CID: number;
  readonly parentCID: number;
  /** Absolute byte offset of the parentCID line (0 if absent). */
  readonly parentCIDOffset: number;
  readonly createType: string;
  readonly parentFileNameHint: string | undefined;
  /** Absolute byte offset of the parentFileNameHint line (0 if absent). */
  readonly parentFileNameHintOffset: number;
  readonly extents: readonly VmdkExtentLine[];
  /** Disk database entries (`ddb.*`), quotes removed, in file order. */
  readonly ddb: Readonly<Record<string, string>>;
}

/** What a descriptor to encode holds; extent lines need no offsets. */
export interface VmdkDescriptorInput {
  readonly CID: number;
  readonly parentCID: number;
  readonly createType: string;
  readonly parentFileNameHint?: string;
  readonly extents: readonly { access: VmdkExtentAccess; size: number; type: VmdkExtentType; fileName?: string; offset?: number }[];
  readonly ddb: Readonly<Record<string, string>>;
}

function unquote(v: string): string {
  const t = v.trim();
  return t.length >= 2 && t.startsWith('"') && t.endsWith('"') ? t.slice(1, -1) : t;
}

/**
 * Parses a descriptor held in `bytes`, which sit at byte `base` of `file`.
 * Parsing stops at the first NUL (embedded descriptors are zero-padded).
 * Throws CORRUPT_IMAGE naming the offending line's offset (garbage lines, bad CID,
 * missing createType or extents), UNSUPPORTED_FORMAT for createTypes and extent types we do not read.
 */
export function parseDescriptor(bytes: Uint8Array, ctx: { file: string; base: number }): VmdkDescriptor {
  const nul = bytes.indexOf(0);
  const text = bytes.subarray(0, nul === -1 ? bytes.length : nul);
  const dec = new TextDecoder('utf-8', { fatal: false });
  const at = (rel: number, structure = 'vmdk.descriptor') => ({ file: ctx.file, structure, offset: ctx.base + rel });
  let version: number | undefined;
  let CID: number | undefined;
  let parentCID: number | undefined;
  let parentCIDOffset = 0;
  let createType: string | undefined;
  let createTypeOffset = 0;
  let parentFileNameHint: string | undefined;
  let parentFileNameHintOffset = 0;
  const extents: VmdkExtentLine[] = [];
  const ddb: Record<string, string> = {};
  let pos = 0;
  let sawContent = false;
  while (pos < text.length) {
    let end = text.indexOf(0x0a, pos);
    if (end === -1) end = text.length;
    const lineStart = pos;
    const line = dec.decode(text.subarray(pos, end)).replace(/\r$/, '');
    pos = end + 1;
    const t = line.trim();
    if (!sawContent && t !== '') {
      sawContent = true;
      // The spec's descriptor starts with its signature comment; anything else is not a descriptor.
      if (t !== VMDK_DESCRIPTOR_SIGNATURE) {
        throw new CorruptImageError('CORRUPT_IMAGE', { ...at(lineStart), detail: `descriptor does not start with "${VMDK_DESCRIPTOR_SIGNATURE}"`, actual: t.slice(0, 60) });
      }
      continue;
    }
    if (t === '' || t.startsWith('#')) continue;
    const extent = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"]*)"(?:\s+(\d+))?)?\s*$/.exec(t);
    if (extent !== null) {
      const type = extent[3]!;
      const where = at(lineStart, `vmdk.descriptor.extent[${extents.length}]`);
      if (!(VMDK_EXTENT_TYPES_SUPPORTED as readonly string[]).includes(type)) {
        throw new UnsupportedError('UNSUPPORTED_FORMAT', { ...where, detail: `extent type ${type} is not supported (SPARSE, FLAT, ZERO and VMFS are)`, line: t });
      }
      if (type !== 'ZERO' && extent[4] === undefined) throw new CorruptImageError('CORRUPT_IMAGE', { ...where, detail: `${type} extent without a file name`, line: t });
      const size = Number(extent[2]);
      if (!Number.isSafeInteger(size) || size * 512 > Number.MAX_SAFE_INTEGER) throw new CorruptImageError('CORRUPT_IMAGE', { ...where, detail: 'extent size too large', line: t });
      extents.push({
        access: extent[1] as VmdkExtentAccess,
        size,
        type: type as VmdkExtentType,
        fileName: type === 'ZERO' ? undefined : extent[4],
        offset: extent[5] === undefined ? 0 : Number(extent[5]),
        line: t,
        lineOffset: ctx.base + lineStart,
      });
      continue;
    }
    const kv = /^([A-Za-z][\w.]*)\s*=\s*(.*)$/.exec(t);
    if (kv === null) {
      throw new CorruptImageError('CORRUPT_IMAGE', { ...at(lineStart), detail: 'descriptor line is neither a setting nor an extent', actual: t.slice(0, 60) });
    }
    const key = kv[1]!;
    const value = unquote(kv[2]!);
    const where = at(lineStart, `vmdk.descriptor.${key}`);
    const hex = () => {
      if (!/^[0-9a-fA-F]{1,8}$/.test(value)) throw new CorruptImageError('CORRUPT_IMAGE', { ...where, detail: `${key} is not a 32-bit hex number`, actual: value });
      return parseInt(value, 16);
    };
    if (key.startsWith('ddb.')) ddb[key] = value;
    else if (key === 'version') {
      version = Number(value);
      if (!Number.isInteger(version) || version < 1 || version > 3) throw new CorruptImageError('CORRUPT_IMAGE', { ...where, detail: 'unsupported descriptor version', expected: '1..3', actual: value });
    } else if (key === 'CID') CID = hex();
    else if (key === 'parentCID') {
      parentCID = hex();
      parentCIDOffset = ctx.base + lineStart;
    }
    else if (key === 'createType') {
      createType = value;
      createTypeOffset = lineStart;
    } else if (key === 'parentFileNameHint') {
      parentFileNameHint = value;
      parentFileNameHintOffset = ctx.base + lineStart;
    }
    // Other header keys (encoding, isNativeSnapshot, changeTrackPath, ...) do not change how data is read.
  }
  if (!sawContent) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(0), detail: 'descriptor is empty' });
  if (createType === undefined) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(0, 'vmdk.descriptor.createType'), detail: 'descriptor has no createType' });
  const ct = createType;
  if ((VMDK_CREATE_TYPES_UNSUPPORTED as readonly string[]).includes(ct) || !(VMDK_CREATE_TYPES_SUPPORTED as readonly string[]).includes(ct)) {
    throw new UnsupportedError('UNSUPPORTED_FORMAT', {
      ...at(createTypeOffset, 'vmdk.descriptor.createType'),
      detail: `VMDK createType "${ct}" is not supported (${VMDK_CREATE_TYPES_SUPPORTED.join(', ')} are)`,
      actual: ct,
    });
  }
  if (extents.length === 0) throw new CorruptImageError('CORRUPT_IMAGE', { ...at(0, 'vmdk.descriptor.extent'), detail: 'descriptor lists no extents' });
  return {
    version: version ?? 1,
    CID: CID ?? 0,
    parentCID: parentCID ?? VMDK_CID_NOPARENT,
    parentCIDOffset,
    createType: ct,
    parentFileNameHint,
    parentFileNameHintOffset,
    extents,
    ddb,
  };
}

/** Formats a CID as VMware writes it: 8 lowercase hex digits. */
export function formatCid(cid: number): string {
  return (cid >>> 0).toString(16).padStart(8, '0');
}

/** Encodes a descriptor as VMware and qemu write it. */
export function encodeDescriptor(d: VmdkDescriptorInput): string {
  const lines = [VMDK_DESCRIPTOR_SIGNATURE, 'version=1', `CID=${formatCid(d.CID)}`, `parentCID=${formatCid(d.parentCID)}`, `createType="${d.createType}"`];
  if (d.parentFileNameHint !== undefined) lines.push(`parentFileNameHint="${d.parentFileNameHint}"`);
  lines.push('', '# Extent description');
  for (const e of d.extents) {
    let l = `${e.access} ${e.size} ${e.type}`;
    if (e.fileName !== undefined) l += ` "${e.fileName}"`;
    if (e.type === 'FLAT' || e.type === 'VMFS') l += ` ${e.offset ?? 0}`;
    lines.push(l);
  }
  lines.push('', '# The Disk Data Base', '#DDB', '');
  for (const [k, v] of Object.entries(d.ddb)) lines.push(`${k} = "${v}"`);
  return `${lines.join('\n')}\n`;
}
