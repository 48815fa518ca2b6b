// The whole tail of weft's last window lost, on a simulated clock with a guest that echoes
// timestamps as Linux does (RFC 7323 §4.3: the echo is that of the last in-order segment, so the
// SACK of a loss probe above a hole echoes an older time than the probe's). The probe's SACK must
// let RACK (RFC 8985 §6.3, §7) mark the whole hole lost at once and repair it lowest first, within
// about one round trip — with timestamps on and off.
import { describe, expect, it } from 'vitest';
import { FIN } from '../../core/wire/tcp';
import { seqDiff, toSeq } from '../../core/tcp/seq';
import { equalBytes, pattern, TcpSim } from '../support/tcp-sim';
import { TcpSender } from '../../core/tcp/tcp-sender';
import { TcpTimers } from '../../core/tcp/tcp-timers';
import { after, instant } from '../../core/clock';

const ISS = 1_000_000;
const UNA = ISS + 1;

/** Round trip of the simulated link: 5 ms each way. */
const RTT = 10;

function tailLoss(seed: number, holeSegments: number, timestamps: boolean) {
  const sim = new TcpSim({ seed, guest: { timestamps, receiveBuffer: 4 << 20, maxInFlight: 1 << 20 } });
  expect(sim.handshake()).toBe(true);
  // Warm up: a first response gives RTT samples and opens cwnd, as on a busy connection.
  const warm = pattern(300_000, seed);
  sim.stream.send(warm);
  expect(sim.run(() => sim.guest.receivedBytes === warm.length, 10_000)).toBe(true);
  // Segments are an MSS long: 1448 bytes with timestamps, 1460 without.
  const mss = Math.max(...sim.sent.map((e) => e.seg.payload.length));
  const bytes = 600 * mss;
  const base = seqDiff(toSeq(sim.sent.at(-1)!.seg.seq + sim.sent.at(-1)!.seg.payload.length), toSeq(0)) >>> 0;

  // The response whose last `holeSegments` segments and FIN are lost on their first transmission.
  const data = pattern(bytes, seed + 1);
  const holeStart = (base + bytes - holeSegments * mss) >>> 0;
  const holeEnd = (base + bytes + 1) >>> 0; // the FIN included
  const inHole = (seq: number) => seqDiff(toSeq(seq), toSeq(holeStart)) >= 0;
  const firstSeen = new Set<number>();
  let lostAt: number | undefined;
  let lowestLost: number | undefined;
  sim.dropFromStack = (seg) => {
    if (!(seg.payload.length > 0 || seg.flags & FIN) || !inHole(seg.seq) || firstSeen.has(seg.seq)) return false;
    firstSeen.add(seg.seq);
    lostAt ??= sim.now;
    lowestLost ??= seg.seq;
    return true;
  };
  const from = sim.sent.length;
  sim.feedFromUpstream(data);
  expect(sim.run(() => sim.guest.receivedBytes === warm.length + data.length && sim.guest.finReceived, 10_000)).toBe(true);
  expect(equalBytes(sim.guest.receivedData().subarray(warm.length), data)).toBe(true);

  // Everything weft sent into the hole after its first transmission, in order.
  const seen = new Set<number>();
  const again: Array<{ at: number; seq: number; end: number }> = [];
  for (const e of sim.sent.slice(from)) {
    const len = e.seg.payload.length + (e.seg.flags & FIN ? 1 : 0);
    if (len === 0 || !inHole(e.seg.seq)) continue;
    if (!seen.has(e.seg.seq) && firstSeen.has(e.seg.seq)) {
      seen.add(e.seg.seq); // the first (lost) transmission
      continue;
    }
    again.push({ at: e.at, seq: seqDiff(e.seg.seq, toSeq(holeStart)), end: seqDiff(toSeq(e.seg.seq + len), toSeq(holeStart)) });
  }
  return {
    lostAt: lostAt as number,
    lowestLost: seqDiff(toSeq(lowestLost as number), toSeq(holeStart)),
    holeBytes: seqDiff(toSeq(holeEnd), toSeq(holeStart)),
    again,
  };
}

describe('tail loss: the whole hole repaired in one round trip after the probe, lowest first', () => {
  for (const timestamps of [true, false]) {
    for (const hole of [3, 40, 134]) {
      it(`${hole}-segment hole, timestamps ${timestamps ? 'on' : 'off'}`, () => {
        const { lostAt, lowestLost, holeBytes, again } = tailLoss(40 + hole, hole, timestamps);
        // First the probe: the highest data with the FIN. Its SACK (one round trip later) shows
        // the hole; RACK marks all of it lost at once and the repair goes lowest first, as fast as
        // the ACKs of the repair come back (PRR's slow start up to ssthresh, as Linux).
        const [probe, ...repair] = again;
        expect(probe.end).toBe(holeBytes);
        expect(probe.at - lostAt).toBeLessThan(50); // the probe timeout: 2·SRTT + 2 ms after the last send
        const probeAck = probe.at + RTT;
        expect(repair[0]).toMatchObject({ seq: lowestLost, at: probeAck });
        const starts = repair.map((r) => r.seq);
        expect(starts).toEqual([...starts].sort((a, b) => a - b));
        // Each byte once: the repair and the probe together cover the hole exactly.
        const covered = repair.reduce((n, r) => n + r.end - r.seq, 0) + probe.end - probe.seq;
        expect(covered).toBe(holeBytes - lowestLost);
        const rounds = Math.ceil(Math.log2(hole + 1)) + 1;
        expect(repair.at(-1)!.at - probeAck).toBeLessThanOrEqual(rounds * RTT);
      });
    }
  }
});

describe('tail loss, segment by segment (sender alone)', () => {
  // 10 segments of 1000 bytes + FIN; 1–5 arrive, 6–10 and the FIN are lost. The guest's ACKs echo
  // the timestamp of the last in-order segment, as Linux does.
  function lostTail(timestamps: boolean, probeAnswerMs = 10) {
    let now = instant(1000);
    const sent: Array<{ seq: number; len: number; fin: boolean; at: number }> = [];
    const s = new TcpSender(
      toSeq(ISS),
      { mss: 1000, initialRtoMs: 1000, minRtoMs: 200, maxRtoMs: 60_000, sendBufferBytes: 1 << 20, maxRetransmits: 12, sackPermitted: true },
      { sendSegment: (seq, len, fin) => sent.push({ seq: seq - UNA, len, fin, at: now }), sendProbe: () => {} },
      new TcpTimers(),
    );
    s.initWindow(1 << 20, toSeq(0), toSeq(UNA));
    s.write(new Uint8Array(10_000));
    s.finish();
    s.output(now);
    expect(sent.map((e) => [e.seq, e.len, e.fin])).toEqual([...Array(10).keys()].map((i) => [i * 1000, 1000, i === 9]));
    now = after(now, 10);
    s.onAck({ seq: toSeq(0), ack: toSeq(UNA + 5000), window: 1 << 20, dupCandidate: false }, now, timestamps ? 1000 : undefined);
    // Nothing more comes back: the probe goes 2·SRTT + 2 ms later — the last segment with the FIN.
    for (let i = 0; i < 22; i++) s.onTimer((now = after(now, 1)));
    expect(sent.slice(10)).toEqual([{ seq: 9000, len: 1000, fin: true, at: 1032 }]);
    expect(s.lossProbes).toBe(1);
    // Its SACK, echoing the time of segment 5 (the last in order): the hole is lost, repaired lowest first.
    now = after(now, probeAnswerMs);
    s.onAck(
      { seq: toSeq(0), ack: toSeq(UNA + 5000), window: 1 << 20, sack: [[toSeq(UNA + 9000), toSeq(UNA + 10_001)]], dupCandidate: true },
      now,
      timestamps ? 1000 : undefined,
    );
    return { s, sent: sent.slice(11), now };
  }

  for (const [timestamps, answer] of [
    [true, 10],
    [false, 10],
    [true, 7.5],
    [false, 7.5],
  ] as const) {
    it(`the probe's SACK ${answer} ms later marks the whole hole lost at once (timestamps ${timestamps ? 'on' : 'off'})`, () => {
      // 7.5 ms is quicker than the one round trip measured (10 ms): jitter, with no reordering seen.
      const { s, sent, now } = lostTail(timestamps, answer);
      expect(s.recoveryState).toBe('recovery');
      expect(sent.length).toBeGreaterThan(0);
      expect(sent.every((e) => e.at === now && e.len === 1000 && !e.fin)).toBe(true);
      expect(sent.map((e) => e.seq)).toEqual([5000, 6000, 7000, 8000].slice(0, sent.length));
    });
  }
});
