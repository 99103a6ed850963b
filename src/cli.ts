#!/usr/bin/env node
/**
 * The imgdedup command-line program: parses arguments, calls one command, renders
 * its result (text or --json) and maps errors to exit codes (README, "Exit codes").
 * The only module that touches argv, stdout/stderr or the exit code.
 */
import { Command, CommanderError, Option } from '@commander-js/extra-typings';
import { EXIT, ImgdedupError, InternalError, UsageError, exitCodeFor } from './errors.js';
import { processOutput as output } from './ui/output.js';
import { info, formatInfo } from './commands/info.js';
import { convert, formatConvert, parseClusterSize } from './commands/convert.js';
import { createProgress } from './ui/progress.js';
import { map, formatMapEntry, formatMapEntryJson, MAP_HEADER } from './commands/map.js';
import { check, formatCheck } from './commands/check.js';
import { diff, formatDiff } from './commands/diff.js';
import { ls, formatLsEntry } from './commands/ls.js';
import pkg from '../package.json' with { type: 'json' };

const EXIT_CODES_HELP = `
Exit codes:
  0   success
  1   usage error (bad arguments or options)
  2   invalid, corrupt or unsupported input, or refused (dirty filesystem, output exists)
  3   merge conflict refused (rebase --conflict fail)
  4   an output failed its verification
  5   I/O error (missing file, permission denied, disk full)
  70  internal error (a bug: please report it with the output of --debug)`;

const debug = process.argv.includes('--debug');
const jsonErrors = process.argv.includes('--json');

function printJson(value: unknown): void {
  output.out(JSON.stringify(value, null, 2));
}

const formatOption = () =>
  new Option('-f, --format <format>', 'image format of IMAGE (default: probe)').choices(['raw', 'qcow2', 'vmdk'] as const);

export function buildProgram(): Command {
  const program = new Command('imgdedup')
    .description(
      'Rebase a fleet of VM disk overlays (qcow2, VMDK) onto an updated golden image.\n' +
        'Disk-image tools: inspect, map, check and convert qcow2, VMDK and raw images and their backing chains.',
    )
    .version(pkg.version, '-V, --version')
    .option('--debug', 'print stack traces of internal errors')
    .showHelpAfterError('(run with --help for usage)')
    .addHelpText('after', EXIT_CODES_HELP)
    .exitOverride();

  program
    .command('info')
    .description('show format, sizes, cluster size and the backing chain of an image')
    .argument('<image>', 'image file (qcow2, vmdk or raw)')
    .addOption(formatOption())
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExample:\n  imgdedup info client.qcow2\n  imgdedup info --json base.vmdk')
    .action(async (image, opts) => {
      const r = await info({ image, ...(opts.format ? { format: opts.format } : {}) });
      if (opts.json) printJson(r);
      else output.out(formatInfo(r));
    });

  program
    .command('map')
    .description('list which guest ranges each layer of the chain stores (like qemu-img map)')
    .argument('<image>', 'image file (qcow2, vmdk or raw)')
    .addOption(formatOption())
    .option('--json', 'print entries as a JSON array, with qemu-img map --output=json field names')
    .addHelpText('after', '\nExample:\n  imgdedup map client.qcow2\n  imgdedup map --json client.qcow2 > map.json')
    .action(async (image, opts) => {
      let first = true;
      if (!opts.json) output.out(MAP_HEADER);
      await map({
        image,
        ...(opts.format ? { format: opts.format } : {}),
        onEntry: (e) => {
          if (opts.json) {
            process.stdout.write(`${first ? '[' : ',\n'}${formatMapEntryJson(e)}`);
            first = false;
          } else {
            const line = formatMapEntry(e);
            if (line !== undefined) output.out(line);
          }
        },
      });
      if (opts.json) process.stdout.write(first ? '[]\n' : ']\n');
    });

  program
    .command('convert')
    .description('copy an image (read through its backing chain) into a new qcow2 or sparse raw image, or an overlay on --backing')
    .argument('<src>', 'source image (qcow2, vmdk or raw), read through its whole backing chain')
    .argument('<dst>', 'output image (refused if it exists, unless --force)')
    .addOption(new Option('-f, --format <format>', 'image format of SRC (default: probe)').choices(['raw', 'qcow2', 'vmdk'] as const))
    .addOption(new Option('-O, --output-format <format>', 'output format').choices(['qcow2', 'raw', 'vmdk'] as const).default('qcow2' as const))
    .addOption(new Option('--subformat <type>', 'VMDK output subformat (default monolithicSparse; streamOptimized for shipping)').choices(['monolithicSparse', 'streamOptimized'] as const))
    .option('-b, --backing <file>', 'write DST as a qcow2 overlay on FILE holding only what differs (name recorded as given, relative to DST)')
    .option('-F, --backing-format <fmt>', 'format of the backing file (default: probe), recorded in DST')
    .option('--cluster-size <n>', 'qcow2 cluster size, 512 to 2M (e.g. 4k, 64k, 2M; default 64k)')
    .option('--extended-l2', 'qcow2 extended L2 entries (32 subclusters per cluster; clusters of 16k or more)')
    .option('--force', 'replace DST if it exists')
    .option('--json', 'print the result as JSON (no progress)')
    .addHelpText('after', '\nExamples:\n  imgdedup convert client.qcow2 flat.qcow2\n  imgdedup convert -O raw client.qcow2 disk.raw\n  imgdedup convert --backing base.qcow2 --cluster-size 4k client.qcow2 thin.qcow2\n  imgdedup convert -O vmdk --backing base.vmdk --cluster-size 4k client.qcow2 delta.vmdk\n  imgdedup convert -O vmdk --subformat streamOptimized client.qcow2 ship.vmdk')
    .action(async (src, dst, opts) => {
      const progress = createProgress('convert', output, !opts.json);
      const r = await convert({
        source: src,
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
      if (opts.json) printJson(r);
      else output.out(formatConvert(r));
    });

  program
    .command('check')
    .description('check the structure of an image (refcounts, leaks, overlapping or misaligned metadata), like qemu-img check; read-only')
    .argument('<image>', 'image file (qcow2, vmdk or raw)')
    .addOption(formatOption())
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExit status 0 if the image is clean, 2 if anything was found (corruptions, leaks, stale refcounts).\n\nExample:\n  imgdedup check client.qcow2\n  imgdedup check --json base.qcow2')
    .action(async (image, opts) => {
      const r = await check({ image, ...(opts.format ? { format: opts.format } : {}) });
      if (opts.json) printJson(r);
      else output.out(formatCheck(r));
      // Findings are a result, not an error: print them, then exit 2 (README, "Exit codes").
      if (!r.clean) process.exitCode = EXIT.INVALID_INPUT;
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
        'within their filesystem. Non-ext4 partitions and space outside partitions: "R offset +length".\n' +
        'Exit status 0 whether or not the images differ; 2 for invalid or corrupt input.\n\n' +
        'Example:\n  imgdedup diff base.qcow2 updated.qcow2\n  imgdedup diff --json base.raw other.raw > diff.json',
    )
    .action(async (a, b, opts) => {
      const r = await diff({ a, b, ...(opts.fullTree ? { fullTree: true } : {}) });
      if (opts.json) printJson(r);
      else output.out(formatDiff(r));
    });

  program
    .command('ls')
    .description('list a directory (or a file) of the ext2/3/4 filesystem in an image, like ls; read-only')
    .argument('<image>', 'image file (qcow2, vmdk or raw), optionally IMAGE:PART for partition number PART')
    .argument('[path]', 'path inside the filesystem', '/')
    .option('-l, --long', 'long format: mode, links, uid, gid, size, mtime (UTC), name -> symlink target')
    .option('-R, --recursive', 'list everything below PATH (full paths)')
    .option('--offset <bytes>', 'the filesystem starts at this byte offset of the disk (instead of :PART)')
    .option('--json', 'print entries as a JSON array')
    .addHelpText(
      'after',
      '\nWithout :PART, a filesystem on the whole disk, or the only partition holding one, is used.\n' +
        'Checksum mismatches are reported as warnings on stderr.\n\n' +
        'Example:\n  imgdedup ls client.qcow2:2 /etc\n  imgdedup ls -lR disk.raw /usr/share/doc\n  imgdedup ls --json --offset 1048576 disk.raw /',
    )
    .action(async (image, path, opts) => {
      let offsetBytes: number | undefined;
      if (opts.offset !== undefined) {
        if (!/^\d+$/.test(opts.offset)) throw new UsageError(`--offset must be a byte count, got "${opts.offset}"`);
        offsetBytes = Number(opts.offset);
      }
      let first = true;
      const r = await ls({
        image,
        path,
        ...(offsetBytes !== undefined ? { offsetBytes } : {}),
        ...(opts.recursive ? { recursive: true } : {}),
        onEntry: (e) => {
          if (opts.json) {
            process.stdout.write(`${first ? '[' : ',\n'}${JSON.stringify(e)}`);
            first = false;
          } else output.out(formatLsEntry(e, { ...(opts.long ? { long: true } : {}), ...(opts.recursive ? { recursive: true } : {}) }));
        },
      });
      if (opts.json) process.stdout.write(first ? '[]\n' : ']\n');
      for (const w of r.warnings) output.err(`warning: ${w}`);
    });

  // (commands end)
  return program;
}

function report(err: unknown): number {
  if (err instanceof CommanderError) {
    // --help and --version exit 0; everything else commander rejects is a usage error.
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help') return EXIT.OK;
    if (jsonErrors) output.err(JSON.stringify(new UsageError(err.message.replace(/^error: /, '')).toJSON()));
    return EXIT.USAGE;
  }
  const e = err instanceof ImgdedupError ? err : new InternalError(err instanceof Error ? err.message : String(err));
  if (jsonErrors) output.err(JSON.stringify(e.toJSON()));
  else output.err(`imgdedup: error [${e.code}]: ${e.message}`);
  if (debug && err instanceof Error && err.stack) output.err(err.stack);
  else if (!(err instanceof ImgdedupError)) output.err('imgdedup: this is a bug; run again with --debug for the stack trace');
  return exitCodeFor(err);
}

async function main(): Promise<void> {
  // `imgdedup map big.qcow2 | head`: the reader went away; stop quietly, as head expects.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(EXIT.OK);
    throw err;
  });
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
    // A command may have set a non-zero status without failing (check: findings).
    process.exitCode ??= EXIT.OK;
  } catch (err) {
    process.exitCode = report(err);
  }
}

void main();
