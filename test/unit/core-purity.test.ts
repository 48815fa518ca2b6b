// core/ is sans-I/O: it may import only core/, and may not reach for clocks, timers, randomness or
// host objects. This test reads the sources so a violation fails CI instead of a browser build.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const CORE = resolve(__dirname, '../../core');

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return sources(p);
    return p.endsWith('.ts') && !p.endsWith('.test.ts') ? [p] : [];
  });
}

const FORBIDDEN = [
  /\bsetTimeout\b/,
  /\bsetInterval\b/,
  /\bsetImmediate\b/,
  /\bDate\.now\b/,
  /\bnew Date\b/,
  /\bMath\.random\b/,
  /\bperformance\.now\b/,
  /\bprocess\./,
  /\brequire\(/,
  /\bwindow\./,
  /\bdocument\./,
  /\bcrypto\./,
  /\bconsole\./,
];

describe('core purity', () => {
  const files = sources(CORE);
  it('has sources to check', () => expect(files.length).toBeGreaterThan(5));
  for (const file of files) {
    it(relative(CORE, file), () => {
      const text = readFileSync(file, 'utf8');
      const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/.*$/gm, '');
      for (const m of code.matchAll(/\bfrom\s+['"]([^'"]+)['"]/g)) {
        const spec = m[1];
        expect(spec.startsWith('.'), `${spec} is not a relative import`).toBe(true);
        const target = resolve(dirname(file), spec);
        expect(target.startsWith(CORE), `${spec} leaves core/`).toBe(true);
      }
      for (const re of FORBIDDEN) expect(re.test(code), `uses ${re.source}`).toBe(false);
    });
  }
});
