// How much of what the sender sends gets lost, as DCTCP (RFC 8257 §3.3) measures its marks: the
// fraction of each round trip's bytes that was deemed lost, folded into a moving average. The
// sender cuts its window on a loss in proportion to it (by half of it), not by a fixed factor.
//
// Why: weft's link is one point-to-point virtual link to one guest. What is lost on it is mostly
// damage — a test's fault wire, a frame an emulator dropped — spread thinly over the rounds, and a
// fixed cut per loss (Reno's half, CUBIC's 0.3) spends the whole transfer in recovery at a few
// percent of loss. An overflowing queue (a guest's ring, a socket buffer) instead loses much of a
// round at once, and the cut follows: the first rounds (the average starts at 1) and heavy losses
// still halve the window.

import { seqLt, type SeqNum } from './seq';

/** Weight of each round in the average (DCTCP's g). */
const GAIN = 1 / 16;

export class LossFraction {
  /** The moving average; 1 until rounds say otherwise (RFC 8257 §3.3's initial value). */
  private average = 1;
  /** The fraction of the last whole round: a burst of loss counts at once, not over 16 rounds. */
  private last = 0;
  /** SND.MAX when the current round began: it ends once SND.UNA passes it. */
  private roundEnd: SeqNum | undefined;
  private delivered = 0;
  private lost = 0;

  /** Bytes newly deemed lost (RACK, duplicate ACKs, a timeout). */
  onLost(bytes: number): void {
    this.lost += bytes;
  }

  /**
   * Bytes an ACK reported delivered. A round ends once SND.UNA has passed SND.MAX as it was when the
   * round began; with nothing in flight then, the next round begins at the next ACK.
   */
  onDelivered(bytes: number, sndUna: SeqNum, sndMax: SeqNum): void {
    this.delivered += bytes;
    if (this.roundEnd === undefined) {
      this.roundEnd = sndMax;
      return;
    }
    if (seqLt(sndUna, this.roundEnd)) return;
    const total = this.delivered + this.lost;
    if (total > 0) {
      this.last = this.lost / total;
      this.average += GAIN * (this.last - this.average);
    }
    this.roundEnd = sndMax === sndUna ? undefined : sndMax;
    this.delivered = this.lost = 0;
  }

  /**
   * The share of the window to cut on a loss now: half the average, or half the last round's share
   * if that was more. (Not the current round's so far: a loss found early in a round would look
   * like a large share of the little delivered yet.)
   */
  cut(): number {
    return Math.max(this.average, this.last) / 2;
  }
}
