/**
 * Journal state on the e2fsprogs test images that need recovery (../shared/corpus,
 * journals written by the kernel, 32- and 64-bit, an external journal, a journal inode
 * that maps nothing): the committed transactions counted equal `debugfs logdump`'s commit
 * blocks; where logdump cannot read the journal, the count is unknown, never a guess.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { ROOT, run } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';

const CORPUS = join(ROOT, '..', 'shared', 'corpus', 'ext4-e2fsprogs');
const tmp = useTempDir('imgdedup-journal-corpus-');

test.each(['f_jnl_32bit', 'f_jnl_64bit', 'f_clear_orphan_file', 'f_ext_journal', 'f_journal'])('%s: committed transactions as logdump counts them', async (name) => {
  const image = join(tmp(), `${name}.img`);
  writeFileSync(image, gunzipSync(readFileSync(join(CORPUS, `${name}.img.gz`))));
  const logdump = run('debugfs', ['-R', 'logdump', image]);
  const readable = /Journal starts at block/.test(logdump.stdout);
  const commits = [...logdump.stdout.matchAll(/type 2 \(commit block\)/g)].length;
  const dev = await RawImage.open(image);
  try {
    const fs = await Ext4Fs.open(dev, { file: name, verifyChecksums: 'warn' });
    const j = await fs.journalState();
    expect(j?.needsRecovery).toBe(true);
    expect(j?.committedTransactions).toBe(readable ? commits : null);
    expect((await fs.readWarnings())[0]).toMatch(/^\S+: filesystem has a journal that needs recovery/);
  } finally {
    await dev.close();
  }
  if (name.startsWith('f_jnl')) expect(commits).toBeGreaterThan(2);
});
