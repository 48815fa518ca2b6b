// Builds every bundle into dist/. Run by `npm install` (prepare), `npm test`, `npm start`, `npm run bench`.
import { build } from 'esbuild';
import { existsSync } from 'node:fs';

const node = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  sourcemap: true,
  // Bundled CommonJS dependencies may call require(); give the ESM bundle one.
  banner: { js: "import { createRequire as __weftCreateRequire } from 'node:module'; const require = __weftCreateRequire(import.meta.url);" },
  logLevel: 'warning',
};

const entries = [
  { entryPoints: ['node-host/cli.ts'], outfile: 'dist/weft.js', ...node },
  { entryPoints: ['test/bench/run.ts'], outfile: 'dist/bench.js', ...node },
];

await Promise.all(entries.filter((e) => existsSync(e.entryPoints[0])).map((e) => build(e)));
