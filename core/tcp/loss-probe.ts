// The tail loss probe (TLP, RFC 8985 §7): when the ACKs stop for about two round trips with data
// in flight, the sender sends one segment again, so the guest's answer (its SACK blocks, or a
// DSACK) tells RACK what was lost without waiting for the retransmission timeout. This holds the
// probe's timer (the connection's 'loss-probe' slot) and what the ACKs say about it; the sender
// picks and sends the segment.

import { seqGe, seqGt, seqLt, type SeqNum } from './seq';
import type { TcpTimers } from './tcp-timers';
import { after, type Instant } from '../clock';

/** Worst-case delayed ACK of the guest when only one segment is in flight (Linux: 40 ms). */
const WC_DEL_ACK_MS = 40;
/** Added to the probe timeout for the clock's and the timers' millisecond resolution (Linux: 2 jiffies). */
const PTO_SLACK_MS = 2;
/**
 * Probes in a row without an answer before only the RTO is left. RFC 8985 sends one; on a link
 * whose round trip is a thousandth of the RTO, a lost probe (or its lost ACK) is worth another try
 * or two before waiting 200 ms. Each waits twice as long as the one before.
 */
const MAX_PROBES = 3;

/** The probe timeout (RFC 8985 §7.2): two round trips, plus a delayed ACK for a lone segment. */
export function probeTimeout(srtt: number, singleSegment: boolean): number {
  return 2 * srtt + PTO_SLACK_MS + (singleSegment ? WC_DEL_ACK_MS : 0);
}

export class LossProbe {
  /** Probes sent, ever. */
  sent = 0;
  /** SND.MAX after the last probe, until an ACK settles what it found (TLP.end_seq). */
  private end: SeqNum | undefined;
  private unanswered = 0;
  /** The range the last probe sent again: a DSACK for it is expected, not a sign of reordering. */
  private copy: [SeqNum, SeqNum] = [0 as SeqNum, 0 as SeqNum];

  constructor(private readonly timers: TcpTimers) {}

  /** (Re)arms the timer, unless it would not fire before the RTO or enough probes went unanswered. */
  arm(now: Instant, srtt: number, singleSegment: boolean): void {
    this.timers.clear('loss-probe');
    if (this.unanswered >= MAX_PROBES) return;
    const at = after(now, probeTimeout(srtt, singleSegment) * 2 ** this.unanswered);
    const rto = this.timers.get('retransmit');
    if (rto === undefined || at < rto) this.timers.set('loss-probe', at);
  }

  disarm(): void {
    this.timers.clear('loss-probe');
  }

  /** A retransmission timeout: probing starts over once ACKs come back. */
  reset(): void {
    this.timers.clear('loss-probe');
    this.end = undefined;
  }

  /** The probe went out: a copy of [start, end); `sndMax` is SND.MAX after it. */
  onSent(start: SeqNum, end: SeqNum, sndMax: SeqNum): void {
    this.copy = [start, end];
    this.sent++;
    this.unanswered++;
    this.end = sndMax;
    this.timers.clear('loss-probe');
  }

  /** Whether a DSACK for [l, r) reports the probe's own copy. */
  isProbeCopy(l: SeqNum, r: SeqNum): boolean {
    return seqLt(l, this.copy[1]) && seqLt(this.copy[0], r);
  }

  /**
   * RFC 8985 §7.4: what an ACK says about the probe. `news`: it acknowledged or SACKed something
   * new. A DSACK alone does not count as progress: a probe whose copy keeps arriving twice while
   * the hole below stays (its FIN not SACKed, say) must run out of tries and leave the rest to the
   * RTO, which every probe pushes back. Returns true when only the probe got through, so
   * it repaired a loss and the sender must reduce its window as for any loss.
   */
  onAck(ack: SeqNum, dsack: [SeqNum, SeqNum] | undefined, news: boolean, dupAck: boolean): boolean {
    if (news) this.unanswered = 0;
    const end = this.end;
    if (end === undefined || seqLt(ack, end)) return false;
    if (dsack && seqGe(dsack[1], end))
      this.end = undefined; // both copies arrived: no loss
    else if (seqGt(ack, end)) {
      this.end = undefined;
      return true;
    } else if (dupAck) this.end = undefined; // a plain duplicate ACK: both copies arrived
    return false;
  }
}
