// The checksum's long sums with WebAssembly SIMD (checksum.wat): the bytes are copied into the
// module's one page, summed sixteen at a time, and the folded result byte-swapped. A frame's bytes
// were just written, so the copy comes from cache; with it a 64 KiB frame sums in about a third of
// the time of the scalar loop, and at a large MTU the checksum was the largest part of weft's CPU
// per download — which, on an emulated guest, the guest waits for.
//
// Where the runtime has no WebAssembly, no SIMD, or a page's Content Security Policy forbids
// compiling it, nothing is summed here and the caller's scalar loop does it all.

import { CHECKSUM_WASM } from './checksum-wasm';

/** The module's memory: one page, the most that one call sums. */
const PAGE_BYTES = 65536;

interface SimdSummer {
  memory: Uint8Array;
  sum: (len: number) => number;
}

/** undefined: not tried yet; null: not available here. */
let summer: SimdSummer | null | undefined;

function load(): SimdSummer | null {
  const wasm = (globalThis as { WebAssembly?: typeof WebAssembly }).WebAssembly;
  if (!wasm) return null;
  try {
    // Synchronous: the module is a few hundred bytes, under every browser's limit for that.
    const instance = new wasm.Instance(new wasm.Module(CHECKSUM_WASM), {});
    const memory = instance.exports.memory as WebAssembly.Memory;
    return { memory: new Uint8Array(memory.buffer), sum: instance.exports.sum as (len: number) => number };
  } catch {
    return null;
  }
}

/** True when sums run with SIMD here (for tests and diagnostics). */
export function simdChecksumAvailable(): boolean {
  if (summer === undefined) summer = load();
  return summer !== null;
}

/** How checksums are summed here, as a worker's stats say it. */
export function checksumPath(): 'simd' | 'scalar' {
  return simdChecksumAvailable() ? 'simd' : 'scalar';
}

/**
 * The one's-complement sum of the 16-bit words of [off, off + (len & ~15)), paired from `off` and
 * read big-endian as the Internet checksum reads them, folded to 16 bits; or -1 when SIMD is not
 * available here. The caller sums the last len & 15 bytes.
 */
export function simdSumPrefix(buf: Uint8Array, off: number, len: number): number {
  if (summer === undefined) summer = load();
  if (summer === null) return -1;
  const { memory, sum } = summer;
  const end = off + (len & ~15);
  let total = 0;
  for (let i = off; i < end; ) {
    const n = Math.min(PAGE_BYTES, end - i);
    memory.set(buf.subarray(i, i + n), 0);
    total += sum(n);
    i += n;
  }
  while (total > 0xffff) total = (total & 0xffff) + (total >>> 16);
  // The module read little-endian words: the byte-swapped sum is the big-endian one (RFC 1071 §2B).
  return ((total & 0xff) << 8) | (total >>> 8);
}
