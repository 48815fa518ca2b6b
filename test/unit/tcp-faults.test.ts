// weft's TCP through a faulty link, on a simulated clock: a SimGuestTcp plays the guest, a
// FakeUpstream plays the far end, and two seeded FaultInjectors (one per direction) carry the
// frames. Time only moves when the harness jumps it to the next deadline, so every run is exact
// and a two-minute backoff costs nothing.
import { describe, expect, it } from 'vitest';
import type { FaultConfig } from '../../core/link/fault-injector';
import { CHALLENGE_ACKS_PER_SECOND } from '../../core/tcp/tcp-connection';
import { ACK, RST, SYN, type TcpSegment } from '../../core/wire/tcp';
import type { FakeTcpStream } from '../support/fake-upstream';
import { seededRandom } from '../support/frames';
import { concat, equalBytes, pattern, REMOTE, TcpSim } from '../support/tcp-sim';

const FLOODED_PORT = 8080;
const MIB = 1024 * 1024;
const dataLength = (seg: TcpSegment) => seg.payload.length;

const LOSSY: Partial<FaultConfig> = { drop: 0.05, duplicate: 0.01, reorder: 0.25, corrupt: 0.001 };
const SEEDS = [1, 2, 3];

describe('TCP under a lossy, duplicating, reordering, corrupting link', () => {
  for (const seed of SEEDS) {
    it(`guest → upstream: 2 MiB arrive byte-identical (seed ${seed})`, () => {
      const sim = new TcpSim({ seed, faults: LOSSY });
      expect(sim.handshake(), 'handshake').toBe(true);
      const data = pattern(2 * MIB, seed);
      sim.guest.write(data);
      sim.guest.close();
      const ok = sim.run(() => sim.stream.ended && sim.guest.finAcked, 600_000);
      expect(ok).toBe(true);
      expect(equalBytes(concat(sim.stream.written), data)).toBe(true);
      const corrupted = sim.toGuest.counters().corrupted + sim.toStack.counters().corrupted;
      const rejected = sim.stackRejected() + sim.guest.counters.badIpv4 + sim.guest.counters.badTcpChecksum;
      expect(sim.toStack.counters().dropped).toBeGreaterThan(50);
      expect(sim.toStack.counters().reordered).toBeGreaterThan(200);
      // Every corrupted frame was refused by a checksum (a duplicated one may be refused twice).
      expect(rejected).toBeGreaterThanOrEqual(corrupted);
      expect(rejected).toBeLessThanOrEqual(corrupted + sim.toGuest.counters().duplicated + sim.toStack.counters().duplicated);
      expect(sim.stack.counters().drops['internal-error'] ?? 0).toBe(0);
    });

    it(`upstream → guest: 2 MiB arrive byte-identical, then both sides close (seed ${seed})`, () => {
      const sim = new TcpSim({ seed: seed + 100, faults: LOSSY });
      expect(sim.handshake(), 'handshake').toBe(true);
      const data = pattern(2 * MIB, seed + 100);
      sim.feedFromUpstream(data);
      const ok = sim.run(() => sim.guest.finReceived, 600_000);
      expect(ok).toBe(true);
      expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
      const corrupted = sim.toGuest.counters().corrupted + sim.toStack.counters().corrupted;
      const rejected = sim.stackRejected() + sim.guest.counters.badIpv4 + sim.guest.counters.badTcpChecksum;
      expect(rejected).toBeGreaterThanOrEqual(corrupted);
      expect(sim.guest.counters.duplicateData).toBeGreaterThan(0); // duplicates reached the guest and were discarded
      // The guest closes too. weft closed first, so it waits out TIME_WAIT; then the table is empty.
      sim.guest.close();
      expect(sim.run(() => sim.guest.finAcked && sim.stream.ended, 120_000)).toBe(true);
      expect(sim.run(() => Object.keys(sim.stack.counters().tcpConnections).length === 0, 120_000)).toBe(true);
    });
  }

  it('refuses every corrupted frame: with each frame corrupted, no byte reaches the upstream', () => {
    const sim = new TcpSim({ seed: 9 });
    expect(sim.handshake(), 'handshake').toBe(true);
    sim.toStack.configure({ corrupt: 1 });
    sim.guest.write(pattern(64 * 1024, 9));
    sim.run(() => false, 5_000);
    const corrupted = sim.toStack.counters().corrupted;
    expect(corrupted).toBeGreaterThan(40);
    expect(sim.stream.bytesWritten).toBe(0);
    expect(sim.stackRejected()).toBe(corrupted);
  });
});

describe('TCP retransmission timer', () => {
  it('doubles the RTO for each retransmission, then aborts with RST and destroys the upstream', () => {
    const sim = new TcpSim({ seed: 4, faults: { latencyMs: 5 }, tcp: { initialRtoMs: 1000, maxRtoMs: 60_000, maxRetransmits: 6 } });
    expect(sim.handshake(), 'handshake').toBe(true);
    sim.toGuest.configure({ drop: 1 });
    sim.toStack.configure({ drop: 1 });
    const from = sim.sent.length;
    sim.stream.send(new Uint8Array(100).fill(7));
    sim.run(() => sim.stream.destroyed, 600_000);
    const after = sim.sent.slice(from);
    const data = after.filter((e) => dataLength(e.seg) === 100);
    expect(data).toHaveLength(7); // the original and six retransmissions
    const gaps = data.slice(1).map((e, i) => e.at - data[i].at);
    expect(gaps).toEqual([1000, 2000, 4000, 8000, 16_000, 32_000]);
    const rst = after.filter((e) => e.seg.flags & RST);
    expect(rst).toHaveLength(1);
    expect(rst[0].at - data[6].at).toBe(60_000); // the seventh wait, capped at maxRtoMs, ends it
    expect(sim.stream.destroyed).toBe(true);
    expect(sim.stack.counters().tcpConnections).toEqual({});
  });

  it('recovers when the link comes back before the limit, and the next loss starts from a fresh RTO', () => {
    const sim = new TcpSim({ seed: 10, faults: { latencyMs: 5 }, tcp: { initialRtoMs: 1000, maxRtoMs: 60_000, maxRetransmits: 6 } });
    expect(sim.handshake(), 'handshake').toBe(true);
    sim.toGuest.configure({ drop: 1 });
    const from = sim.sent.length;
    sim.stream.send(new Uint8Array(100).fill(7));
    sim.run(() => false, 7_500); // the original and retransmissions at +1 s, +3 s, +7 s are lost
    sim.toGuest.configure({ drop: 0 });
    expect(sim.run(() => sim.guest.receivedBytes === 100, 60_000)).toBe(true);
    const data = sim.sent.slice(from).filter((e) => dataLength(e.seg) === 100);
    expect(data.map((e) => e.at - data[0].at)).toEqual([0, 1000, 3000, 7000, 15_000]);
    expect(sim.stack.counters().tcpConnections).toEqual({ established: 1 });
    expect(sim.stream.destroyed).toBe(false);
    // One lost segment later: retransmitted after one (sampled) RTO, not after the backed-off one.
    sim.toGuest.configure({ drop: 1 });
    const next = sim.sent.length;
    sim.stream.send(new Uint8Array(50).fill(8));
    sim.run(() => sim.sent.slice(next).filter((e) => dataLength(e.seg) === 50).length === 2, 60_000);
    const again = sim.sent.slice(next).filter((e) => dataLength(e.seg) === 50);
    expect(again[1].at - again[0].at).toBeLessThan(1000);
  });
});

describe('TCP fast recovery', () => {
  for (const sack of [true, false]) {
    it(`repairs a single loss by fast retransmit, well before the RTO (${sack ? 'SACK' : 'NewReno'})`, () => {
      const sim = new TcpSim({ seed: 5, faults: { latencyMs: 5 }, guest: { sackPermitted: sack } });
      expect(sim.handshake(), 'handshake').toBe(true);
      const data = pattern(MIB, 5);
      let seen = 0;
      let lostSeq: number | undefined;
      let lostAt = 0;
      sim.dropFromStack = (seg) => {
        if (dataLength(seg) === 0) return false;
        if (++seen === 300) {
          lostSeq = seg.seq;
          lostAt = sim.now;
          return true;
        }
        return false;
      };
      sim.feedFromUpstream(data);
      expect(sim.run(() => sim.guest.finReceived, 60_000)).toBe(true);
      expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
      const copies = sim.sent.filter((e) => e.seg.seq === lostSeq && dataLength(e.seg) > 0);
      expect(copies).toHaveLength(2);
      const repairDelay = copies[1].at - lostAt;
      // Three duplicate ACKs come back within about one round trip (10 ms); the RTO is ≥ 200 ms.
      expect(repairDelay).toBeLessThanOrEqual(20);
      // Only the lost segment was sent again: no timeout, no go-back-N.
      const seqs = new Set<number>();
      let retransmitted = 0;
      for (const e of sim.sent) {
        if (dataLength(e.seg) === 0) continue;
        if (seqs.has(e.seg.seq)) retransmitted++;
        seqs.add(e.seg.seq);
      }
      expect(retransmitted).toBe(1);
    });
  }
});

describe('TCP zero window', () => {
  it('probes a closed window with growing spacing and resumes when it opens', () => {
    const sim = new TcpSim({ seed: 6, faults: { latencyMs: 5 }, guest: { receiveBuffer: 32 * 1024, windowScale: undefined } });
    expect(sim.handshake(), 'handshake').toBe(true);
    sim.guest.readPaused = true;
    const data = pattern(256 * 1024, 6);
    sim.feedFromUpstream(data);
    sim.run(() => false, 60_000);
    expect(sim.guest.receivedBytes).toBe(32 * 1024);
    // Probes: pure ACKs with SEQ = SND.UNA − 1, i.e. one below what the guest has acknowledged.
    const probeSeq = (sim.guest.rcvNxt - 1) >>> 0;
    const probe = (s: TcpSegment) => dataLength(s) === 0 && s.flags === ACK && s.seq === probeSeq;
    const probes = sim.sent.filter((e) => probe(e.seg));
    expect(probes.length).toBeGreaterThanOrEqual(4);
    const gaps = probes.slice(1).map((e, i) => e.at - probes[i].at);
    for (let i = 1; i < gaps.length; i++) expect(gaps[i]).toBe(Math.min(2 * gaps[i - 1], 60_000));
    // The guest's window update is lost: the next probe finds the window open.
    sim.toStack.configure({ drop: 1 });
    sim.guest.readPaused = false;
    sim.guest.read();
    sim.toStack.configure({ drop: 0 });
    const probesBefore = sim.sent.filter((e) => probe(e.seg)).length;
    expect(sim.run(() => sim.guest.finReceived, 600_000)).toBe(true);
    expect(equalBytes(sim.guest.receivedData(), data)).toBe(true);
    expect(sim.sent.filter((e) => probe(e.seg)).length).toBe(probesBefore + 1);
  });
});

describe('TCP RST storm', () => {
  it('survives thousands of RSTs with wrong sequence numbers, answering at most with challenge ACKs', () => {
    const sim = new TcpSim({ seed: 7, faults: { latencyMs: 5 } });
    expect(sim.handshake(), 'handshake').toBe(true);
    sim.guest.write(pattern(10_000, 7));
    sim.run(() => sim.stream.bytesWritten === 10_000 && sim.guest.inFlight === 0, 10_000);
    const rng = seededRandom(77);
    const rcvNxt = sim.guest.sndNxt; // what weft expects next from the guest
    const from = sim.sent.length;
    let inWindow = 0;
    const storm = 5000;
    for (let i = 0; i < storm; i++) {
      // Half land inside weft's receive window (but not on RCV.NXT), half anywhere.
      const near = i % 2 === 0;
      const seq = near ? (rcvNxt + 1 + Math.floor(rng.next() * 60_000)) >>> 0 : Math.floor(rng.next() * 2 ** 32);
      if (seq === rcvNxt) continue;
      if (near) inWindow++;
      const flags = rng.next() < 0.5 ? RST : RST | ACK;
      sim.stack.input(sim.guest.frame({ seq, ack: Math.floor(rng.next() * 2 ** 32), flags }));
    }
    // Out-of-window RSTs are ignored; in-window ones get a challenge ACK (RFC 5961 §3.2) and nothing
    // else — at most CHALLENGE_ACKS_PER_SECOND of them (§7): the storm took no simulated time.
    const replies = sim.sent.slice(from);
    expect(inWindow).toBeGreaterThan(CHALLENGE_ACKS_PER_SECOND);
    expect(replies).toHaveLength(CHALLENGE_ACKS_PER_SECOND);
    for (const { seg } of replies) {
      expect(seg.flags).toBe(ACK);
      expect(dataLength(seg)).toBe(0);
      expect(seg.ack).toBe(rcvNxt);
    }
    expect(sim.stack.counters().tcpConnections).toEqual({ established: 1 });
    expect(sim.stream.destroyed).toBe(false);
    // A second later the allowance is back.
    sim.now += 1000;
    const later = sim.sent.length;
    sim.stack.input(sim.guest.frame({ seq: (rcvNxt + 10) >>> 0, ack: 0, flags: RST }));
    expect(sim.sent.slice(later).map((e) => e.seg.flags)).toEqual([ACK]);
    // The connection still carries data both ways.
    sim.guest.write(pattern(5000, 8));
    sim.stream.send(new Uint8Array(3000).fill(1));
    expect(sim.run(() => sim.stream.bytesWritten === 15_000 && sim.guest.receivedBytes === 3000, 10_000)).toBe(true);
    // And the one RST that matters still works.
    sim.stack.input(sim.guest.frame({ seq: sim.guest.sndNxt, ack: 0, flags: RST }));
    expect(sim.stream.destroyed).toBe(true);
  });
});

describe('TCP SYN flood', () => {
  it('keeps the half-open table bounded and still completes a legitimate handshake', () => {
    const maxHalfOpen = 512;
    const sim = new TcpSim({ seed: 8, faults: { latencyMs: 5 }, tcp: { maxHalfOpen }, autoConnect: false });
    const rng = seededRandom(88);
    let maxSeen = 0;
    let maxLiveStreams = 0;
    const halfOpen = () => {
      const c = sim.stack.counters().tcpConnections;
      return (c.connecting ?? 0) + (c['syn-received'] ?? 0) + (c['syn-sent'] ?? 0);
    };
    const flood = (n: number) => {
      for (let i = 0; i < n; i++) {
        const port = 1024 + Math.floor(rng.next() * 60_000);
        if (port === 40_000) continue;
        sim.stack.input(
          sim.guest.frame({
            srcPort: port,
            dstPort: FLOODED_PORT,
            seq: Math.floor(rng.next() * 2 ** 32),
            ack: 0,
            flags: SYN,
            window: 65535,
            options: { mss: 1460 },
          }),
        );
      }
      maxSeen = Math.max(maxSeen, halfOpen());
      maxLiveStreams = Math.max(maxLiveStreams, sim.upstream.tcp.filter((s) => !s.destroyed).length);
    };
    // 10,000 SYNs over one second, ten per millisecond; the legitimate guest connects half-way.
    let legit: FakeTcpStream | undefined;
    let connectAt = Infinity;
    for (let ms = 0; ms < 1000; ms++) {
      flood(10);
      if (ms === 500) {
        sim.guest.connect();
        sim.run(() => false, 5);
        legit = sim.upstream.tcp.find((s) => s.dst.port === REMOTE.port);
        connectAt = sim.now + 10; // its upstream connects 10 ms after the SYN arrived
      }
      if (legit && sim.now >= connectAt) {
        legit.connect();
        connectAt = Infinity;
      }
      sim.run(() => false, 1);
    }
    expect(legit).toBeDefined();
    expect(maxSeen).toBeLessThanOrEqual(maxHalfOpen);
    expect(maxLiveStreams).toBeLessThanOrEqual(maxHalfOpen + 1);
    expect(sim.guest.state).toBe('open');
    expect(sim.stack.counters().tcpConnections.established).toBe(1);
    expect(sim.stack.counters().drops['tcp-half-open-evicted']).toBeGreaterThan(9000);
    // After the connect timeout only the legitimate connection is left.
    sim.run(() => false, 30_000);
    expect(sim.stack.counters().tcpConnections).toEqual({ established: 1 });
    expect(sim.upstream.tcp.filter((s) => !s.destroyed)).toEqual([legit]);
  });
});
