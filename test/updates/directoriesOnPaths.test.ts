/** DirectoriesOnPaths: every directory above an update's paths, each once, the root included. */
import { describe, expect, test } from 'vitest';
import { DirectoriesOnPaths } from '../../src/updates/directoriesOnPaths.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const shown = (d: DirectoriesOnPaths): string[] => d.paths.map((p) => new TextDecoder().decode(p));

describe('DirectoriesOnPaths', () => {
  test('the ancestors of each path, each once, whatever the order the paths come in', () => {
    const d = new DirectoriesOnPaths();
    for (const p of ['/usr/lib/x/a.so', '/usr/lib/x/b.so', '/etc/motd', '/usr/lib/y', '/usr/share/doc/z/copyright', '/top']) d.addAncestors(enc(p));
    expect(shown(d).sort()).toEqual(['', '/etc', '/usr', '/usr/lib', '/usr/lib/x', '/usr/share', '/usr/share/doc', '/usr/share/doc/z']);
  });

  test('a directory added itself (an opaque marker) comes with the directories above it, each once', () => {
    const d = new DirectoriesOnPaths();
    d.addDirectory(enc('/opt/app'));
    d.addAncestors(enc('/opt/app/file'));
    d.addDirectory(enc('/opt'));
    expect(shown(d).sort()).toEqual(['', '/opt', '/opt/app']);
  });
});
