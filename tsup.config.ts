import { defineConfig } from 'tsup';

export default defineConfig([
  {
    // The library (bench scripts and embedders import it).
    entry: { index: 'src/index.ts' },
    format: ['esm'],
    target: 'node20',
    platform: 'node',
    sourcemap: true,
    // Each build clears only its own outputs (the two run side by side).
    clean: ['*.js', '*.js.map'],
    splitting: true,
  },
  {
    // The command-line program, one CommonJS file run from a V8 code cache by the launcher
    // (src/launcher.cts): resolving and compiling some forty ES modules cost 35-50 ms of
    // every run. Dependencies stay in node_modules; commands are still evaluated only when run.
    entry: { cli: 'src/launcher.cts', imgdedup: 'src/cli.ts' },
    format: ['cjs'],
    outExtension: () => ({ js: '.cjs' }),
    target: 'node20',
    platform: 'node',
    sourcemap: true,
    clean: ['*.cjs', '*.cjs.map', '*.cjs.cache'],
    splitting: false,
    shims: true,
    // import() becomes require(): a script compiled by vm.Script has no dynamic import.
    esbuildOptions(options) {
      options.supported = { ...options.supported, 'dynamic-import': false };
    },
    onSuccess: 'node scripts/compile-cache.mjs',
  },
]);
