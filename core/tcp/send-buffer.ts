// Bytes from the upstream waiting to reach the guest: sent-but-unacknowledged plus not-yet-sent.
// A growable ring, so appends and acknowledgements are O(bytes) with no per-chunk bookkeeping, and
// a segment can be copied out from any offset. It grows in powers of two up to a hard cap.

export class SendBuffer {
  private buf: Uint8Array;
  private start = 0;
  private len = 0;

  constructor(
    initialCapacity: number,
    private readonly maxCapacity: number,
  ) {
    this.buf = new Uint8Array(initialCapacity);
  }

  get length(): number {
    return this.len;
  }

  get capacity(): number {
    return this.buf.length;
  }

  /** Appends a copy of `data`; false (nothing appended) if that would pass the hard cap. */
  append(data: Uint8Array): boolean {
    const need = this.len + data.length;
    if (need > this.buf.length) {
      if (need > this.maxCapacity) return false;
      let cap = this.buf.length;
      while (cap < need) cap *= 2;
      this.grow(Math.min(cap, this.maxCapacity));
    }
    const cap = this.buf.length;
    const end = (this.start + this.len) % cap;
    const first = Math.min(data.length, cap - end);
    this.buf.set(data.subarray(0, first), end);
    if (first < data.length) this.buf.set(data.subarray(first), 0);
    this.len += data.length;
    return true;
  }

  /** Copies `len` bytes starting `offset` bytes from the front into `out` at `outOffset`. */
  copy(offset: number, len: number, out: Uint8Array, outOffset: number): void {
    const cap = this.buf.length;
    const from = (this.start + offset) % cap;
    const first = Math.min(len, cap - from);
    out.set(this.buf.subarray(from, from + first), outOffset);
    if (first < len) out.set(this.buf.subarray(0, len - first), outOffset + first);
  }

  /** Discards `n` bytes from the front (they were acknowledged). */
  consume(n: number): void {
    const k = Math.min(n, this.len);
    this.start = (this.start + k) % this.buf.length;
    this.len -= k;
    if (this.len === 0) this.start = 0;
  }

  private grow(capacity: number): void {
    const next = new Uint8Array(capacity);
    this.copy(0, this.len, next, 0);
    this.buf = next;
    this.start = 0;
  }
}
