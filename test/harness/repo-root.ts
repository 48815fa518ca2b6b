// The repository root, found by walking up to weft's package.json: this module runs both from
// test/harness/ (vitest) and bundled into dist/ (npm run bench), so fixed relative paths would break.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = join(dir, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'weft-net') return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`cannot find the weft repository root above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

export const REPO_ROOT = findRoot();
export const HARNESS_DIR = join(REPO_ROOT, 'test', 'harness');
