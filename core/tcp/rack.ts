// RACK (RFC 8985): time-based loss detection for the sender. A piece is lost when a piece sent
// after it has been delivered and more than RACK.rtt + a reordering window has passed since it was
// sent — so reordering shorter than the window is not taken for loss, and a lost retransmission is
// found like any other loss. (The tail loss probe, TLP, is in ./loss-probe.ts.)
//
// The reordering window (RFC 8985 §6.2 step 4): 0 while no reordering has been seen and enough is
// SACKed (the classic three-duplicate rule); otherwise min_RTT/4 times a multiplier that DSACKs and
// undone recoveries raise. weft's clock ticks in milliseconds and local round trips are shorter than
// that, so min_RTT/4 is often 0: the window also follows the reordering actually measured — how
// much later than the fastest round trip the ACK of a piece that arrived out of order came.

import type { SackScoreboard, SentPiece } from './sack-scoreboard';
import { seqGe, seqGt, seqLt, stampLt, type SeqNum } from './seq';
import type { Instant } from '../clock';

/** Recoveries without new reordering evidence before the window shrinks back (RFC 8985 §6.2). */
const REO_WND_PERSIST = 16;
/** The most the window multiplier grows (Linux uses 255 steps of min_RTT/4). */
const MAX_REO_MULT = 255;
/** A minimum-RTT sample older than this is replaced by the next one (a path that changed). */
const MIN_RTT_WINDOW_MS = 10_000;
/** Delivered retransmitted pieces remembered, so a DSACK can tell how late the original was. */
const RECENT_RETRANSMITTED = 64;

export class Rack {
  /** RTT of the most recently sent piece that was delivered. */
  rtt = 0;
  /** Send order of that piece (−1: none yet). */
  private xmitOrder = -1;
  /** Highest end sequence delivered (RACK.fack). */
  private fack: SeqNum;
  minRtt = Infinity;
  private minRttAt = 0;
  reorderingSeen = false;
  private reoMult = 1;
  private reoPersist = 0;
  /** Reordering measured in time (ms), see the header comment. */
  private reoExtent = 0;
  private dsackRound: SeqNum | undefined;
  private readonly recentRetransmitted: Array<{ start: SeqNum; end: SeqNum; firstXmitTime: number }> = [];

  constructor(sndUna: SeqNum) {
    this.fack = sndUna;
  }

  /**
   * RACK_update for the pieces one ACK delivered (cumulatively or by SACK), then
   * RACK_detect_reordering for those of them that the ACK proves arrived just now: `arrived` (the
   * pieces of the first SACK block, and the piece that filled the hole at SND.UNA). Other pieces an
   * ACK covers may have arrived long ago, unreported when there were more holes than SACK blocks.
   * delivered[0, sacked) were SACKed, the rest acknowledged cumulatively. `tsEcr` is the ACK's
   * echoed timestamp in the clock's milliseconds (undefined without timestamps).
   */
  onDelivered(delivered: readonly SentPiece[], sacked: number, arrived: readonly SentPiece[], now: Instant, tsEcr: number | undefined): void {
    const fackBefore = this.fack;
    let latest: SentPiece | undefined;
    for (let i = 0; i < delivered.length; i++) {
      const p = delivered[i];
      if (seqGt(p.end, this.fack)) this.fack = p.end;
      // A DSACK for a piece a timeout resent tells of a spurious timeout (lost ACKs, SACK blocks
      // that ran out), not of how late the original came: it is not reordering evidence.
      if (p.everRetransmitted && !p.timedOut) {
        if (this.recentRetransmitted.length >= RECENT_RETRANSMITTED) this.recentRetransmitted.shift();
        this.recentRetransmitted.push({ start: p.start, end: p.end, firstXmitTime: p.firstXmitTime });
      }
      const rtt = now - p.xmitTime;
      if (p.everRetransmitted) {
        // Ambiguous: the ACK may be for an earlier copy. Use it only if it cannot be. The echoed
        // timestamp tells only for data that advanced the cumulative ACK: a receiver echoes the
        // last in-order segment's timestamp (RFC 7323 §4.3), so the SACK of a retransmission
        // above a hole — a loss probe's — always echoes an older time than the copy it reports.
        if (i >= sacked && tsEcr !== undefined && stampLt(tsEcr, p.xmitTime >>> 0)) continue;
        // An answer quicker than the fastest round trip was for an earlier copy that came late —
        // which only reordering makes possible. Without it, such an answer is the clock's jitter
        // (round trips of a few hundred microseconds vary by half), and a loss probe's SACK
        // ignored for it left a lost tail to be probed one segment at a time.
        if (this.reorderingSeen && rtt < this.minRtt) continue;
      }
      if (!latest || p.xmitOrder > latest.xmitOrder) latest = p;
    }
    if (latest) {
      this.rtt = now - latest.xmitTime;
      if (latest.xmitOrder > this.xmitOrder) {
        this.xmitOrder = latest.xmitOrder;
      }
      if (this.rtt <= this.minRtt || now - this.minRttAt > MIN_RTT_WINDOW_MS) {
        this.minRtt = this.rtt;
        this.minRttAt = now;
      }
    }
    for (const p of arrived) {
      if (p.everRetransmitted || !seqLt(p.end, fackBefore)) continue;
      // It arrived after a piece sent later than it: reordering.
      this.reordered(now - p.xmitTime);
    }
  }

  /** Reordering seen: remember how much later than the fastest round trip an ACK came. */
  private reordered(roundTrip: number): void {
    this.reorderingSeen = true;
    this.reoPersist = REO_WND_PERSIST;
    const late = roundTrip - (Number.isFinite(this.minRtt) ? this.minRtt : 0);
    if (late > this.reoExtent) this.reoExtent = late;
  }

  /**
   * A DSACK for [l, r) arrived: something was sent twice needlessly. It is reordering evidence: the
   * original of a retransmitted piece arrived after all, and the DSACK's time tells how late (at
   * most: the copy that came second may be the retransmission — the sender's cap keeps that from
   * growing the window past what RACK can still use). The multiplier grows once per round trip.
   */
  onDsack(l: SeqNum, r: SeqNum, now: Instant, sndUna: SeqNum, sndMax: SeqNum): void {
    for (const e of this.recentRetransmitted) {
      if (seqLt(e.start, r) && seqLt(l, e.end)) this.reordered(now - e.firstXmitTime);
    }
    if (this.dsackRound !== undefined && seqGe(sndUna, this.dsackRound)) this.dsackRound = undefined;
    if (this.dsackRound !== undefined) return;
    this.dsackRound = sndMax;
    this.reorderingSeen = true;
    this.widen();
  }

  /** A recovery turned out spurious (undone by timestamps or DSACKs). */
  onSpurious(): void {
    this.reorderingSeen = true;
    this.widen();
  }

  private widen(): void {
    if (this.reoMult < MAX_REO_MULT) this.reoMult++;
    this.reoPersist = REO_WND_PERSIST;
  }

  /** A recovery ended: after REO_WND_PERSIST of them without new evidence, the window resets. */
  onRecoveryEnd(): void {
    if (this.reoPersist > 0 && --this.reoPersist === 0) {
      this.reoMult = 1;
      this.reoExtent = 0;
    }
  }

  /**
   * The reordering window (ms). `srtt` caps the multiplier's part, as in the RFC; the measured
   * reordering is capped by `cap` (the sender passes what lets RACK still act before the RTO), not by
   * SRTT, since a link that delays a quarter of its frames by 10 ms keeps SRTT below the reordering it
   * causes.
   */
  reoWnd(inRecovery: boolean, sackedPieces: number, srtt: number | undefined, cap: number): number {
    const quarter = Number.isFinite(this.minRtt) ? this.minRtt / 4 : 0;
    if (!this.reorderingSeen) {
      if (inRecovery || sackedPieces >= 3) return 0;
      return Math.max(1, quarter);
    }
    const scaled = this.reoMult * quarter;
    return Math.max(srtt === undefined ? scaled : Math.min(scaled, srtt), Math.min(this.reoExtent + 1, cap));
  }

  /**
   * RACK_detect_loss: marks lost every outstanding piece sent before the most recently delivered
   * one whose time is up. Returns how long until the next one's time is up (0: none waiting).
   */
  detectLoss(board: SackScoreboard, now: Instant, reoWnd: number): number {
    if (this.xmitOrder < 0) return 0;
    let wait = 0;
    for (let i = 0; i < board.length; i++) {
      const p = board.at(i);
      if (p.sacked || (p.lost && !p.retrans) || p.xmitOrder >= this.xmitOrder) continue;
      const remaining = p.xmitTime + this.rtt + reoWnd - now;
      if (remaining <= 0) board.markLost(p);
      else if (wait === 0 || remaining < wait) wait = remaining;
    }
    return wait;
  }
}
