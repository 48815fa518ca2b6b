// Builds every bundle into dist/. Run by `npm install` (prepare), `npm test`, `npm start`, `npm run bench`;
// with --declarations (`npm pack`, prepack) also the one .d.ts per package entry point.
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

// What the package ships for Node uses its dependencies (ws, and bufferutil when it installed)
// from node_modules: bundled, ws could not find bufferutil's native code beside itself.
const shipped = { ...node, external: ['ws', 'bufferutil', 'utf-8-validate'] };

const entries = [
  { entryPoints: ['node-host/cli.ts'], outfile: 'dist/weft.js', ...shipped },
  { entryPoints: ['node-host/relay/index.ts'], outfile: 'dist/relay.js', ...shipped },
  { entryPoints: ['node-host/node-api.ts'], outfile: 'dist/node.js', ...shipped },
  // playwright-core (the browser suite) stays a run-time import: it does not bundle.
  { entryPoints: ['test/bench/run.ts'], outfile: 'dist/bench.js', ...node, external: ['playwright-core'] },
  // The embedding library and its worker: the library finds the worker beside itself.
  { entryPoints: ['web/index.ts'], outfile: 'dist/web/weft.mjs', ...browser },
  { entryPoints: ['worker/weft-worker.ts'], outfile: 'dist/web/weft-worker.js', ...browser },
  // The preview Service Worker (servePreview registers it): a classic script, which every browser
  // with Service Workers runs (module workers are newer).
  { entryPoints: ['web/preview-sw.ts'], outfile: 'dist/web/preview-sw.js', ...browser, format: 'iife' },
  // The demo's copy of it at the demo's root: a Service Worker controls only paths under its
  // script's folder, and the "Serve from the VM" panel's scope is /preview/.
  { entryPoints: ['web/preview-sw.ts'], outfile: 'dist/demo/preview-sw.js', ...browser, format: 'iife' },
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
// The worker is a script to start, not a module to import; its types say so (for type checkers that
// look up every exported path).
writeFileSync(
  'dist/web/weft-worker.d.ts',
  "// weft's worker script: start it with new Worker(url, { type: 'module' }) (createNetwork does). It exports nothing.\nexport {};\n",
);
writeFileSync('dist/web/preview-sw.d.ts', "// weft's preview Service Worker: network.servePreview() registers it. It exports nothing.\nexport {};\n");

// Declarations: tsc writes one file per module into dist/types, then API Extractor rolls each entry
// point's up into one self-contained .d.ts (no relative imports, so it reads the same under every
// moduleResolution) and checks it against the reviewed API report in api/.
if (process.argv.includes('--declarations')) {
  execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.declarations.json'], { stdio: 'inherit' });
  const { Extractor, ExtractorConfig } = await import('@microsoft/api-extractor');
  const update = process.argv.includes('--update-api');
  const rollups = [
    ['web', 'dist/types/web/index.d.ts', 'dist/web/weft.d.ts'],
    ['relay', 'dist/types/node-host/relay/index.d.ts', 'dist/relay.d.ts'],
    ['node', 'dist/types/node-host/node-api.d.ts', 'dist/node.d.ts'],
  ];
  let failed = false;
  for (const [name, input, output] of rollups) {
    const config = ExtractorConfig.prepare({
      configObjectFullPath: undefined,
      packageJsonFullPath: `${process.cwd()}/package.json`,
      configObject: {
        projectFolder: process.cwd(),
        mainEntryPointFilePath: `<projectFolder>/${input}`,
        compiler: { tsconfigFilePath: '<projectFolder>/tsconfig.declarations.json' },
        apiReport: {
          enabled: true,
          reportFolder: '<projectFolder>/api/',
          reportTempFolder: '<projectFolder>/dist/api-temp/',
          reportFileName: `${name}.api.md`,
        },
        docModel: { enabled: false },
        dtsRollup: { enabled: true, untrimmedFilePath: `<projectFolder>/${output}` },
        tsdocMetadata: { enabled: false },
        messages: {
          compilerMessageReporting: { default: { logLevel: 'warning' } },
          extractorMessageReporting: {
            default: { logLevel: 'warning' },
            'ae-missing-release-tag': { logLevel: 'none' },
            'ae-forgotten-export': { logLevel: 'none' },
            'ae-undocumented': { logLevel: 'none' },
          },
          tsdocMessageReporting: { default: { logLevel: 'none' } },
        },
      },
    });
    const result = Extractor.invoke(config, {
      localBuild: update,
      showVerboseMessages: false,
      // Its "Analysis will use the bundled TypeScript …" notice would land in `npm pack --json`'s output.
      messageCallback: (m) => {
        if (m.messageId === 'console-preamble') m.handled = true;
      },
    });
    if (!result.succeeded) {
      failed = true;
      console.error(
        `esbuild.config.mjs: the ${name} declarations differ from api/${name}.api.md (review, then run \`node esbuild.config.mjs --declarations --update-api\`) or have errors`,
      );
    }
  }
  if (failed) process.exit(1);
}
