// The receiving half of a guest connection: bytes from the guest on their way upstream. It decides
// which segments are acceptable, reassembles out-of-order data (bounded by the window), produces
// SACK blocks (RFC 2018: the most recent first), computes the advertised window with receiver-side
// silly-window avoidance and never shrinks it, reports duplicate data in a D-SACK block (RFC 2883),
// and runs the delayed-ACK policy (the connection's 'delayed-ack' timer).

import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax, type SeqNum } from './seq';
import type { TcpTimers } from './tcp-timers';
import { copyBytes } from '../wire/bytes';
import { after, type Instant } from '../clock';

interface OooSegment {
  seq: SeqNum;
  data: Uint8Array;
}

export interface ReceiverConfig {
  /** Receive buffer: in-order bytes the upstream has not taken yet, plus out-of-order bytes. */
  bufferBytes: number;
  /** Our window scale shift (0 when the guest did not offer scaling). */
  windowShift: number;
  mss: number;
  delayedAckMs: number;
}

/** A cap on out-of-order pieces, so a guest cannot make the list arbitrarily long with tiny segments. */
const MAX_OOO_SEGMENTS = 512;

export class TcpReceiver {
  rcvNxt: SeqNum;
  /** Right edge of the window last advertised; it never moves left. */
  private advRight: SeqNum;
  private readonly ooo: OooSegment[] = [];
  oooBytes = 0;
  private recentSack: Array<[SeqNum, SeqNum]> = [];
  /** Duplicate data to report once, as the first SACK block of the next segment (RFC 2883). */
  private dsack: [SeqNum, SeqNum] | undefined;
  private pendingFin: SeqNum | undefined;
  finReceived = false;

  /** An ACK should go out now (out-of-order data, a filled hole, FIN, or every second segment). */
  ackNow = false;
  private unackedSegments = 0;
  oooDropped = 0;

  constructor(
    irs: SeqNum,
    private readonly cfg: ReceiverConfig,
    private readonly timers: TcpTimers,
  ) {
    this.rcvNxt = seqAdd(irs, 1);
    // The SYN-ACK's window is never scaled (RFC 7323), so the first edge is at most 64 KiB away.
    this.advRight = seqAdd(this.rcvNxt, this.synWindow);
  }

  /** The window field for our SYN-ACK. */
  get synWindow(): number {
    return Math.min(this.cfg.bufferBytes, 0xffff);
  }

  /** Window (in bytes) from RCV.NXT to the advertised right edge. */
  get window(): number {
    return Math.max(0, seqDiff(this.advRight, this.rcvNxt));
  }

  /** RFC 9293 §3.10.7.4 segment acceptability test. */
  acceptable(seq: SeqNum, len: number): boolean {
    const wnd = this.window;
    if (len === 0) return wnd === 0 ? seq === this.rcvNxt : seqGe(seq, this.rcvNxt) && seqLt(seq, this.advRight);
    if (wnd === 0) return false;
    const last = seqAdd(seq, len - 1);
    return (seqGe(seq, this.rcvNxt) && seqLt(seq, this.advRight)) || (seqGe(last, this.rcvNxt) && seqLt(last, this.advRight));
  }

  /**
   * Takes the text and FIN of an acceptable segment. Returns the bytes that are now in order, as
   * copies the caller may keep. Sets `ackNow` or arms the delayed ACK.
   */
  accept(seq: SeqNum, payload: Uint8Array, fin: boolean, now: Instant): Uint8Array[] {
    const delivered: Uint8Array[] = [];
    let start = seq;
    let data = payload;
    // Trim what we already have and what lies beyond the window.
    if (seqLt(start, this.rcvNxt)) {
      const skip = Math.min(data.length, seqDiff(this.rcvNxt, start));
      if (skip > 0) this.noteDuplicate(start, seqAdd(start, skip));
      data = data.subarray(skip);
      start = seqAdd(start, skip);
    }
    const room = seqDiff(this.advRight, start);
    let finInWindow = fin;
    if (data.length > room) {
      data = data.subarray(0, Math.max(0, room));
      finInWindow = false;
    }
    if (fin && finInWindow) this.pendingFin = seqAdd(seq, payload.length);

    if (data.length > 0) {
      if (start === this.rcvNxt) {
        delivered.push(copyBytes(data));
        this.rcvNxt = seqAdd(this.rcvNxt, data.length);
        const filled = this.ooo.length > 0;
        this.pullInOrder(delivered);
        this.unackedSegments++;
        if (filled || this.unackedSegments >= 2 || this.ooo.length > 0) this.ackNow = true;
        else if (!this.timers.armed('delayed-ack')) this.timers.set('delayed-ack', after(now, this.cfg.delayedAckMs));
      } else {
        this.insertOutOfOrder(start, data);
        this.ackNow = true; // a duplicate ACK with SACK blocks tells the guest what is missing
      }
    } else if (payload.length > 0) {
      this.ackNow = true; // all duplicate: the guest missed our ACK
    }

    if (this.pendingFin !== undefined && this.pendingFin === this.rcvNxt && !this.finReceived) {
      this.finReceived = true;
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
      this.ackNow = true;
    } else if (fin) {
      this.ackNow = true; // beyond the window, or out of order: a duplicate ACK (with its SACK) at once
    }
    if (seqGt(this.rcvNxt, this.advRight)) this.advRight = this.rcvNxt;
    return delivered;
  }

  private pullInOrder(delivered: Uint8Array[]): void {
    while (this.ooo.length > 0 && seqLe(this.ooo[0].seq, this.rcvNxt)) {
      const seg = this.ooo.shift() as OooSegment;
      this.oooBytes -= seg.data.length;
      const end = seqAdd(seg.seq, seg.data.length);
      if (seqGt(end, this.rcvNxt)) {
        delivered.push(seg.data.subarray(seqDiff(this.rcvNxt, seg.seq)));
        this.rcvNxt = end;
      }
    }
    this.recentSack = this.recentSack.filter(([, r]) => seqGt(r, this.rcvNxt));
  }

  private insertOutOfOrder(start: SeqNum, data: Uint8Array): void {
    const end = seqAdd(start, data.length);
    const pieces: OooSegment[] = [];
    let cursor = start;
    let i = 0;
    while (i < this.ooo.length && seqLe(seqAdd(this.ooo[i].seq, this.ooo[i].data.length), cursor)) i++;
    const insertAt = i;
    for (; i < this.ooo.length && seqLt(cursor, end); i++) {
      const s = this.ooo[i];
      if (seqGe(s.seq, end)) break;
      if (seqLt(cursor, s.seq)) pieces.push({ seq: cursor, data: copyBytes(data, seqDiff(cursor, start), seqDiff(s.seq, start)) });
      cursor = seqMax(cursor, seqAdd(s.seq, s.data.length));
    }
    if (seqLt(cursor, end)) pieces.push({ seq: cursor, data: copyBytes(data, seqDiff(cursor, start)) });
    if (pieces.length === 0) {
      this.noteDuplicate(start, end); // all of it is held already
      return;
    }
    if (this.ooo.length + pieces.length > MAX_OOO_SEGMENTS) {
      this.oooDropped++;
      return;
    }
    // Pieces interleave with existing segments; insert each at its sorted place.
    let at = insertAt;
    for (const p of pieces) {
      while (at < this.ooo.length && seqLt(this.ooo[at].seq, p.seq)) at++;
      this.ooo.splice(at, 0, p);
      this.oooBytes += p.data.length;
    }
    const block = this.rangeContaining(start);
    this.recentSack = [block, ...this.recentSack.filter(([l, r]) => seqLt(r, block[0]) || seqGt(l, block[1]))].slice(0, 4);
  }

  /** The contiguous out-of-order range that contains `seq`. */
  private rangeContaining(seq: SeqNum): [SeqNum, SeqNum] {
    let l = seq;
    let r = seq;
    let found = false;
    for (const s of this.ooo) {
      const e = seqAdd(s.seq, s.data.length);
      if (!found) {
        if (seqLe(s.seq, seq) && seqLt(seq, e)) {
          found = true;
          l = s.seq;
          r = e;
        }
      } else if (s.seq === r) r = e;
      else if (seqGt(s.seq, r)) break;
    }
    // Extend leftwards over adjacent segments.
    for (let k = this.ooo.length - 1; k >= 0; k--) {
      const s = this.ooo[k];
      if (seqAdd(s.seq, s.data.length) === l) l = s.seq;
    }
    return [l, r];
  }

  /**
   * Data the guest sent again that we already had (below RCV.NXT, or held out of order). A Linux
   * guest that sees it reported undoes the window cut its retransmission caused (a loss probe or a
   * timeout that fired early), as it would with timestamps; without the report it keeps the cut.
   */
  private noteDuplicate(start: SeqNum, end: SeqNum): void {
    this.dsack = [start, end];
    this.ackNow = true;
  }

  /** A segment that failed acceptable(): text wholly below RCV.NXT is a duplicate to report. */
  rejected(seq: SeqNum, len: number): void {
    const end = seqAdd(seq, len);
    if (len > 0 && seqLe(end, this.rcvNxt)) this.noteDuplicate(seq, end);
  }

  /**
   * SACK blocks to send: a D-SACK block first when there is a duplicate to report, then the held
   * ranges, most recent first, each widened to its current contiguous range. A FIN
   * held out of order is SACKed like data, as Linux does: a sender's loss probe is often the last
   * data with the FIN, and Linux counts the probe delivered only when its SACK covers the FIN too.
   */
  sackBlocks(max: number): Array<[SeqNum, SeqNum]> {
    const dsack = max > 0 ? this.dsack : undefined;
    if (!dsack) return this.rangeBlocks(max, this.recentSack);
    // A duplicate of held data: the block holding it comes next, so the guest can tell it apart.
    const holder = this.recentSack.find(([l]) => {
      const b = this.rangeContaining(l);
      return seqLe(b[0], dsack[0]) && seqLe(dsack[1], b[1]);
    });
    const recent = holder ? [holder, ...this.recentSack.filter((b) => b !== holder)] : this.recentSack;
    return [dsack, ...this.rangeBlocks(max - 1, recent)];
  }

  /** Up to `max` blocks of held data (and a FIN held above a hole), in the order of `recent`. */
  private rangeBlocks(max: number, recent: ReadonlyArray<[SeqNum, SeqNum]>): Array<[SeqNum, SeqNum]> {
    const fin = this.pendingFin !== undefined && !this.finReceived && seqGt(this.pendingFin, this.rcvNxt) ? this.pendingFin : undefined;
    if (max <= 0 || (this.ooo.length === 0 && fin === undefined)) return [];
    const finEnd = fin === undefined ? undefined : seqAdd(fin, 1);
    const out: Array<[SeqNum, SeqNum]> = [];
    for (const [l] of recent) {
      const b = this.rangeContaining(l);
      if (b[1] === fin) b[1] = finEnd as SeqNum;
      if (out.some(([a, c]) => a === b[0] && c === b[1])) continue;
      out.push(b);
      if (out.length >= max) break;
    }
    if (fin !== undefined && out.length < max && !out.some(([, r]) => r === finEnd)) out.push([fin, finEnd as SeqNum]);
    return out;
  }

  /**
   * The window to advertise given `held` in-order bytes not yet taken by the upstream. Receiver
   * silly-window avoidance: the right edge moves only by at least min(buffer/2, MSS). Returns the
   * raw 16-bit field value (already shifted).
   */
  windowField(held: number): number {
    const shift = this.cfg.windowShift;
    const free = Math.max(0, this.cfg.bufferBytes - held - this.oooBytes);
    const candidate = seqAdd(this.rcvNxt, free);
    const step = Math.min(this.cfg.bufferBytes / 2, this.cfg.mss);
    if (seqGt(candidate, this.advRight) && (seqDiff(candidate, this.advRight) >= step || free >= this.cfg.bufferBytes / 2)) {
      const field = Math.min(0xffff, Math.floor(free / (1 << shift)));
      const right = seqAdd(this.rcvNxt, field << shift);
      if (seqGt(right, this.advRight)) this.advRight = right;
    }
    // Rounding down can pull the edge in by less than one scale unit; RFC 7323 §2.4 accepts that.
    return Math.min(0xffff, Math.floor(Math.max(0, seqDiff(this.advRight, this.rcvNxt)) / (1 << shift)));
  }

  /** How much the window would open if advertised now (for deciding on a window update). */
  windowGain(held: number): number {
    const free = Math.max(0, this.cfg.bufferBytes - held - this.oooBytes);
    return seqDiff(seqAdd(this.rcvNxt, free), this.advRight);
  }

  /** Any segment we send carries the ACK: pending ACK state is satisfied. */
  ackSent(): void {
    this.ackNow = false;
    this.dsack = undefined;
    this.unackedSegments = 0;
    this.timers.clear('delayed-ack');
  }
}
