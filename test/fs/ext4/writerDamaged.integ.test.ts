/**
 * The writer on filesystems damaged in ways the reader does not flag (found on the
 * e2fsprogs corpus: f_sb_extra_isize, f_yesall): it refuses with CORRUPT_IMAGE naming
 * the field, instead of failing inside an encoder or writing a wrong count. The damage is
 * made with debugfs on a fresh mkfs image, so these run without the corpus.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { debugfsWrite, makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import { ImgdedupError } from '../../../src/errors.js';
import { strictFsck } from '../../helpers/e2fsck.js';
import { useTempDir } from '../../helpers/tmp.js';
import { writeImage } from './writerHarness.js';

const tmp = useTempDir('imgdedup-writer-damaged-');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const DATA = new Uint8Array(10_000).fill(0x5a);

/** A small update: a file of a few blocks at the root. */
async function writeFile(image: string, out: string): Promise<unknown> {
  try {
    await writeImage(image, out, async (w) => {
      await w.put(enc('/f'), { kind: 'file', size: DATA.length, data: async function* () { yield DATA; } }, { mode: 0o644, uid: 0, gid: 0 });
    });
    return undefined;
  } catch (err) {
    return err;
  }
}

function damaged(name: string, commands: string[]): string {
  const image = join(tmp(), `${name}.img`);
  makeExt4Image(image, undefined, { args: ['-b', '1024', '-N', '256'], sizeMiB: 8 });
  debugfsWrite(image, commands);
  // The damage is real: e2fsck sees it.
  expect(strictFsck(image).clean).toBe(false);
  return image;
}

describe('writer refuses damage the reader does not flag', () => {
  test('an s_want_extra_isize that does not fit the inode (e2fsck: "Bad desired extra isize"): CORRUPT_IMAGE at open', async () => {
    const image = damaged('want-extra-isize', ['ssv want_extra_isize 1024']);
    const before = readFileSync(image);
    const err = await writeFile(image, join(tmp(), 'want-extra-isize.out'));
    expect(err).toBeInstanceOf(ImgdedupError);
    expect(err).toMatchObject({ code: 'CORRUPT_IMAGE', data: { structure: 'ext4.superblock.s_want_extra_isize', actual: 1024 } });
    expect(readFileSync(image).equals(before)).toBe(true);
  });

  test('a group descriptor counting fewer free blocks than its bitmap has: CORRUPT_IMAGE naming the count', async () => {
    const image = damaged('free-blocks', ['set_bg 0 free_blocks_count 0', 'set_bg 0 checksum calc']);
    const err = await writeFile(image, join(tmp(), 'free-blocks.out'));
    expect(err).toBeInstanceOf(ImgdedupError);
    expect(err).toMatchObject({ code: 'CORRUPT_IMAGE', data: { structure: 'ext4.group_desc[0].bg_free_blocks_count' } });
  });

  test('a group descriptor counting more free inodes than the group has: CORRUPT_IMAGE naming the count', async () => {
    const image = damaged('free-inodes', ['set_bg 0 free_inodes_count 4294967293', 'set_bg 0 checksum calc']);
    const err = await writeFile(image, join(tmp(), 'free-inodes.out'));
    expect(err).toBeInstanceOf(ImgdedupError);
    expect(err).toMatchObject({ code: 'CORRUPT_IMAGE', data: { structure: 'ext4.group_desc[0].bg_free_inodes_count' } });
  });
});
