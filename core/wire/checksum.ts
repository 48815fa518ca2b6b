// The Internet checksum (RFC 1071) — the one routine every protocol here uses. It is hot: summing
// 16-bit words into a 32-bit accumulator and folding once at the end keeps it to one pass with no
// allocation. Callers may chain partial sums (pseudo-header, then the segment) through `initial`.
// Long ranges go to WebAssembly SIMD where the runtime has it (./checksum-simd.ts).

import { simdSumPrefix } from './checksum-simd';

/** Ranges at least this long are summed with SIMD (from 64 bytes it is about twice as fast here; below, the call costs more than it saves). */
export const SIMD_MIN_BYTES = 64;

/** One's-complement sum of `len` bytes at `off`, added to `initial`; not folded, not inverted. */
export function sumBytes(buf: Uint8Array, off: number, len: number, initial = 0): number {
  if (len >= SIMD_MIN_BYTES) {
    const prefix = simdSumPrefix(buf, off, len);
    if (prefix >= 0) return sumTail(buf, off + (len & ~15), off + len, initial + prefix);
  }
  return sumBytesScalar(buf, off, len, initial);
}

/** sumBytes without SIMD: where the runtime has none, for short ranges, and to test the SIMD sum against. */
export function sumBytesScalar(buf: Uint8Array, off: number, len: number, initial = 0): number {
  // Long, even-aligned ranges are summed as whole 32-bit words: 2^16 ≡ 1 (mod 0xffff), so the plain
  // sum of the words is congruent to the one's-complement sum of their 16-bit halves, and a double
  // holds it exactly (up to 2^20 words per run, then it is reduced). One add per word instead of
  // splitting each into halves made this about twice as fast. The Internet checksum does not care
  // about byte order, so the little-endian words are summed and the result byte-swapped (RFC 1071 §2B).
  if (len >= 64 && ((buf.byteOffset + off) & 1) === 0) {
    let sum = initial;
    let i = off;
    if (((buf.byteOffset + i) & 3) === 2) {
      sum += (buf[i] << 8) | buf[i + 1];
      i += 2;
    }
    const words = (off + len - i) >>> 2;
    const u32 = new Uint32Array(buf.buffer, buf.byteOffset + i, words);
    let acc = 0;
    let k = 0;
    while (k < words) {
      const runEnd = Math.min(words, k + MAX_EXACT_WORDS);
      let a = 0;
      let b = 0;
      let c = 0;
      let d = 0;
      for (; k + 7 < runEnd; k += 8) {
        a += u32[k] + u32[k + 4];
        b += u32[k + 1] + u32[k + 5];
        c += u32[k + 2] + u32[k + 6];
        d += u32[k + 3] + u32[k + 7];
      }
      for (; k < runEnd; k++) a += u32[k];
      acc = foldNonZero(acc + a + b + c + d);
    }
    sum += ((acc & 0xff) << 8) | (acc >>> 8);
    i += words * 4;
    return sumTail(buf, i, off + len, sum);
  }
  if (len >= 64) {
    // An odd start (frames packed back to back in a link's buffer): summed from the next byte with
    // the first one as a low byte, which is the sum of the range shifted by one byte — the
    // byte-swapped sum (RFC 1071 §2B).
    let t = sumBytesScalar(buf, off + 1, len - 1, buf[off]);
    while (t > 0xffff) t = (t & 0xffff) + (t >>> 16);
    return initial + (((t & 0xff) << 8) | (t >>> 8));
  }
  return sumTail(buf, off, off + len, initial);
}

/** Words summed before the accumulator is reduced (2^20 words of < 2^32 stay below 2^53). */
const MAX_EXACT_WORDS = 1 << 20;

/** The one's-complement sum (end-around carry) of a non-negative integer: 0 only for 0, else 1…0xffff. */
function foldNonZero(n: number): number {
  return n === 0 ? 0 : ((n - 1) % 0xffff) + 1;
}

/** Byte-wise sum of [i, end), unrolled by 8 bytes. */
function sumTail(buf: Uint8Array, i: number, end: number, sum: number): number {
  const even = end - ((end - i) & 1);
  // Unrolled by 8 bytes: the loop overhead dominates a naive word loop in V8.
  const fast = even - ((even - i) & 7);
  while (i < fast) {
    sum += ((buf[i] << 8) | buf[i + 1]) + ((buf[i + 2] << 8) | buf[i + 3]) + ((buf[i + 4] << 8) | buf[i + 5]) + ((buf[i + 6] << 8) | buf[i + 7]);
    i += 8;
    // Fold early enough that the accumulator stays an exact small integer.
    if (sum > 0x3fff_ffff) sum = (sum & 0xffff) + (sum >>> 16);
  }
  while (i < even) {
    sum += (buf[i] << 8) | buf[i + 1];
    i += 2;
  }
  if (i < end) sum += buf[i] << 8;
  return sum;
}

/** Folds a partial sum into 16 bits and returns its complement: the value to put in a header. */
export function finishChecksum(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Checksum of a byte range. A range that already holds a correct checksum yields 0. */
export function internetChecksum(buf: Uint8Array, off = 0, len = buf.length - off): number {
  return finishChecksum(sumBytes(buf, off, len));
}

/** Partial sum of the IPv4 pseudo-header used by UDP and TCP (RFC 768, RFC 9293). */
export function pseudoHeaderSum(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length;
}
