/**
 * The help and the README say the same thing, and what they say works: the README lists
 * exactly the commands, options and examples that `--help` prints, and every example line printed
 * by a command's `--help` runs successfully on images named as in the example.
 */
import { beforeAll, describe, expect, test } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, imgdedup } from './helpers/run.js';
import { useTempDir } from './helpers/tmp.js';
import { makeExampleDisks } from './helpers/exampleDisks.js';

const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The flags of an option term: "-f, --format <format>" -> ["-f", "--format"]. */
const flagsOf = (term: string): string[] => term.split(/,\s*/).map((t) => t.trim().split(/\s/)[0]!).filter((f) => f.startsWith('-'));

/** The lines of a `--help` section ("Options:", "Commands:", "Examples:"), up to the next blank line. */
function helpSection(help: string, title: string): string[] {
  const lines = help.split('\n');
  const start = lines.indexOf(`${title}:`);
  if (start === -1) return [];
  const end = lines.findIndex((l, i) => i > start && l.trim() === '');
  return lines.slice(start + 1, end === -1 ? undefined : end);
}

/** Options a `--help` prints (continuation lines of long descriptions are skipped). */
function helpOptions(help: string): string[] {
  return helpSection(help, 'Options')
    .map((l) => /^ {2}(-\S.*?)(?: {2,}|$)/.exec(l)?.[1])
    .filter((t): t is string => t !== undefined)
    .flatMap(flagsOf)
    .sort();
}

/** Options a README section lists as "- `-f, --format FORMAT`: ..." bullets. */
function readmeOptions(section: string): string[] {
  return [...section.matchAll(/^- `(-[^`]+)`/gm)].flatMap((m) => flagsOf(m[1]!)).sort();
}

/** README command sections, by command name: "### `imgdedup NAME ...`" up to the next heading. */
function readmeCommands(): Map<string, string> {
  const sections = new Map<string, string>();
  for (const m of README.matchAll(/^### `imgdedup (\w+)[^`]*`\n([\s\S]*?)(?=^##)/gm)) sections.set(m[1]!, m[2]!);
  return sections;
}

/** `imgdedup --help` and each command's `--help`, run once. */
let topHelp = '';
const commandHelp = new Map<string, string>();
const helpCommands = (): string[] =>
  helpSection(topHelp, 'Commands')
    .map((l) => /^ {2}(\w+)/.exec(l)?.[1])
    .filter((n): n is string => n !== undefined && n !== 'help');

beforeAll(() => {
  topHelp = imgdedup(['--help']).stdout;
  for (const cmd of helpCommands()) {
    const r = imgdedup([cmd, '--help']);
    expect(r.status, `${cmd} --help`).toBe(0);
    commandHelp.set(cmd, r.stdout);
  }
});

describe('the README and --help agree', () => {
  test('the same commands', () => {
    const commands = helpCommands();
    expect(commands.length).toBeGreaterThan(0);
    expect([...readmeCommands().keys()].sort()).toEqual([...commands].sort());
  });

  test('the same global options', () => {
    const intro = README.slice(README.indexOf('## Commands'), README.indexOf('\n### '));
    expect(readmeOptions(intro)).toEqual(helpOptions(topHelp));
  });

  test("each command's README example block is exactly its --help examples", () => {
    const sections = readmeCommands();
    for (const cmd of helpCommands()) {
      const block = /^```sh\n([\s\S]*?)^```/m.exec(sections.get(cmd) ?? '')?.[1] ?? '';
      const fromReadme = block.split('\n').map((l) => l.trim()).filter((l) => l !== '');
      const fromHelp = helpSection(commandHelp.get(cmd)!, 'Examples').map((l) => l.trim());
      expect(fromReadme, `README examples of ${cmd}`).toEqual(fromHelp);
    }
  });

  test("each command's options", () => {
    const sections = readmeCommands();
    for (const cmd of helpCommands()) {
      const fromHelp = helpOptions(commandHelp.get(cmd)!).filter((f) => f !== '-h' && f !== '--help');
      expect(readmeOptions(sections.get(cmd) ?? ''), `README options of ${cmd}`).toEqual(fromHelp);
    }
  });
});

describe('every --help example works', () => {
  const tmp = useTempDir('imgdedup-examples-');
  let dir: string;
  beforeAll(() => {
    dir = tmp();
    makeExampleDisks(dir);
  }, 60_000);

  /** Example lines of every command's --help, in order. */
  const examples = (): Array<{ command: string; line: string }> =>
    helpCommands().flatMap((command) =>
      helpSection(commandHelp.get(command)!, 'Examples').map((l) => ({ command, line: l.trim() })),
    );

  test('every command has examples, written as `imgdedup ...` with at most a `> FILE` redirection', () => {
    const all = examples();
    for (const command of helpCommands()) expect(all.filter((e) => e.command === command).length, command).toBeGreaterThan(0);
    for (const { line } of all) expect(line).toMatch(/^imgdedup [^'"|&;<$`]+$/);
  });

  test('each runs with exit 0 on the example images', () => {
    for (const { line } of examples()) {
      const words = line.split(/\s+/).slice(1);
      const redirect = words.indexOf('>');
      const args = redirect === -1 ? words : words.slice(0, redirect);
      const r = imgdedup(args, { cwd: dir });
      expect(r.status, `${line}\n${r.stderr}`).toBe(0);
      expect(r.stderr, line).not.toMatch(/error|warning/i);
      if (redirect !== -1) {
        const file = words[redirect + 1]!;
        writeFileSync(join(dir, file), r.stdout);
        if (file.endsWith('.json')) expect(() => JSON.parse(r.stdout) as unknown, line).not.toThrow();
      } else expect(r.stdout.length, line).toBeGreaterThan(0);
    }
  }, 120_000);
});
