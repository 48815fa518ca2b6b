// The sender's record of what is in the network: one entry per transmitted piece of the sequence
// space between SND.UNA and SND.MAX, in sequence order, with when it was last sent and what the
// guest's ACKs and SACK blocks (RFC 2018) have said about it. Loss recovery reads it in three ways:
// "pipe" (RFC 6675 §4: bytes believed in flight = outstanding − SACKed − lost + retransmitted), the
// next lost piece to resend (RFC 6675 NextSeg rule 1), and per-piece send times for RACK (RFC 8985).
//
// Pieces are split only at multiples of the MSS from their start, so a guest cannot fragment the
// board with odd SACK edges: it holds at most about (outstanding bytes / MSS) entries.

import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, type SeqNum } from './seq';
import type { Instant } from '../clock';

export interface SentPiece {
  start: SeqNum;
  /** One past the last sequence number (a FIN counts one). */
  end: SeqNum;
  fin: boolean;
  /** Time (ms) and send order of the latest transmission; the order breaks ties in equal times. */
  xmitTime: number;
  /** Time of the first transmission. */
  firstXmitTime: number;
  xmitOrder: number;
  /** Selectively acknowledged. */
  sacked: boolean;
  /** Deemed lost (RACK, duplicate ACKs or a timeout); it stays marked while its retransmission is out. */
  lost: boolean;
  /** A retransmission of it is in the network and counts in pipe. */
  retrans: boolean;
  /** Sent more than once, ever: ACKs of it are ambiguous (Karn). */
  everRetransmitted: boolean;
  /** Deemed lost by a retransmission timeout (not by RACK or duplicate ACKs), ever. */
  timedOut: boolean;
}

export class SackScoreboard {
  private pieces: SentPiece[] = [];
  private head = 0;
  /** Bytes of SACKed pieces. */
  sackedBytes = 0;
  sackedPieces = 0;
  /** Bytes of pieces marked lost and not SACKed. */
  lostBytes = 0;
  /** Bytes of pieces whose retransmission is in flight (not SACKed). */
  retransBytes = 0;
  /** Bytes of pieces marked lost whose retransmission is not out yet. */
  pendingBytes = 0;

  get length(): number {
    return this.pieces.length - this.head;
  }

  /** The piece at position i (0 = the one holding SND.UNA). */
  at(i: number): SentPiece {
    return this.pieces[this.head + i];
  }

  get last(): SentPiece | undefined {
    return this.length > 0 ? this.pieces[this.pieces.length - 1] : undefined;
  }

  /** Records a first transmission at the right edge. */
  append(start: SeqNum, len: number, fin: boolean, now: Instant, order: number): void {
    this.pieces.push({
      start,
      end: seqAdd(start, len + (fin ? 1 : 0)),
      fin,
      xmitTime: now,
      firstXmitTime: now,
      xmitOrder: order,
      sacked: false,
      lost: false,
      retrans: false,
      everRetransmitted: false,
      timedOut: false,
    });
  }

  /** Bytes pipe leaves out of the outstanding ones (SACKed + lost − retransmitted). */
  get notInFlight(): number {
    return this.sackedBytes + this.lostBytes - this.retransBytes;
  }

  /** Drops pieces below `ack`; those not SACKed before go to `delivered`. */
  ackTo(ack: SeqNum, delivered: SentPiece[]): void {
    while (this.length > 0) {
      const p = this.pieces[this.head];
      if (seqLe(p.end, ack)) {
        this.uncount(p);
        if (!p.sacked) delivered.push(p);
        this.head++;
        continue;
      }
      if (seqGt(ack, p.start)) {
        // A partial acknowledgement (the guest trimmed a segment to its window).
        const cut = seqDiff(ack, p.start);
        this.adjust(p, -cut);
        p.start = ack;
      }
      break;
    }
    if (this.head > 64 && this.head * 2 > this.pieces.length) {
      this.pieces = this.pieces.slice(this.head);
      this.head = 0;
    }
  }

  /**
   * Applies an ACK's SACK blocks; the newly SACKed pieces go to `delivered`, those of the first
   * block (the guest's latest arrival) first. A first block below the ACK, or inside the second
   * block, reports a duplicate (RFC 2883 DSACK) and is returned instead.
   */
  applySack(
    blocks: ReadonlyArray<[SeqNum, SeqNum]>,
    ack: SeqNum,
    sndUna: SeqNum,
    sndMax: SeqNum,
    mss: number,
    delivered: SentPiece[],
  ): { dsack: [SeqNum, SeqNum] | undefined; firstBlock: number } {
    if (blocks.length === 0) return { dsack: undefined, firstBlock: 0 };
    const [l, r] = blocks[0];
    const dsack = seqLe(r, ack) || (blocks.length > 1 && seqGe(l, blocks[1][0]) && seqLe(r, blocks[1][1])) ? blocks[0] : undefined;
    const first = dsack ? 1 : 0;
    let firstBlock = 0;
    for (let i = first; i < blocks.length; i++) {
      const [bl, br] = blocks[i];
      if (seqLt(bl, br) && seqGe(bl, sndUna) && seqLe(br, sndMax)) this.sack(bl, br, mss, delivered);
      if (i === first) firstBlock = delivered.length;
    }
    return { dsack, firstBlock };
  }

  /** Marks the pieces inside [l, r) SACKed; the newly SACKed go to `delivered`; returns their bytes. */
  sack(l: SeqNum, r: SeqNum, mss: number, delivered: SentPiece[]): number {
    let i = this.find(l);
    let bytes = 0;
    for (; i < this.pieces.length; i++) {
      let p = this.pieces[i];
      if (seqGe(p.start, r)) break;
      if (p.sacked) continue;
      // Split off the part before l and after r, at MSS multiples, so only whole pieces are SACKed.
      if (seqLt(p.start, l)) {
        const cut = Math.ceil(seqDiff(l, p.start) / mss) * mss;
        if (cut >= seqDiff(p.end, p.start)) continue;
        this.split(i, cut);
        continue; // the next iteration looks at the upper half
      }
      if (seqGt(p.end, r)) {
        // A block that ends where the FIN begins SACKs the data before it (a receiver may not SACK
        // a FIN it holds out of order); otherwise cut at an MSS multiple.
        const cut = p.fin && seqAdd(r, 1) === p.end ? seqDiff(r, p.start) : Math.floor(seqDiff(r, p.start) / mss) * mss;
        if (cut === 0) break;
        this.split(i, cut);
        p = this.pieces[i];
      }
      this.uncount(p);
      p.sacked = true;
      this.sackedBytes += seqDiff(p.end, p.start);
      this.sackedPieces++;
      bytes += seqDiff(p.end, p.start);
      delivered.push(p);
    }
    return bytes;
  }

  /** Marks a piece lost (RACK, dupacks, timeout); a lost retransmission becomes resendable again. */
  markLost(p: SentPiece): void {
    if (p.sacked) return;
    const len = seqDiff(p.end, p.start);
    if (p.retrans) {
      p.retrans = false;
      this.retransBytes -= len;
      this.pendingBytes += len;
    }
    if (!p.lost) {
      p.lost = true;
      this.lostBytes += len;
      this.pendingBytes += len;
    }
  }

  /** Everything not SACKed is lost (a retransmission timeout). */
  markAllLost(): void {
    for (let i = this.head; i < this.pieces.length; i++) {
      const p = this.pieces[i];
      if (!p.sacked) p.timedOut = true;
      this.markLost(p);
    }
  }

  /** Undoes lost marks of pieces not resent yet (the loss was spurious). */
  unmarkPending(): void {
    for (let i = this.head; i < this.pieces.length; i++) {
      const p = this.pieces[i];
      if (p.lost && !p.retrans && !p.sacked) {
        p.lost = false;
        const len = seqDiff(p.end, p.start);
        this.lostBytes -= len;
        this.pendingBytes -= len;
      }
    }
  }

  /** Forgets all SACK marks (the guest reneged: it dropped data it had SACKed). */
  clearSacks(): void {
    for (let i = this.head; i < this.pieces.length; i++) this.pieces[i].sacked = false;
    this.sackedBytes = 0;
    this.sackedPieces = 0;
  }

  /** The lowest piece marked lost and not resent, cut to at most `mss` bytes of data. */
  nextLost(mss: number): SentPiece | undefined {
    if (this.pendingBytes <= 0) return undefined;
    for (let i = this.head; i < this.pieces.length; i++) {
      const p = this.pieces[i];
      if (!p.lost || p.retrans || p.sacked) continue;
      const data = seqDiff(p.end, p.start) - (p.fin ? 1 : 0);
      if (data > mss) this.split(i, mss);
      return this.pieces[i];
    }
    return undefined;
  }

  /**
   * The last `mss` bytes of the highest piece not SACKed, split off as a piece of their own (a loss
   * probe). A FIN sent on its own takes the data just below it along: a bare FIN above a hole
   * tells the sender nothing from a receiver that does not SACK it.
   */
  lastUnsacked(mss: number): SentPiece | undefined {
    for (let i = this.pieces.length - 1; i >= this.head; i--) {
      const p = this.pieces[i];
      if (p.sacked) continue;
      const data = seqDiff(p.end, p.start) - (p.fin ? 1 : 0);
      if (data === 0 && i > this.head && this.mergeable(this.pieces[i - 1], p)) {
        const below = this.pieces[i - 1];
        const len = seqDiff(below.end, below.start);
        if (len > mss) this.split(i - 1, len - mss);
        const j = len > mss ? i : i - 1;
        this.merge(j);
        return this.pieces[j];
      }
      if (data <= mss) return p;
      this.split(i, Math.ceil(data / mss) * mss - mss);
      return this.pieces[i + 1];
    }
    return undefined;
  }

  /** Whether two adjacent pieces carry the same marks, so they can travel as one. */
  private mergeable(a: SentPiece, b: SentPiece): boolean {
    return a.end === b.start && !a.sacked && !b.sacked && a.lost === b.lost && a.retrans === b.retrans;
  }

  /** Joins piece i+1 into piece i (same marks: the byte counters do not change). */
  private merge(i: number): void {
    const [a, b] = [this.pieces[i], this.pieces[i + 1]];
    a.end = b.end;
    a.fin = b.fin;
    a.everRetransmitted ||= b.everRetransmitted;
    if (b.xmitOrder > a.xmitOrder) [a.xmitTime, a.xmitOrder] = [b.xmitTime, b.xmitOrder];
    this.pieces.splice(i + 1, 1);
  }

  /** Records a retransmission of `p` now. */
  resent(p: SentPiece, now: Instant, order: number): void {
    const len = seqDiff(p.end, p.start);
    if (!p.retrans && !p.sacked) {
      this.retransBytes += len;
      if (p.lost) this.pendingBytes -= len;
    }
    p.retrans = true;
    p.everRetransmitted = true;
    p.xmitTime = now;
    p.xmitOrder = order;
  }

  /** Index of the piece holding `seq` (or the first above it). */
  private find(seq: SeqNum): number {
    let lo = this.head;
    let hi = this.pieces.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (seqLe(this.pieces[mid].end, seq)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** Splits piece i `at` bytes after its start; both halves keep its marks. */
  private split(i: number, at: number): void {
    const p = this.pieces[i];
    const mid = seqAdd(p.start, at);
    const upper: SentPiece = { ...p, start: mid };
    p.end = mid;
    p.fin = false;
    this.pieces.splice(i + 1, 0, upper);
  }

  /** Takes a piece out of the counters (it was acknowledged or is about to be SACKed). */
  private uncount(p: SentPiece): void {
    this.adjust(p, -seqDiff(p.end, p.start));
  }

  private adjust(p: SentPiece, delta: number): void {
    if (p.sacked) {
      this.sackedBytes += delta;
      if (delta < 0 && -delta === seqDiff(p.end, p.start)) this.sackedPieces--;
      return;
    }
    if (p.lost) this.lostBytes += delta;
    if (p.retrans) this.retransBytes += delta;
    if (p.lost && !p.retrans) this.pendingBytes += delta;
  }
}
