// The Internet checksum (RFC 1071) — the one routine every protocol here uses. It is hot: summing
// 16-bit words into a 32-bit accumulator and folding once at the end keeps it to one pass with no
// allocation. Callers may chain partial sums (pseudo-header, then the segment) through `initial`.

/** One's-complement sum of `len` bytes at `off`, added to `initial`; not folded, not inverted. */
export function sumBytes(buf: Uint8Array, off: number, len: number, initial = 0): number {
  // Long, even-aligned ranges are summed 32 bits at a time (about twice as fast in V8); the
  // Internet checksum does not care about byte order, so the little-endian words are summed and
  // the folded result byte-swapped (RFC 1071 §2B).
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
    for (; k + 3 < words; k += 4) {
      const a = u32[k];
      const b = u32[k + 1];
      const c = u32[k + 2];
      const d = u32[k + 3];
      acc += (a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16) + (c & 0xffff) + (c >>> 16) + (d & 0xffff) + (d >>> 16);
    }
    for (; k < words; k++) acc += (u32[k] & 0xffff) + (u32[k] >>> 16);
    acc = (acc % 0x10000) + Math.floor(acc / 0x10000);
    while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
    sum += ((acc & 0xff) << 8) | (acc >>> 8);
    i += words * 4;
    return sumTail(buf, i, off + len, sum);
  }
  return sumTail(buf, off, off + len, initial);
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
