// D-SACK (RFC 2883): data the guest sends again that weft already had is reported, once, as the
// first SACK block of the ACK that answers it. A Linux guest reads that report to undo the window cut
// its retransmission caused (a loss probe that fired before our delayed ACK, say).
import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { Stack } from '../../core/stack';
import { TcpReceiver } from '../../core/tcp/tcp-receiver';
import { TcpTimers } from '../../core/tcp/tcp-timers';
import { toSeq } from '../../core/tcp/seq';
import { parseIpv4 } from '../../core/wire/address';
import { IPPROTO_TCP } from '../../core/wire/ipv4';
import { ACK, emitTcp, SYN, tcpHeaderLength, type TcpOptions, type TcpSegment } from '../../core/wire/tcp';
import { FakeUpstream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom, tcpSegmentOf } from '../support/frames';

const DST = parseIpv4('93.184.216.34');

/** A connection to DST:80 after the handshake; `data(seq, len)` sends guest bytes and returns what came back. */
function connection(synOptions: TcpOptions) {
  let now = 1_000;
  const out: TcpSegment[] = [];
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(now) },
    random: seededRandom(3).fill,
    upstream,
    output: (f) => {
      const seg = tcpSegmentOf(f);
      if (seg) out.push(seg);
    },
  });
  const send = (flags: number, seq: number, ack: number, payload = new Uint8Array(0), options?: TcpOptions) => {
    const seg = new Uint8Array(tcpHeaderLength(options) + payload.length);
    emitTcp({ srcPort: 40000, dstPort: 80, seq, ack, flags, window: 65535, options, payload }, seg, 0, GUEST_IP, DST);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg));
  };
  const ts = synOptions.timestamp ? () => ({ timestamp: { value: now, echo: 0 } }) : () => ({});
  send(SYN, 1000, 0, undefined, synOptions);
  upstream.tcp[0].connect();
  const ours = ((out.shift() as TcpSegment).seq + 1) >>> 0;
  send(ACK, 1001, ours, undefined, ts());
  return {
    upstream,
    data(seq: number, len: number): TcpSegment[] {
      out.length = 0;
      now += 1;
      send(ACK, seq, ours, new Uint8Array(len).fill(seq & 0xff), ts());
      stack.flush();
      return out.splice(0);
    },
    advance(ms: number): TcpSegment[] {
      now += ms;
      stack.poll();
      return out.splice(0);
    },
  };
}

describe('D-SACK: the guest sends data weft already has', () => {
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
