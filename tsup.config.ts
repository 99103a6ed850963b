import { defineConfig } from 'tsup';

export default defineConfig({
  entry: { cli: 'src/cli.ts', index: 'src/index.ts' },
  format: ['esm'],
  target: 'node20',
  platform: 'node',
  sourcemap: true,
  clean: true,
  // Chunks shared by the entries and the commands cli.ts imports when run (startup loads only what a command uses).
  splitting: true,
  banner: ({ format }) => (format === 'esm' ? { js: '' } : {}),
});
