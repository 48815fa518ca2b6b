// Bytes from the upstream waiting to reach the guest: sent-but-unacknowledged plus not-yet-sent.
// A growable ring, so appends and acknowledgements are O(bytes) with no per-chunk bookkeeping, and
// a segment can be copied out from any offset. It grows in powers of two up to a hard cap. A reader
// may fill its free tail in place (tailRoom), so bytes from a host socket are copied only once.

import type { SegmentPayload } from '../wire/tcp';

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

  /**
   * Appends `data`: a copy, unless `data` is room that tailRoom() handed out, at its start, still
   * at the end of the bytes — then it is taken where it lies. False (nothing appended) if that
   * would pass the hard cap.
   */
  append(data: Uint8Array): boolean {
    const cap = this.buf.length;
    if (data.buffer === this.buf.buffer && data.byteOffset === this.buf.byteOffset + ((this.start + this.len) % cap) && this.len + data.length <= cap) {
      this.len += data.length;
      return true;
    }
    const need = this.len + data.length;
    if (need > cap) {
      if (need > this.maxCapacity) return false;
      let next = cap;
      while (next < need) next *= 2;
      this.grow(Math.min(next, this.maxCapacity));
    }
    this.put(data);
    return true;
  }

  /**
   * The free room right after the last byte, up to `max` bytes, for a reader to fill in place and
   * pass to append(); undefined when less than `min` bytes lie there in one piece. It stays valid
   * until the next append. Reading a host socket straight into it saves a copy of every byte a
   * download carries. It does not grow the buffer: appends do, as far as the bytes need (growing it
   * ahead for every first read held 256 KiB or more per connection, however little it carried).
   */
  tailRoom(min: number, max: number): Uint8Array | undefined {
    const cap = this.buf.length;
    const end = this.start + this.len;
    // Bytes in one piece [start, end): room runs to the end of the array. Wrapped: up to start.
    const from = end < cap ? end : end - cap;
    const room = end < cap ? cap - end : this.start - from;
    if (room < min) return undefined;
    return this.buf.subarray(from, from + Math.min(room, max));
  }

  private put(data: Uint8Array): void {
    const cap = this.buf.length;
    const end = (this.start + this.len) % cap;
    const first = Math.min(data.length, cap - end);
    this.buf.set(data.subarray(0, first), end);
    if (first < data.length) this.buf.set(data.subarray(first), 0);
    this.len += data.length;
  }

  /** Copies `len` bytes starting `offset` bytes from the front into `out` at `outOffset`. */
  copy(offset: number, len: number, out: Uint8Array, outOffset: number): void {
    const cap = this.buf.length;
    const from = (this.start + offset) % cap;
    const first = Math.min(len, cap - from);
    out.set(this.buf.subarray(from, from + first), outOffset);
    if (first < len) out.set(this.buf.subarray(0, len - first), outOffset + first);
  }

  /**
   * The `len` bytes starting `offset` bytes from the front, where they lie, if they are in one
   * piece (undefined where the ring wraps between them). They stay unchanged until acknowledged
   * bytes are consumed and their room refilled; a ring that grows leaves them in the old array.
   */
  view(offset: number, len: number): Uint8Array | undefined {
    const cap = this.buf.length;
    const from = (this.start + offset) % cap;
    return from + len <= cap ? this.buf.subarray(from, from + len) : undefined;
  }

  /** A segment's payload: `len` bytes from `offset`. */
  range(offset: number, len: number): SegmentPayload {
    return new SendBufferRange(this, offset, len);
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

class SendBufferRange implements SegmentPayload {
  constructor(
    private readonly buffer: SendBuffer,
    private readonly offset: number,
    private readonly len: number,
  ) {}

  copyTo(out: Uint8Array, offset: number): void {
    this.buffer.copy(this.offset, this.len, out, offset);
  }

  view(): Uint8Array | undefined {
    return this.buffer.view(this.offset, this.len);
  }
}
