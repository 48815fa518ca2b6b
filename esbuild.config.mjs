// Builds every bundle into dist/. Run by `npm install` (prepare), `npm test`, `npm start`, `npm run bench`.
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';

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

const browser = {
  bundle: true,
  platform: 'browser',
  target: ['chrome110', 'firefox115', 'safari16'],
  format: 'esm',
  sourcemap: true,
  logLevel: 'warning',
};

const entries = [
  { entryPoints: ['node-host/cli.ts'], outfile: 'dist/weft.js', ...node },
  // playwright-core (the browser suite) stays a run-time import: it does not bundle.
  { entryPoints: ['test/bench/run.ts'], outfile: 'dist/bench.js', ...node, external: ['playwright-core'] },
  // The embedding library and its worker: the library finds the worker beside itself.
  { entryPoints: ['web/index.ts'], outfile: 'dist/web/weft.mjs', ...browser },
  { entryPoints: ['worker/weft-worker.ts'], outfile: 'dist/web/weft-worker.js', ...browser },
  // The demo page (served by `weft relay --demo`): its page, script and styles, and the worker beside
  // the script, where createNetwork() looks for it. v86 itself is loaded at run time from /v86/.
  {
    entryPoints: ['demo/main.ts', 'demo/index.html', 'worker/weft-worker.ts'],
    outdir: 'dist/demo',
    entryNames: '[name]',
    loader: { '.html': 'copy' },
    ...browser,
    // xterm is most of the page's script; minified, the script is a third smaller.
    minify: true,
  },
];

await Promise.all(entries.filter((e) => existsSync(e.entryPoints[0])).map((e) => build(e)));

// Type declarations for the web library (esbuild emits none): dist/web/weft.d.ts.
const tsc = 'node_modules/typescript/bin/tsc';
if (existsSync(tsc) && existsSync('web/index.ts')) {
  // A type error here must not stop the CLI build; `npm test` type-checks everything anyway.
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.web.json'], { stdio: 'inherit' });
    writeFileSync('dist/web/weft.d.ts', "export * from './types/web/index';\n");
  } catch {
    console.error('esbuild.config.mjs: the web library\'s type declarations were not written (type errors above)');
  }
}
