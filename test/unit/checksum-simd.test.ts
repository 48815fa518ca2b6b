// The SIMD sum (core/wire/checksum.wat through checksum-simd.ts) against the scalar one, and the
// committed module against its source.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { finishChecksum, SIMD_MIN_BYTES, sumBytes, sumBytesScalar } from '../../core/wire/checksum';
import { simdChecksumAvailable, simdSumPrefix } from '../../core/wire/checksum-simd';
import { CHECKSUM_WASM } from '../../core/wire/checksum-wasm';
import { seededRandom } from '../support/frames';

describe('checksum with WebAssembly SIMD', () => {
  it('is what Node uses for long ranges', () => {
    expect(simdChecksumAvailable()).toBe(true);
    expect(simdSumPrefix(new Uint8Array(32).fill(1), 0, 32)).toBe(0x0101 * 16);
  });

  it('agrees with the scalar sum at every alignment, for lengths around its 16- and 64-byte steps, the threshold and one page', () => {
    const rng = seededRandom(7);
    const backing = new Uint8Array(3 * 65536 + 64);
    rng.fill(backing);
    const lengths = [SIMD_MIN_BYTES - 1, SIMD_MIN_BYTES, 257, 1000, 1460, 4095, 4096, 4097, 65519, 65535, 65536, 65537, 65524 + 54, 131_072 + 13, 3 * 65536];
    for (const len of lengths) {
      for (let off = 0; off < 19; off++) {
        if (off + len > backing.length) continue;
        for (const initial of [0, 0x1234, 0x3_0000]) {
          const simd = finishChecksum(sumBytes(backing, off, len, initial));
          const scalar = finishChecksum(sumBytesScalar(backing, off, len, initial));
          expect(simd, `off ${off} len ${len} initial ${initial}`).toBe(scalar);
        }
      }
    }
  });

  it('loses no carry over several pages of 0xff and of random bytes', () => {
    const ones = new Uint8Array(4 * 65536 + 10).fill(0xff);
    expect(finishChecksum(sumBytes(ones, 1, ones.length - 1))).toBe(finishChecksum(sumBytesScalar(ones, 1, ones.length - 1)));
    const rng = seededRandom(11);
    for (let k = 0; k < 20; k++) {
      const buf = new Uint8Array(70_000 + k * 997);
      rng.fill(buf);
      expect(finishChecksum(sumBytes(buf, k, buf.length - k))).toBe(finishChecksum(sumBytesScalar(buf, k, buf.length - k)));
    }
  });

  it('checksum-wasm.ts is checksum.wat assembled (node scripts/build-checksum-wasm.mjs)', async () => {
    const { assembleChecksumWasm, checksumWasmSource } = await import('../../scripts/build-checksum-wasm.mjs');
    const bytes = await assembleChecksumWasm();
    expect(Buffer.from(bytes).equals(Buffer.from(CHECKSUM_WASM))).toBe(true);
    expect(checksumWasmSource(bytes)).toBe(readFileSync(new URL('../../core/wire/checksum-wasm.ts', import.meta.url), 'utf8'));
  });
});
