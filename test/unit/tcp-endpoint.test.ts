// Packet-level tests of weft's TCP endpoint: a scripted guest sends segments, the test checks the
// exact segments that come back. (Real guests are in test/integration.)
import { describe, expect, it } from 'vitest';
import { Stack } from '../../core/stack';
import { parseIpv4 } from '../../core/wire/address';
import { IPPROTO_TCP } from '../../core/wire/ipv4';
import { ACK, emitTcp, FIN, PSH, RST, SYN, tcpHeaderLength, type TcpOptions, type TcpSegment } from '../../core/wire/tcp';
import { FakeUpstream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom, tcpSegmentOf } from '../support/frames';
import { instant } from '../../core/clock';
import { MAX_DATA_FRAME } from '../../core/tcp/tcp-negotiation';
import { TcpReceiver } from '../../core/tcp/tcp-receiver';
import { TcpTimers } from '../../core/tcp/tcp-timers';
import { toSeq } from '../../core/tcp/seq';

const DST = parseIpv4('93.184.216.34');

function setup(tcp = {}, network = {}) {
  let now = 5_000;
  const out: TcpSegment[] = [];
  /** The length of each frame in `out`, in the same order. */
  const frameLengths: number[] = [];
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(now) },
    random: seededRandom(7).fill,
    upstream,
    tcp,
    network,
    output: (f) => {
      const seg = tcpSegmentOf(f);
      if (!seg) return;
      out.push(seg);
      frameLengths.push(f.length);
    },
  });
  let guestSeq = 1000;
  const send = (flags: number, opts: { seq?: number; ack?: number; payload?: Uint8Array; window?: number; options?: TcpOptions } = {}) => {
    const payload = opts.payload ?? new Uint8Array(0);
    const repr = {
      srcPort: 40000,
      dstPort: 80,
      seq: opts.seq ?? guestSeq,
      ack: opts.ack ?? 0,
      flags,
      window: opts.window ?? 65535,
      options: opts.options,
      payload,
    };
    const seg = new Uint8Array(tcpHeaderLength(opts.options) + payload.length);
    emitTcp(repr, seg, 0, GUEST_IP, DST);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg));
  };
  const advance = (ms: number) => {
    now += ms;
    stack.poll();
  };
  /** SYN → upstream connects → SYN-ACK → ACK; returns our ISN+1 (next seq to ACK). */
  const handshake = (options: TcpOptions = { mss: 1460 }) => {
    send(SYN, { options });
    upstream.tcp[0].connect();
    const synAck = out.shift() as TcpSegment;
    frameLengths.shift();
    guestSeq = 1001;
    send(ACK, { ack: (synAck.seq + 1) >>> 0 });
    return (synAck.seq + 1) >>> 0;
  };
  return { stack, out, frameLengths, upstream, send, advance, handshake, setGuestSeq: (s: number) => (guestSeq = s) };
}

describe('TCP connect semantics', () => {
  it('answers the SYN only after the upstream connects, and absorbs SYN retransmissions', () => {
    const t = setup();
    t.send(SYN, { options: { mss: 1460, sackPermitted: true, windowScale: 7, timestamp: { value: 1, echo: 0 } } });
    expect(t.out).toHaveLength(0);
    expect(t.upstream.tcp).toHaveLength(1);
    expect(t.upstream.tcp[0].dst).toEqual({ ip: DST, port: 80 });
    t.send(SYN, { options: { mss: 1460 } }); // retransmitted SYN while connecting
    expect(t.upstream.tcp).toHaveLength(1);
    expect(t.out).toHaveLength(0);
    t.upstream.tcp[0].connect();
    expect(t.out).toHaveLength(1);
    const synAck = t.out[0];
    expect(synAck.flags).toBe(SYN | ACK);
    expect(synAck.ack).toBe(1001);
    expect(synAck.options.mss).toBe(1460);
    expect(synAck.options.sackPermitted).toBe(true);
    expect(synAck.options.windowScale).toBeGreaterThanOrEqual(2);
    expect(synAck.options.timestamp?.echo).toBe(1);
  });

  it('turns a refused upstream into an immediate RST for the SYN', () => {
    const t = setup();
    t.send(SYN, { options: { mss: 1460 } });
    t.upstream.tcp[0].fail('refused');
    expect(t.out).toHaveLength(1);
    expect(t.out[0].flags).toBe(RST | ACK);
    expect(t.out[0].ack).toBe(1001);
    expect(t.stack.counters().tcpConnections).toEqual({});
  });

  it('resets the guest when the upstream connect times out', () => {
    const t = setup({ connectTimeoutMs: 3000 });
    t.send(SYN, { options: { mss: 1460 } });
    t.advance(2999);
    expect(t.out).toHaveLength(0);
    t.advance(1);
    expect(t.out.map((s) => s.flags)).toEqual([RST | ACK]);
    expect(t.upstream.tcp[0].destroyed).toBe(true);
  });

  it('answers a segment for no connection with RST', () => {
    const t = setup();
    t.send(ACK, { seq: 5, ack: 77 });
    expect(t.out).toHaveLength(1);
    expect(t.out[0]).toMatchObject({ flags: RST, seq: 77 });
  });
});

describe('TCP data transfer', () => {
  it('passes guest data upstream and acknowledges it; upstream data reaches the guest', () => {
    const t = setup();
    const iss1 = t.handshake();
    t.send(ACK | PSH, { ack: iss1, payload: new TextEncoder().encode('GET / HTTP/1.0\r\n\r\n') });
    expect(new TextDecoder().decode(t.upstream.tcp[0].written[0])).toBe('GET / HTTP/1.0\r\n\r\n');
    t.advance(50); // delayed ACK
    const ack = t.out.find((s) => s.payload.length === 0 && s.flags === ACK);
    expect(ack?.ack).toBe(1001 + 18);
    t.out.length = 0;
    const body = new Uint8Array(5000).map((_, i) => i & 0xff);
    t.upstream.tcp[0].send(body);
    const data = t.out.filter((s) => s.payload.length > 0);
    expect(data.map((s) => s.payload.length)).toEqual([1460, 1460, 1460, 620]);
    expect(data[0].seq).toBe(iss1);
    const joined = new Uint8Array(data.reduce((n, s) => n + s.payload.length, 0));
    let off = 0;
    for (const s of data) joined.set(s.payload, (off += s.payload.length) - s.payload.length);
    expect(joined).toEqual(body);
  });

  it('retransmits an unacknowledged segment after the RTO, then backs off', () => {
    const t = setup();
    const iss1 = t.handshake();
    t.upstream.tcp[0].send(new Uint8Array(100));
    expect(t.out.filter((s) => s.payload.length === 100)).toHaveLength(1);
    t.out.length = 0;
    t.advance(999);
    expect(t.out).toHaveLength(0);
    t.advance(1); // initial RTO 1 s (no RTT sample yet)
    expect(t.out.map((s) => [s.seq, s.payload.length])).toEqual([[iss1, 100]]);
    t.out.length = 0;
    t.advance(1999);
    expect(t.out).toHaveLength(0);
    t.advance(1); // doubled
    expect(t.out).toHaveLength(1);
  });

  it('fast-retransmits on three duplicate ACKs', () => {
    const t = setup();
    const iss1 = t.handshake();
    t.upstream.tcp[0].send(new Uint8Array(1460 * 6));
    t.out.length = 0;
    for (let i = 0; i < 3; i++) t.send(ACK, { ack: iss1 }); // the first segment was lost
    expect(t.out.filter((s) => s.seq === iss1 && s.payload.length === 1460)).toHaveLength(1);
  });

  it('shrinks the advertised window while the upstream applies back-pressure', () => {
    const t = setup({ receiveBufferBytes: 64 * 1024 });
    const iss1 = t.handshake();
    t.upstream.tcp[0].highWaterMark = 1; // every write reports back-pressure
    let seq = 1001;
    for (let i = 0; i < 30; i++) {
      t.send(ACK, { seq, ack: iss1, payload: new Uint8Array(1460) });
      seq += 1460;
    }
    t.advance(50);
    const last = t.out[t.out.length - 1];
    const shift = 0; // no window scaling offered in this handshake
    expect(last.ack).toBe(seq);
    expect(last.window << shift).toBeLessThan(64 * 1024 - 29 * 1460 + 1460);
  });

  it('half-closes both ways: guest FIN ends the upstream, upstream FIN reaches the guest after its data', () => {
    const t = setup();
    const iss1 = t.handshake();
    t.send(ACK | FIN, { ack: iss1 });
    expect(t.upstream.tcp[0].ended).toBe(true);
    expect(t.stack.counters().tcpConnections).toEqual({ 'close-wait': 1 });
    t.out.length = 0;
    t.upstream.tcp[0].send(new Uint8Array([1, 2, 3]));
    t.upstream.tcp[0].finish();
    const fin = t.out.find((s) => s.flags & FIN);
    expect(fin).toBeDefined();
    expect(t.out.flatMap((s) => Array.from(s.payload))).toEqual([1, 2, 3]);
    t.setGuestSeq(1002);
    t.send(ACK, { ack: ((fin as TcpSegment).seq + (fin as TcpSegment).payload.length + 1) >>> 0 });
    expect(t.stack.counters().tcpConnections).toEqual({});
  });

  it('aborts the upstream on a guest RST with the exact sequence number, and challenges an inexact one', () => {
    const t = setup();
    t.handshake();
    t.send(RST, { seq: 1005 });
    expect(t.upstream.tcp[0].destroyed).toBe(false);
    expect(t.out[t.out.length - 1].flags).toBe(ACK); // challenge ACK (RFC 5961)
    t.send(RST, { seq: 1001 });
    expect(t.upstream.tcp[0].destroyed).toBe(true);
    expect(t.stack.counters().tcpConnections).toEqual({});
  });

  it('resets the guest when the upstream fails mid-stream', () => {
    const t = setup();
    t.handshake();
    t.out.length = 0;
    t.upstream.tcp[0].fail('reset');
    expect(t.out.map((s) => s.flags)).toEqual([RST | ACK]);
  });
});

describe('TCP segment size towards the guest', () => {
  /** Handshake with timestamps and a large window, then `bytes` from the upstream: the data frames' lengths and payloads. */
  function transfer(mtu: number, bytes: number) {
    const t = setup({}, { mtu });
    t.handshake({ mss: mtu - 40, windowScale: 7, sackPermitted: true, timestamp: { value: 1, echo: 0 } });
    t.upstream.tcp[0].send(new Uint8Array(bytes));
    const data: { payload: number; frame: number }[] = [];
    // The guest acknowledges each flight (the initial window is two segments this large).
    for (let round = 0; round < 20 && data.reduce((n, d) => n + d.payload, 0) < bytes; round++) {
      const sent = t.out.splice(0);
      const lengths = t.frameLengths.splice(0);
      sent.forEach((seg, i) => {
        if (seg.payload.length > 0) data.push({ payload: seg.payload.length, frame: lengths[i] });
      });
      const last = sent[sent.length - 1];
      if (!last) break;
      t.send(ACK, { ack: (last.seq + last.payload.length) >>> 0, options: { timestamp: { value: 3 + round, echo: last.options.timestamp?.value ?? 0 } } });
    }
    expect(data.reduce((n, d) => n + d.payload, 0)).toBe(bytes);
    return data;
  }

  it("at MTU 65520, fills 64 KiB less a virtio-net header and no more (16 of a Linux guest's 4 KiB buffers)", () => {
    const data = transfer(65520, 400_000);
    expect(MAX_DATA_FRAME).toBe(65524);
    expect(Math.max(...data.map((d) => d.frame))).toBe(MAX_DATA_FRAME);
    // Payload 65458 = 65524 less 14 (Ethernet) + 20 (IPv4) + 32 (TCP with timestamps).
    expect(data.slice(0, -1).every((d) => d.payload === 65458 && d.frame === MAX_DATA_FRAME)).toBe(true);
  });

  it('below that, segments are as large as the MSS allows', () => {
    const data = transfer(9000, 100_000);
    expect(data.slice(0, -1).every((d) => d.payload === 9000 - 40 - 12 && d.frame === 9014)).toBe(true);
  });
});

// D-SACK (RFC 2883): data the guest sends again that weft already had is reported, once, as the
// first SACK block of the ACK that answers it. A Linux guest reads that report to undo the window cut
// its retransmission caused (a loss probe that fired before our delayed ACK, say).
describe('D-SACK: the guest sends data weft already has', () => {
  /** After the handshake: `data(seq, len)` sends guest bytes and returns the segments that answer. */
  function connection(synOptions: TcpOptions) {
    const t = setup();
    const ack = t.handshake(synOptions);
    const options = synOptions.timestamp ? { timestamp: { value: 2, echo: 0 } } : undefined;
    return {
      upstream: t.upstream,
      data(seq: number, len: number): TcpSegment[] {
        t.out.length = 0;
        t.send(ACK, { seq, ack, payload: new Uint8Array(len).fill(seq & 0xff), options });
        return t.out.splice(0);
      },
      advance(ms: number): TcpSegment[] {
        t.advance(ms);
        return t.out.splice(0);
      },
    };
  }

  it('reports a whole segment below RCV.NXT as the first SACK block, at once and only once', () => {
    const c = connection({ mss: 1460, sackPermitted: true });
    c.data(1001, 1000);
    c.data(2001, 1000); // a second segment: acknowledged at once
    const again = c.data(1001, 1000); // the guest's loss probe, after our ACK crossed it
    expect(again).toHaveLength(1);
    expect(again[0].ack).toBe(3001);
    expect(again[0].options.sack).toEqual([[1001, 2001]]);
    // The next ACK reports nothing: the report is for that duplicate alone.
    c.data(3001, 1000);
    const later = [...c.data(4001, 1000), ...c.advance(100)];
    expect(later.length).toBeGreaterThan(0);
    expect(later.every((s) => s.options.sack === undefined)).toBe(true);
  });

  it('reports the duplicate part of a segment that also brings new data', () => {
    const c = connection({ mss: 1460, sackPermitted: true });
    c.data(1001, 1000);
    c.data(2001, 1000);
    const overlap = c.data(2501, 1000); // 2501–3001 again, then 3001–3501 new
    expect(overlap).toHaveLength(1);
    expect(overlap[0].ack).toBe(3501);
    expect(overlap[0].options.sack).toEqual([[2501, 3001]]);
    expect(c.upstream.tcp[0].written.reduce((n, w) => n + w.length, 0)).toBe(2500);
  });

  it('reports a duplicate of data held out of order, followed by the block that holds it', () => {
    const c = connection({ mss: 1460, sackPermitted: true });
    c.data(1001, 1000);
    c.data(3001, 1000); // 2001–3001 missing
    c.data(5001, 1000); // 4001–5001 missing too: two blocks, the newest first
    const again = c.data(3001, 1000);
    expect(again).toHaveLength(1);
    expect(again[0].ack).toBe(2001);
    expect(again[0].options.sack).toEqual([
      [3001, 4001],
      [3001, 4001],
      [5001, 6001],
    ]);
  });

  it('fits the report beside timestamps', () => {
    const c = connection({ mss: 1460, sackPermitted: true, timestamp: { value: 1, echo: 0 } });
    c.data(1001, 1000);
    c.data(2001, 1000);
    const again = c.data(2001, 1000);
    expect(again).toHaveLength(1);
    expect(again[0].options.timestamp).toBeDefined();
    expect(again[0].options.sack).toEqual([[2001, 3001]]);
  });

  it('sends no SACK option to a guest that did not permit SACK', () => {
    const c = connection({ mss: 1460 });
    c.data(1001, 1000);
    c.data(2001, 1000);
    const again = c.data(1001, 1000);
    expect(again).toHaveLength(1);
    expect(again[0].ack).toBe(3001);
    expect(again[0].options.sack).toBeUndefined();
  });
});

describe('D-SACK in the receiver', () => {
  const receiver = () => new TcpReceiver(toSeq(999), { bufferBytes: 64 * 1024, windowShift: 0, mss: 1000, delayedAckMs: 40 }, new TcpTimers());

  it('asks for an ACK at once and clears the report when an ACK goes out', () => {
    const r = receiver();
    r.accept(toSeq(1000), new Uint8Array(1000), false, instant(0));
    r.ackSent();
    r.accept(toSeq(1000), new Uint8Array(1000), false, instant(0));
    expect(r.ackNow).toBe(true);
    expect(r.sackBlocks(4)).toEqual([[1000, 2000]]);
    r.ackSent();
    expect(r.sackBlocks(4)).toEqual([]);
  });

  it('keeps within the number of blocks asked for', () => {
    const r = receiver();
    for (const seq of [1000, 3000, 5000, 7000, 9000]) r.accept(toSeq(seq), new Uint8Array(1000), false, instant(0));
    r.accept(toSeq(5000), new Uint8Array(1000), false, instant(0));
    const blocks = r.sackBlocks(3);
    expect(blocks).toHaveLength(3);
    expect(blocks[0]).toEqual([5000, 6000]);
    expect(blocks[1]).toEqual([5000, 6000]);
  });
});
