/**
 * The qcow2 snapshot table (qcow2.rst, "Snapshots"): nb_snapshots variable-length
 * entries at snapshots_offset, each padded to a multiple of 8 bytes.
 * decode is pure; readQcow2SnapshotTable does the bounded, windowed I/O.
 */
import { ByteReader } from '../ByteReader.js';
import { CorruptImageError } from '../../errors.js';
import type { ImageFile } from '../ImageFile.js';
import {
  QCOW2_MAX_SNAPSHOTS,
  QCOW2_MAX_SNAPSHOTS_SIZE_BYTES,
  QCOW2_MAX_SNAPSHOT_EXTRA_DATA,
  QCOW2_SNAPSHOT_FIXED_LENGTH,
} from './constants.js';

/** One snapshot table entry, with the spec's field names. */
export interface Qcow2Snapshot {
  readonly l1_table_offset: number;
  readonly l1_size: number;
  readonly id_str: string;
  readonly name: string;
  readonly date_sec: number;
  readonly date_nsec: number;
  readonly vm_clock_nsec: bigint;
  readonly vm_state_size: number;
  readonly extra_data_size: number;
  /** Extra data bytes 0-7, when present. */
  readonly vm_state_size_large?: number;
  /** Extra data bytes 8-15 (virtual disk size at snapshot time), when present. */
  readonly disk_size?: number;
  /** Absolute byte offset of the entry in the file. */
  readonly entryOffset: number;
  /** Bytes the entry takes, padding included. */
  readonly entryLength: number;
}

export interface Qcow2SnapshotTable {
  readonly snapshots: readonly Qcow2Snapshot[];
  /** Bytes of the whole table (the sum of the padded entry lengths). */
  readonly sizeBytes: number;
}

/**
 * Decodes the entry at the start of `r` (whose base is the entry's file offset).
 * Throws TRUNCATED if `r` ends inside it, CORRUPT_IMAGE for oversized extra data or
 * offsets above 2^53.
 */
export function decodeQcow2SnapshotEntry(r: ByteReader): Qcow2Snapshot {
  const l1_table_offset = r.u64be(0, 'l1_table_offset');
  const l1_size = r.u32be(8, 'l1_size');
  const idLen = r.u16be(12, 'id_str_size');
  const nameLen = r.u16be(14, 'name_size');
  const date_sec = r.u32be(16, 'date_sec');
  const date_nsec = r.u32be(20, 'date_nsec');
  const vm_clock_nsec = r.u64beBig(24, 'vm_clock_nsec');
  const vm_state_size = r.u32be(32, 'vm_state_size');
  const extra_data_size = r.u32be(36, 'extra_data_size');
  // qemu refuses more (QCOW_MAX_SNAPSHOT_EXTRA_DATA); it bounds the entry length.
  if (extra_data_size > QCOW2_MAX_SNAPSHOT_EXTRA_DATA) {
    r.fail(36, 'extra_data_size', 'snapshot extra data larger than 1024 bytes', { actual: extra_data_size });
  }
  const fixedEnd = QCOW2_SNAPSHOT_FIXED_LENGTH;
  const extra = r.sub(fixedEnd, extra_data_size, `${r.ctx.structure}.extra_data`);
  const idStart = fixedEnd + extra_data_size;
  const id_str = decodeText(r.slice(idStart, idLen, 'id_str'));
  const name = decodeText(r.slice(idStart + idLen, nameLen, 'name'));
  const entryLength = Math.ceil((idStart + idLen + nameLen) / 8) * 8;
  return {
    l1_table_offset, l1_size, id_str, name, date_sec, date_nsec, vm_clock_nsec, vm_state_size, extra_data_size,
    ...(extra_data_size >= 8 ? { vm_state_size_large: extra.u64be(0, 'vm_state_size_large') } : {}),
    ...(extra_data_size >= 16 ? { disk_size: extra.u64be(8, 'disk_size') } : {}),
    entryOffset: r.ctx.base,
    entryLength,
  };
}

/**
 * Reads the snapshot table named by the header. Bounded: at most 65536 entries and
 * 64 MiB (qemu's limits), read in windows, every entry inside the file.
 * Throws CORRUPT_IMAGE (limits, alignment), TRUNCATED (the table runs past the end of the file), IO.
 */
export async function readQcow2SnapshotTable(
  file: ImageFile,
  h: { readonly nb_snapshots: number; readonly snapshots_offset: number; readonly cluster_bits: number },
): Promise<Qcow2SnapshotTable> {
  if (h.nb_snapshots === 0) return { snapshots: [], sizeBytes: 0 };
  const at = (field: string) => ({ file: file.path, structure: `qcow2.header.${field}` });
  if (h.nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
    throw new CorruptImageError('CORRUPT_IMAGE', { ...at('nb_snapshots'), offset: 60, detail: `more than ${QCOW2_MAX_SNAPSHOTS} snapshots`, actual: h.nb_snapshots });
  }
  if (h.snapshots_offset % 2 ** h.cluster_bits !== 0) {
    throw new CorruptImageError('CORRUPT_IMAGE', { ...at('snapshots_offset'), offset: 64, detail: 'snapshot table is not cluster-aligned', actual: h.snapshots_offset });
  }
  const WINDOW = 256 * 1024;
  let winStart = 0;
  let win: Uint8Array = new Uint8Array(0);
  const snapshots: Qcow2Snapshot[] = [];
  let pos = h.snapshots_offset;
  for (let i = 0; i < h.nb_snapshots; i++) {
    const structure = `qcow2.snapshot[${i}]`;
    if (pos - h.snapshots_offset > QCOW2_MAX_SNAPSHOTS_SIZE_BYTES) {
      throw new CorruptImageError('CORRUPT_IMAGE', { file: file.path, structure, offset: pos, detail: 'snapshot table larger than 64 MiB' });
    }
    // The longest possible entry: fixed part, 1024 bytes of extra data, two 64 KiB strings.
    const maxEntry = QCOW2_SNAPSHOT_FIXED_LENGTH + QCOW2_MAX_SNAPSHOT_EXTRA_DATA + 2 * 0xffff + 8;
    if (pos < winStart || pos + Math.min(maxEntry, file.size - pos) > winStart + win.length) {
      if (pos + QCOW2_SNAPSHOT_FIXED_LENGTH > file.size) {
        throw new CorruptImageError('TRUNCATED', { file: file.path, structure, offset: pos, detail: `snapshot table entry lies beyond the end of the file (${file.size} bytes)` });
      }
      winStart = pos;
      win = await file.readExact(pos, Math.min(file.size - pos, Math.max(WINDOW, maxEntry)), structure);
    }
    const r = new ByteReader(win.subarray(pos - winStart), { file: file.path, structure, base: pos });
    const s = decodeQcow2SnapshotEntry(r);
    snapshots.push(s);
    pos += s.entryLength;
  }
  return { snapshots, sizeBytes: pos - h.snapshots_offset };
}

function decodeText(bytes: Uint8Array): string {
  return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
}
