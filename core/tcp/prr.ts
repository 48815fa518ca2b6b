// Proportional rate reduction (RFC 6937): how much the sender may send on each ACK during fast
// recovery, so the window comes down to ssthresh smoothly — in proportion to what the guest
// reports delivered while the flight is above ssthresh, and in slow start back up to it when
// losses took the flight below (PRR-SSRB). Counts bytes.

export class ProportionalRateReduction {
  /** Bytes the guest reported delivered (cumulatively or by SACK) since recovery began. */
  private delivered = 0;
  /** Bytes sent (new or again) since recovery began. */
  private out = 0;
  /** The flight when recovery began. */
  private recoverFs = 1;

  start(flight: number): void {
    this.delivered = 0;
    this.out = 0;
    this.recoverFs = Math.max(1, flight);
  }

  onSent(bytes: number): void {
    this.out += bytes;
  }

  /** The congestion window after an ACK that reported `deliveredNow` bytes delivered: pipe + sndcnt. */
  cwnd(pipe: number, ssthresh: number, deliveredNow: number, mss: number): number {
    this.delivered += Math.max(0, deliveredNow);
    let sndcnt: number;
    if (pipe > ssthresh) sndcnt = Math.ceil((this.delivered * ssthresh) / this.recoverFs) - this.out;
    else sndcnt = Math.min(ssthresh - pipe, Math.max(this.delivered - this.out, deliveredNow) + mss);
    if (this.out === 0) sndcnt = Math.max(sndcnt, mss); // the fast retransmit goes at once
    return pipe + Math.max(0, sndcnt);
  }
}
