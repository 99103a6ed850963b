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
