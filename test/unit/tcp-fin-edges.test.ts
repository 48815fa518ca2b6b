// The edges of weft's sequence space around its FIN, segment by segment: nothing is ever sent past
// the FIN (before or after the guest acknowledges it), a FIN that rode on data is resent with that
// data, zero-window probing and loss probes stop at the FIN, and simultaneous close ends cleanly.
import { describe, expect, it } from 'vitest';
import { TcpSender, type SenderConfig } from '../../core/tcp/tcp-sender';
import { TcpReceiver } from '../../core/tcp/tcp-receiver';
import { Stack } from '../../core/stack';
import { parseIpv4 } from '../../core/wire/address';
import { ACK, emitTcp, FIN, PSH, RST, SYN, tcpHeaderLength, type TcpOptions, type TcpSegment } from '../../core/wire/tcp';
import { FakeUpstream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom } from '../support/frames';
import { IPPROTO_TCP } from '../../core/wire/ipv4';
import { concat, equalBytes, pattern, TcpSim, tcpOf } from '../support/tcp-sim';
import { seqDiff, toSeq, type SeqNum } from '../../core/tcp/seq';
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
  let probes = 0;
  const timers = new TcpTimers();
  const s = new TcpSender(
    toSeq(ISS),
    { mss: 1000, initialRtoMs: 1000, minRtoMs: 200, maxRtoMs: 60_000, sendBufferBytes: 1 << 20, maxRetransmits: 12, sackPermitted: true, ...cfg },
    { sendSegment: (seq, len, fin) => sent.push({ seq, len, fin, at: now }), sendProbe: () => probes++ },
    timers,
  );
  s.initWindow(1 << 20, toSeq(0), toSeq(UNA));
  return {
    s,
    timers,
    sent,
    get probes() {
      return probes;
    },
    get now() {
      return now;
    },
    advance(ms: number) {
      now = after(now, ms);
      s.onTimer(now);
    },
    ack(ack: number, opts: { sack?: Array<[number, number]>; window?: number; seq?: number; dup?: boolean; tsEcr?: number } = {}) {
      const sack = opts.sack?.map(([l, r]): [SeqNum, SeqNum] => [toSeq(l), toSeq(r)]);
      s.onAck({ seq: toSeq(opts.seq ?? 0), ack: toSeq(ack), window: opts.window ?? 1 << 20, sack, dupCandidate: opts.dup ?? true }, now, opts.tsEcr);
    },
    /** Runs the timers for `ms` in 1 ms steps. */
    idle(ms: number) {
      for (let i = 0; i < ms; i++) this.advance(1);
    },
  };
}

/** The highest sequence number any segment covered (FIN counted), as an offset from UNA. */
const lastSeq = (sent: Sent[]) => Math.max(...sent.map((e) => e.seq + e.len + (e.fin ? 1 : 0) - UNA));

describe('nothing past our FIN (sender)', () => {
  it('sends nothing once the guest has acknowledged the FIN, whatever ACKs follow', () => {
    const t = sender();
    t.s.write(new Uint8Array(2500));
    t.s.finish();
    t.s.output(t.now);
    expect(t.sent).toEqual([
      { seq: UNA, len: 1000, fin: false, at: 1000 },
      { seq: UNA + 1000, len: 1000, fin: false, at: 1000 },
      { seq: UNA + 2000, len: 500, fin: true, at: 1000 },
    ]);
    t.advance(5);
    t.ack(UNA + 2501, { dup: false }); // data and FIN acknowledged
    expect(t.s.finAcked).toBe(true);
    expect(t.s.idle).toBe(true);
    // The guest goes on sending (its data's ACKs carry our FIN+1 again), updates its window, duplicates.
    for (let i = 1; i <= 20; i++) t.ack(UNA + 2501, { seq: i * 1000, dup: i % 2 === 0, window: (1 << 20) - i });
    t.idle(5000);
    expect(t.sent).toHaveLength(3);
    expect(t.timers.nextDeadline()).toBeUndefined();
  });

  it('a FIN alone (no data) is acknowledged and never followed', () => {
    const t = sender();
    t.s.finish();
    t.s.output(t.now);
    expect(t.sent).toEqual([{ seq: UNA, len: 0, fin: true, at: 1000 }]);
    t.ack(UNA + 1, { dup: false });
    t.ack(UNA + 1);
    t.ack(UNA + 1, { window: 10 });
    t.idle(3000);
    expect(t.sent).toHaveLength(1);
  });

  it('resends a lost FIN with the data it rode on, ending exactly at the FIN', () => {
    const t = sender();
    t.s.write(new Uint8Array(2500));
    t.s.finish();
    t.s.output(t.now);
    t.advance(1000); // RTO (no RTT sample): everything goes again, in slow start from one segment
    expect(t.sent.slice(3)).toEqual([{ seq: UNA, len: 1000, fin: false, at: 2000 }]);
    t.ack(UNA + 1000, { dup: false });
    t.ack(UNA + 2000, { dup: false });
    expect(t.sent.slice(4)).toEqual([
      { seq: UNA + 1000, len: 1000, fin: false, at: 2000 },
      { seq: UNA + 2000, len: 500, fin: true, at: 2000 },
    ]);
    t.ack(UNA + 2501, { dup: false });
    t.idle(5000);
    expect(t.sent).toHaveLength(6);
    expect(lastSeq(t.sent)).toBe(2501);
  });

  it('a SACK of the data but not the FIN resends the FIN alone', () => {
    const t = sender();
    t.s.write(new Uint8Array(5000));
    t.s.finish();
    t.s.output(t.now);
    t.advance(10);
    // The first segment and the FIN are lost; the guest SACKs the data in between.
    t.ack(UNA, { sack: [[UNA + 1000, UNA + 5000]], tsEcr: 1000 });
    t.idle(300);
    const again = t.sent.slice(5);
    expect(again.map((e) => [e.seq - UNA, e.len, e.fin])).toContainEqual([0, 1000, false]);
    expect(again.every((e) => e.seq + e.len + (e.fin ? 1 : 0) <= UNA + 5001)).toBe(true);
    t.ack(UNA + 5000, { dup: false });
    t.idle(2000);
    const fins = t.sent.filter((e) => e.fin);
    expect(fins.every((e) => e.seq + e.len === UNA + 5000)).toBe(true);
    expect(fins.at(-1)).toMatchObject({ seq: UNA + 5000, len: 0 });
    t.ack(UNA + 5001, { dup: false });
    const n = t.sent.length;
    t.idle(5000);
    expect(t.sent).toHaveLength(n);
    expect(lastSeq(t.sent)).toBe(5001);
  });

  it('loss probes and timeouts after the FIN stay within it', () => {
    const t = sender();
    t.s.write(new Uint8Array(3000));
    t.s.finish();
    t.s.output(t.now);
    t.advance(10);
    t.ack(UNA + 1000, { dup: false, tsEcr: 1000 }); // an RTT sample arms the probe
    t.idle(20_000); // nothing more comes back: probes, then timeouts with backoff
    expect(t.s.lossProbes).toBeGreaterThan(0);
    expect(t.s.timeouts).toBeGreaterThan(0);
    expect(lastSeq(t.sent)).toBe(3001);
    for (const e of t.sent.filter((x) => x.fin)) expect(e.seq + e.len).toBe(UNA + 3000);
  });

  it('probes a zero window after the FIN was queued without sending past it, then sends data and FIN', () => {
    const t = sender();
    t.s.write(new Uint8Array(1500));
    t.s.finish();
    t.s.initWindow(0, toSeq(0), toSeq(UNA)); // the guest's window is closed
    t.s.output(t.now);
    expect(t.sent).toEqual([]);
    t.idle(5000);
    expect(t.probes).toBeGreaterThan(0);
    expect(t.sent).toEqual([]);
    t.ack(UNA, { seq: 1, window: 4000, dup: false });
    expect(t.sent.map((e) => [e.seq - UNA, e.len, e.fin])).toEqual([
      [0, 1000, false],
      [1000, 500, true],
    ]);
    t.ack(UNA + 1501, { seq: 2, dup: false });
    const probes = t.probes;
    t.idle(5000);
    expect(t.probes).toBe(probes);
    expect(t.sent).toHaveLength(2);
  });
});

// ── the whole endpoint, with hand-made guest segments ────────────────────────────────────────

const DST = parseIpv4('93.184.216.34');

function endpoint(synOptions?: TcpOptions) {
  let now = instant(5_000);
  const out: Array<TcpSegment & { at: number }> = [];
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(now) },
    random: seededRandom(11).fill,
    upstream,
    output: (f) => {
      const seg = tcpOf(f);
      if (seg) out.push({ ...seg, payload: seg.payload.slice(), at: now });
    },
  });
  const send = (flags: number, seq: number, ack: number, payload = new Uint8Array(0), options?: TcpOptions) => {
    const repr = { srcPort: 40000, dstPort: 80, seq, ack, flags, window: 65535, payload, options };
    const seg = new Uint8Array(tcpHeaderLength(options) + payload.length);
    emitTcp(repr, seg, 0, GUEST_IP, DST);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg));
  };
  const advance = (ms: number) => {
    for (let i = 0; i < ms; i += 10) {
      now = after(now, 10);
      stack.poll();
    }
  };
  send(SYN, 1000, 0, undefined, synOptions);
  upstream.tcp[0].connect();
  const synAck = out.shift() as TcpSegment;
  const una = (synAck.seq + 1) >>> 0;
  send(ACK, 1001, una);
  return { stack, out, upstream, send, advance, una, stream: upstream.tcp[0] };
}

describe('nothing past our FIN (endpoint)', () => {
  it('the host half-closes, the guest streams on: every segment weft sends sits at FIN+1 with no data', () => {
    const t = endpoint();
    t.stream.send(new Uint8Array([104, 105]));
    t.stream.finish(); // shutdown(SHUT_WR) on the host side
    expect(t.out.map((s) => [s.seq - t.una, s.payload.length, s.flags])).toEqual([
      [0, 2, ACK | PSH],
      [2, 0, ACK | FIN],
    ]);
    const finNext = (t.una + 3) >>> 0;
    t.out.length = 0;
    let seq = 1001;
    t.send(ACK, seq, finNext); // the guest acknowledges data and FIN
    expect(t.stack.counters().tcpConnections).toEqual({ 'fin-wait-2': 1 });
    for (let i = 0; i < 50; i++) {
      t.send(ACK | PSH, seq, finNext, new Uint8Array(1000).fill(i));
      seq += 1000;
      t.advance(10);
    }
    t.advance(20_000);
    expect(t.stream.bytesWritten).toBe(50_000);
    expect(t.out.length).toBeGreaterThan(0);
    for (const s of t.out) {
      expect([s.seq, s.payload.length, s.flags & (FIN | RST)]).toEqual([finNext, 0, 0]);
    }
    // The guest closes too: weft acknowledges its FIN and waits in TIME-WAIT.
    t.send(ACK | FIN, seq, finNext);
    expect(t.out.at(-1)).toMatchObject({ seq: finNext, ack: seq + 1, flags: ACK });
    expect(t.stack.counters().tcpConnections).toEqual({ 'time-wait': 1 });
    // That ACK was lost and the guest retransmits its oldest unacknowledged data: acknowledged again.
    const n = t.out.length;
    t.send(ACK | PSH, seq - 1000, finNext, new Uint8Array(1000).fill(49));
    expect(t.out.slice(n)).toMatchObject([{ seq: finNext, ack: seq + 1, flags: ACK }]);
    expect(t.stream.bytesWritten).toBe(50_000);
    t.send(ACK, seq + 1, finNext); // a bare ACK draws nothing (no ACK loop)
    expect(t.out).toHaveLength(n + 1);
  });

  it('simultaneous close: FINs cross, each side acknowledges the other, nothing follows', () => {
    const t = endpoint();
    t.stream.send(new Uint8Array(10));
    t.stream.finish();
    const fin = t.out.at(-1) as TcpSegment;
    expect(fin.flags & FIN).toBe(FIN);
    // The guest's FIN crossed ours: it acknowledges only our data.
    t.send(ACK | FIN, 1001, (t.una + 10) >>> 0);
    expect(t.stack.counters().tcpConnections).toEqual({ closing: 1 });
    expect(t.out.at(-1)).toMatchObject({ seq: (t.una + 11) >>> 0, ack: 1002, flags: ACK });
    t.send(ACK, 1002, (t.una + 11) >>> 0);
    expect(t.stack.counters().tcpConnections).toEqual({ 'time-wait': 1 });
    const n = t.out.length;
    t.advance(5000);
    expect(t.out.slice(n).every((s) => s.payload.length === 0 && !(s.flags & FIN))).toBe(true);
    for (const s of t.out) expect((s.seq + s.payload.length - t.una) >>> 0 <= 11).toBe(true);
  });
});

describe('nothing past our FIN (simulation on a faulty link)', () => {
  // The host half-closes after a short reply; the guest then streams 2 MiB through loss,
  // duplication and reordering both ways, and closes. Every segment weft sent is checked.
  for (const [seed, timestamps] of [
    [31, true],
    [32, false],
    [33, true],
  ] as const) {
    it(`seed ${seed}, timestamps ${timestamps ? 'on' : 'off'}: the upload completes and no segment passes the FIN`, () => {
      const sim = new TcpSim({ seed, faults: { drop: 0.05, duplicate: 0.01, reorder: 0.25 }, guest: { timestamps } });
      expect(sim.handshake()).toBe(true);
      const reply = pattern(30_000, seed);
      sim.feedFromUpstream(reply);
      expect(sim.run(() => sim.guest.receivedData().length === reply.length, 60_000)).toBe(true);
      const upload = pattern(2 * 1024 * 1024, seed + 1);
      sim.guest.write(upload);
      sim.guest.close();
      expect(sim.run(() => sim.guest.finAcked && sim.stream.ended, 300_000)).toBe(true);
      sim.run(() => false, 5_000);
      expect(equalBytes(concat(sim.stream.written), upload)).toBe(true);
      expect(sim.guest.counters.rstIn).toBe(0);
      const fin = sim.sent.find((e) => e.seg.flags & FIN);
      expect(fin).toBeDefined();
      const finSeq = (fin as { seg: TcpSegment }).seg.seq + (fin as { seg: TcpSegment }).seg.payload.length;
      const past = sim.sent.filter(
        (e) => !(e.seg.flags & SYN) && seqDiff(toSeq(e.seg.seq + e.seg.payload.length + (e.seg.flags & FIN ? 1 : 0)), toSeq(finSeq)) > 1,
      );
      expect(past).toEqual([]);
      expect(sim.sent.filter((e) => e.seg.flags & FIN).every((e) => (e.seg.seq + e.seg.payload.length) >>> 0 === finSeq >>> 0)).toBe(true);
    });
  }
});

describe("the guest's FIN out of order (receiver)", () => {
  const IRS = 5000;
  const receiver = () => new TcpReceiver(toSeq(IRS), { bufferBytes: 64 * 1024, windowShift: 0, mss: 1000, delayedAckMs: 40 }, new TcpTimers());

  it('SACKs the FIN with the data it came on, and acknowledges at once', () => {
    const r = receiver();
    const base = IRS + 1;
    r.accept(toSeq(base), new Uint8Array(1000), false, instant(0));
    r.ackSent();
    // 1000–2000 is lost; the guest's last data and FIN arrive (its loss probe, say).
    r.accept(toSeq(base + 2000), new Uint8Array(1000), true, instant(0));
    expect(r.ackNow).toBe(true);
    expect(r.finReceived).toBe(false);
    expect(r.sackBlocks(3)).toEqual([[base + 2000, base + 3001]]);
    // The hole filled: the FIN is in order now, no block left.
    r.accept(toSeq(base + 1000), new Uint8Array(1000), false, instant(0));
    expect(r.finReceived).toBe(true);
    expect(r.rcvNxt).toBe(base + 3001);
    expect(r.sackBlocks(3)).toEqual([]);
  });

  it('SACKs a bare FIN that arrives above a hole as a block of its own', () => {
    const r = receiver();
    const base = IRS + 1;
    r.accept(toSeq(base), new Uint8Array(1000), false, instant(0));
    r.ackSent();
    r.accept(toSeq(base + 3000), new Uint8Array(0), true, instant(0));
    expect(r.ackNow).toBe(true);
    expect(r.sackBlocks(3)).toEqual([[base + 3000, base + 3001]]);
    r.accept(toSeq(base + 2000), new Uint8Array(1000), false, instant(0));
    expect(r.sackBlocks(3)).toEqual([[base + 2000, base + 3001]]);
  });
});

describe('after the guest FIN', () => {
  it('no window update when the upstream drains (the guest may be gone: it would answer RST)', () => {
    const t = endpoint({ mss: 1460, windowScale: 2 }); // scaled: weft's window can open past 64 KiB
    t.stream.highWaterMark = 1000; // the upstream pushes back: weft's window stays closed
    let seq = 1001;
    for (let i = 0; i < 120; i++) {
      t.send(ACK | PSH, seq, t.una, new Uint8Array(1000));
      seq += 1000;
    }
    t.stream.send(new Uint8Array(5));
    t.stream.finish();
    const fin = t.out.find((s) => s.flags & FIN) as TcpSegment;
    t.send(ACK | FIN, seq, (fin.seq + 1) >>> 0);
    expect(t.stack.counters().tcpConnections).toEqual({ 'time-wait': 1 });
    expect(t.stack.counters().tcpBufferedBytes).toBeGreaterThanOrEqual(119_000); // held: the window closed by as much
    const n = t.out.length;
    t.stream.highWaterMark = Infinity;
    t.stream.handlers.onDrain();
    expect(t.stream.bytesWritten).toBe(120_000);
    expect(t.out.slice(n)).toEqual([]);
  });
});
