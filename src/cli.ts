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
import { map, formatMapEntry, formatMapEntryJson, MAP_HEADER } from './commands/map.js';
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

let debug = process.argv.includes('--debug');
let jsonErrors = process.argv.includes('--json');

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
  const program = buildProgram();
  try {
    await program.parseAsync(process.argv);
    process.exitCode = EXIT.OK;
  } catch (err) {
    process.exitCode = report(err);
  }
}

void main();
