/**
 * The exact bytes of a command-line argument. Node decodes argv as UTF-8 and replaces bytes
 * that are not UTF-8 with U+FFFD, so `ls IMG $'/caf\xe9'` reaches the program as
 * '/caf\uFFFD', which names nothing. On Linux the bytes as given are in /proc/self/cmdline
 * (proc(5): the arguments, each ended by a NUL); cli.ts reads it and asks here.
 */

/**
 * The bytes of the argument that Node decoded to `value`, found in `cmdline` (the contents
 * of /proc/self/cmdline) by position: the program's arguments (`argv` minus the node
 * binary and the script) are the last entries of the command line, after whatever node
 * flags preceded the script. Undefined when that cannot be made certain: a command line
 * that does not end with entries that decode to those arguments one for one (it was
 * changed, or is cut short), or several arguments that decode to `value` with different bytes.
 */
export function argBytes(argv: readonly string[], cmdline: Uint8Array, value: string): Uint8Array | undefined {
  const args = argv.slice(2);
  if (args.length === 0 || cmdline.length === 0 || cmdline[cmdline.length - 1] !== 0) return undefined;
  const entries: Buffer[] = [];
  const whole = Buffer.from(cmdline.buffer, cmdline.byteOffset, cmdline.byteLength);
  for (let start = 0; start < whole.length; ) {
    const end = whole.indexOf(0, start);
    entries.push(whole.subarray(start, end));
    start = end + 1;
  }
  if (entries.length < args.length + 1) return undefined;
  const tail = entries.slice(entries.length - args.length);
  // Decoded as Node decoded argv (V8's UTF-8 decoder, U+FFFD for what is not UTF-8).
  if (tail.some((b, i) => b.toString('utf8') !== args[i])) return undefined;
  let found: Buffer | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i] !== value) continue;
    if (found !== undefined && !found.equals(tail[i]!)) return undefined;
    found = tail[i]!;
  }
  return found === undefined ? undefined : new Uint8Array(found);
}
