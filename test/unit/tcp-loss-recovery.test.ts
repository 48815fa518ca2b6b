// weft's sending direction (upstream → guest) recovering from loss and reordering, on a simulated
// clock: SACK recovery driven by RACK, lost retransmissions, tail loss probes, reordering that must
// not be taken for loss, and the retransmission timer as the last resort (test/support/tcp-sim.ts).
import { describe, expect, it } from 'vitest';
import { ACK, PSH } from '../../core/wire/tcp';
import { equalBytes, pattern, tcpOf, TcpSim } from '../support/tcp-sim';

const MIB = 1024 * 1024;
/** weft's minimum RTO (core/config.ts): every repair below must come well before it. */
const MIN_RTO = 200;

/** A connection with data flowing upstream → guest; the link has 5 ms latency each way. */
function transfer(seed: number, bytes: number, opts: ConstructorParameters<typeof TcpSim>[0] = { seed }) {
  const sim = new TcpSim(opts);
  expect(sim.handshake()).toBe(true);
  const data = pattern(bytes, seed);
  return { sim, data };
}

/** Drops the data segments whose index (0-based, first transmissions and copies counted alike) `pick` says. */
function dropNth(sim: TcpSim, pick: (n: number, seq: number) => boolean): number[] {
  let n = 0;
  const dropped: number[] = [];
  sim.dropFromStack = (seg) => {
    if (seg.payload.length === 0) return false;
    if (!pick(n++, seg.seq)) return false;
    dropped.push(seg.seq);
    return true;
  };
  return dropped;
}

describe('SACK loss recovery (RACK)', () => {
  it('repairs a single loss with one retransmission, one round trip later', () => {
    const { sim, data } = transfer(21, MIB);
    const at: number[] = [];
    const lost = dropNth(sim, (n) => {
      if (n === 200) at.push(sim.now);
      return n === 200;
    });
    sim.feedFromUpstream(data);
    expect(sim.run(() => sim.guest.finReceived, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    const rtx = sim.retransmissions();
    expect(rtx.map((e) => e.seg.seq)).toEqual(lost);
    expect(rtx[0].at - at[0]).toBeLessThanOrEqual(15); // a SACK comes back 10 ms later
  });

  it('repairs a burst of 20 lost segments without a timeout, each sent again once', () => {
    const { sim, data } = transfer(22, MIB);
    let first = 0;
    const lost = dropNth(sim, (n) => {
      if (n === 300) first = sim.now;
      return n >= 300 && n < 320;
    });
    sim.feedFromUpstream(data);
    expect(sim.run(() => sim.guest.finReceived, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    const rtx = sim.retransmissions();
    expect(rtx.map((e) => e.seg.seq).sort()).toEqual([...lost].sort());
    expect(Math.max(...rtx.map((e) => e.at)) - first).toBeLessThan(MIN_RTO / 2);
  });

  it('finds a lost retransmission by time (RACK) and sends it a third time before the RTO', () => {
    const { sim, data } = transfer(23, MIB);
    let target: number | undefined;
    const copies: number[] = [];
    sim.dropFromStack = (seg) => {
      if (seg.payload.length === 0) return false;
      if (target === undefined && sim.dataSegments().length > 250) target = seg.seq;
      if (seg.seq !== target) return false;
      copies.push(sim.now);
      return copies.length <= 2; // the original and the first retransmission are lost
    };
    sim.feedFromUpstream(data);
    expect(sim.run(() => sim.guest.finReceived, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    expect(copies).toHaveLength(3);
    expect(copies[2] - copies[0]).toBeLessThan(MIN_RTO / 4);
    // Nothing else went twice: no timeout, no go-back-N.
    expect(sim.retransmissions().every((e) => e.seg.seq === target)).toBe(true);
  });

  it('probes a lost tail (TLP) instead of waiting for the RTO', () => {
    const { sim } = transfer(24, 0);
    // A 20-segment response whose last three segments are lost, ACKs arriving fine.
    const data = pattern(20 * 1448, 24);
    let sentAt = 0;
    dropNth(sim, (n) => {
      sentAt = sim.now;
      return n >= 17 && n < 20;
    });
    sim.stream.send(data);
    expect(sim.run(() => sim.guest.receivedBytes === data.length, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    // The probe resends the last segment; its SACK shows the other two missing, which RACK repairs.
    expect(sim.now - sentAt).toBeLessThan(MIN_RTO / 4);
    expect(sim.retransmissions()).toHaveLength(3);
  });

  it('probes again when the probe is lost too, before the RTO would fire', () => {
    const { sim } = transfer(25, 0);
    const data = pattern(20 * 1448, 25);
    // The last segment is lost, and so is the first probe (a copy of it).
    const tail: number[] = [];
    sim.dropFromStack = (seg) => {
      if (seg.payload.length === 0 || !(seg.flags & PSH)) return false;
      tail.push(sim.now);
      return tail.length <= 2;
    };
    sim.stream.send(data);
    expect(sim.run(() => sim.guest.receivedBytes === data.length, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    // A lone segment in flight: the probe waits 2·SRTT + 2 ms + 40 ms (the guest's delayed ACK),
    // the second twice that; each is well before the RTO that the one before it restarted.
    expect(tail).toHaveLength(3);
    const [, first, second] = tail.map((t) => t - tail[0]);
    expect(first).toBeLessThan(MIN_RTO / 2);
    expect(second - first).toBeLessThan(MIN_RTO);
    expect(sim.retransmissions()).toHaveLength(2);
  });
});

describe('reordering is not loss', () => {
  it('a link that delays a quarter of its frames by 10 ms costs few retransmissions and no timeouts', () => {
    const faults = { latencyMs: 1, delay: 0.25, delayMinMs: 10, delayMaxMs: 10 };
    const { sim, data } = transfer(26, 4 * MIB, { seed: 26, faults, guest: { receiveBuffer: MIB } });
    sim.feedFromUpstream(data);
    expect(sim.run(() => sim.guest.finReceived, 600_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    const segments = sim.dataSegments().length;
    const rtx = sim.retransmissions();
    // Hundreds of segments arrive out of order; once the reordering window has learnt the 10 ms,
    // almost none are sent twice (the first few, before any reordering was seen, may be).
    expect(sim.toGuest.counters().delayed).toBeGreaterThan(500);
    expect(rtx.length).toBeLessThan(segments / 100);
    const late = rtx.filter((e) => e.at > rtx[0].at + 1000);
    expect(late.length).toBeLessThanOrEqual(3);
    // No retransmission timeout: nothing waited for 200 ms.
    const gaps = sim
      .dataSegments()
      .slice(1)
      .map((e, i, a) => e.at - (i === 0 ? sim.dataSegments()[0].at : a[i - 1].at));
    expect(Math.max(...gaps)).toBeLessThan(MIN_RTO);
  });

  it('adjacent swaps (the fault injector reordering 25% of frames) do not trigger fast retransmits', () => {
    const { sim, data } = transfer(27, 2 * MIB, { seed: 27, faults: { reorder: 0.25, reorderHoldMs: 20 } });
    sim.feedFromUpstream(data);
    expect(sim.run(() => sim.guest.finReceived, 600_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    expect(sim.toGuest.counters().reordered).toBeGreaterThan(300);
    expect(sim.retransmissions().length).toBeLessThan(sim.dataSegments().length / 100);
  });
});

describe('retransmission timeout with SACK', () => {
  it('still backs off when everything is lost, and resumes once the link returns', () => {
    const { sim, data } = transfer(28, 256 * 1024);
    sim.feedFromUpstream(data);
    sim.run(() => sim.guest.receivedBytes > 64 * 1024, 10_000);
    sim.toGuest.configure({ drop: 1 });
    sim.toStack.configure({ drop: 1 });
    const from = sim.sent.length;
    sim.run(() => false, 3_500);
    sim.toGuest.configure({ drop: 0 });
    sim.toStack.configure({ drop: 0 });
    expect(sim.run(() => sim.guest.finReceived, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    // Copies of the lowest unacknowledged segment while the link was dark: timeouts, each twice
    // as long as the one before (the first one counts from the last loss probe).
    const una = sim.dataSegments(from)[0].seg.seq;
    const head = sim
      .dataSegments(from)
      .filter((e) => e.seg.seq === una)
      .map((e) => e.at);
    const gaps = head.slice(1).map((t, i) => t - head[i]);
    expect(gaps.length).toBeGreaterThanOrEqual(4);
    expect(gaps[0]).toBeGreaterThanOrEqual(MIN_RTO);
    for (let i = 2; i < gaps.length; i++) expect(gaps[i]).toBe(2 * gaps[i - 1]);
  });

  it('keeps the SACK scoreboard across a timeout: SACKed data is not sent again', () => {
    const { sim, data } = transfer(29, 512 * 1024);
    // One segment is lost, and so is every copy of it for a second: RACK and the probes cannot
    // repair it, the RTO fires (more than once).
    let target: number | undefined;
    let until = Infinity;
    sim.dropFromStack = (seg) => {
      if (seg.payload.length === 0) return false;
      if (target === undefined && sim.dataSegments().length > 100) {
        target = seg.seq;
        until = sim.now + 1000;
      }
      return seg.seq === target && sim.now < until;
    };
    // What the guest SACKed, as it says it.
    const sacked: Array<[number, number]> = [];
    sim.dropFromGuest = (frame) => {
      const seg = tcpOf(frame);
      if (seg && seg.flags & ACK) for (const b of seg.options.sack ?? []) sacked.push(b);
      return false;
    };
    sim.feedFromUpstream(data);
    expect(sim.run(() => sim.guest.finReceived, 60_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    const rtx = sim.retransmissions();
    const isSacked = (seq: number, end: number) => sacked.some(([l, r]) => ((seq - l) | 0) >= 0 && ((r - end) | 0) >= 0);
    const resentSacked = rtx.filter((e) => isSacked(e.seg.seq, (e.seg.seq + e.seg.payload.length) >>> 0));
    expect(rtx.filter((e) => e.seg.seq === target).length).toBeGreaterThanOrEqual(4);
    expect(resentSacked).toEqual([]);
  });
});
