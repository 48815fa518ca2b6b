// The Internet checksum (RFC 1071) — the one routine every protocol here uses. It is hot: summing
// 16-bit words into a 32-bit accumulator and folding once at the end keeps it to one pass with no
// allocation. Callers may chain partial sums (pseudo-header, then the segment) through `initial`.

/** One's-complement sum of `len` bytes at `off`, added to `initial`; not folded, not inverted. */
export function sumBytes(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  let i = off;
  const end = off + len;
  const even = end - ((end - off) & 1);
  // Unrolled by 8 bytes: the loop overhead dominates a naive word loop in V8.
  const fast = even - ((even - off) & 7);
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
