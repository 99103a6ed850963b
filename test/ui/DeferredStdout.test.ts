/** DeferredStdout: nothing reaches the stream until commit; past its memory limit it spills to a temporary file. */
import { describe, expect, test } from 'vitest';
import { PassThrough } from 'node:stream';
import { existsSync } from 'node:fs';
import { DeferredStdout } from '../../src/ui/DeferredStdout.js';
import { pendingTempFiles } from '../../src/diskimage/tempFiles.js';

function sink(): { stream: PassThrough; text: () => string } {
  const stream = new PassThrough();
  const chunks: Buffer[] = [];
  stream.on('data', (c: Buffer) => chunks.push(c));
  return { stream, text: () => Buffer.concat(chunks).toString() };
}

const lines = (n: number) => Array.from({ length: n }, (_, i) => `line ${i} ${'x'.repeat(i % 37)}`);

describe('DeferredStdout', () => {
  test.each([
    ['in memory', 1 << 20],
    ['spilled to a temporary file', 100],
  ])('commit writes every line, in order (%s)', async (_how, limit) => {
    const out = sink();
    const d = new DeferredStdout(limit, out.stream);
    const all = lines(2000);
    for (const l of all) d.line(l);
    expect(out.text()).toBe('');
    await d.commit();
    expect(out.text()).toBe(all.map((l) => `${l}\n`).join(''));
    expect(pendingTempFiles()).toEqual([]);
  });

  test.each([
    ['in memory', 1 << 24],
    ['spilled to a temporary file', 5000],
  ])('bytes put at buf[pos] after room(n), text of any length and lines interleave in order (%s)', async (_how, limit) => {
    const out = sink();
    const d = new DeferredStdout(limit, out.stream);
    const expected: string[] = [];
    for (let i = 0; i < 3000; i++) {
      if (i % 3 === 0) {
        const bytes = Buffer.from(`bytes ${i} é\n`);
        d.room(bytes.length);
        bytes.copy(d.buf, d.pos);
        d.pos += bytes.length;
        expected.push(bytes.toString());
      } else if (i % 1000 === 1) {
        // Longer than a chunk.
        const big = `${'long '.repeat(30_000)}${i}\n`;
        d.write(big);
        expected.push(big);
      } else {
        d.line(`line ${i} ✓`);
        expected.push(`line ${i} ✓\n`);
      }
    }
    await d.commit();
    expect(out.text()).toBe(expected.join(''));
    expect(pendingTempFiles()).toEqual([]);
  });

  test('discard drops everything and removes the spill file', () => {
    const out = sink();
    const d = new DeferredStdout(100, out.stream);
    for (const l of lines(50)) d.line(l);
    const [spill] = pendingTempFiles();
    expect(spill !== undefined && existsSync(spill)).toBe(true);
    d.discard();
    expect(existsSync(spill!)).toBe(false);
    expect(pendingTempFiles()).toEqual([]);
    expect(out.text()).toBe('');
  });
});
