#!/usr/bin/env -S node --expose-gc
// The `weft` command: runs the bundled CLI (dist/weft.js). The package ships it built; in a clone of
// the repository the first run builds it (as `npm start` and `npm test` do).
// --expose-gc: `weft relay` gives memory back after a burst of streams (node-host/relay/idle-gc.ts).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const bundle = fileURLToPath(new URL('../dist/weft.js', import.meta.url));
const buildScript = fileURLToPath(new URL('../esbuild.config.mjs', import.meta.url));
if (!existsSync(bundle) && existsSync(buildScript)) {
  process.stderr.write('weft: building dist/ first (node esbuild.config.mjs)…\n');
  try {
    execFileSync(process.execPath, [buildScript], { cwd: fileURLToPath(new URL('..', import.meta.url)), stdio: ['ignore', 'inherit', 'inherit'] });
  } catch {
    process.exit(1);
  }
}
if (!existsSync(bundle)) {
  console.error(`weft: ${bundle} is missing. Run \`npm run build\` in the weft folder first.`);
  process.exit(1);
}
await import(pathToFileURL(bundle).href);
