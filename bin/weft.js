#!/usr/bin/env -S node --expose-gc
// The `weft` command: runs the bundled CLI that `npm install` (prepare) or `npm run build` produced.
// --expose-gc: `weft relay` gives memory back after a burst of streams (node-host/relay/idle-gc.ts).
import { existsSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

const bundle = fileURLToPath(new URL('../dist/weft.js', import.meta.url));
if (!existsSync(bundle)) {
  console.error(`weft: ${bundle} is missing. Run \`npm run build\` (or \`npm install\`) in the weft folder first.`);
  process.exit(1);
}
await import(pathToFileURL(bundle).href);
