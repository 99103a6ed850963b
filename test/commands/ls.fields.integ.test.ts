/**
 * `imgdedup ls --json` reads each file's fields where they lie in the inode (its fast
 * path reads them in place in the inode table): the high halves of uid, gid and size and
 * the epoch bits and nanoseconds of mtime, with 256- and 128-byte inodes, against
 * `debugfs stat` of the same inodes after debugfs set them.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { makeExt4Image } from '../../fixtures/ext4/ext4Fixtures.js';
import { imgdedup } from '../helpers/run.js';
import { useTempDir } from '../helpers/tmp.js';
import { debugfsBatch, parseStat } from '../fs/ext4/debugfsOracle.js';

const tmp = useTempDir('imgdedup-ls-fields-');

/** Runs debugfs commands that write (-w); its exit status. */
function debugfsBatchWrite(image: string, commands: readonly string[]): number | null {
  const r = spawnSync('debugfs', ['-w', '-f', '-', image], { input: `${commands.join('\n')}\n`, encoding: 'utf8' });
  return r.status;
}

interface Listed {
  name: string;
  ino: number;
  mode: number;
  links: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  mtimeNsec: number;
}

describe.each([256, 128])('ls fields with %i-byte inodes', (inodeSize) => {
  test('uid, gid, size and mtime (high halves, epoch bits, nanoseconds) are those debugfs stat shows', () => {
    const src = join(tmp(), `src${inodeSize}`);
    mkdirSync(join(src, 'dir'), { recursive: true });
    for (const n of ['a', 'b', 'c']) writeFileSync(join(src, 'dir', n), `${n}\n`);
    const image = join(tmp(), `fs${inodeSize}.img`);
    makeExt4Image(image, src, { args: ['-b', '4096', '-I', String(inodeSize)], sizeMiB: 8 });
    const w = debugfsBatchWrite(image, [
      'sif /dir/a uid 70000',
      'sif /dir/a gid 131077',
      'sif /dir/a size 0x123456789',
      'sif /dir/a mtime 0x7fffff00',
      ...(inodeSize > 128 ? ['sif /dir/a mtime_extra 0x00000ab7'] : []),
      'sif /dir/b mtime 0x80000000',
      'sif /dir/b uid 4294967295',
      'sif /dir/c mtime 0xfffffff0',
    ]);
    expect(w).toBe(0);
    const r = imgdedup(['ls', '--json', image, '/dir']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const listed = JSON.parse(r.stdout) as Listed[];
    expect(listed.map((e) => e.name)).toEqual(['a', 'b', 'c']);
    const stats = debugfsBatch(image, listed.map((e) => `stat /dir/${e.name}`)).map(parseStat);
    listed.forEach((e, i) => {
      const d = stats[i]!;
      expect({ ino: e.ino, mode: e.mode & 0o7777, links: e.links, uid: e.uid, gid: e.gid, size: e.size, mtime: e.mtime, mtimeNsec: e.mtimeNsec }).toEqual({
        ino: d.ino,
        mode: d.mode,
        links: d.links,
        uid: d.uid,
        gid: d.gid,
        size: d.size,
        mtime: d.mtime.sec,
        mtimeNsec: d.mtime.nsec,
      });
    });
    // The values set above, so that the comparison is not of zeros.
    expect(listed[0]).toMatchObject({ uid: 70000, gid: 131077, size: 0x123456789 });
    expect(listed[1]!.uid).toBe(4294967295);
    if (inodeSize > 128) expect(listed[0]).toMatchObject({ mtime: 0x7fffff00 + 3 * 2 ** 32, mtimeNsec: 0xab7 >>> 2 });
    else expect(listed[2]!.mtime).toBe(-16);
  });
});
