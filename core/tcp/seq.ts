// Sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4): comparisons are by signed difference.
// `SeqNum` is a plain number at run time; the brand keeps it from mixing with lengths, offsets or
// addresses: only these functions move or compare one, so `seqAdd(ip, mss)` and `seqLt(a, 5)` do
// not compile. (A `<` between two of them still does — TypeScript allows it on any number — so the
// rule holds by convention there: compare with seqLt and friends.)

export type SeqNum = number & { readonly __brand: 'SeqNum' };

/** A 32-bit field read off the wire (or a test's number) as a sequence number. */
export function toSeq(n: number): SeqNum {
  return (n >>> 0) as SeqNum;
}

export function seqAdd(a: SeqNum, n: number): SeqNum {
  return ((a + n) >>> 0) as SeqNum;
}

/** a − b as a signed 32-bit distance. */
export function seqDiff(a: SeqNum, b: SeqNum): number {
  return (a - b) | 0;
}

export function seqLt(a: SeqNum, b: SeqNum): boolean {
  return ((a - b) | 0) < 0;
}

export function seqLe(a: SeqNum, b: SeqNum): boolean {
  return ((a - b) | 0) <= 0;
}

export function seqGt(a: SeqNum, b: SeqNum): boolean {
  return ((a - b) | 0) > 0;
}

export function seqGe(a: SeqNum, b: SeqNum): boolean {
  return ((a - b) | 0) >= 0;
}

export function seqMax(a: SeqNum, b: SeqNum): SeqNum {
  return seqGt(a, b) ? a : b;
}

export function seqMin(a: SeqNum, b: SeqNum): SeqNum {
  return seqLt(a, b) ? a : b;
}

/**
 * RFC 7323 timestamps wrap like sequence numbers and are ordered the same way (§5.2), but they
 * count milliseconds, not bytes: a − b < 0 modulo 2^32.
 */
export function stampLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0;
}
