// Undo of a congestion reduction that proves needless (the retransmissions behind it were
// spurious: the originals had only been delayed). Two kinds of evidence, as in Linux:
// - Eifel (RFC 3522 / RFC 4015): an ACK that advances SND.UNA while echoing a timestamp older
//   than the first retransmission was sent for an original copy, so nothing had been lost;
// - DSACKs (RFC 2883 §4.2): the guest reports each retransmitted byte as received twice.
// A reduction that begins before any reordering was seen is undone at its first DSACK: RACK's
// reordering window was zero then, so its losses were most likely the reordering that DSACK shows.
// And a reduction that begins within a round trip of the last one's end, while that one is still
// unproven, joins it: on a reordering link one spurious recovery often follows another, and only
// the first remembers the window from before them.

import { seqDiff, seqLt, stampLt, type SeqNum } from './seq';
import type { Instant } from '../clock';

interface Reduction {
  /** The window to go back to. */
  cwnd: number;
  ssthresh: number;
  /** SND.UNA when it began: DSACKs below are for older data. */
  marker: SeqNum;
  /** Timestamp (ms, mod 2^32) of its first retransmission. */
  retransStamp?: number;
  /** Bytes retransmitted and not yet reported duplicate. */
  retransBytes: number;
  /** Its recovery is over (late DSACKs may still prove it needless). */
  ended: boolean;
  /** SND.MAX when it ended: a reduction that begins before SND.UNA gets there joins it. */
  horizon: SeqNum;
  /** It began before any reordering was seen. */
  blind: boolean;
}

export class ReductionUndo {
  private r: Reduction | undefined;

  /** A reduction begins (fast recovery, or the first timeout of an episode). */
  begin(cwnd: number, ssthresh: number, sndUna: SeqNum, sndMax: SeqNum, blind: boolean): void {
    const r = this.r;
    if (r?.ended && r.retransBytes > 0 && seqLt(sndUna, r.horizon)) {
      r.ended = false;
      r.cwnd = Math.max(r.cwnd, cwnd);
      r.ssthresh = Math.max(r.ssthresh, ssthresh);
    } else if (!r || r.ended) {
      this.r = { cwnd, ssthresh, marker: sndUna, retransBytes: 0, ended: false, horizon: sndMax, blind };
    }
  }

  /** Its recovery ended at SND.MAX = `sndMax`. */
  end(sndMax: SeqNum): void {
    if (!this.r) return;
    this.r.ended = true;
    this.r.horizon = sndMax;
  }

  /** `bytes` were retransmitted at `now` (loss probes excluded: their DSACKs are expected). */
  onRetransmit(bytes: number, now: Instant): void {
    const r = this.r;
    if (!r) return;
    r.retransStamp ??= now >>> 0;
    r.retransBytes += bytes;
  }

  /** An ACK advanced SND.UNA echoing `tsEcr`: true if it proves the running reduction needless. */
  eifel(tsEcr: number | undefined): boolean {
    const r = this.r;
    return r !== undefined && !r.ended && r.retransStamp !== undefined && tsEcr !== undefined && stampLt(tsEcr, r.retransStamp);
  }

  /** A DSACK for [l, r) below `recoveryPoint`: true if the reduction is now proven needless. */
  dsack(l: SeqNum, right: SeqNum, recoveryPoint: SeqNum): boolean {
    const r = this.r;
    if (!r || r.retransStamp === undefined || seqLt(l, r.marker) || !seqLt(l, recoveryPoint)) return false;
    r.retransBytes -= seqDiff(right, l);
    return r.retransBytes <= 0 || r.blind;
  }

  /** The window to go back to; the reduction is forgotten. */
  take(): { cwnd: number; ssthresh: number } | undefined {
    const r = this.r;
    this.r = undefined;
    return r;
  }
}
