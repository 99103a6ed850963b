/**
 * The one parser of image arguments, `IMAGE` or `IMAGE:PART`, for every command.
 * A file whose name really contains ':' is taken whole when it exists; otherwise a
 * final `:N` names partition N (numbered from 1, as Linux numbers them) of IMAGE.
 */
import { existsSync } from 'node:fs';
import { UsageError } from '../errors.js';

export interface ImageArg {
  /** The image file. */
  readonly image: string;
  /** The partition number, when the argument was IMAGE:PART. */
  readonly partition?: number;
}

/**
 * Splits `IMAGE:PART` unless the whole argument names an existing file.
 * Throws USAGE when IMAGE exists and PART is not a partition number (`img:abc`, `img:0`, `img:01`).
 * A missing IMAGE is left to the opener (IO, "no such file or directory").
 */
export function parseImageArg(arg: string): ImageArg {
  const colon = arg.lastIndexOf(':');
  if (colon <= 0 || existsSync(arg)) return { image: arg };
  const image = arg.slice(0, colon);
  const part = arg.slice(colon + 1);
  if (part.includes('/') || !existsSync(image)) return { image: arg };
  // Decimal without sign or leading zeros: `img:01` and `img:+1` are both refused, not guessed at.
  if (!/^[1-9]\d*$/.test(part) || !Number.isSafeInteger(Number(part))) {
    throw new UsageError(`"${part}" is not a partition number: write IMAGE:N with N counted from 1 (there is no file named "${arg}")`, { file: image });
  }
  return { image, partition: Number(part) };
}

/**
 * Parses an argument of a command that works on whole images (info, map, check,
 * convert, diff). Throws USAGE for IMAGE:PART, pointing at `info` for the partitions.
 */
export function parseWholeImageArg(arg: string, command: string): string {
  return parseWholeImageArgs([arg], command)[0]!;
}

/**
 * Parses all image arguments of a whole-image command at once, so that the suggested
 * command line keeps every one of them (and `rest`, e.g. convert's DST). Throws USAGE
 * if any is IMAGE:PART.
 */
export function parseWholeImageArgs(args: readonly string[], command: string, rest: readonly string[] = []): string[] {
  const parsed = args.map(parseImageArg);
  const withPart = parsed.find((p) => p.partition !== undefined);
  if (withPart !== undefined) {
    const { image, partition } = withPart;
    const suggestion = [command, ...parsed.map((p) => p.image), ...rest].join(' ');
    throw new UsageError(
      `${command} works on whole images, not partitions (try "imgdedup ${suggestion}"; "imgdedup info ${image}" lists the partitions, "imgdedup ls ${image}:${partition}" reads partition ${partition})`,
      { file: image },
    );
  }
  return parsed.map((p) => p.image);
}
