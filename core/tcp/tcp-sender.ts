// The sending half of a guest connection: bytes from the upstream travel to the guest. It owns the
// send buffer, retransmission (RFC 6298 RTO with Karn's rule and exponential backoff), congestion
// control (RFC 5681 slow start / congestion avoidance; NewReno fast recovery per RFC 6582, or
// SACK-driven loss recovery in the spirit of RFC 6675 when the guest permits SACK), zero-window
// probing, and sender-side silly-window avoidance. Segments leave through `SenderOutput`.

import { SendBuffer } from './send-buffer';
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, seqMax, seqMin } from './seq';

export interface SenderOutput {
  /** Sends `len` bytes of the send buffer starting at sequence `seq`, with FIN after them if `fin`. */
  sendSegment(seq: number, len: number, fin: boolean): void;
  /** Sends an ACK with seq = SND.UNA − 1 and no data, which makes the guest answer with its window. */
  sendProbe(): void;
}

export interface SenderConfig {
  /** Payload bytes per segment (the guest's MSS less our option overhead). */
  mss: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** The upstream is paused once this many bytes wait in the send buffer. */
  sendBufferBytes: number;
  /** Consecutive RTO expiries before the connection is given up. */
  maxRetransmits: number;
  sackPermitted: boolean;
}

/** Cap on cwnd so it stays an exact, bounded integer however long a clean link runs. */
const MAX_CWND = 64 * 1024 * 1024;
/** Persist (zero-window probe) interval bounds, RFC 9293 §3.8.6.1. */
const MAX_PERSIST_MS = 60_000;

export class TcpSender {
  readonly buffer: SendBuffer;
  /** Oldest unacknowledged sequence number; the buffer's first byte has this sequence number. */
  sndUna: number;
  /** Next sequence number to send (moves back to SND.UNA after a retransmission timeout). */
  sndNxt: number;
  /** Highest sequence number sent so far. */
  sndMax: number;
  sndWnd = 0;
  maxSndWnd = 0;
  private sndWl1 = 0;
  private sndWl2 = 0;

  private finQueued = false;
  /** Sequence number of our FIN, once the upstream has ended. */
  finSeq: number | undefined;

  cwnd: number;
  ssthresh = MAX_CWND;
  private dupAcks = 0;
  inRecovery = false;
  private recover = 0;
  private highRxt = 0;
  /** SACKed ranges [start, end) above SND.UNA, sorted and disjoint. */
  private sacked: Array<[number, number]> = [];

  srtt: number | undefined;
  private rttvar = 0;
  rto: number;
  private rtoDeadline: number | undefined;
  private retransmits = 0;
  private rttSeq: number | undefined;
  private rttStart = 0;
  private persistDeadline: number | undefined;
  private persistInterval = 0;

  /** Set when the retransmission limit is reached; the connection must abort. */
  failed = false;
  segmentsRetransmitted = 0;

  constructor(
    iss: number,
    private readonly cfg: SenderConfig,
    private readonly out: SenderOutput,
  ) {
    // The SYN occupies iss; data starts after it. The connection acknowledges the SYN itself.
    this.sndUna = this.sndNxt = this.sndMax = seqAdd(iss, 1);
    this.buffer = new SendBuffer(Math.min(16 * 1024, cfg.sendBufferBytes), cfg.sendBufferBytes + 256 * 1024);
    this.cwnd = Math.min(10 * cfg.mss, Math.max(2 * cfg.mss, 14600)); // RFC 6928 initial window
    this.rto = cfg.initialRtoMs;
  }

  /** Sets the guest's window from its SYN (not scaled) and the reference point for updates. */
  initWindow(wnd: number, segSeq: number, segAck: number): void {
    this.sndWnd = wnd;
    this.maxSndWnd = wnd;
    this.sndWl1 = segSeq;
    this.sndWl2 = segAck;
  }

  get mss(): number {
    return this.cfg.mss;
  }

  /** Bytes queued (unacknowledged + unsent). */
  get buffered(): number {
    return this.buffer.length;
  }

  /** True when the upstream should be paused. */
  get full(): boolean {
    return this.buffer.length >= this.cfg.sendBufferBytes;
  }

  get finSent(): boolean {
    return this.finSeq !== undefined && seqGt(this.sndMax, this.finSeq);
  }

  get finAcked(): boolean {
    return this.finSeq !== undefined && seqGt(this.sndUna, this.finSeq);
  }

  /** Everything queued, FIN included if any, has been acknowledged. */
  get idle(): boolean {
    return this.buffer.length === 0 && this.sndUna === this.sndMax;
  }

  /** Queues upstream bytes; false if the hard cap would be passed (the upstream ignored pause). */
  write(data: Uint8Array): boolean {
    if (this.finQueued) return false;
    return this.buffer.append(data);
  }

  /** The upstream ended: a FIN follows the queued data. */
  finish(): void {
    if (this.finQueued) return;
    this.finQueued = true;
    this.finSeq = seqAdd(this.sndUna, this.buffer.length);
  }

  /**
   * Processes the acknowledgement fields of an acceptable segment. Returns false when the segment
   * acknowledges data never sent (the caller answers with an ACK and drops it).
   */
  onAck(seg: { seq: number; ack: number; window: number; sack?: Array<[number, number]>; dupCandidate: boolean }, now: number, tsEcr?: number): boolean {
    const { ack } = seg;
    if (seqGt(ack, this.sndMax)) return false;
    let windowChanged = false;
    if (seqGe(ack, this.sndUna) && (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack)))) {
      windowChanged = seg.window !== this.sndWnd;
      this.sndWnd = seg.window;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (seg.window > this.maxSndWnd) this.maxSndWnd = seg.window;
    }
    if (this.cfg.sackPermitted && seg.sack) for (const [l, r] of seg.sack) this.markSacked(l, r);

    if (seqGt(ack, this.sndUna)) {
      this.onNewAck(ack, now, tsEcr);
    } else if (ack === this.sndUna && seg.dupCandidate && !windowChanged && this.sndMax !== this.sndUna) {
      this.onDupAck();
    }
    if (this.sndWnd > 0) this.persistDeadline = undefined;
    this.output(now);
    return true;
  }

  private onNewAck(ack: number, now: number, tsEcr: number | undefined): void {
    const acked = seqDiff(ack, this.sndUna);
    this.buffer.consume(Math.min(acked, this.buffer.length));
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
    this.pruneSacked();
    this.retransmits = 0;

    // RTT: timestamps give a sample on every new ACK; otherwise time one segment (Karn's rule).
    if (tsEcr !== undefined && tsEcr !== 0) this.sampleRtt((now >>> 0) - tsEcr);
    else if (this.rttSeq !== undefined && seqGe(ack, this.rttSeq)) {
      this.sampleRtt(now - this.rttStart);
      this.rttSeq = undefined;
    }

    const mss = this.cfg.mss;
    if (this.inRecovery) {
      if (seqGe(ack, this.recover)) {
        this.inRecovery = false;
        this.cwnd = this.ssthresh;
        this.dupAcks = 0;
      } else if (!this.cfg.sackPermitted) {
        // NewReno partial ACK: the next hole is lost too; retransmit it and deflate.
        this.retransmitFirst();
        this.cwnd = Math.max(mss, this.cwnd - acked + mss);
      } else if (seqLt(this.highRxt, ack)) {
        this.highRxt = ack;
      }
    } else {
      this.dupAcks = 0;
      if (this.cwnd < this.ssthresh) this.cwnd += Math.min(acked, 2 * mss);
      else this.cwnd += Math.max(1, Math.floor((mss * mss) / this.cwnd));
      if (this.cwnd > MAX_CWND) this.cwnd = MAX_CWND;
    }

    this.rtoDeadline = this.sndUna === this.sndMax ? undefined : now + this.rto;
  }

  private onDupAck(): void {
    this.dupAcks++;
    if (this.inRecovery) {
      if (!this.cfg.sackPermitted) this.cwnd += this.cfg.mss;
      return;
    }
    const lossBySack = this.cfg.sackPermitted && this.sackedBytes() > 2 * this.cfg.mss;
    if (this.dupAcks >= 3 || lossBySack) this.enterRecovery();
  }

  private enterRecovery(): void {
    const mss = this.cfg.mss;
    this.inRecovery = true;
    this.recover = this.sndMax;
    this.ssthresh = Math.max(Math.floor(seqDiff(this.sndMax, this.sndUna) / 2), 2 * mss);
    this.rttSeq = undefined;
    if (this.cfg.sackPermitted) {
      this.cwnd = this.ssthresh;
      this.highRxt = this.sndUna;
    } else {
      this.retransmitFirst();
      this.cwnd = this.ssthresh + 3 * mss;
    }
  }

  private retransmitFirst(): void {
    const len = Math.min(this.cfg.mss, this.buffer.length);
    const fin = this.finSeq !== undefined && this.finSent && len === this.buffer.length;
    if (len === 0 && !fin) return;
    this.segmentsRetransmitted++;
    this.out.sendSegment(this.sndUna, len, fin);
  }

  /** Sends whatever the windows allow: SACK-recovery retransmissions first, then new data, then FIN. */
  output(now: number): void {
    if (this.failed) return;
    const mss = this.cfg.mss;
    let sent = false;
    for (;;) {
      const pipe = this.pipe();
      if (this.inRecovery && this.cfg.sackPermitted) {
        const hole = this.nextHole();
        if (hole && pipe < this.cwnd) {
          const [seq, len] = hole;
          this.highRxt = seqAdd(seq, len);
          this.segmentsRetransmitted++;
          this.out.sendSegment(seq, len, false);
          sent = true;
          continue;
        }
      }
      // New data, or old data again after a timeout (SND.NXT < SND.MAX), skipping SACKed ranges.
      this.skipSacked();
      const offset = seqDiff(this.sndNxt, this.sndUna);
      const avail = this.buffer.length - offset;
      const wndRoom = seqDiff(seqAdd(this.sndUna, this.sndWnd), this.sndNxt);
      let len = Math.min(avail, mss, wndRoom, this.cwnd - pipe);
      const sackLimit = this.nextSackedStart(this.sndNxt);
      if (sackLimit !== undefined) len = Math.min(len, seqDiff(sackLimit, this.sndNxt));
      if (len > 0) {
        // Silly-window avoidance (RFC 9293 §3.8.6.2.1): full segments, or everything that is
        // left, or at least half the largest window the guest has offered.
        if (len < mss && len < avail && len < this.maxSndWnd / 2) break;
        const fin = this.finQueued && len === avail && !this.finSent;
        this.transmit(this.sndNxt, len, fin, now);
        sent = true;
        continue;
      }
      if (avail <= 0 && this.finQueued && !seqGt(this.sndNxt, this.finSeq as number)) {
        this.transmit(this.sndNxt, 0, true, now);
        sent = true;
      }
      break;
    }
    // Unsent data and nothing in flight to bring an ACK: probe (zero window) or override SWS.
    const unsent = this.buffer.length - seqDiff(this.sndNxt, this.sndUna) > 0;
    if (unsent && this.sndNxt === this.sndUna && !sent) {
      if (this.persistDeadline === undefined) {
        this.persistInterval = Math.max(this.rto, this.cfg.minRtoMs);
        this.persistDeadline = now + this.persistInterval;
      }
    } else if (sent) {
      this.persistDeadline = undefined;
    }
  }

  private transmit(seq: number, len: number, fin: boolean, now: number): void {
    const end = seqAdd(seq, len + (fin ? 1 : 0));
    const retransmission = seqLt(seq, this.sndMax);
    if (retransmission) this.segmentsRetransmitted++;
    else if (this.rttSeq === undefined && len > 0) {
      this.rttSeq = end;
      this.rttStart = now;
    }
    this.out.sendSegment(seq, len, fin);
    this.sndNxt = end;
    if (seqGt(end, this.sndMax)) this.sndMax = end;
    if (this.rtoDeadline === undefined) this.rtoDeadline = now + this.rto;
  }

  onTimer(now: number): void {
    if (this.rtoDeadline !== undefined && now >= this.rtoDeadline) this.onRetransmitTimeout(now);
    if (this.persistDeadline !== undefined && now >= this.persistDeadline) {
      if (this.sndWnd === 0) {
        this.out.sendProbe();
        this.persistInterval = Math.min(this.persistInterval * 2, MAX_PERSIST_MS);
        this.persistDeadline = now + this.persistInterval;
      } else {
        // A small window that SWS avoidance refused to fill: send what fits now.
        this.persistDeadline = undefined;
        const offset = seqDiff(this.sndNxt, this.sndUna);
        const len = Math.min(this.buffer.length - offset, this.sndWnd - offset, this.cfg.mss);
        if (len > 0) this.transmit(this.sndNxt, len, false, now);
      }
    }
  }

  private onRetransmitTimeout(now: number): void {
    this.retransmits++;
    if (this.retransmits > this.cfg.maxRetransmits) {
      this.failed = true;
      this.rtoDeadline = undefined;
      return;
    }
    const flight = seqDiff(this.sndMax, this.sndUna);
    this.ssthresh = Math.max(Math.floor(flight / 2), 2 * this.cfg.mss);
    this.cwnd = this.cfg.mss;
    this.inRecovery = false;
    this.dupAcks = 0;
    // The guest may have dropped what it SACKed (reneging); resend from SND.UNA.
    this.sacked = [];
    this.sndNxt = this.sndUna;
    this.rttSeq = undefined;
    this.rto = Math.min(this.rto * 2, this.cfg.maxRtoMs);
    this.rtoDeadline = now + this.rto;
    this.output(now);
    if (this.sndNxt === this.sndUna && this.sndUna !== this.sndMax) {
      // Nothing could be sent (zero window): a probe keeps the conversation alive.
      this.out.sendProbe();
    }
  }

  nextDeadline(): number | undefined {
    const a = this.rtoDeadline;
    const b = this.persistDeadline;
    if (a === undefined) return b;
    if (b === undefined) return a;
    return Math.min(a, b);
  }

  private sampleRtt(r: number): void {
    if (!(r >= 0) || r > 600_000) return;
    if (this.srtt === undefined) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(this.cfg.maxRtoMs, Math.max(this.cfg.minRtoMs, this.srtt + Math.max(1, 4 * this.rttvar)));
  }

  // ── SACK scoreboard ───────────────────────────────────────────────────────

  private markSacked(l: number, r: number): void {
    l = seqMax(l, this.sndUna);
    r = seqMin(r, this.sndMax);
    if (!seqLt(l, r)) return;
    const next: Array<[number, number]> = [];
    let placed = false;
    for (const [a, b] of this.sacked) {
      if (seqLt(b, l)) next.push([a, b]);
      else if (seqLt(r, a)) {
        if (!placed) next.push([l, r]);
        placed = true;
        next.push([a, b]);
      } else {
        l = seqMin(l, a);
        r = seqMax(r, b);
      }
    }
    if (!placed) next.push([l, r]);
    // Bound the scoreboard: a hostile guest could otherwise fragment it endlessly.
    this.sacked = next.length > 64 ? next.slice(next.length - 64) : next;
  }

  private pruneSacked(): void {
    while (this.sacked.length > 0 && seqLe(this.sacked[0][1], this.sndUna)) this.sacked.shift();
    if (this.sacked.length > 0 && seqLt(this.sacked[0][0], this.sndUna)) this.sacked[0][0] = this.sndUna;
  }

  private sackedBytes(): number {
    let n = 0;
    for (const [a, b] of this.sacked) n += seqDiff(b, a);
    return n;
  }

  private highestSacked(): number {
    return this.sacked.length > 0 ? this.sacked[this.sacked.length - 1][1] : this.sndUna;
  }

  /** Bytes believed to be in the network (RFC 6675 "pipe"), or the plain flight size without SACK. */
  private pipe(): number {
    const flight = seqDiff(this.sndNxt, this.sndUna);
    if (!this.cfg.sackPermitted || this.sacked.length === 0) return flight;
    if (!this.inRecovery) return flight - this.sackedBytes();
    // In recovery, unSACKed bytes below the highest SACK are lost, unless already retransmitted.
    const hs = this.highestSacked();
    let pipe = Math.max(0, seqDiff(this.sndNxt, hs));
    const rxtEnd = seqMin(this.highRxt, hs);
    let cursor = this.sndUna;
    for (const [a, b] of this.sacked) {
      if (!seqLt(cursor, rxtEnd)) break;
      pipe += Math.max(0, seqDiff(seqMin(a, rxtEnd), cursor));
      cursor = seqMax(cursor, b);
    }
    return pipe;
  }

  /** The next lost range to retransmit in SACK recovery: unSACKed, below the highest SACK, above HighRxt. */
  private nextHole(): [number, number] | undefined {
    let cursor = seqMax(this.highRxt, this.sndUna);
    for (const [a, b] of this.sacked) {
      if (seqLt(cursor, a)) {
        const len = Math.min(this.cfg.mss, seqDiff(a, cursor), this.buffer.length - seqDiff(cursor, this.sndUna));
        return len > 0 ? [cursor, len] : undefined;
      }
      cursor = seqMax(cursor, b);
    }
    return undefined;
  }

  private skipSacked(): void {
    for (const [a, b] of this.sacked) {
      if (seqLe(a, this.sndNxt) && seqLt(this.sndNxt, b)) this.sndNxt = b;
    }
  }

  private nextSackedStart(seq: number): number | undefined {
    for (const [a] of this.sacked) if (seqGt(a, seq)) return a;
    return undefined;
  }
}
