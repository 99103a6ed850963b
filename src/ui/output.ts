/** Where the CLI writes: results to stdout, diagnostics and progress to stderr. */

export interface Output {
  out(text: string): void;
  err(text: string): void;
  readonly stderrIsTTY: boolean;
}

export const processOutput: Output = {
  out: (text) => {
    process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  },
  err: (text) => {
    process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
  },
  get stderrIsTTY() {
    return Boolean(process.stderr.isTTY);
  },
};

/**
 * Collects output text and writes it in pieces of about `limit` characters: stdout to a
 * file or pipe is synchronous in Node, so one write per line of a 100,000-line listing
 * costs more than producing it. Call flush() before anything else is written (also when
 * the command fails, so the lines produced before the error come out first).
 */
export function bufferedOut(sink: (text: string) => void, limit = 64 << 10): { write(text: string): void; flush(): void } {
  let parts: string[] = [];
  let size = 0;
  const flush = (): void => {
    if (parts.length === 0) return;
    const text = parts.join('');
    parts = [];
    size = 0;
    sink(text);
  };
  return {
    write(text: string): void {
      parts.push(text);
      size += text.length;
      if (size >= limit) flush();
    },
    flush,
  };
}
