/**
 * The journal's state against debugfs and e2fsck: committed but unreplayed transactions
 * written by debugfs (`jo`, `jw`, `jc`, which write real jbd2 transactions) are counted as
 * `logdump` shows them, and the dirty state is reported as a write refusal and a reader
 * warning.
 */
import { closeSync, openSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { debugfsWrite, makeExt4Image } from '../../../fixtures/ext4/ext4Fixtures.js';
import { run, sh } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';

const tmp = useTempDir('imgdedup-journal-');

/** A fresh ext4 image with `commands` run by debugfs -w (journal commands among them). */
function imageWith(name: string, mkfsArgs: string[], commands: string[]): string {
  const dir = tmp();
  const image = join(dir, name);
  makeExt4Image(image, undefined, { sizeMiB: 32, args: mkfsArgs });
  writeFileSync(join(dir, 'blocks.bin'), Buffer.alloc(64 << 10, 0x5a));
  if (commands.length > 0) debugfsWrite(image, commands, dir);
  return image;
}

/** Transactions `debugfs logdump` finds committed (one commit block each). */
function logdumpCommits(image: string): number {
  return [...sh('debugfs', ['-R', 'logdump', image]).matchAll(/type 2 \(commit block\)/g)].length;
}

async function withFs<T>(image: string, f: (fs: Ext4Fs) => Promise<T>): Promise<T> {
  const dev = await RawImage.open(image);
  try {
    return await f(await Ext4Fs.open(dev, { file: image }));
  } finally {
    await dev.close();
  }
}

describe('journal state', () => {
  it('a clean filesystem: no recovery needed, nothing to warn about', async () => {
    const image = imageWith('clean.img', ['-b', '4096'], []);
    await withFs(image, async (fs) => {
      expect(await fs.journalState()).toEqual({ needsRecovery: false, committedTransactions: 0 });
      expect(await fs.dirtyStates()).toEqual([]);
      expect(await fs.readWarnings()).toEqual([]);
    });
  });

  it('two committed transactions (4 KiB blocks, no journal checksums): counted as logdump shows, and warned about', async () => {
    const image = imageWith('two.img', ['-b', '4096'], ['jo', 'jw -b 300,301 blocks.bin', 'jw -b 302 blocks.bin', 'jc']);
    expect(logdumpCommits(image)).toBe(2);
    // e2fsck sees the journal to replay (and, read-only, does not replay it).
    const fsck = run('e2fsck', ['-fn', image], { env: { E2FSCK_CONFIG: '/dev/null' } });
    expect(fsck.stdout + fsck.stderr).toContain('skipping journal recovery');
    await withFs(image, async (fs) => {
      expect(await fs.journalState()).toEqual({ needsRecovery: true, committedTransactions: 2 });
      expect(await fs.writeRefusal()).toEqual({
        code: 'DIRTY_FILESYSTEM',
        state: 'needs_recovery',
        reason: 'the journal needs recovery (needs_recovery set, 2 committed transactions not replayed)',
        detail: 'needs_recovery set, 2 committed transactions not replayed',
      });
      expect(await fs.readWarnings()).toEqual([
        `${image}: filesystem has a journal that needs recovery (needs_recovery set, 2 committed transactions not replayed): what is shown is the state before the journal is replayed; run e2fsck or mount it to replay`,
      ]);
    });
  });

  it('checksum v3 tags, a revoke record, 1 KiB blocks and an uncommitted transaction: only committed ones count', async () => {
    const image = imageWith('v3.img', ['-b', '1024'], [
      'jo -c',
      'jw -b 300,301 blocks.bin',
      'jw -b 302,303,304,305,306,307,308,309,310,311 -r 500 blocks.bin',
      'jw -b 312 -c blocks.bin', // -c: written, not committed
      'jc',
    ]);
    expect(sh('dumpe2fs', ['-h', image])).toMatch(/Journal features:.*journal_checksum_v3/);
    const commits = logdumpCommits(image);
    expect(commits).toBeGreaterThanOrEqual(1);
    await withFs(image, async (fs) => {
      expect(await fs.journalState()).toEqual({ needsRecovery: true, committedTransactions: commits });
    });
  });

  it('a corrupt journal superblock: the count is unknown, the warning stays', async () => {
    const image = imageWith('bad.img', ['-b', '4096'], ['jo', 'jw -b 300 blocks.bin', 'jc']);
    const jblock = Number(sh('debugfs', ['-R', 'bmap <8> 0', image]).trim());
    const fd = openSync(image, 'r+');
    writeSync(fd, Buffer.from([0, 0, 0, 0]), 0, 4, jblock * 4096);
    closeSync(fd);
    await withFs(image, async (fs) => {
      const j = await fs.journalState();
      expect(j?.needsRecovery).toBe(true);
      expect(j?.committedTransactions).toBeNull();
      expect(j?.problem).toMatch(/jbd2\.superblock.*h_magic/);
      expect((await fs.readWarnings())[0]).toMatch(/needs recovery \(needs_recovery set, an unknown number of committed transactions .*not replayed\)/);
    });
  });

  it('recorded errors and orphans are warned about too', async () => {
    const image = imageWith('errors.img', ['-b', '4096'], ['ssv state 3', 'ssv last_orphan 12']);
    await withFs(image, async (fs) => {
      expect((await fs.dirtyStates()).map((d) => d.state)).toEqual(['errors', 'orphans']);
      const w = await fs.readWarnings();
      expect(w[0]).toBe(`${image}: filesystem has recorded errors (s_state): what is shown may be inconsistent; run e2fsck`);
      expect(w[1]).toMatch(/orphan inodes present \(s_last_orphan 12\)/);
    });
  });
});
