// Builders for hand-made frames, for unit tests only (integration tests use real guests).
import { emitArp, type ArpPacket } from '../../core/wire/arp';
import { emitEthernetHeader, ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet } from '../../core/wire/ethernet';
import { emitIcmp, ICMP_ECHO_REQUEST } from '../../core/wire/icmpv4';
import { emitIpv4Header, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LENGTH, parseIpv4Packet, type Ipv4HeaderRepr } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { emitTcpHeader, parseTcp, tcpHeaderLength, type TcpSegment } from '../../core/wire/tcp';
import { emitUdp } from '../../core/wire/udp';
import { BROADCAST_MAC, IPV4_ANY, IPV4_BROADCAST, parseIpv4, parseMac, type Ipv4Address } from '../../core/wire/address';

export const GUEST_MAC = parseMac('52:54:00:12:34:56');
export const GATEWAY_MAC = parseMac('52:55:0a:00:02:02');
export const GUEST_IP = parseIpv4('10.0.2.15');
export const GATEWAY_IP = parseIpv4('10.0.2.2');
export const DNS_IP = parseIpv4('10.0.2.3');

export function arpFrame(arp: ArpPacket, dstMac = BROADCAST_MAC, srcMac = arp.senderMac): Uint8Array {
  const f = new Uint8Array(ETHERNET_HEADER_LENGTH + 28);
  emitEthernetHeader(f, 0, dstMac, srcMac, ETHERTYPE_ARP);
  emitArp(arp, f, ETHERNET_HEADER_LENGTH);
  return f;
}

export function ipv4Frame(h: Omit<Ipv4HeaderRepr, 'payloadLength'>, payload: Uint8Array, srcMac = GUEST_MAC, dstMac = GATEWAY_MAC): Uint8Array {
  const f = new Uint8Array(ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + payload.length);
  emitEthernetHeader(f, 0, dstMac, srcMac, ETHERTYPE_IPV4);
  emitIpv4Header({ ...h, payloadLength: payload.length }, f, ETHERNET_HEADER_LENGTH);
  f.set(payload, ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH);
  return f;
}

export function icmpEcho(id: number, seq: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + data.length);
  emitIcmp({ type: ICMP_ECHO_REQUEST, code: 0, restOfHeader: ((id << 16) | seq) >>> 0, data }, out, 0);
  return out;
}

export function pingFrame(dst: Ipv4Address, size: number, seq = 1, src = GUEST_IP): Uint8Array {
  const data = new Uint8Array(size).map((_, i) => i & 0xff);
  return ipv4Frame({ src, dst, protocol: IPPROTO_ICMP, id: seq }, icmpEcho(0x1234, seq, data));
}

/** Splits an IPv4 payload into fragment frames of at most `chunk` bytes (a multiple of 8). */
export function fragmentFrames(h: Omit<Ipv4HeaderRepr, 'payloadLength'>, payload: Uint8Array, chunk: number): Uint8Array[] {
  const frames: Uint8Array[] = [];
  for (let off = 0; off < payload.length; off += chunk) {
    const part = payload.subarray(off, Math.min(payload.length, off + chunk));
    frames.push(ipv4Frame({ ...h, fragmentOffset: off, moreFragments: off + part.length < payload.length }, part));
  }
  return frames;
}

export function udpPayload(src: number, dst: number, srcPort: number, dstPort: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + data.length);
  emitUdp({ srcPort, dstPort, payload: data }, src, dst, out, 0);
  return out;
}

export { IPPROTO_ICMP, IPPROTO_UDP };

/** A deterministic PRNG (mulberry32) for tests: same seed, same bytes. */
export function seededRandom(seed: number): { next(): number; fill(out: Uint8Array): void } {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    fill(out) {
      for (let i = 0; i < out.length; i++) out[i] = (next() * 256) | 0;
    },
  };
}

/** A DHCP client message as busybox udhcpc builds it (BOOTREQUEST, magic cookie, options, END). */
export function dhcpClientPayload(type: number, mac: number, xid: number, extraOptions: number[] = []): Uint8Array {
  const out = new Uint8Array(300);
  out[0] = 1; // BOOTREQUEST
  out[1] = 1;
  out[2] = 6;
  new DataView(out.buffer).setUint32(4, xid);
  for (let i = 0; i < 6; i++) out[28 + i] = Math.floor(mac / 2 ** (8 * (5 - i))) & 0xff;
  out.set([0x63, 0x82, 0x53, 0x63], 236);
  const opts = [53, 1, type, 55, 4, 1, 3, 6, 15, ...extraOptions, 255];
  out.set(opts, 240);
  return out;
}

export function dhcpFrame(type: number, mac = GUEST_MAC, xid = 0x1234, extraOptions: number[] = []): Uint8Array {
  const udp = udpPayload(IPV4_ANY, IPV4_BROADCAST, 68, 67, dhcpClientPayload(type, mac, xid, extraOptions));
  return ipv4Frame({ src: IPV4_ANY, dst: IPV4_BROADCAST, protocol: IPPROTO_UDP, id: 1 }, udp, mac, BROADCAST_MAC);
}

/**
 * A TCP segment from the gateway to the guest as the stack emits it with segmentation offload: one
 * frame of any length, its TCP checksum complete or (`partial`) only the pseudo-header sum.
 */
export function tcpToGuestFrame(payload: Uint8Array, opts: { seq?: number; flags?: number; partial?: boolean; id?: number } = {}): Uint8Array {
  const repr = {
    srcPort: 80,
    dstPort: 40000,
    seq: opts.seq ?? 1000,
    ack: 1,
    flags: opts.flags ?? 0x18,
    window: 65535,
    options: { timestamp: { value: 7, echo: 9 } },
  };
  const tcpLength = tcpHeaderLength(repr.options) + payload.length;
  const f = new Uint8Array(ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + tcpLength);
  emitEthernetHeader(f, 0, GUEST_MAC, GATEWAY_MAC, ETHERTYPE_IPV4);
  emitIpv4Header({ src: GATEWAY_IP, dst: GUEST_IP, protocol: IPPROTO_TCP, payloadLength: tcpLength, id: opts.id ?? 100 }, f, ETHERNET_HEADER_LENGTH);
  const tcpAt = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH;
  f.set(payload, tcpAt + tcpHeaderLength(repr.options));
  emitTcpHeader(repr, payload.length, f, tcpAt, GATEWAY_IP, GUEST_IP, opts.partial === true);
  return f;
}

/** The TCP segment a frame from the stack carries (its payload copied), undefined for anything else; malformed frames throw. */
export function tcpSegmentOf(frame: Uint8Array): TcpSegment | undefined {
  const eth = parseEthernet(frame);
  if (isDrop(eth)) throw new Error(eth);
  const ip = parseIpv4Packet(eth.payload);
  if (isDrop(ip) || ip.protocol !== IPPROTO_TCP) return undefined;
  const seg = parseTcp(ip.payload);
  if (isDrop(seg)) throw new Error(seg);
  return { ...seg, payload: seg.payload.slice() };
}
