/**
 * Large linear directories (mkfs.ext4 -d leaves them unindexed, as most golden images
 * have them): the writer keeps each directory's listing and where every name lives, so
 * that a change does not read the whole directory. Those shortcuts must give the same
 * filesystem a full scan would: after a seeded mix of removals, additions and
 * replacements in a directory of thousands of names spread over many blocks, the
 * strict e2fsck oracle holds, debugfs lists exactly the model, the directory is still
 * linear, and the reader (its name index for multi-block directories) finds every name
 * where debugfs does and no removed one.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { mulberry32 } from '../../../fixtures/prng.mjs';
import { openChain } from '../../../src/diskimage/openChain.js';
import { EXT4_INDEX_FL } from '../../../src/fs/ext4/constants.js';
import { Ext4Fs } from '../../../src/fs/ext4/Ext4Fs.js';
import type { NodeContent } from '../../../src/fs/ext4/Ext4Writer.js';
import { expectStrictFsckClean } from '../../helpers/e2fsck.js';
import { useTempDir } from '../../helpers/tmp.js';
import { debugfsBatch } from './debugfsOracle.js';
import { writeImage } from './writerHarness.js';

const tmp = useTempDir('imgdedup-lineardir-');
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

function content(text: string): NodeContent {
  const data = enc(text);
  return {
    kind: 'file',
    size: data.length,
    async *data() {
      yield data;
    },
  };
}

/** `debugfs ls -p DIR` as name -> inode ('.', '..' and empty records left out). */
function debugfsList(image: string, dir: string): Map<string, number> {
  const [out] = debugfsBatch(image, [`ls -p ${dir}`]);
  const names = new Map<string, number>();
  for (const line of out!.split('\n')) {
    const f = line.split('/');
    if (f.length >= 6 && f[1] !== '0' && f[5] !== '.' && f[5] !== '..') names.set(f[5]!, Number(f[1]));
  }
  return names;
}

describe.each([1024, 4096])('a linear directory of many blocks (%i-byte blocks)', (blockSize) => {
  it('takes removals, additions and replacements exactly as a full scan would', async () => {
    const dir = join(tmp(), String(blockSize));
    const tree = join(dir, 'tree');
    mkdirSync(join(tree, 'many'), { recursive: true });
    const next = mulberry32(blockSize);
    // Names of varied length, so records of different sizes share blocks and removals leave gaps of every size.
    const name = (i: number): string => `f${i}-${'x'.repeat(Math.floor(next() * 40))}`;
    const model = new Set<string>();
    for (let i = 0; i < 1500; i++) {
      const n = name(i);
      writeFileSync(join(tree, 'many', n), `base ${i}\n`);
      model.add(n);
    }
    const image = join(dir, 'base.img');
    // Made without dir_index (mkfs -d would index it), then the feature turned on: a directory that grew linear, as on an old or upgraded system.
    const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-O', '^dir_index', '-b', String(blockSize), '-N', '8192', '-d', tree, image, '24M'], { encoding: 'utf8' });
    expect(mk.status, mk.stderr).toBe(0);
    const tune = spawnSync('tune2fs', ['-O', 'dir_index', image], { encoding: 'utf8' });
    expect(tune.status, tune.stderr).toBe(0);
    const before = debugfsBatch(image, ['stat /many'])[0]!;
    expect(parseInt(/Flags: 0x([0-9a-f]+)/.exec(before)![1]!, 16) & EXT4_INDEX_FL, before).toBe(0);
    const blocksBefore = Number(/Size: (\d+)/.exec(before)![1]) / blockSize;
    expect(blocksBefore).toBeGreaterThan(8);

    const present = [...model];
    const removed: string[] = [];
    const replaced: string[] = [];
    const added: string[] = [];
    const out = join(dir, 'out.img');
    await writeImage(image, out, async (w) => {
      for (let k = 0; k < 600; k++) {
        const r = next();
        if (r < 0.35 && present.length > 0) {
          const n = present.splice(Math.floor(next() * present.length), 1)[0]!;
          expect(await w.remove(enc(`/many/${n}`))).toBe(true);
          model.delete(n);
          removed.push(n);
        } else if (r < 0.6 && present.length > 0) {
          const n = present[Math.floor(next() * present.length)]!;
          await w.put(enc(`/many/${n}`), content(`replaced ${k}\n`), { mode: 0o644, uid: 0, gid: 0 });
          replaced.push(n);
        } else {
          const n = `new${k}-${'y'.repeat(Math.floor(next() * 60))}`;
          await w.put(enc(`/many/${n}`), content(`new ${k}\n`), { mode: 0o600, uid: 1, gid: 2 });
          model.add(n);
          present.push(n);
          added.push(n);
        }
      }
    });
    expect(removed.length).toBeGreaterThan(100);
    expect(added.length).toBeGreaterThan(100);

    expectStrictFsckClean(out);
    const listed = debugfsList(out, '/many');
    expect([...listed.keys()].sort()).toEqual([...model].sort());
    const stat = debugfsBatch(out, ['stat /many'])[0]!;
    expect(parseInt(/Flags: 0x([0-9a-f]+)/.exec(stat)![1]!, 16) & EXT4_INDEX_FL).toBe(0);
    const [sample] = debugfsBatch(out, [`cat /many/${replaced[replaced.length - 1]}`]);
    expect(sample).toMatch(/^replaced \d+\n/);

    // The reader, through its name index, agrees with debugfs name for name.
    const chain = await openChain(out);
    try {
      const fs = await Ext4Fs.open(chain.device, { file: out });
      for (const [n, ino] of listed) expect(await fs.lookup(`/many/${n}`)).toBe(ino);
      for (const n of removed.filter((x) => !model.has(x))) expect(await fs.lookup(`/many/${n}`)).toBeUndefined();
    } finally {
      await chain.close();
    }
  }, 60_000);
});
