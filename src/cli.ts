#!/usr/bin/env node
/**
 * The imgdedup command-line program: parses arguments, calls one command, renders
 * its result (text or --json) and maps errors to exit codes (README, "Exit codes").
 * The only module that touches argv, stdout/stderr or the exit code. Commands are imported
 * when run, so that a command (or --help) does not load the code of the others.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from '@commander-js/extra-typings';
import { EXIT, ImgdedupError, InternalError, UsageError, exitCodeFor, wrapIoError } from './errors.js';
import { processOutput as output } from './ui/output.js';
import { createProgress } from './ui/progress.js';
import { parseWholeImageArg, parseWholeImageArgs } from './commands/imageArg.js';
import { outputsComplete, removeTempFilesSync } from './diskimage/tempFiles.js';
import { DeferredStdout } from './ui/DeferredStdout.js';
import { argBytes } from './ui/argBytes.js';
import pkg from '../package.json' with { type: 'json' };

const EXIT_CODES_HELP = `
Global options (--json, --debug) may be given before or after the command.

Exit codes:
  0   success
  1   usage error (bad arguments or options, unknown command)
  2   invalid, corrupt or unsupported input, or refused (dirty filesystem, output exists)
  3   merge conflict refused (rebase --conflict fail)
  4   an output failed its verification
  5   I/O error (missing file, permission denied, disk full)
  70  internal error (a bug: please report it with the output of --debug)
  129, 130, 143  interrupted by SIGHUP, SIGINT or SIGTERM (temporary outputs are removed, nothing was written;
                 a signal once the outputs are in place lets the command finish)`;

/**
 * The exact bytes of argument `value` when Node's decoding lost some (it holds U+FFFD) and
 * Linux's /proc/self/cmdline has them (ui/argBytes.ts); else undefined.
 */
function lostArgBytes(value: string): Uint8Array | undefined {
  if (!value.includes('\uFFFD')) return undefined;
  let cmdline: Uint8Array;
  try {
    cmdline = readFileSync('/proc/self/cmdline');
  } catch {
    return undefined; // Not Linux, or no /proc: the text as Node decoded it.
  }
  return argBytes(process.argv, cmdline, value);
}

/** A global flag given anywhere before `--` (before or after the command name). */
function hasGlobalFlag(flag: '--json' | '--debug'): boolean {
  const args = process.argv.slice(2);
  const end = args.indexOf('--');
  return (end === -1 ? args : args.slice(0, end)).includes(flag);
}

const debug = hasGlobalFlag('--debug');
const jsonMode = hasGlobalFlag('--json');

/** Signals that end the program, with the shell's exit status for each (128 + signal number). */
const SIGNAL_EXIT = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 } as const;

function printJson(value: unknown): void {
  output.out(JSON.stringify(value, null, 2));
}

const formatOption = () =>
  new Option('-f, --format <format>', 'image format of IMAGE (default: probe)').choices(['raw', 'qcow2', 'vmdk'] as const);

/** A JSON array streamed into `out` one element at a time (map and ls entries). */
function jsonArray(out: DeferredStdout): { item(json: string): void; end(): void } {
  let first = true;
  return {
    item(json) {
      out.write(`${first ? '[' : ',\n'}${json}`);
      first = false;
    },
    end() {
      out.write(first ? '[]\n' : ']\n');
    },
  };
}

/** Prints an error on stderr: one JSON object under --json, else one line (plus `hint`). */
function printError(e: ImgdedupError, hint?: string): void {
  if (jsonMode) output.err(JSON.stringify(e.toJSON()));
  else output.err(`imgdedup: error [${e.code}]: ${e.message}${hint !== undefined ? `\n${hint}` : ''}`);
}

/** Help text for a command's examples; test/cli.help.integ.test.ts runs every one of them. */
function examples(...lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}`;
}

export function buildProgram(): Command {
  const program = new Command('imgdedup')
    .description(
      'Disk-image tools for fleets of VM overlays: inspect, map, check and convert qcow2, VMDK and raw images ' +
        'and their backing chains, and read the ext2/3/4 filesystems inside them.',
    )
    .version(pkg.version, '-V, --version')
    .option('--json', 'results as JSON on stdout, errors as a JSON object on stderr')
    .option('--debug', 'print stack traces of internal errors')
    .addHelpText('after', EXIT_CODES_HELP)
    .helpCommand(false)
    // report() prints usage errors, once, in the same shape as every other error.
    .configureOutput({ outputError: () => undefined })
    .exitOverride();
  // Commander records --json on the program or on the command, depending on where it was given.
  const json = (opts: { json?: true }): boolean => opts.json === true || program.opts().json === true;

  program
    .command('info')
    .description('show format, sizes, cluster size, the backing chain and the partitions of an image')
    .argument('<image>', 'image file (qcow2, vmdk or raw); a whole image, not IMAGE:PART')
    .addOption(formatOption())
    .option('--json', 'print the result as JSON')
    .addHelpText('after', examples('imgdedup info client.qcow2', 'imgdedup info --json base.vmdk'))
    .action(async (image, opts) => {
      const { info, formatInfo } = await import('./commands/info.js');
      const r = await info({ image: parseWholeImageArg(image, 'info'), ...(opts.format ? { format: opts.format } : {}) });
      if (json(opts)) printJson(r);
      else output.out(formatInfo(r));
    });

  program
    .command('map')
    .description('list which guest ranges each layer of the chain stores (like qemu-img map)')
    .argument('<image>', 'image file (qcow2, vmdk or raw)')
    .addOption(formatOption())
    .option('--json', 'print entries as a JSON array, with qemu-img map --output=json field names')
    .addHelpText('after', examples('imgdedup map client.qcow2', 'imgdedup map --json client.qcow2 > map.json'))
    .action(async (image, opts) => {
      const { map, formatMapEntry, formatMapEntryJson, MAP_HEADER } = await import('./commands/map.js');
      const asJson = json(opts);
      // Held until the map is complete: a failure prints nothing on stdout.
      const out = new DeferredStdout();
      try {
        const array = jsonArray(out);
        if (!asJson) out.line(MAP_HEADER);
        await map({
          image: parseWholeImageArg(image, 'map'),
          ...(opts.format ? { format: opts.format } : {}),
          onEntry: (e) => {
            if (asJson) array.item(formatMapEntryJson(e));
            else {
              const line = formatMapEntry(e);
              if (line !== undefined) out.line(line);
            }
          },
        });
        if (asJson) array.end();
        await out.commit();
      } finally {
        out.discard();
      }
    });

  program
    .command('convert')
    .description('copy an image (read through its backing chain) into a new qcow2, VMDK or sparse raw image, or an overlay on --backing')
    .argument('<src>', 'source image (qcow2, vmdk or raw), read through its whole backing chain')
    .argument('<dst>', 'output image: a new file, or with --force an existing regular file')
    .addOption(new Option('-f, --format <format>', 'image format of SRC (default: probe)').choices(['raw', 'qcow2', 'vmdk'] as const))
    .addOption(new Option('-O, --output-format <format>', 'output format').choices(['qcow2', 'raw', 'vmdk'] as const).default('qcow2' as const))
    .addOption(new Option('--subformat <type>', 'VMDK output subformat (default monolithicSparse; streamOptimized for shipping)').choices(['monolithicSparse', 'streamOptimized'] as const))
    .option('-b, --backing <file>', 'write DST as an overlay on FILE holding only what differs: a qcow2 overlay, or a VMDK delta on a VMDK FILE (name recorded as given, relative to DST)')
    .option('-F, --backing-format <fmt>', 'format of the backing file (default: probe), recorded in DST')
    .option('--cluster-size <n>', 'qcow2 cluster size, 512 to 2M, or VMDK grain size, 4k to 2M (e.g. 4k, 64k, 2M; default 64k)')
    .option('--extended-l2', 'qcow2 extended L2 entries (32 subclusters per cluster; clusters of 16k or more)')
    .option('--force', 'replace DST if it is an existing regular file (never a directory, device or link)')
    .option('--json', 'print the result as JSON (no progress)')
    .addHelpText(
      'after',
      '\nDST is written under a temporary name in its directory and renamed when complete; on failure or\n' +
        'interruption (Ctrl-C, SIGTERM) nothing is left behind.\n' +
        examples(
          'imgdedup convert client.qcow2 flat.qcow2',
          'imgdedup convert -O raw client.qcow2 flat.raw',
          'imgdedup convert --backing base.qcow2 --cluster-size 4k client.qcow2 thin.qcow2',
          'imgdedup convert -O vmdk --backing base.vmdk --cluster-size 4k client.qcow2 delta.vmdk',
          'imgdedup convert -O vmdk --subformat streamOptimized client.qcow2 ship.vmdk',
        ),
    )
    .action(async (src, dst, opts, cmd) => {
      const { convert, extensionHint, formatConvert, parseClusterSize } = await import('./commands/convert.js');
      const asJson = json(opts);
      const hint = extensionHint(dst, opts.outputFormat, cmd.getOptionValueSource('outputFormat') === 'default');
      // Said before the copy starts, where it can still be interrupted; under --json, in the result (stderr holds only an error).
      if (hint !== undefined && !asJson) output.err(`imgdedup: note: ${hint}`);
      const progress = createProgress('convert', output, !asJson);
      const r = await convert({
        source: parseWholeImageArgs([src], 'convert', [dst])[0]!,
        output: dst,
        outputFormat: opts.outputFormat,
        ...(opts.format ? { sourceFormat: opts.format } : {}),
        ...(opts.backing !== undefined ? { backing: opts.backing } : {}),
        ...(opts.backingFormat !== undefined ? { backingFormat: opts.backingFormat } : {}),
        ...(opts.clusterSize !== undefined ? { clusterSize: parseClusterSize(opts.clusterSize) } : {}),
        ...(opts.extendedL2 ? { extendedL2: true } : {}),
        ...(opts.subformat !== undefined ? { subformat: opts.subformat } : {}),
        ...(opts.force ? { force: true } : {}),
        onProgress: progress.update,
      });
      progress.done();
      if (asJson) printJson(hint !== undefined ? { ...r, notes: [hint] } : r);
      else output.out(formatConvert(r));
    });

  program
    .command('check')
    .description('check the structure of an image (refcounts, leaks, overlapping or misaligned metadata), like qemu-img check; read-only')
    .argument('<image>', 'image file (qcow2, vmdk or raw)')
    .addOption(formatOption())
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nExit status 0 if the image is clean, 2 if anything was found (corruptions, leaks, stale refcounts).\n' +
        examples('imgdedup check client.qcow2', 'imgdedup check --json base.qcow2'),
    )
    .action(async (image, opts) => {
      const { check, formatCheck } = await import('./commands/check.js');
      const r = await check({ image: parseWholeImageArg(image, 'check'), ...(opts.format ? { format: opts.format } : {}) });
      if (json(opts)) printJson(r);
      else output.out(formatCheck(r));
      // Findings are a result, not an error: print them, then exit 2 (README, "Exit codes").
      if (!r.clean) process.exitCode = EXIT.INVALID_INPUT;
    });

  program
    .command('apply')
    .description('apply an update (a directory tree with OCI whiteouts, or tar layers) to the root ext4 filesystem of an image, writing a new image')
    .argument('<base>', 'image to update (qcow2, vmdk or raw); never modified')
    .argument('<updates>', 'a directory tree mirroring the root filesystem (.wh.NAME deletes NAME), a .tar/.tar.gz/.tar.zst layer, or a directory of layers applied in name order')
    .option('-o, --output <file>', 'the updated image: complete, in BASE\'s format, or with --overlay an overlay on BASE (required unless --dry-run)')
    .option('--overlay', 'write OUT as an overlay on BASE holding only the changed blocks (qcow2 with 1-block clusters, or a VMDK delta for a VMDK BASE)')
    .option('--partition <n>', 'the partition holding the filesystem to update (default: the only ext4 one, else the one with /etc/os-release)')
    .option('--dry-run', 'apply in memory and print what would change and the space it needs; write nothing')
    .option('--force', 'replace OUT if it is an existing regular file')
    .option('--verify', 'read OUT back through its chain and check its filesystem, e2fsck -fn included (exit 4 if it fails; OUT is left for inspection)')
    .option('--json', 'print the result as JSON (no progress)')
    .addHelpText(
      'after',
      '\nBASE is never written: the update is applied in a copy-on-write layer and OUT is written under a temporary\n' +
        'name and renamed when complete. The filesystem must be clean (no journal to replay, no errors, no orphans).\n' +
        'Damage BASE has where the update does not reach is carried into OUT as it is: --verify finds it there.\n' +
        'Lines with --dry-run: "A path" added, "M path" replaced or changed, "D path" deleted.\n' +
        examples(
          'imgdedup apply base.qcow2 updates/ -o patched.qcow2',
          'imgdedup apply --overlay base.vmdk layer.tar.gz -o patch-delta.vmdk',
          'imgdedup apply --dry-run --json base.raw updates/ > plan.json',
          'imgdedup apply --verify base.qcow2 updates/ -o golden-next.qcow2',
        ),
    )
    .action(async (base, updates, opts) => {
      const asJson = json(opts);
      const partition = opts.partition !== undefined ? Number(opts.partition) : undefined;
      if (partition !== undefined && (!Number.isSafeInteger(partition) || partition < 1)) throw new UsageError(`--partition must be a partition number from 1 (got "${opts.partition}")`);
      const { apply, applyJson, formatApply } = await import('./commands/apply.js');
      const progress = createProgress('apply', output, !asJson, 'items');
      const writing = createProgress('writing', output, !asJson, 'items');
      const verifying = createProgress('verifying', output, !asJson, 'items');
      const r = await apply({
        base: parseWholeImageArgs([base], 'apply', [updates])[0]!,
        updates,
        ...(opts.output !== undefined ? { output: opts.output } : {}),
        ...(opts.overlay ? { overlay: true } : {}),
        ...(partition !== undefined ? { partition } : {}),
        ...(opts.dryRun ? { dryRun: true } : {}),
        ...(opts.force ? { force: true } : {}),
        ...(opts.verify ? { verify: true } : {}),
        onProgress: (stage, done, total) => (stage === 'apply' ? progress : stage === 'write' ? writing : verifying).update(done, total),
      });
      progress.done();
      writing.done();
      verifying.done();
      if (asJson) printJson(applyJson(r));
      else output.out(formatApply(r));
      for (const w of r.warnings) output.err(`warning: ${w}`);
    });

  program
    .command('rebase')
    .description('apply an update once to a golden image and rebase its client overlays onto the result: each keeps its own changes, gets the update, and stores only what is its own')
    .argument('<base>', 'the golden image (qcow2, vmdk or raw); never modified')
    .argument('<updates>', 'the update: a directory tree with OCI whiteouts, a .tar/.tar.gz/.tar.zst layer, or a directory of layers')
    .argument('[clients...]', "client overlays on BASE (qcow2 or VMDK delta); default: every qcow2/VMDK in BASE's directory whose backing file is BASE")
    .option('-o, --output-dir <dir>', 'where the new base and the rebased clients are written, under their own file names (default ./rebased; created)')
    .addOption(new Option('--conflict <policy>', 'when a client changed a path the update also changes, differently').choices(['keep-client', 'take-update', 'fail'] as const).default('keep-client' as const))
    .option('--partition <n>', 'the partition holding the root filesystem (default: the only ext4 one, else the one with /etc/os-release)')
    .option('--dry-run', 'plan in memory and print, per client, files updated and kept, conflicts and overlay sizes; write nothing')
    .option('--verify', 'read every output back through its new chain and check it (exit 4 if it fails)')
    .option('--json', 'print the report as JSON (no progress)')
    .addHelpText(
      'after',
      '\nThe new base is a complete image in BASE\'s format; each client is written in its own format as an overlay on\n' +
        'it (relative backing name; VMDK parentCID = the new base\'s CID). Inputs are never modified; outputs appear in\n' +
        'DIR only when all are complete. An output name that exists in DIR is refused before any work (rebase\n' +
        'never replaces files: choose another DIR). Exit 3 with --conflict fail if any client conflicts (nothing\n' +
        'written).\n' +
        examples(
          'imgdedup rebase base.qcow2 updates/ client.qcow2 -o rebased',
          'imgdedup rebase --dry-run base.qcow2 layer.tar.gz',
          'imgdedup rebase --json --verify base.qcow2 updates/ -o rebased-2 > rebase.json',
        ),
    )
    .action(async (base, updates, clients, opts) => {
      const asJson = json(opts);
      const partition = opts.partition !== undefined ? Number(opts.partition) : undefined;
      if (partition !== undefined && (!Number.isSafeInteger(partition) || partition < 1)) throw new UsageError(`--partition must be a partition number from 1 (got "${opts.partition}")`);
      const { rebase, formatRebase } = await import('./commands/rebase.js');
      // One progress line per stage (applying the update, writing the new base, the clients).
      let stage: { name: string; p: ReturnType<typeof createProgress> } | undefined;
      const onProgress = (name: string, done: number, total: number): void => {
        if (stage?.name !== name) {
          stage?.p.done();
          stage = { name, p: createProgress(`rebase: ${name}`, output, !asJson, 'items') };
        }
        stage.p.update(done, total);
      };
      const r = await rebase({
        base: parseWholeImageArgs([base], 'rebase', [updates])[0]!,
        updates,
        clients: parseWholeImageArgs(clients, 'rebase'),
        ...(opts.outputDir !== undefined ? { outDir: opts.outputDir } : {}),
        conflict: opts.conflict,
        ...(partition !== undefined ? { partition } : {}),
        ...(opts.dryRun ? { dryRun: true } : {}),
        ...(opts.verify ? { verify: true } : {}),
        onProgress,
      });
      stage?.p.done();
      if (asJson) printJson(r);
      else output.out(formatRebase(r));
      for (const w of r.warnings) output.err(`warning: ${w}`);
    });

  program
    .command('diff')
    .description('list files added, removed and modified between two images (B usually an overlay on A), filesystem by filesystem')
    .argument('<a>', 'the older image (qcow2, vmdk or raw)')
    .argument('<b>', 'the newer image; when it is an overlay on A, only its own layers are examined')
    .option('--full-tree', 'walk and compare both trees even when B is an overlay on A')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      '\nLines: "A path" added, "D path" removed, "M path (content, mode, ...)" modified; paths are absolute\n' +
        'within their filesystem, quoted with escapes as ls quotes names. Non-ext4 partitions and space outside partitions: "R offset +length".\n' +
        'A filesystem that is not clean (a journal to replay, recorded errors, orphans) is diffed as stored,\n' +
        'with a warning on stderr (and in "warnings" with --json).\n' +
        'Exit status 0 whether or not the images differ; 2 for invalid or corrupt input.\n' +
        examples('imgdedup diff base.qcow2 updated.qcow2', 'imgdedup diff --json base.raw other.raw > diff.json'),
    )
    .action(async (a, b, opts) => {
      const [imageA, imageB] = parseWholeImageArgs([a, b], 'diff');
      const { diff, diffJson, formatDiff } = await import('./commands/diff.js');
      const r = await diff({ a: imageA!, b: imageB!, ...(opts.fullTree ? { fullTree: true } : {}) });
      if (json(opts)) printJson(diffJson(r));
      else output.out(formatDiff(r));
      for (const w of r.warnings) output.err(`warning: ${w}`);
    });

  program
    .command('ls')
    .description('list a directory (or a file) of the ext2/3/4 filesystem in an image, like ls; read-only')
    .argument('<image>', 'image file (qcow2, vmdk or raw), or IMAGE:PART for partition number PART (from 1)')
    .argument('[path]', 'path inside the filesystem (UTF-8, or quoted with escapes as ls prints names)', '/')
    .option('-l, --long', 'long format: mode, links, uid, gid, size, mtime (UTC), name -> symlink target')
    .option('-R, --recursive', 'list everything below PATH (full paths)')
    .option('--offset <bytes>', 'the filesystem starts at this byte offset of the disk (instead of :PART)')
    .option('--ignore-checksums', 'list a filesystem whose metadata checksums fail (like debugfs -n), warning once about each failure')
    .option('--json', 'print entries as a JSON array')
    .addHelpText(
      'after',
      '\nWithout :PART, a filesystem on the whole disk, or the only partition holding one, is used.\n' +
        'Names that are not plain UTF-8 text print quoted with escapes ("caf\\351"), with nameBytes/pathBytes\n' +
        '(base64) in --json; text lines also quote names that hold a space ("a -> b"). A metadata checksum that\n' +
        'fails is an error (BAD_CHECKSUM, exit 2), as for diff, unless --ignore-checksums is given. Directory loops and\n' +
        'a filesystem that is not clean (a journal to replay, recorded errors, orphans: what is listed is the state on disk) are reported as warnings on stderr.\n' +
        examples('imgdedup ls client.qcow2:2 /etc', 'imgdedup ls -lR disk.raw /usr/share/doc', 'imgdedup ls --json --offset 2097152 disk.raw /'),
    )
    .action(async (image, path, opts) => {
      let offsetBytes: number | undefined;
      if (opts.offset !== undefined) {
        if (!/^\d+$/.test(opts.offset)) throw new UsageError(`--offset must be a byte count, got "${opts.offset}"`);
        offsetBytes = Number(opts.offset);
      }
      const { ls } = await import('./commands/ls.js');
      const asJson = json(opts);
      // Held until the listing is complete: a failure prints nothing on stdout.
      const out = new DeferredStdout();
      try {
        const array = jsonArray(out);
        const pathBytes = lostArgBytes(path);
        const r = await ls({
          image,
          path,
          ...(pathBytes !== undefined ? { pathBytes } : {}),
          ...(offsetBytes !== undefined ? { offsetBytes } : {}),
          ...(opts.recursive ? { recursive: true } : {}),
          ...(opts.ignoreChecksums ? { ignoreChecksums: true } : {}),
          // Text lines go straight into the held output as bytes.
          ...(asJson ? { onEntry: (e) => array.item(JSON.stringify(e)) } : { lines: { sink: out, long: opts.long === true } }),
        });
        if (asJson) array.end();
        await out.commit();
        for (const w of r.warnings) output.err(`warning: ${w}`);
      } finally {
        out.discard();
      }
    });

  program
    .command('help')
    .description('show the help of a command, or of the program')
    .argument('[command]', 'the command to describe')
    .action((name) => {
      if (name === undefined) return program.outputHelp();
      const cmd = program.commands.find((c) => c.name() === name && c.name() !== 'help');
      if (cmd === undefined) throw new UsageError(`unknown command '${name}' (commands: ${commandNames(program).join(', ')})`);
      cmd.outputHelp();
    });

  // (commands end)
  return program;
}

function commandNames(program: Command): string[] {
  return program.commands.map((c) => c.name()).filter((n) => n !== 'help');
}

/** The command named on the command line, if any, for the usage hint. */
function commandInArgv(program: Command): string | undefined {
  const names = new Set(commandNames(program));
  return process.argv.slice(2).find((a) => names.has(a));
}

function report(err: unknown, program: Command): number {
  if (err instanceof CommanderError) {
    // --help, --version and `help` have printed what was asked; a bare `imgdedup` printed the
    // help to stderr and fails (exit 1), as git and qemu-img do.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') {
      return err.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
    }
    const cmd = commandInArgv(program);
    printError(new UsageError(err.message.replace(/^error: /, '')), `(run "imgdedup ${cmd !== undefined ? `${cmd} ` : ''}--help" for usage)`);
    return EXIT.USAGE;
  }
  if ((err as NodeJS.ErrnoException | undefined)?.code === 'MODULE_NOT_FOUND') {
    // A dependency a command loads when it runs (xxhash-wasm, fzstd, ...) is not installed: not a bug of ours.
    const name = /Cannot find module '([^']+)'/.exec((err as Error).message)?.[1] ?? (err as Error).message;
    output.err(`imgdedup: installation incomplete: cannot find module ${name}; reinstall (npm ci)`);
    return EXIT.INTERNAL;
  }
  const e = err instanceof ImgdedupError ? err : new InternalError(err instanceof Error ? err.message : String(err));
  printError(e);
  if (debug && err instanceof Error && err.stack) output.err(err.stack);
  else if (!(err instanceof ImgdedupError)) output.err('imgdedup: this is a bug; run again with --debug for the stack trace');
  return exitCodeFor(err);
}

/**
 * On SIGHUP (the terminal went away), SIGINT or SIGTERM, removes every temporary output
 * still registered (library code registers them, see diskimage/tempFiles.ts) and exits
 * with 128 + the signal number, as a shell reports a process killed by that signal.
 */
function installSignalCleanup(): void {
  for (const [signal, status] of Object.entries(SIGNAL_EXIT)) {
    process.once(signal, () => {
      if (outputsComplete()) {
        // Everything is written and in place: finishing takes moments, and exit 0 says so. A second signal ends it.
        output.err(`${output.stderrIsTTY ? '\n' : ''}imgdedup: ${signal} received after the outputs were complete and in place; finishing`);
        process.once(signal, () => process.exit(status));
        return;
      }
      removeTempFilesSync();
      // On a terminal, end the progress line (and the echoed ^C) first.
      output.err(`${output.stderrIsTTY ? '\n' : ''}imgdedup: interrupted by ${signal}`);
      process.exit(status);
    });
  }
}

/**
 * stdout could not be written. Node reports it as an 'error' event (a file such as /dev/full
 * fails synchronously inside write(), a pipe later), never to the caller, so this ends the
 * program itself. `imgdedup map big.qcow2 | head`: the reader went away (EPIPE); stop quietly,
 * as head expects. Anything else (disk full, EIO) is an IO error (exit 5) naming stdout. A
 * convert has renamed its output into place before printing its result, so there the output
 * is complete and only the report of it was lost.
 */
function stdoutFailed(err: NodeJS.ErrnoException): void {
  removeTempFilesSync();
  if (err.code === 'EPIPE') process.exit(EXIT.OK);
  const e = wrapIoError(err, 'stdout', 'write the output');
  try {
    printError(e);
  } catch {
    // stderr failed too: the exit status is all that is left to say it.
  }
  process.exit(e.exitCode);
}

async function main(): Promise<void> {
  installSignalCleanup();
  process.stdout.on('error', stdoutFailed);
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
    // A command may have set a non-zero status without failing (check: findings).
    process.exitCode ??= EXIT.OK;
  } catch (err) {
    process.exitCode = report(err, program);
  }
  // Everything is done once stdout and stderr have taken what was written: exit then,
  // instead of letting the event loop drain, where V8 first finishes any garbage
  // collection it has started (50-200 ms after a diff of 100,000 files, for nothing).
  // A turn of the loop first: a failed write reports its error (stdoutFailed) on a later tick.
  await new Promise((resolve) => setImmediate(resolve));
  await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
  await new Promise((resolve) => setImmediate(resolve));
  process.exit();
}

/** Resolves when `stream` holds no unwritten data (at once when it holds none or is gone). */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  if (stream.destroyed || stream.writableLength === 0) return Promise.resolve();
  return new Promise((resolve) => {
    stream.once('drain', resolve);
    stream.once('close', resolve);
  });
}

void main();
