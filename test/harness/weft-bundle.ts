// Tests run the CLI as users do: `node dist/weft.js`. `npm test` builds first; a bare `vitest run`
// builds here when the bundle is missing.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from './repo-root';

export { REPO_ROOT };
export const WEFT_BUNDLE = join(REPO_ROOT, 'dist', 'weft.js');

/** Returns the path of dist/weft.js, building it first when it is missing. */
export function weftBundle(): string {
  if (existsSync(WEFT_BUNDLE)) return WEFT_BUNDLE;
  if (existsSync(join(REPO_ROOT, 'esbuild.config.mjs'))) {
    execFileSync(process.execPath, ['esbuild.config.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
  } else {
    execFileSync(
      process.execPath,
      [join(REPO_ROOT, 'node_modules/esbuild/bin/esbuild'), 'node-host/cli.ts', '--bundle', '--platform=node', '--format=esm', '--outfile=dist/weft.js'],
      { cwd: REPO_ROOT, stdio: 'inherit' },
    );
  }
  if (!existsSync(WEFT_BUNDLE)) throw new Error(`building ${WEFT_BUNDLE} did not produce it`);
  return WEFT_BUNDLE;
}
