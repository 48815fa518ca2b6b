// Packet-level tests of the stack's active open into the guest (Stack.connectToGuest: `weft vm
// --forward`, the page's connectTcp, a relay publication): a scripted guest answers — or does not —
// and the test checks the exact segments and ARP requests that go out, and the reason the other
// side's stream is destroyed with (TcpStream.destroy(reason)).

import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { Stack } from '../../core/stack';
import type { TcpCloseReason, TcpStream, TcpStreamHandlers } from '../../core/upstream';
import { BROADCAST_MAC, parseIpv4, ZERO_MAC, type Ipv4Address } from '../../core/wire/address';
import { ARP_REQUEST, parseArp, type ArpPacket } from '../../core/wire/arp';
import { ETHERTYPE_ARP, parseEthernet } from '../../core/wire/ethernet';
import { IPPROTO_TCP, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { ACK, emitTcp, parseTcp, PSH, RST, SYN, tcpHeaderLength, type TcpOptions, type TcpRepr } from '../../core/wire/tcp';
import type { FlowEvent } from '../../core/stack-events';
import { FakeUpstream } from '../support/fake-upstream';
import { arpFrame, GATEWAY_IP, GATEWAY_MAC, GUEST_IP, GUEST_MAC, ipv4Frame, seededRandom } from '../support/frames';

const GUEST_PORT = 7000;
const T0 = 50_000;

/** A segment as the test compares it: the fields of a TcpRepr, the payload as text. */
type Seg = Required<Omit<TcpRepr, 'urgent' | 'payload'>> & { payload: string };

/** The other side of the connection (a forwarded host socket): what the stack did to it. */
class RecordingStream implements TcpStream {
  handlers!: TcpStreamHandlers;
  written: string[] = [];
  resumed = false;
  /** `[reason]` once destroyed (a one-element array, so "destroyed without a reason" shows). */
  destroyed: Array<TcpCloseReason | undefined> = [];
  destroyedAt: number | undefined;
  constructor(private readonly now: () => number) {}
  write(data: Uint8Array): boolean {
    this.written.push(new TextDecoder().decode(data));
    return true;
  }
  end(): void {}
  destroy(reason?: TcpCloseReason): void {
    this.destroyed.push(reason);
    this.destroyedAt = this.now();
  }
  pause(): void {}
  resume(): void {
    this.resumed = true;
  }
}

// Options off, so that every segment is exact (no timestamps, whose value is random per connection).
const TCP = { timestamps: false, sack: false, windowScaling: false };

function setup(opts: { arpAnswered: boolean; upstream?: FakeUpstream }) {
  let now = T0;
  const segs: Array<{ at: number; seg: Seg }> = [];
  const arps: Array<{ at: number; dst: number; arp: ArpPacket }> = [];
  const stack = new Stack({
    clock: { now: () => instant(now) },
    random: seededRandom(3).fill,
    upstream: opts.upstream,
    tcp: TCP,
    output: (f) => {
      const eth = parseEthernet(f);
      if (isDrop(eth)) throw new Error(eth);
      if (eth.ethertype === ETHERTYPE_ARP) {
        const arp = parseArp(eth.payload);
        if (isDrop(arp)) throw new Error(arp);
        arps.push({ at: now - T0, dst: eth.dst, arp });
        return;
      }
      const ip = parseIpv4Packet(eth.payload);
      if (isDrop(ip) || ip.protocol !== IPPROTO_TCP) return;
      const s = parseTcp(ip.payload);
      if (isDrop(s)) throw new Error(s);
      const { srcPort, dstPort, seq, ack, flags, window, options } = s;
      segs.push({ at: now - T0, seg: { srcPort, dstPort, seq, ack, flags, window, options, payload: new TextDecoder().decode(s.payload) } });
    },
  });
  const closes: FlowEvent[] = [];
  stack.on('flow-close', (e) => closes.push(e));
  // The guest speaks first (an ARP request for the gateway), so the stack knows its MAC.
  if (opts.arpAnswered) stack.input(arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: GATEWAY_IP }));
  arps.length = 0;
  const stream = new RecordingStream(() => now - T0);
  const open = (ip: Ipv4Address = GUEST_IP, s: RecordingStream = stream) =>
    stack.connectToGuest(
      GUEST_PORT,
      (h) => {
        s.handlers = h;
        return s;
      },
      ip,
    );
  /** The guest sends a segment to the port our SYN came from. */
  const send = (localPort: number, seg: { seq: number; ack?: number; flags: number; window?: number; options?: TcpOptions; payload?: string }) => {
    const payload = new TextEncoder().encode(seg.payload ?? '');
    const repr = {
      srcPort: GUEST_PORT,
      dstPort: localPort,
      seq: seg.seq,
      ack: seg.ack ?? 0,
      flags: seg.flags,
      window: seg.window ?? 65535,
      options: seg.options,
      payload,
    };
    const bytes = new Uint8Array(tcpHeaderLength(seg.options) + payload.length);
    emitTcp(repr, bytes, 0, GUEST_IP, GATEWAY_IP);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_TCP, id: 1 }, bytes));
  };
  /** Moves time to `ms` after the start, stopping at every deadline on the way (as the host's timer would). */
  const runUntil = (ms: number) => {
    for (let i = 0; i < 10_000; i++) {
      const d = stack.nextDeadline();
      if (d === undefined || d > T0 + ms) break;
      now = Math.max(now, d);
      stack.poll();
    }
    now = T0 + ms;
    stack.poll();
  };
  return { stack, segs, arps, closes, stream, open, send, runUntil, at: () => now - T0 };
}

/** Our SYN: no options but the MSS (the link's MTU − 40), and the window unscaled. */
const SYN_TEMPL = { dstPort: GUEST_PORT, ack: 0, flags: SYN, window: 65535, options: { mss: 1460 }, payload: '' };

/** Our first SYN's local port and initial sequence number. */
function firstSyn(segs: Array<{ seg: Seg }>): { port: number; iss: number } {
  const syn = segs[0].seg;
  expect(syn).toEqual({ ...SYN_TEMPL, srcPort: syn.srcPort, seq: syn.seq });
  expect(syn.srcPort).toBeGreaterThanOrEqual(49152);
  return { port: syn.srcPort, iss: syn.seq };
}

describe('active open into the guest: how it ends, and what the other side is told', () => {
  it('the guest answers the SYN with RST: the stream is destroyed with guest-refused, at once, and nothing more is sent', () => {
    const t = setup({ arpAnswered: true });
    expect(t.open()).toBe(true);
    const { port, iss } = firstSyn(t.segs);
    expect(t.segs).toHaveLength(1);

    // RFC 9293 §3.10.7.3: in SYN-SENT an RST counts only with an ACK of our SYN.
    t.send(port, { seq: 0, flags: RST });
    t.send(port, { seq: 0, ack: (iss + 2) >>> 0, flags: RST | ACK });
    expect(t.stream.destroyed).toEqual([]);

    t.send(port, { seq: 0, ack: (iss + 1) >>> 0, flags: RST | ACK }); // what Linux sends for a closed port
    expect(t.stream.destroyed).toEqual(['guest-refused']);
    expect(t.stream.destroyedAt).toBe(0);
    expect(t.stream.resumed).toBe(false);
    expect(t.closes.map((e) => e.reason)).toEqual(['guest-refused']);
    expect(t.segs).toHaveLength(1); // no RST for an RST
    expect(t.stack.counters().tcpConnections).toEqual({});

    t.runUntil(120_000);
    expect(t.segs).toHaveLength(1); // no SYN retransmission after the refusal
    expect(t.stream.destroyed).toEqual(['guest-refused']);
  });

  it('nobody answers ARP for the guest address: guest-unreachable when ARP gives up (3 s), not after the SYN retries (63 s)', () => {
    const t = setup({ arpAnswered: false });
    expect(t.open()).toBe(true);
    const request = { operation: ARP_REQUEST, senderMac: GATEWAY_MAC, senderIp: GATEWAY_IP, targetMac: ZERO_MAC, targetIp: GUEST_IP };
    expect(t.arps).toEqual([{ at: 0, dst: BROADCAST_MAC, arp: request }]);
    expect(t.segs).toEqual([]); // the SYN waits in the ARP queue

    t.runUntil(2999);
    expect(t.arps.map((a) => a.at)).toEqual([0, 1000, 2000]);
    expect(t.arps.every((a) => a.dst === BROADCAST_MAC && a.arp.targetIp === GUEST_IP)).toBe(true);
    expect(t.stream.destroyed).toEqual([]);

    t.runUntil(3000);
    expect(t.stream.destroyed).toEqual(['guest-unreachable']);
    expect(t.stream.destroyedAt).toBe(3000);
    expect(t.closes.map((e) => e.reason)).toEqual(['guest-unreachable']);
    // The first SYN and its retransmission at 1 s waited for ARP, and were dropped with it.
    expect(t.stack.counters().drops).toEqual({ 'arp-unresolved': 2 });

    // Nothing after: no SYN that would start ARP over, for the rest of what was a minute.
    t.runUntil(120_000);
    expect(t.arps).toHaveLength(3);
    expect(t.segs).toEqual([]);
    expect(t.stack.nextDeadline()).toBeUndefined();
  });

  it('ARP giving up ends only the opens to that address; the queue bound still holds', () => {
    const t = setup({ arpAnswered: true });
    const lost = parseIpv4('10.0.2.77');
    const streams = Array.from({ length: 80 }, () => new RecordingStream(t.at));
    for (const s of streams) expect(t.open(lost, s)).toBe(true);
    expect(t.open()).toBe(true); // to the guest that answers ARP
    expect(t.arps).toHaveLength(1); // one request for all 80 SYNs
    expect(t.stack.counters().drops).toEqual({ 'arp-queue-full': 16 }); // 64 frames wait, the rest are counted

    t.runUntil(3000);
    expect(streams.map((s) => s.destroyed)).toEqual(streams.map(() => ['guest-unreachable']));
    // 64 SYNs waited; the other 16, and all 80 retransmissions at 1 s, found the queue full.
    expect(t.stack.counters().drops).toEqual({ 'arp-queue-full': 16 + 80, 'arp-unresolved': 64 });
    expect(t.stream.destroyed).toEqual([]);
    expect(t.stack.counters().tcpConnections).toEqual({ 'syn-sent': 1 });
  });

  it('ARP resolved but the guest never answers a SYN: guest-unreachable after the last retry (1+2+4+8+16+32 s)', () => {
    const t = setup({ arpAnswered: true });
    expect(t.open()).toBe(true);
    const { port, iss } = firstSyn(t.segs);

    t.runUntil(62_999);
    // Five retransmissions, each the same SYN, the timeout doubling from 1 s.
    expect(t.segs.map((s) => s.at)).toEqual([0, 1000, 3000, 7000, 15_000, 31_000]);
    for (const { seg } of t.segs) expect(seg).toEqual({ ...SYN_TEMPL, srcPort: port, seq: iss });
    expect(t.stream.destroyed).toEqual([]);

    t.runUntil(63_000);
    expect(t.stream.destroyed).toEqual(['guest-unreachable']);
    expect(t.stream.destroyedAt).toBe(63_000);
    expect(t.closes.map((e) => e.reason)).toEqual(['guest-unreachable']);
    expect(t.segs).toHaveLength(6); // no RST: the guest never learnt a sequence number of ours
    expect(t.arps).toEqual([]);
  });

  it('an established forwarded connection reset by the guest: the stream is destroyed with guest-reset', () => {
    const t = setup({ arpAnswered: true });
    expect(t.open()).toBe(true);
    const { port, iss } = firstSyn(t.segs);
    const ours = (iss + 1) >>> 0;

    t.send(port, { seq: 5000, ack: ours, flags: SYN | ACK, options: { mss: 1460 } });
    expect(t.segs[1].seg).toEqual({ srcPort: port, dstPort: GUEST_PORT, seq: ours, ack: 5001, flags: ACK, window: 65535, options: {}, payload: '' });
    expect(t.stream.resumed).toBe(true);

    t.send(port, { seq: 5001, ack: ours, flags: ACK | PSH, payload: 'hello' });
    expect(t.stream.written).toEqual(['hello']);

    // RFC 5961 §3: an RST in the window but not at RCV.NXT only draws a challenge ACK.
    const before = t.segs.length;
    t.send(port, { seq: 5010, flags: RST });
    expect(t.segs.slice(before).map((s) => s.seg)).toEqual([
      { srcPort: port, dstPort: GUEST_PORT, seq: ours, ack: 5006, flags: ACK, window: 65535, options: {}, payload: '' },
    ]);
    expect(t.stream.destroyed).toEqual([]);

    t.send(port, { seq: 5006, flags: RST });
    expect(t.stream.destroyed).toEqual(['guest-reset']);
    expect(t.closes.map((e) => e.reason)).toEqual(['guest-reset']);
    expect(t.segs).toHaveLength(before + 1); // nothing answers the RST
  });

  it('a flow the guest opened and then reset: its upstream stream is told guest-reset too', () => {
    const upstream = new FakeUpstream();
    const t = setup({ arpAnswered: true, upstream });
    const dst = parseIpv4('93.184.216.34');
    const syn = new Uint8Array(tcpHeaderLength({ mss: 1460 }));
    emitTcp({ srcPort: 40000, dstPort: 80, seq: 1000, ack: 0, flags: SYN, window: 65535, options: { mss: 1460 } }, syn, 0, GUEST_IP, dst);
    t.stack.input(ipv4Frame({ src: GUEST_IP, dst, protocol: IPPROTO_TCP, id: 2 }, syn));
    upstream.tcp[0].connect();
    const rst = new Uint8Array(20);
    emitTcp({ srcPort: 40000, dstPort: 80, seq: 1001, ack: 0, flags: RST, window: 0 }, rst, 0, GUEST_IP, dst);
    t.stack.input(ipv4Frame({ src: GUEST_IP, dst, protocol: IPPROTO_TCP, id: 3 }, rst));
    expect(upstream.tcp[0].destroyReason).toBe('guest-reset');
  });
});
