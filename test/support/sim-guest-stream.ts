// What the simulated guest holds of weft's byte stream, modelled without weft's receiver in mind:
// positions are plain offsets from the stream's first byte (IRS + 1), unwrapped once where a
// segment comes in, so no modular arithmetic appears here. The stream is a set of held ranges; the
// range that starts at 0 is what has arrived in order, its end is what the guest acknowledges, and
// the ranges above it are what it SACKs. The FIN is one more slot, at the stream's length, held
// like a byte. Every byte is kept, so a byte weft sends again can be compared with the first one.

/** weft sent something a correct TCP never would; thrown so the simulation fails where it happened. */
export class OracleViolation extends Error {
  override name = 'OracleViolation';
}

export class ReceivedStream {
  private bytes = new Uint8Array(64 * 1024);
  /** Held [start, end) offsets: sorted, disjoint and never touching (touching ones are merged). */
  private ranges: Array<[number, number]> = [];

  /** The first offset not held with everything below it: RCV.NXT, as an offset. */
  get next(): number {
    const first = this.ranges[0];
    return first !== undefined && first[0] === 0 ? first[1] : 0;
  }

  /** The end of the highest range held (0 when nothing is). */
  get end(): number {
    return this.ranges.length === 0 ? 0 : this.ranges[this.ranges.length - 1][1];
  }

  /** The held ranges that lie above a hole, lowest first. */
  above(): Array<[number, number]> {
    return this.ranges.filter(([l]) => l > 0).map(([l, r]) => [l, r]);
  }

  /** A copy of the bytes [0, n). */
  prefix(n: number): Uint8Array {
    return this.bytes.slice(0, n);
  }

  /**
   * The parts of [start, start + data.length) already held, after checking that each of their bytes
   * is the one held: TCP resends the same bytes, so a different one is a broken stream.
   */
  overlap(start: number, data: Uint8Array): Array<[number, number]> {
    const end = start + data.length;
    const runs: Array<[number, number]> = [];
    for (const [l, r] of this.ranges) {
      const from = Math.max(l, start);
      const to = Math.min(r, end);
      if (from >= to) continue;
      for (let o = from; o < to; o++) {
        if (this.bytes[o] !== data[o - start]) {
          throw new OracleViolation(
            `stream offset ${o} changed on retransmission: 0x${this.bytes[o].toString(16)} first, 0x${data[o - start].toString(16)} now`,
          );
        }
      }
      runs.push([from, to]);
    }
    return runs;
  }

  /** Holds `data` at `start` (bytes already held there must have passed overlap()). */
  hold(start: number, data: Uint8Array): void {
    if (data.length === 0) return;
    const end = start + data.length;
    if (end > this.bytes.length) {
      let size = this.bytes.length;
      while (size < end) size *= 2;
      const grown = new Uint8Array(size);
      grown.set(this.bytes);
      this.bytes = grown;
    }
    this.bytes.set(data, start);
    this.add(start, end);
  }

  /** Holds one slot that carries no byte (the FIN's). */
  holdSlot(offset: number): void {
    this.add(offset, offset + 1);
  }

  private add(start: number, end: number): void {
    const kept: Array<[number, number]> = [];
    for (const [l, r] of this.ranges) {
      if (r < start || l > end) kept.push([l, r]);
      else [start, end] = [Math.min(l, start), Math.max(r, end)];
    }
    kept.push([start, end]);
    this.ranges = kept.sort((a, b) => a[0] - b[0]);
  }
}
