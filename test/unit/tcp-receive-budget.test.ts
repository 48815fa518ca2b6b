// The stack-wide bound on what connections hold from their guests for upstreams that have not
// taken it: a guest writing to many servers that do not read makes weft hold about the budget, not
// each connection's receive buffer times their count; past it a greedy connection's window stops
// opening and its further text is dropped (and counted) for the guest to send again; a new
// connection still gets its share; once the upstreams read, the windows open again.
import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { Stack } from '../../core/stack';
import { BUDGET_MIN_SHARE } from '../../core/tcp/byte-budget';
import { parseIpv4 } from '../../core/wire/address';
import { IPPROTO_TCP } from '../../core/wire/ipv4';
import { ACK, emitTcp, SYN, tcpHeaderLength, type TcpSegment } from '../../core/wire/tcp';
import { FakeUpstream, type FakeTcpStream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom, tcpSegmentOf } from '../support/frames';

const DST = parseIpv4('93.184.216.34');
const KiB = 1024;
const BUDGET = 1024 * KiB;
const RECEIVE_BUFFER = 256 * KiB;
const SEGMENT = 16 * KiB;

interface Conn {
  port: number;
  stream: FakeTcpStream;
  /** Our next sequence number towards weft, weft's right window edge as last advertised, and what we acknowledge. */
  next: number;
  right: number;
  ack: number;
}

function setup(receiveBufferTotalBytes = BUDGET) {
  const segments: TcpSegment[] = [];
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(5_000) },
    random: seededRandom(5).fill,
    upstream,
    tcp: { receiveBufferBytes: RECEIVE_BUFFER, receiveBufferTotalBytes },
    output: (f) => {
      const seg = tcpSegmentOf(f);
      if (seg) segments.push(seg);
    },
  });
  const send = (port: number, flags: number, seq: number, ack: number, payload = new Uint8Array(0)) => {
    const options = flags & SYN ? { mss: 1460, windowScale: 7 } : undefined;
    const repr = { srcPort: port, dstPort: 80, seq, ack, flags, window: 65535, options, payload };
    const seg = new Uint8Array(tcpHeaderLength(options) + payload.length);
    emitTcp(repr, seg, 0, GUEST_IP, DST);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg));
  };
  /** weft's latest word on `port`: the right edge of its window (its scale is 2^shift). */
  const rightEdge = (port: number, shift: number) => {
    const last = segments.filter((s) => s.dstPort === port).at(-1) as TcpSegment;
    return (last.ack + (last.flags & SYN ? last.window : last.window << shift)) >>> 0;
  };
  let shift = 0;
  /** A guest connection to port 80, established; the upstream takes nothing (every write pushes back). */
  const open = (port: number): Conn => {
    send(port, SYN, 1000, 0);
    const stream = upstream.tcp[upstream.tcp.length - 1];
    stream.highWaterMark = 0;
    stream.connect();
    const synAck = segments.find((s) => s.dstPort === port && s.flags & SYN) as TcpSegment;
    shift = synAck.options.windowScale ?? 0;
    send(port, ACK, 1001, (synAck.seq + 1) >>> 0);
    return { port, stream, next: 1001, right: rightEdge(port, shift), ack: (synAck.seq + 1) >>> 0 };
  };
  const drops = () => stack.counters().drops['tcp-receive-budget'] ?? 0;
  /** The guest sends all the window lets it, as the window opens; returns the bytes weft took (it stops at a drop). */
  const fill = (c: Conn) => {
    let sent = 0;
    for (;;) {
      const room = (c.right - c.next) | 0;
      if (room <= 0) return sent;
      const n = Math.min(SEGMENT, room);
      const dropped = drops();
      send(c.port, ACK, c.next, c.ack, new Uint8Array(n).fill(c.port & 0xff));
      if (drops() > dropped) return sent;
      c.next = (c.next + n) >>> 0;
      sent += n;
      // The window's edge never moves left: an ACK weft has not sent yet leaves the last one standing.
      const right = rightEdge(c.port, shift);
      if (((right - c.right) | 0) > 0) c.right = right;
    }
  };
  const held = () => stack.counters().tcpBufferedBytes;
  return { stack, segments, upstream, open, fill, held, drops, rightEdge: (c: Conn) => rightEdge(c.port, shift) };
}

describe('the stack-wide receive budget', () => {
  it('holds about its budget, not each connection’s buffer, for upstreams that take nothing; a late connection still gets its share', () => {
    const t = setup();
    const conns = Array.from({ length: 8 }, (_, i) => t.open(41000 + i));
    for (let round = 0; round < 3; round++) for (const c of conns) t.fill(c);
    // Alone, each would take its 256 KiB: 2 MiB. With the budget, about 1 MiB plus a share each.
    expect(t.held()).toBeLessThanOrEqual(BUDGET + conns.length * (BUDGET_MIN_SHARE + SEGMENT));
    expect(t.held()).toBeLessThan(conns.length * RECEIVE_BUFFER);
    // A connection opened now still moves its first share.
    const late = t.open(41100);
    expect(t.fill(late)).toBeGreaterThanOrEqual(BUDGET_MIN_SHARE - SEGMENT);
  });

  it('drops and counts text a greedy connection sends past the budget inside a window it was offered before', () => {
    const t = setup();
    // The first connections are offered their whole buffer while the budget has room …
    const early = Array.from({ length: 4 }, (_, i) => t.open(42000 + i));
    for (const c of early) t.fill(c);
    // … then others spend the budget, and what the early ones send into their windows is refused.
    const more = Array.from({ length: 6 }, (_, i) => t.open(42100 + i));
    for (const c of more) t.fill(c);
    const before = t.held();
    for (const c of early) {
      c.right = (c.next + RECEIVE_BUFFER) >>> 0; // a guest that sends past what it was offered is cut by the window anyway
      t.fill(c);
    }
    expect(t.held()).toBeLessThanOrEqual(Math.max(before, BUDGET + 10 * (BUDGET_MIN_SHARE + SEGMENT)));
    expect(t.drops()).toBeGreaterThan(0);
  });

  it('opens the windows again once the upstreams take their bytes, and gives back what a closed connection held', () => {
    const t = setup();
    const conns = Array.from({ length: 8 }, (_, i) => t.open(43000 + i));
    for (let round = 0; round < 3; round++) for (const c of conns) t.fill(c);
    const frozen = conns.at(-1) as Conn;
    const edge = t.rightEdge(frozen);
    // Every upstream now reads all it is given.
    for (const c of conns) {
      c.stream.highWaterMark = Number.POSITIVE_INFINITY;
      c.stream.handlers.onDrain();
    }
    expect(t.held()).toBe(0);
    expect(((t.rightEdge(frozen) - edge) | 0) > 0 || t.fill(frozen) > 0).toBe(true);
    // A connection that closes with bytes held gives them back to the budget.
    const t2 = setup();
    const c2 = Array.from({ length: 8 }, (_, i) => t2.open(44000 + i));
    for (const c of c2) t2.fill(c);
    for (const c of c2) c.stream.fail('reset');
    expect(t2.held()).toBe(0);
    const fresh = Array.from({ length: 3 }, (_, i) => t2.open(44100 + i));
    for (const c of fresh) expect(t2.fill(c)).toBeGreaterThanOrEqual(RECEIVE_BUFFER - SEGMENT);
  });

  it('without a budget to speak of, the same guest makes weft hold every buffer (what the bound prevents)', () => {
    const t = setup(2 ** 40);
    const conns = Array.from({ length: 8 }, (_, i) => t.open(45000 + i));
    for (let round = 0; round < 3; round++) for (const c of conns) t.fill(c);
    expect(t.held()).toBeGreaterThan(BUDGET + conns.length * (BUDGET_MIN_SHARE + SEGMENT));
  });
});
