// Property-based fuzzing of the whole Stack: sequences of frames — well-formed ones for every
// protocol, TCP segments that follow or break the conversation, mutated and random bytes —
// interleaved with time passing and an upstream that connects, sends, ends and fails. Whatever
// happens, no internal error may be hit (the stack counts one for any exception it catches), and
// every frame the stack sends must be well-formed.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Stack } from '../../core/stack';
import { UpstreamError } from '../../core/upstream';
import { IPV4_BROADCAST, parseIpv4, ZERO_MAC } from '../../core/wire/address';
import { ARP_REPLY, ARP_REQUEST } from '../../core/wire/arp';
import { DnsType, emitDnsQuery, encodeDnsName } from '../../core/wire/dns';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV4, parseEthernet } from '../../core/wire/ethernet';
import { IPPROTO_TCP, IPPROTO_UDP, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { ACK, emitTcp, FIN, parseTcp, PSH, RST, SYN, tcpHeaderLength, verifyTcpChecksum, type TcpOptions } from '../../core/wire/tcp';
import { parseUdp } from '../../core/wire/udp';
import { FakeUpstream, type FakeTcpStream } from '../support/fake-upstream';
import {
  arpFrame,
  DNS_IP,
  dhcpFrame,
  fragmentFrames,
  GATEWAY_IP,
  GUEST_IP,
  GUEST_MAC,
  ipv4Frame,
  pingFrame,
  seededRandom,
  udpPayload,
} from '../support/frames';
import { runs } from '../support/fuzz';
import { instant } from '../../core/clock';

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const REMOTE = parseIpv4('93.184.216.34');
const GUEST_PORTS = [40_000, 40_001, 40_002];

const tcpOptions: fc.Arbitrary<TcpOptions> = fc.record(
  {
    mss: fc.oneof(fc.constant(1460), u16),
    windowScale: fc.integer({ min: 0, max: 14 }),
    sackPermitted: fc.constant(true),
    sack: fc.array(fc.tuple(u32, u32), { minLength: 1, maxLength: 3 }),
    timestamp: fc.record({ value: u32, echo: u32 }),
  },
  { requiredKeys: [] },
);

/** A sequence number: the one the conversation expects, one near it, or any. */
function relative(near: number) {
  return fc.oneof(
    { weight: 4, arbitrary: fc.constant({ mode: 'expect' as const, n: 0 }) },
    { weight: 1, arbitrary: fc.integer({ min: -near, max: near }).map((n) => ({ mode: 'near' as const, n })) },
    { weight: 1, arbitrary: u32.map((n) => ({ mode: 'any' as const, n })) },
  );
}
const pick = (r: { mode: 'expect' | 'near' | 'any'; n: number }, expected: number) => (r.mode === 'any' ? r.n : (expected + r.n) >>> 0);

/** A TCP segment from the guest; 'expect' fields follow the conversation so far, the others break it. */
const tcpAction = fc.record({
  kind: fc.constant('tcp' as const),
  port: fc.integer({ min: 0, max: GUEST_PORTS.length - 1 }),
  flags: fc.oneof({ weight: 6, arbitrary: fc.constantFrom(SYN, ACK, ACK | PSH, ACK | FIN, RST, RST | ACK) }, { weight: 1, arbitrary: u8 }),
  seq: relative(70_000),
  ack: relative(3000),
  payload: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 1460 }), fc.integer({ min: 1, max: 9000 })),
  window: fc.oneof(fc.constant(65535), fc.constant(0), u16),
  options: tcpOptions,
  /** Fragment the IP packet (8-byte-aligned pieces). */
  fragment: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 100 }).map((n) => n * 8) }),
});

const otherFrame = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 8 }), u32).map(([type, xid]) => dhcpFrame(type, GUEST_MAC, xid, [50, 4, 10, 0, 2, 15])),
  fc
    .constantFrom(ARP_REQUEST, ARP_REPLY)
    .map((operation) => arpFrame({ operation, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: GATEWAY_IP })),
  fc.tuple(fc.constantFrom(GATEWAY_IP, DNS_IP, REMOTE), fc.integer({ min: 0, max: 3000 })).map(([dst, size]) => pingFrame(dst, size)),
  fc
    .tuple(fc.constantFrom('example.com', 'gateway.weft.internal', 'x.weft.internal'), fc.constantFrom(DnsType.A, DnsType.AAAA, DnsType.PTR), u16)
    .map(([name, type, id]) =>
      ipv4Frame(
        { src: GUEST_IP, dst: DNS_IP, protocol: IPPROTO_UDP, id: 9 },
        udpPayload(GUEST_IP, DNS_IP, 5353, 53, emitDnsQuery({ id, nameWire: encodeDnsName(name), type })),
      ),
    ),
  fc
    .tuple(fc.constantFrom(REMOTE, GATEWAY_IP, DNS_IP, parseIpv4('10.0.2.99'), IPV4_BROADCAST), u16, fc.uint8Array({ maxLength: 600 }))
    .map(([dst, port, data]) => ipv4Frame({ src: GUEST_IP, dst, protocol: IPPROTO_UDP, id: 10 }, udpPayload(GUEST_IP, dst, 5000, port, data))),
  fc
    .tuple(fc.integer({ min: 1, max: 400 }), fc.integer({ min: 1, max: 60 }))
    .map(([size, chunk]) => fragmentFrames({ src: GUEST_IP, dst: GATEWAY_IP, protocol: 1, id: 77 }, pingFrame(GATEWAY_IP, size * 8).subarray(34), chunk * 8)),
);

const edits = fc.array(fc.tuple(fc.nat(), u8), { minLength: 1, maxLength: 4 });

const action = fc.oneof(
  { weight: 10, arbitrary: tcpAction },
  // A whole handshake (SYN, upstream connect, ACK) on one port, so the rest meets established connections.
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('open' as const), port: fc.integer({ min: 0, max: GUEST_PORTS.length - 1 }), options: tcpOptions }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('other' as const), frames: otherFrame.map((f) => (Array.isArray(f) ? f : [f])) }) },
  // Mutate the last frame sent (or the last one built): flips anywhere, checksums left stale or not.
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('mutate' as const), edits, truncate: fc.option(fc.nat()) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('noise' as const), bytes: fc.uint8Array({ maxLength: 200 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant('time' as const), ms: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 120_000 })) }),
  },
  {
    weight: 5,
    arbitrary: fc.record({
      kind: fc.constant('upstream' as const),
      which: fc.nat(),
      op: fc.constantFrom('connect', 'data', 'end', 'fail', 'close', 'pause-writes', 'drain', 'udp-datagram', 'udp-error'),
      size: fc.integer({ min: 0, max: 70_000 }),
    }),
  },
);

const stackConfig = fc.record({
  mtu: fc.constantFrom(576, 1500, 9000),
  batchAcks: fc.boolean(),
  sack: fc.boolean(),
  timestamps: fc.boolean(),
  windowScaling: fc.boolean(),
  receiveBufferBytes: fc.constantFrom(4096, 65_536, 262_144),
  sendBufferBytes: fc.constantFrom(4096, 65_536),
  maxHalfOpen: fc.integer({ min: 1, max: 4 }),
  maxConnections: fc.integer({ min: 1, max: 6 }),
  maxTimeWait: fc.integer({ min: 1, max: 3 }),
});

/** Drives one upstream stream within the Upstream contract: connect once, nothing after close or destroy. */
interface StreamState {
  connected: boolean;
  ended: boolean;
  closed: boolean;
}

describe('Stack under arbitrary frame sequences', () => {
  it('never hits an internal error, and sends only well-formed frames', () => {
    fc.assert(
      fc.property(stackConfig, fc.array(action, { minLength: 10, maxLength: 80 }), (cfg, actions) => {
        let now = 1_000;
        const upstream = new FakeUpstream();
        const state = new Map<FakeTcpStream, StreamState>();
        /** Per guest port: the next sequence number the stack expects and the next it will send. */
        const conv = GUEST_PORTS.map(() => ({ rcvNxt: 1000, sndNxt: 0 }));
        const stack = new Stack({
          clock: { now: () => instant(now) },
          random: seededRandom(actions.length).fill,
          upstream,
          network: { mtu: cfg.mtu },
          batchAcks: cfg.batchAcks,
          tcp: {
            sack: cfg.sack,
            timestamps: cfg.timestamps,
            windowScaling: cfg.windowScaling,
            receiveBufferBytes: cfg.receiveBufferBytes,
            sendBufferBytes: cfg.sendBufferBytes,
            maxHalfOpen: cfg.maxHalfOpen,
            maxConnections: cfg.maxConnections,
            maxTimeWait: cfg.maxTimeWait,
            connectTimeoutMs: 5000,
            timeWaitMs: 2000,
          },
          output: (f) => checkOutput(f, cfg.mtu, conv),
        });
        let last: Uint8Array = pingFrame(GATEWAY_IP, 10);
        const input = (f: Uint8Array) => {
          last = f;
          stack.input(f);
          if (cfg.batchAcks) stack.flush();
        };
        const sendTcp = (port: number, seq: number, ack: number, flags: number, window: number, options: TcpOptions, payload: Uint8Array, fragment = 0) => {
          const seg = new Uint8Array(tcpHeaderLength(options) + payload.length);
          emitTcp({ srcPort: GUEST_PORTS[port], dstPort: 80, seq, ack, flags, window, options, payload }, seg, 0, GUEST_IP, REMOTE);
          const h = { src: GUEST_IP, dst: REMOTE, protocol: IPPROTO_TCP, id: now & 0xffff };
          if (fragment > 0) for (const f of fragmentFrames(h, seg, fragment)) input(f);
          else input(ipv4Frame(h, seg));
        };
        for (const a of actions) {
          switch (a.kind) {
            case 'tcp': {
              const c = conv[a.port];
              const seq = pick(a.seq, c.rcvNxt);
              const ack = pick(a.ack, c.sndNxt);
              const payload = new Uint8Array(a.payload).fill(0x61);
              if (a.flags & SYN && !(a.flags & ACK)) c.rcvNxt = (seq + 1) >>> 0;
              else if (a.seq.mode === 'expect') c.rcvNxt = (seq + payload.length + (a.flags & FIN ? 1 : 0)) >>> 0;
              sendTcp(a.port, seq, ack, a.flags, a.window, a.options, payload, a.fragment);
              break;
            }
            case 'open': {
              const c = conv[a.port];
              const opened = upstream.tcp.length;
              sendTcp(a.port, c.rcvNxt, 0, SYN, 65535, a.options, new Uint8Array(0));
              c.rcvNxt = (c.rcvNxt + 1) >>> 0;
              if (upstream.tcp.length > opened) driveUpstream(upstream, state, upstream.tcp.length - 1, 'connect', 0);
              sendTcp(a.port, c.rcvNxt, c.sndNxt, ACK, 65535, a.options.timestamp ? { timestamp: a.options.timestamp } : {}, new Uint8Array(0));
              break;
            }
            case 'other':
              for (const f of a.frames) input(f);
              break;
            case 'mutate': {
              let f = last.slice();
              for (const [pos, v] of a.edits) f[pos % f.length] = v;
              if (a.truncate !== null) f = f.subarray(0, a.truncate % (f.length + 1));
              input(f);
              break;
            }
            case 'noise':
              input(a.bytes);
              break;
            case 'time':
              now += a.ms;
              stack.poll();
              break;
            case 'upstream':
              driveUpstream(upstream, state, a.which, a.op, a.size);
              if (cfg.batchAcks) stack.flush();
              break;
          }
          const c = stack.counters();
          expect(c.drops['internal-error'] ?? 0, `internal error after ${JSON.stringify(a).slice(0, 200)}`).toBe(0);
          const total = Object.values(c.tcpConnections).reduce((n, k) => n + k, 0);
          expect(total).toBeLessThanOrEqual(cfg.maxConnections);
        }
        now += 600_000;
        stack.poll();
        expect(stack.counters().drops['internal-error'] ?? 0).toBe(0);
      }),
      runs(501, 400, 0.1),
    );
  });
});

/** Every frame the stack sends parses, with valid checksums, within the MTU; TCP ones update the conversation. */
function checkOutput(f: Uint8Array, mtu: number, conv: Array<{ rcvNxt: number; sndNxt: number }>): void {
  const eth = parseEthernet(f);
  if (isDrop(eth)) throw new Error(`stack sent a bad frame: ${eth}`);
  expect(f.length).toBeLessThanOrEqual(ETHERNET_HEADER_LENGTH + mtu);
  if (eth.ethertype !== ETHERTYPE_IPV4) return;
  const ip = parseIpv4Packet(eth.payload);
  if (isDrop(ip)) throw new Error(`stack sent a bad IPv4 packet: ${ip}`);
  if (ip.moreFragments || ip.fragmentOffset !== 0) return;
  if (ip.protocol === IPPROTO_UDP) {
    const udp = parseUdp(ip.payload, ip.src, ip.dst);
    if (isDrop(udp)) throw new Error(`stack sent a bad UDP datagram: ${udp}`);
  }
  if (ip.protocol !== IPPROTO_TCP) return;
  expect(verifyTcpChecksum(ip.payload, ip.src, ip.dst), 'TCP checksum of a sent segment').toBe(true);
  const seg = parseTcp(ip.payload);
  if (isDrop(seg)) throw new Error(`stack sent a bad TCP segment: ${seg}`);
  const k = GUEST_PORTS.indexOf(seg.dstPort);
  if (k < 0 || seg.flags & RST) return;
  conv[k].sndNxt = (seg.seq + seg.payload.length + (seg.flags & SYN ? 1 : 0) + (seg.flags & FIN ? 1 : 0)) >>> 0;
  if (seg.flags & ACK) conv[k].rcvNxt = seg.ack;
}

function driveUpstream(upstream: FakeUpstream, state: Map<FakeTcpStream, StreamState>, which: number, op: string, size: number): void {
  if (op === 'udp-datagram' || op === 'udp-error') {
    const flow = upstream.udp[which % Math.max(1, upstream.udp.length)];
    if (!flow || flow.closed) return;
    if (op === 'udp-datagram') flow.handlers.onDatagram(new Uint8Array(size % 2000), flow.dst);
    else flow.handlers.onError(new UpstreamError('refused', 'port unreachable'));
    return;
  }
  const s = upstream.tcp[which % Math.max(1, upstream.tcp.length)];
  if (!s || s.destroyed) return;
  const st = state.get(s) ?? { connected: false, ended: false, closed: false };
  state.set(s, st);
  if (st.closed) return;
  switch (op) {
    case 'connect':
      if (st.connected) return;
      st.connected = true;
      s.connect();
      return;
    case 'data':
      if (!st.connected || st.ended || s.paused) return;
      s.send(new Uint8Array(size).fill(0x62));
      return;
    case 'end':
      if (!st.connected || st.ended) return;
      st.ended = true;
      s.finish();
      return;
    case 'fail':
      st.closed = true;
      s.fail(st.connected ? 'reset' : 'refused');
      return;
    case 'close':
      if (!st.connected) return;
      st.closed = true;
      s.handlers.onClose();
      return;
    case 'pause-writes':
      s.highWaterMark = 0;
      return;
    case 'drain':
      s.highWaterMark = Infinity;
      s.handlers.onDrain();
      return;
  }
}
