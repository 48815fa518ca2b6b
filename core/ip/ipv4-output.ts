// The IPv4 output path: every datagram weft sends to a guest — TCP, UDP, ICMP, DHCP — leaves
// through here. It numbers datagrams (IP ID), fragments those larger than the MTU, finds the next
// hop's MAC with ARP (frames wait in the neighbour cache's bounded queue meanwhile) and hands frames
// to the Ethernet port. An IPv6 path (NDP instead of ARP, no fragmenting on the way) would sit
// beside it on the same port.

import type { Clock } from '../clock';
import type { StackLimits } from '../config';
import type { EthernetPort } from '../link/ethernet-port';
import type { RandomSource } from '../random';
import type { FlowEndpoint } from '../upstream';
import { BROADCAST_MAC, IPV4_BROADCAST, ZERO_MAC, type Ipv4Address, type MacAddress } from '../wire/address';
import { ARP_PACKET_LENGTH, ARP_REPLY, ARP_REQUEST, emitArp, type ArpPacket } from '../wire/arp';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../wire/ethernet';
import { emitIpv4Header, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LENGTH } from '../wire/ipv4';
import type { DropReason } from '../wire/parse-result';
import { emitTcpHeader, type SegmentPayload, tcpHeaderLength, type TcpRepr } from '../wire/tcp';
import { emitUdp, UDP_HEADER_LENGTH } from '../wire/udp';
import { NeighborCache } from './neighbor-cache';

const MAX_PAYLOAD = 65535 - IPV4_HEADER_LENGTH;
/**
 * Payloads from this size on go out from where the sender keeps them, where the link can send a
 * frame in two parts: below it, a copy costs less than the link's extra piece.
 */
const GATHER_MIN_PAYLOAD = 1024;

export interface Ipv4OutputOptions {
  /** Link MTU (IP packet size). */
  mtu: number;
  /** The router's own address: the sender of its ARP requests. */
  gateway: Ipv4Address;
  /** The subnet's directed broadcast: sent to the broadcast MAC, never resolved. */
  subnetBroadcast: Ipv4Address;
  limits: Pick<StackLimits, 'arpCacheEntries' | 'arpPendingFrames'>;
  clock: Clock;
  random: RandomSource;
  drop: (reason: DropReason, count?: number) => void;
  /**
   * ARP for `ip` went unanswered (every retry): whatever waits on that address should give up
   * now. Called from poll(), after its frames were dropped.
   */
  unresolved?: (ip: Ipv4Address) => void;
}

export class Ipv4Output {
  private readonly neighbors: NeighborCache;
  private readonly mtu: number;
  private readonly gateway: Ipv4Address;
  private readonly subnetBroadcast: Ipv4Address;
  private readonly clock: Clock;
  private readonly drop: Ipv4OutputOptions['drop'];
  private readonly unresolved: Ipv4OutputOptions['unresolved'];
  private nextId: number;
  private fragments = 0;

  constructor(
    private readonly port: EthernetPort,
    opts: Ipv4OutputOptions,
  ) {
    this.mtu = opts.mtu;
    this.gateway = opts.gateway;
    this.subnetBroadcast = opts.subnetBroadcast;
    this.clock = opts.clock;
    this.drop = opts.drop;
    this.unresolved = opts.unresolved;
    this.neighbors = new NeighborCache(
      {
        maxEntries: opts.limits.arpCacheEntries,
        maxPendingFrames: opts.limits.arpPendingFrames,
        entryLifetimeMs: 20 * 60_000,
        retryIntervalMs: 1000,
        maxAttempts: 3,
      },
      opts.drop,
    );
    const seed = new Uint8Array(2);
    opts.random(seed);
    this.nextId = (seed[0] << 8) | seed[1];
  }

  get fragmentsSent(): number {
    return this.fragments;
  }

  get arpCacheEntries(): number {
    return this.neighbors.size;
  }

  /**
   * Sends an IPv4 datagram whose payload `fill` writes. Fits in the MTU (or `unsegmented`: a TCP
   * segment the link segments) → built in place in the frame; larger → fragmented. Without
   * `dstMac`, the destination is resolved with ARP. `filledFrom`: `fill` writes every payload byte
   * from this offset on (see EthernetPort.alloc).
   */
  send(
    src: Ipv4Address,
    dst: Ipv4Address,
    protocol: number,
    payloadLength: number,
    fill: (buf: Uint8Array, off: number) => number,
    dstMac?: MacAddress,
    unsegmented = false,
    filledFrom?: number,
  ): void {
    const id = this.takeId();
    const mtuPayload = this.mtu - IPV4_HEADER_LENGTH;
    if (payloadLength <= mtuPayload || (unsegmented && payloadLength <= MAX_PAYLOAD)) {
      const frame = this.port.alloc(IPV4_HEADER_LENGTH + payloadLength, filledFrom === undefined ? undefined : IPV4_HEADER_LENGTH + filledFrom);
      const off = ETHERNET_HEADER_LENGTH;
      emitIpv4Header({ src, dst, protocol, payloadLength, id }, frame, off);
      fill(frame, off + IPV4_HEADER_LENGTH);
      return this.sendFrame(frame, dst, dstMac);
    }
    if (payloadLength > MAX_PAYLOAD) return this.drop('ipv4-too-large-to-send');
    const whole = new Uint8Array(payloadLength);
    fill(whole, 0);
    const chunk = mtuPayload & ~7;
    for (let offset = 0; offset < payloadLength; offset += chunk) {
      const len = Math.min(chunk, payloadLength - offset);
      const moreFragments = offset + len < payloadLength;
      const frame = this.port.alloc(IPV4_HEADER_LENGTH + len);
      const off = ETHERNET_HEADER_LENGTH;
      emitIpv4Header({ src, dst, protocol, payloadLength: len, id, moreFragments, fragmentOffset: offset }, frame, off);
      frame.set(whole.subarray(offset, offset + len), off + IPV4_HEADER_LENGTH);
      this.fragments++;
      this.sendFrame(frame, dst, dstMac);
    }
  }

  sendTcp(src: Ipv4Address, dst: Ipv4Address, repr: TcpRepr, payloadLength: number, payload?: SegmentPayload): void {
    const headerLength = tcpHeaderLength(repr.options);
    // Only a connection opened while segmentation offload was on sends segments longer than the
    // MTU (negotiate()). Such a segment goes out whole, with a partial checksum as from a NIC
    // driver — even after offload was turned off, since the link splits what it cannot take — and
    // summing 64 KiB here would be wasted.
    const partial = IPV4_HEADER_LENGTH + headerLength + payloadLength > this.mtu;
    if (payload && payloadLength >= GATHER_MIN_PAYLOAD && this.port.gathers && this.sendTcpGathered(src, dst, repr, headerLength, payload, partial)) return;
    this.send(
      src,
      dst,
      IPPROTO_TCP,
      headerLength + payloadLength,
      (buf, off) => {
        payload?.copyTo(buf, off + headerLength);
        return emitTcpHeader(repr, payloadLength, buf, off, src, dst, partial);
      },
      undefined,
      partial,
      // The header is written field by field over zeros (its options may leave gaps); the payload is copied whole.
      payload ? headerLength : undefined,
    );
  }

  /**
   * A segment as two parts, its headers and its payload where the sender keeps it: at a 64 KiB
   * MTU the copy into each frame was the largest cost left on a download after the link's write.
   * False (nothing sent) when the payload is not in one piece or the guest's MAC is not known yet;
   * the caller then builds the whole frame.
   */
  private sendTcpGathered(src: Ipv4Address, dst: Ipv4Address, repr: TcpRepr, headerLength: number, payload: SegmentPayload, partial: boolean): boolean {
    const bytes = payload.view();
    if (bytes === undefined) return false;
    const dstMac = this.nextHopMac(dst, this.clock.now());
    if (dstMac === undefined) return false;
    const head = this.port.allocHead(IPV4_HEADER_LENGTH + headerLength);
    const off = ETHERNET_HEADER_LENGTH;
    emitIpv4Header({ src, dst, protocol: IPPROTO_TCP, payloadLength: headerLength + bytes.length, id: this.takeId() }, head, off);
    emitTcpHeader(repr, bytes.length, head, off + IPV4_HEADER_LENGTH, src, dst, partial, bytes);
    this.port.sendGathered(head, bytes, dstMac, ETHERTYPE_IPV4);
    return true;
  }

  private takeId(): number {
    const id = this.nextId;
    this.nextId = (this.nextId + 1) & 0xffff;
    return id;
  }

  sendUdp(from: FlowEndpoint, to: FlowEndpoint, payload: Uint8Array): void {
    if (payload.length > MAX_PAYLOAD - UDP_HEADER_LENGTH) return this.drop('udp-too-large');
    const d = { srcPort: from.port, dstPort: to.port, payload };
    this.send(from.ip, to.ip, IPPROTO_UDP, UDP_HEADER_LENGTH + payload.length, (buf, off) => emitUdp(d, from.ip, to.ip, buf, off));
  }

  /** Records that `ip` is at `mac` (the guest said so), and sends the frames that waited for it. */
  learn(ip: Ipv4Address, mac: MacAddress, now: number): void {
    for (const frame of this.neighbors.learn(ip, mac, now)) this.port.send(frame, mac, ETHERTYPE_IPV4);
  }

  /** Answers an ARP request for one of the router's addresses. */
  answerArp(request: ArpPacket): void {
    this.sendArp(request.senderMac, {
      operation: ARP_REPLY,
      senderMac: this.port.mac,
      senderIp: request.targetIp,
      targetMac: request.senderMac,
      targetIp: request.senderIp,
    });
  }

  /** Retries the ARP requests that are due, and gives up on those that ran out of tries. */
  poll(now: number): void {
    const { retry, unresolved } = this.neighbors.poll(now);
    for (const ip of retry) this.sendArpRequest(ip);
    // After the loop over the cache: giving up may send again (to this address, starting ARP over).
    for (const ip of unresolved) this.unresolved?.(ip);
  }

  nextDeadline(): number | undefined {
    return this.neighbors.nextDeadline();
  }

  private sendFrame(frame: Uint8Array, dstIp: Ipv4Address, dstMac: MacAddress | undefined): void {
    // Read here, not passed in: TCP and UDP send from upstream callbacks, outside input()/poll().
    const now = this.clock.now();
    dstMac ??= this.nextHopMac(dstIp, now);
    if (dstMac === undefined) {
      if (this.neighbors.enqueue(dstIp, frame, now)) this.sendArpRequest(dstIp);
      return;
    }
    this.port.send(frame, dstMac, ETHERTYPE_IPV4);
  }

  /** The MAC a datagram to `dstIp` goes to: broadcast, or the neighbour's if ARP has resolved it. */
  private nextHopMac(dstIp: Ipv4Address, now: number): MacAddress | undefined {
    if (dstIp === IPV4_BROADCAST || dstIp === this.subnetBroadcast) return BROADCAST_MAC;
    return this.neighbors.lookup(dstIp, now);
  }

  private sendArpRequest(ip: Ipv4Address): void {
    this.sendArp(BROADCAST_MAC, { operation: ARP_REQUEST, senderMac: this.port.mac, senderIp: this.gateway, targetMac: ZERO_MAC, targetIp: ip });
  }

  private sendArp(dstMac: MacAddress, arp: ArpPacket): void {
    const frame = this.port.alloc(ARP_PACKET_LENGTH);
    emitArp(arp, frame, ETHERNET_HEADER_LENGTH);
    this.port.send(frame, dstMac, ETHERTYPE_ARP);
  }
}
