/**
 * Journal state on the e2fsprogs test images that need recovery (../shared/corpus,
 * journals written by the kernel, 32- and 64-bit, an external journal, a journal inode
 * that maps nothing): the committed transactions counted equal `debugfs logdump`'s commit
 * blocks; where logdump cannot read the journal, the count is unknown, never a guess.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { RawImage } from '../../../src/diskimage/raw/RawImage.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import { run } from '../../helpers/run.js';
import { useTempDir } from '../../helpers/tmp.js';
import { findE2fsprogsCorpus, noteMissingCorpus } from '../../helpers/corpus.js';

const corpus = findE2fsprogsCorpus();
const tmp = useTempDir('imgdedup-journal-corpus-');
const note = noteMissingCorpus(
  'the e2fsprogs test images (journal states)',
  corpus !== undefined,
  'Run `node fixtures/fetch-e2fsprogs-tests.mjs`, or provide ../shared/corpus/ext4-e2fsprogs or $IMGDEDUP_CORPUS/ext4-e2fsprogs.',
  true,
);

describe.skipIf(corpus === undefined)(`journal state on the e2fsprogs corpus${note}`, () => {
  // f_clear_orphan_file is newer than some Debian releases' e2fsprogs: skipped where the corpus lacks it.
  const NAMES = ['f_jnl_32bit', 'f_jnl_64bit', 'f_clear_orphan_file', 'f_ext_journal', 'f_journal'];
  for (const name of NAMES) {
    test.skipIf(name === 'f_clear_orphan_file' && !corpus?.names.includes(name))(`${name}: committed transactions as logdump counts them`, async () => {
      const image = join(tmp(), `${name}.img`);
      writeFileSync(image, gunzipSync(readFileSync(join(corpus!.dir, `${name}.img.gz`))));
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
  }
});
