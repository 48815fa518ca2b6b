// The stack-wide bound on what connections hold from their upstreams for the guest: a guest that
// opens many connections and acknowledges nothing makes weft hold the budget, not each
// connection's limit times their count; quiet connections still move; paused ones resume when the
// guest takes data or a connection closes.
import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { Stack } from '../../core/stack';
import { BUDGET_MIN_SHARE, ByteBudget } from '../../core/tcp/byte-budget';
import { parseIpv4 } from '../../core/wire/address';
import { IPPROTO_TCP } from '../../core/wire/ipv4';
import { ACK, emitTcp, RST, SYN, tcpHeaderLength, type TcpSegment } from '../../core/wire/tcp';
import { FakeUpstream, type FakeTcpStream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom, tcpSegmentOf } from '../support/frames';

const DST = parseIpv4('93.184.216.34');
const KiB = 1024;
const BUDGET = 1024 * KiB;
const CHUNK = 64 * KiB;

function setup(tcp: Record<string, number> = {}) {
  const segments: TcpSegment[] = [];
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(5_000) },
    random: seededRandom(3).fill,
    upstream,
    tcp: { sendBufferBytes: 256 * KiB, sendBufferTotalBytes: BUDGET, ...tcp },
    output: (f) => {
      const seg = tcpSegmentOf(f);
      if (seg) segments.push(seg);
    },
  });
  const send = (port: number, flags: number, seq: number, ack: number) => {
    const repr = { srcPort: port, dstPort: 80, seq, ack, flags, window: 65535, options: flags & SYN ? { mss: 1460 } : undefined, payload: new Uint8Array(0) };
    const seg = new Uint8Array(tcpHeaderLength(repr.options));
    emitTcp(repr, seg, 0, GUEST_IP, DST);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg));
  };
  /** A guest connection to port 80 from `port`, established; its stream and our first data sequence number. */
  const open = (port: number) => {
    send(port, SYN, 1000, 0);
    const stream = upstream.tcp[upstream.tcp.length - 1];
    stream.connect();
    const synAck = segments.find((s) => s.dstPort === port && s.flags & SYN);
    if (!synAck) throw new Error(`no SYN-ACK for port ${port}`);
    const first = (synAck.seq + 1) >>> 0;
    send(port, ACK, 1001, first);
    return { port, stream, first };
  };
  /** The far end sends as fast as it may: 64 KiB at a time until the stack pauses it (at most `max`). */
  const pour = (stream: FakeTcpStream, max = 16) => {
    let chunks = 0;
    while (!stream.paused && chunks < max) {
      stream.send(new Uint8Array(CHUNK));
      chunks++;
    }
    return chunks;
  };
  /** The guest acknowledges everything it got on `port`, and keeps doing so while more comes. */
  const drain = (c: { port: number; first: number }) => {
    for (let acked = -1; ; ) {
      const got = segments.filter((s) => s.dstPort === c.port && s.payload.length > 0).reduce((n, s) => n + s.payload.length, 0);
      if (got === acked) return got;
      acked = got;
      send(c.port, ACK, 1001, (c.first + got) >>> 0);
    }
  };
  const held = () => stack.counters().tcpBufferedBytes;
  return { stack, segments, upstream, send, open, pour, drain, held };
}

describe('the stack-wide send budget', () => {
  it('holds about its budget, not each connection’s limit, for a guest that reads nothing', () => {
    const t = setup();
    const conns = Array.from({ length: 8 }, (_, i) => t.open(40000 + i));
    for (const c of conns) t.pour(c.stream);
    // Alone, each would take its 256 KiB beyond the 64 KiB the guest's window lets out: 2.5 MiB.
    expect(t.held()).toBeLessThanOrEqual(BUDGET + conns.length * CHUNK);
    expect(conns.every((c) => c.stream.paused)).toBe(true);
    // The first connections filled up to their own limit before the budget ran out.
    expect(conns[0].stream.paused).toBe(true);
    expect(t.held()).toBeGreaterThanOrEqual(BUDGET);
  });

  it('still lets a new connection carry its first 64 KiB to the guest when the budget is spent', () => {
    const t = setup();
    for (let i = 0; i < 6; i++) t.pour(t.open(40000 + i).stream);
    expect(t.held()).toBeGreaterThanOrEqual(BUDGET);
    const late = t.open(41000);
    expect(t.pour(late.stream)).toBe(1);
    const delivered = t.segments.filter((s) => s.dstPort === 41000).reduce((n, s) => n + s.payload.length, 0);
    expect(delivered).toBeGreaterThan(0);
    expect(delivered).toBeLessThanOrEqual(BUDGET_MIN_SHARE);
  });

  it('resumes the connections it paused once the guest has taken enough', () => {
    const t = setup();
    const conns = Array.from({ length: 6 }, (_, i) => t.open(40000 + i));
    const chunks = conns.map((c) => t.pour(c.stream));
    // The last ones were paused by the budget at their first 64 KiB, all of it in flight: only the
    // budget can resume them (the guest reading them would too, but it does not).
    const byBudget = conns.filter((_, i) => chunks[i] === 1);
    expect(byBudget.length).toBeGreaterThanOrEqual(2);
    expect(byBudget.every((c) => c.stream.paused)).toBe(true);
    // The guest reads the first two to the end of what weft holds for them; their ACKs free the budget.
    t.drain(conns[0]);
    t.drain(conns[1]);
    expect(t.held()).toBeLessThan(BUDGET - BUDGET / 8);
    expect(byBudget.every((c) => !c.stream.paused)).toBe(true);
  });

  it('gives back what a connection held when it closes, so paused ones go on and new ones fill', () => {
    const t = setup();
    const conns = Array.from({ length: 6 }, (_, i) => t.open(40000 + i));
    for (const c of conns) t.pour(c.stream);
    expect(conns.every((c) => c.stream.paused)).toBe(true);
    for (const c of conns) t.send(c.port, RST, 1001, 0);
    expect(t.held()).toBe(0);
    // Were the closed connections' bytes still counted, this one would stop at 64 KiB.
    const next = t.open(42000);
    expect(t.pour(next.stream)).toBeGreaterThan(2);
  });
});

describe('ByteBudget', () => {
  it('pauses only holders past the small share once spent, and wakes waiters below seven eighths', () => {
    const b = new ByteBudget(1000 * KiB);
    b.add(1000 * KiB);
    expect(b.overFor(BUDGET_MIN_SHARE - 1)).toBe(false);
    expect(b.overFor(BUDGET_MIN_SHARE)).toBe(true);
    let woken = 0;
    b.wait(() => woken++);
    b.release(100 * KiB);
    expect(woken).toBe(0);
    b.release(100 * KiB);
    expect(woken).toBe(1);
    b.release(100 * KiB);
    expect(woken).toBe(1); // woken once; a waiter that still cannot go on waits again
    expect(b.bytes).toBe(700 * KiB);
  });
});
