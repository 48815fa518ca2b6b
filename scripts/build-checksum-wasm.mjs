// Assembles core/wire/checksum.wat into core/wire/checksum-wasm.ts (the module's bytes as a
// Uint8Array). Run after editing the .wat; test/unit/checksum-simd.test.ts fails while the two differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';

const WAT = fileURLToPath(new URL('../core/wire/checksum.wat', import.meta.url));
const OUT = fileURLToPath(new URL('../core/wire/checksum-wasm.ts', import.meta.url));

/** The module's bytes, as wabt assembles the .wat. */
export async function assembleChecksumWasm() {
  const wabt = await wabtInit();
  const module = wabt.parseWat('checksum.wat', readFileSync(WAT, 'utf8'), { simd: true });
  try {
    return module.toBinary({}).buffer;
  } finally {
    module.destroy();
  }
}

/** checksum-wasm.ts for those bytes, 24 to a line. */
export function checksumWasmSource(bytes) {
  const lines = [];
  for (let i = 0; i < bytes.length; i += 24) lines.push(`  ${Array.from(bytes.subarray(i, i + 24)).join(', ')},`);
  return [
    '// Generated from checksum.wat by `node scripts/build-checksum-wasm.mjs`: do not edit.',
    '',
    '/** The WebAssembly module of checksum.wat (SIMD sum of 16-bit words). */',
    'export const CHECKSUM_WASM = new Uint8Array([',
    ...lines,
    ']);',
    '',
  ].join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const bytes = await assembleChecksumWasm();
  writeFileSync(OUT, checksumWasmSource(bytes));
  console.log(`core/wire/checksum-wasm.ts: ${bytes.length} bytes from checksum.wat`);
}
