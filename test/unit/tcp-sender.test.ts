// TcpSender on its own: ACKs in, segments out, time passed in. The segment limit for links with
// segmentation offload, and the undo of reductions that DSACKs or timestamps prove needless.
import { describe, expect, it } from 'vitest';
import { toSeq, type SeqNum } from '../../core/tcp/seq';
import { TcpSender, type SenderConfig } from '../../core/tcp/tcp-sender';
import { TcpTimers } from '../../core/tcp/tcp-timers';
import { after, instant } from '../../core/clock';

const ISS = 1_000_000;
const UNA = ISS + 1;

interface Sent {
  seq: number;
  len: number;
  fin: boolean;
  at: number;
}

function sender(cfg: Partial<SenderConfig> = {}) {
  let now = instant(1000);
  const sent: Sent[] = [];
  const s = new TcpSender(
    toSeq(ISS),
    { mss: 1000, initialRtoMs: 1000, minRtoMs: 200, maxRtoMs: 60_000, sendBufferBytes: 1 << 20, maxRetransmits: 12, sackPermitted: true, ...cfg },
    { sendSegment: (seq, len, fin) => sent.push({ seq, len, fin, at: now }), sendProbe: () => {} },
    new TcpTimers(),
  );
  s.initWindow(1 << 20, toSeq(0), toSeq(UNA));
  return {
    s,
    sent,
    get now() {
      return now;
    },
    /** Moves time on and fires the sender's timers. */
    advance(ms: number) {
      now = after(now, ms);
      s.onTimer(now);
    },
    /** An ACK from the guest; `tsEcr` is the echoed send time (ms), if timestamps are on. */
    ack(ack: number, sack?: Array<[number, number]>, tsEcr?: number) {
      const blocks = sack?.map(([l, r]): [SeqNum, SeqNum] => [toSeq(l), toSeq(r)]);
      s.onAck({ seq: toSeq(0), ack: toSeq(ack), window: 1 << 20, sack: blocks, dupCandidate: true }, now, tsEcr);
    },
  };
}

describe('segment limit (TCP segmentation offload)', () => {
  it('defaults to one MSS per segment', () => {
    const t = sender();
    t.s.write(new Uint8Array(50_000));
    t.s.output(t.now);
    expect(t.s.segmentLimit).toBe(1000);
    expect(t.sent.map((e) => e.len)).toEqual(Array(10).fill(1000)); // the initial window, 10 MSS
  });

  it('sends whole multiples of the MSS up to the limit; the window still counts bytes', () => {
    const t = sender({ maxSegment: 4000 });
    t.s.write(new Uint8Array(50_000));
    t.s.output(t.now);
    expect(t.sent.map((e) => e.len)).toEqual([4000, 4000, 2000]); // 10 000 bytes of initial window
    t.ack(UNA + 10_000, undefined, 1000);
    // Slow start counts the bytes acknowledged: cwnd doubles to 20 000.
    expect(t.s.cwnd).toBe(20_000);
    expect(t.sent.slice(3).map((e) => e.len)).toEqual([4000, 4000, 4000, 4000, 4000]);
  });

  it('ends the queued data with a shorter segment, FIN on it', () => {
    const t = sender({ maxSegment: 64 * 1024 });
    t.s.write(new Uint8Array(5500));
    t.s.finish();
    t.s.output(t.now);
    expect(t.sent).toEqual([{ seq: UNA, len: 5500, fin: true, at: t.now }]);
  });

  it('can be changed on a running connection, and never below one MSS', () => {
    const t = sender();
    t.s.setSegmentLimit(3000);
    expect(t.s.segmentLimit).toBe(3000);
    t.s.write(new Uint8Array(6000));
    t.s.output(t.now);
    expect(t.sent.map((e) => e.len)).toEqual([3000, 3000]);
    t.s.setSegmentLimit(10);
    expect(t.s.segmentLimit).toBe(1000);
  });

  it('holds a short piece while the receive window limits it and an ACK is due; sends it once all is acknowledged', () => {
    const t = sender({ maxSegment: 64_000 });
    t.s.cwnd = 1 << 20; // past slow start: only the guest's window limits
    t.s.initWindow(180_000, toSeq(0), toSeq(UNA));
    t.s.write(new Uint8Array(1_000_000));
    t.s.output(t.now);
    // Two full segments; the 52 000 the window still allows wait (less than a third of it).
    expect(t.sent.map((e) => e.len)).toEqual([64_000, 64_000]);
    // The guest read some and opened the window by 64 000: a full segment goes, the rest waits again.
    t.s.onAck({ seq: toSeq(0), ack: toSeq(UNA + 64_000), window: 180_000, dupCandidate: false }, t.now);
    expect(t.sent.slice(2).map((e) => e.len)).toEqual([64_000]);
    // Everything acknowledged: nothing is in flight to bring another ACK, so what fits goes now.
    t.s.onAck({ seq: toSeq(0), ack: toSeq(UNA + 192_000), window: 40_000, dupCandidate: false }, t.now);
    expect(t.sent.slice(3).map((e) => e.len)).toEqual([40_000]);
  });

  it('resends a lost part of a large segment one MSS at a time', () => {
    const t = sender({ maxSegment: 4000 });
    t.s.write(new Uint8Array(12_000));
    t.s.output(t.now);
    expect(t.sent.map((e) => e.len)).toEqual([4000, 4000, 2000]);
    // The guest got everything but the second MSS of the first segment.
    t.advance(10);
    t.ack(UNA + 1000, [[UNA + 2000, UNA + 10_000]], 1000);
    const rtx = t.sent.slice(3);
    expect(rtx[0]).toMatchObject({ seq: UNA + 1000, len: 1000 });
    expect(t.s.segmentsRetransmitted).toBe(1);
  });
});

describe('window growth', () => {
  it('slow start grows cwnd by the bytes a stretch ACK covers, up to ssthresh; then one MSS per window acknowledged', () => {
    const t = sender({ maxSegment: 64_000 });
    t.s.write(new Uint8Array(1_000_000));
    t.s.output(t.now);
    expect(t.s.cwnd).toBe(10_000);
    t.ack(UNA + 10_000); // one ACK for ten segments' worth
    expect(t.s.cwnd).toBe(20_000);
    t.s.ssthresh = 30_000;
    t.ack(UNA + 30_000); // 20 000 more: 10 000 to reach ssthresh, 10 000 counted towards avoidance
    expect(t.s.cwnd).toBe(30_000);
    t.ack(UNA + 50_000); // 30 000 counted in all: one window's worth, one MSS more
    expect(t.s.cwnd).toBe(31_000);
  });
});

describe('the reduction on a loss', () => {
  /** cwnd bytes in flight; the first segment is lost, the next three SACKed. */
  function lossAt(t: ReturnType<typeof sender>, cwnd: number) {
    t.s.cwnd = cwnd;
    const from = t.s.sndNxt;
    t.s.write(new Uint8Array(cwnd));
    t.s.output(t.now);
    t.advance(10);
    t.ack(from, [[from + 1000, from + 4000]], t.now - 10);
    expect(t.s.recoveryState).toBe('recovery');
    return t;
  }

  it('halves ssthresh at first (no loss history: RFC 5681)', () => {
    expect(lossAt(sender(), 100_000).s.ssthresh).toBe(50_000);
  });

  it('never below the initial window (10 segments), however small the flight', () => {
    expect(lossAt(sender(), 12_000).s.ssthresh).toBe(10_000);
    expect(lossAt(sender(), 4000).s.ssthresh).toBe(10_000);
  });

  it('cuts by half the share of bytes lost in recent rounds: thin random loss costs little', () => {
    const t = sender();
    // 200 rounds of 50 segments, each losing one segment (2%), each repaired.
    let una = UNA;
    for (let round = 0; round < 200; round++) {
      t.s.cwnd = 50_000;
      t.s.write(new Uint8Array(50_000));
      t.s.output(t.now);
      t.advance(1);
      t.ack(una, [[una + 1000, una + 50_000]], t.now - 1);
      t.advance(1);
      una += 50_000;
      t.ack(una, undefined, t.now - 1);
    }
    const cwnd = t.s.cwnd;
    lossAt(t, 100_000);
    // The average is near 2%: the cut near 1%, not Reno's 50% or CUBIC's 30%.
    expect(t.s.ssthresh).toBeGreaterThan(95_000);
    expect(t.s.ssthresh).toBeLessThan(100_000);
    expect(cwnd).toBeGreaterThan(0);
  });

  it('keeps growing the window through the recovery (the cut was taken once)', () => {
    const t = lossAt(sender(), 40_000);
    const cwnd = t.s.cwnd;
    t.advance(1);
    t.ack(UNA + 1000, [[UNA + 1000, UNA + 4000]], t.now - 1); // a partial ACK: the hole repaired, still in recovery
    t.ack(UNA + 39_000, undefined, t.now - 1); // more than a window's worth, short of the recovery point
    expect(t.s.recoveryState).toBe('recovery');
    expect(t.s.cwnd).toBe(cwnd + 1000); // congestion avoidance: one segment per window acknowledged
  });

  it('a timeout still restarts from one segment', () => {
    const t = sender();
    t.s.write(new Uint8Array(5000));
    t.s.output(t.now);
    t.advance(1000); // the initial RTO
    expect(t.s.timeouts).toBe(1);
    expect(t.s.cwnd).toBe(1000);
    expect(t.s.ssthresh).toBe(10_000);
  });
});

describe('undo of a needless reduction', () => {
  /**
   * Twenty segments out (cwnd above the initial window, which a loss never goes below); the guest
   * SACKs 3–10, so 1 and 2 are lost (three or more SACKed: no reordering window).
   */
  function lossEpisode() {
    const t = sender();
    t.s.cwnd = 20_000;
    t.s.write(new Uint8Array(20_000));
    t.s.output(t.now);
    const before = t.s.cwnd;
    t.advance(10);
    t.ack(UNA, [[UNA + 2000, UNA + 10_000]], 1000);
    // The window drops to ssthresh (half the flight: no loss history yet), the pieces SACKed and
    // lost leave the network, and the first lost piece goes at once (RFC 6675 §5 (4.3)).
    const rtx = t.sent.filter((e) => e.at === t.now && e.seq < UNA + 2000);
    expect(rtx.map((e) => e.seq)).toEqual([UNA]);
    expect(t.s.ssthresh).toBe(10_000);
    expect(t.s.recoveryState).toBe('recovery');
    expect(t.s.cwnd).toBeLessThan(before);
    return { t, before, rtxAt: t.now };
  }

  it('DSACKs for the retransmissions restore cwnd and ssthresh', () => {
    const { t, before } = lossEpisode();
    t.advance(1);
    // The originals arrive late after all: the guest reports the copies as duplicates.
    t.ack(UNA + 10_000, [[UNA, UNA + 1000]]);
    t.ack(UNA + 10_000, [[UNA + 1000, UNA + 2000]]);
    expect(t.s.spuriousUndone).toBe(1);
    expect(t.s.recoveryState).not.toBe('recovery');
    expect(t.s.cwnd).toBeGreaterThanOrEqual(before);
  });

  it('an ACK echoing a timestamp older than the first retransmission restores them at once (Eifel)', () => {
    const { t, before, rtxAt } = lossEpisode();
    t.advance(1);
    t.ack(UNA + 10_000, undefined, rtxAt - 10); // sent for the original copy
    expect(t.s.spuriousUndone).toBe(1);
    expect(t.s.cwnd).toBeGreaterThanOrEqual(before);
  });

  it('keeps the reduction when the retransmissions were needed', () => {
    const { t, before, rtxAt } = lossEpisode();
    t.advance(10);
    t.ack(UNA + 20_000, undefined, rtxAt); // sent for the retransmitted copy
    expect(t.s.spuriousUndone).toBe(0);
    expect(t.s.recoveryState).not.toBe('recovery');
    expect(t.s.cwnd).toBeLessThan(before);
  });

  it('a DSACK for a loss probe is expected and changes nothing', () => {
    const t = sender();
    t.s.write(new Uint8Array(3000));
    t.s.output(t.now);
    t.advance(10);
    t.ack(UNA + 1000, undefined, 1000); // an RTT sample (10 ms) arms the probe
    t.advance(60); // 2·SRTT + 2 ms passed: the last segment is probed
    expect(t.s.lossProbes).toBe(1);
    expect(t.sent[t.sent.length - 1]).toMatchObject({ seq: UNA + 2000, len: 1000 });
    const cwnd = t.s.cwnd;
    t.ack(UNA + 3000, [[UNA + 2000, UNA + 3000]], 1010);
    expect(t.s.cwnd).toBeGreaterThanOrEqual(cwnd);
    expect(t.s.spuriousUndone).toBe(0);
  });
});

describe('the send buffer limit (when the upstream is paused)', () => {
  /** A sender whose guest has offered a window of `window` bytes. */
  function offered(window: number, cfg: Partial<SenderConfig>) {
    const t = sender(cfg);
    t.s.initWindow(window, toSeq(0), toSeq(UNA));
    return t;
  }

  it('is sendBufferBytes without sendBufferMaxBytes, whatever the window', () => {
    const t = offered(2_000_000, { sendBufferBytes: 100_000 });
    expect(t.s.limit).toBe(100_000);
    t.s.write(new Uint8Array(99_999));
    expect(t.s.full).toBe(false);
    t.s.write(new Uint8Array(1));
    expect(t.s.full).toBe(true);
  });

  it('grows to sendBufferBytes beyond the largest window offered, up to sendBufferMaxBytes', () => {
    const small = offered(50_000, { sendBufferBytes: 100_000, sendBufferMaxBytes: 400_000 });
    expect(small.s.limit).toBe(150_000);
    const large = offered(2_000_000, { sendBufferBytes: 100_000, sendBufferMaxBytes: 400_000 });
    expect(large.s.limit).toBe(400_000);
    // A window that shrinks again leaves it where the largest one put it.
    const t = offered(200_000, { sendBufferBytes: 100_000, sendBufferMaxBytes: 400_000 });
    t.s.onAck({ seq: toSeq(0), ack: toSeq(UNA), window: 10_000, dupCandidate: false }, t.now);
    expect(t.s.limit).toBe(300_000);
  });

  it('lets the upstream go on once half of sendBufferBytes is free below the limit', () => {
    const t = offered(20_000, { sendBufferBytes: 10_000, sendBufferMaxBytes: 40_000 });
    const ack = (n: number) => t.s.onAck({ seq: toSeq(0), ack: toSeq(UNA + n), window: 20_000, dupCandidate: false }, t.now);
    t.s.write(new Uint8Array(30_000));
    t.s.output(t.now);
    expect(t.s.full).toBe(true);
    ack(4_000);
    expect(t.s.roomToResume).toBe(false); // 26 000 held, the limit 30 000
    ack(6_000);
    expect(t.s.roomToResume).toBe(true);
  });
});
