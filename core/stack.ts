// The stack: one virtual Ethernet link with weft's router on it. It is sans-I/O — frames come in
// through input(), go out through the output callback, and time only moves when poll(now) is
// called — so the same code runs in a Web Worker, in Node, and in deterministic tests.

import { DEFAULT_LIMITS, DEFAULT_TCP, DEFAULT_UDP, resolveNetworkConfig, type NetworkConfig, type StackLimits, type TcpConfig, type UdpConfig } from './config';
import { TypedEvents } from './events';
import { Ipv4Reassembler } from './ip/ipv4-reassembly';
import { NeighborCache } from './ip/neighbor-cache';
import { DhcpServer } from './services/dhcp-server';
import { DnsServer, weftLocalRecords, type DnsForwarder, type DnsServerCounters } from './services/dns-server';
import { LocalServicesUpstream } from './services/local-services';
import { TcpFlowTable, type TcpFlowEvent } from './tcp/tcp-flow-table';
import { FrameAllocator } from './frame-allocator';
import { TimerQueue } from './timer-queue';
import { UdpNat, type UdpFlowEvent } from './udp/udp-nat';
import type { FlowEndpoint, TcpStream, TcpStreamHandlers, Upstream, UpstreamError } from './upstream';
import { BROADCAST_MAC, IPV4_BROADCAST, isGroupMac, prefixMask, type Ipv4Address, type MacAddress } from './wire/address';
import { ARP_REPLY, ARP_REQUEST, emitArp, parseArp, type ArpPacket } from './wire/arp';
import { parseDhcp } from './wire/dhcp';
import { emitEthernetHeader, ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet, type EthernetFrame } from './wire/ethernet';
import { emitIcmp, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_UNREACH_ADMIN, ICMP_UNREACH_HOST, ICMP_UNREACH_PORT, parseIcmp } from './wire/icmpv4';
import { emitIpv4Header, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPV4_HEADER_LENGTH, parseIpv4Packet } from './wire/ipv4';
import { emitTcpHeader, parseTcp, tcpHeaderLength, verifyTcpChecksum, type TcpRepr } from './wire/tcp';
import { isDrop, type DropReason } from './wire/parse-result';
import { emitUdp, parseUdp, UDP_HEADER_LENGTH } from './wire/udp';

export interface Clock {
  now(): number;
}
/** Fills `out` with random bytes (crypto.getRandomValues in a page, crypto.randomFillSync in Node). */
export type RandomSource = (out: Uint8Array) => void;

export interface LeaseEvent {
  mac: MacAddress;
  ip: Ipv4Address;
  hostname?: string;
  expiresAt: number;
}

export interface DropEvent {
  reason: DropReason;
  count: number;
}

export type FlowEvent = TcpFlowEvent | UdpFlowEvent;

export interface StackEvents {
  lease: LeaseEvent;
  drop: DropEvent;
  'flow-open': FlowEvent;
  'flow-close': FlowEvent;
}

export interface StackOptions {
  network?: Partial<NetworkConfig>;
  limits?: Partial<StackLimits>;
  tcp?: Partial<TcpConfig>;
  udp?: Partial<UdpConfig>;
  /** Where guest TCP and UDP flows go. Without one, they fail as unreachable. */
  upstream?: Upstream;
  /** The DNS server on the DNS address (UDP and TCP port 53). */
  dns?: StackDnsOptions;
  /**
   * Called when nextDeadline() moved earlier outside input()/poll() — an upstream event armed a
   * timer — so the driver re-arms its own timer.
   */
  wake?: (deadline: number) => void;
  /**
   * Coalesce ACKs: the ACKs that input() would send for in-order data wait until flush() (or the
   * next poll()), so a burst of segments read at once gets one ACK. The driver must then call
   * flush() after each burst of input() calls. Off by default (every ACK is sent at once).
   */
  batchAcks?: boolean;
  /**
   * The link takes TCP segments larger than the MTU and splits them itself (or the guest takes
   * them whole), like a NIC with TSO: data to the guest then goes out in segments of up to 64 KiB,
   * and those (only those) carry a partial checksum — the folded pseudo-header sum, as a driver
   * hands a NIC with checksum offload.
   */
  segmentationOffload?: boolean;
  clock: Clock;
  random: RandomSource;
  /**
   * Called synchronously with every frame the stack sends; the stack never touches it again. A
   * frame may be a view into a larger buffer (mind byteOffset; copy before transferring it).
   */
  output: (frame: Uint8Array) => void;
  /** Sees every frame in both directions (for pcap): input as received, output as sent. */
  capture?: (frame: Uint8Array, direction: 'in' | 'out', timeMs: number) => void;
}

export interface StackDnsOptions {
  /** Where names weft does not answer itself go; without one they get SERVFAIL. */
  forwarder?: DnsForwarder;
  /** Extra local names (lowercase, no trailing dot) → IPv4, beside gateway/host.weft.internal. */
  records?: ReadonlyMap<string, Ipv4Address>;
  /** Domains answered only locally (NXDOMAIN for unknown names); default ['weft.internal']. */
  localDomains?: string[];
}

export interface StackCounters {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Frames (or fragments) dropped, keyed by reason. */
  drops: Partial<Record<DropReason, number>>;
  datagramsReassembled: number;
  fragmentsSent: number;
  arpCacheEntries: number;
  reassemblyBytesHeld: number;
  tcpConnections: Record<string, number>;
  tcpConnectionsOpened: number;
  tcpBufferedBytes: number;
  udpFlows: number;
  dns: DnsServerCounters;
}

/** Ethernet's minimum frame size without FCS: shorter frames are padded as a NIC would. */
const MIN_FRAME = 60;
const DHCP_SERVER_PORT = 67;
const DHCP_CLIENT_PORT = 68;

export class Stack {
  readonly config: NetworkConfig;
  readonly limits: StackLimits;
  private readonly events = new TypedEvents<StackEvents>();
  private readonly clock: Clock;
  private readonly output: (frame: Uint8Array) => void;
  private readonly capture?: StackOptions['capture'];
  private readonly mask: number;
  private readonly subnetBroadcast: Ipv4Address;
  private readonly neighbors: NeighborCache;
  private readonly reassembler: Ipv4Reassembler;
  private readonly dhcp: DhcpServer;
  private readonly timers: TimerQueue;
  private readonly frames = new FrameAllocator();
  private readonly tcp: TcpFlowTable;
  private readonly udp: UdpNat;
  private readonly dns: DnsServer;
  /** Calls deferred to the end of the current input()/poll()/flush() (local services use it). */
  private readonly deferred: Array<() => void> = [];
  private nextIpId: number;
  private lastLeaseIp: Ipv4Address | undefined;
  private readonly stats = {
    framesIn: 0,
    framesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    datagramsReassembled: 0,
    fragmentsSent: 0,
  };
  private readonly drops = new Map<DropReason, number>();
  /** The link vouched for the transport checksum of the frame being handled (checksum offload). */
  private checksumTrusted = false;

  constructor(opts: StackOptions) {
    this.config = resolveNetworkConfig(opts.network);
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.clock = opts.clock;
    this.output = opts.output;
    this.capture = opts.capture;
    this.mask = prefixMask(this.config.prefixLength);
    this.subnetBroadcast = (this.config.network | ~this.mask) >>> 0;
    const countDrop = (reason: DropReason, count = 1) => this.drop(reason, count);
    this.neighbors = new NeighborCache(
      {
        maxEntries: this.limits.arpCacheEntries,
        maxPendingFrames: this.limits.arpPendingFrames,
        entryLifetimeMs: 20 * 60_000,
        retryIntervalMs: 1000,
        maxAttempts: 3,
      },
      countDrop,
    );
    this.reassembler = new Ipv4Reassembler(this.limits, countDrop);
    this.dhcp = new DhcpServer(this.config, (lease) => {
      this.lastLeaseIp = lease.ip;
      this.sendQueued(this.neighbors.learn(lease.ip, lease.mac, this.clock.now()), lease.mac);
      this.events.emit('lease', lease);
    });
    const seed = new Uint8Array(2);
    opts.random(seed);
    this.nextIpId = (seed[0] << 8) | seed[1];
    this.timers = new TimerQueue(opts.wake);
    const now = () => this.clock.now();
    this.dns = new DnsServer({
      localRecords: weftLocalRecords(this.config.gateway, opts.dns?.records ? new Map(opts.dns.records) : undefined),
      localDomains: opts.dns?.localDomains,
      forwarder: opts.dns?.forwarder,
      random: opts.random,
      onDrop: (reason) => countDrop(reason),
    });
    const upstream = new LocalServicesUpstream(opts.upstream, this.config.dns, this.dns, now, (fn) => this.deferred.push(fn));
    const flowOpened = (e: FlowEvent) => this.events.emit('flow-open', e);
    const flowClosed = (e: FlowEvent) => this.events.emit('flow-close', e);
    this.tcp = new TcpFlowTable({ ...DEFAULT_TCP, ...opts.tcp }, this.config.mtu, upstream, this.timers, {
      segmentOffload: opts.segmentationOffload === true,
      now,
      random: opts.random,
      send: (src, dst, repr, len, copy) => this.sendTcp(src, dst, repr, len, copy),
      drop: countDrop,
      flowOpened,
      flowClosed,
    });
    this.tcp.deferAcks = opts.batchAcks === true;
    this.udp = new UdpNat({ ...DEFAULT_UDP, ...opts.udp }, upstream, this.timers, {
      now,
      sendToGuest: (from, to, payload) => this.sendUdp(from, to, payload),
      unreachable: (flow, error, header) => this.udpUnreachable(flow.guest, flow.target, error, header),
      drop: countDrop,
      flowOpened,
      flowClosed,
    });
  }

  on<K extends keyof StackEvents>(name: K, listener: (e: StackEvents[K]) => void): () => void {
    return this.events.on(name, listener);
  }

  /**
   * Handles one frame from the guest. Never throws: anything wrong is dropped and counted.
   * `checksumTrusted`: the link vouches for its TCP/UDP checksum (a local kernel built the frame
   * with checksum offload and left a partial checksum), so it is not verified.
   */
  input(frame: Uint8Array, checksumTrusted = false): void {
    const now = this.clock.now();
    this.stats.framesIn++;
    this.stats.bytesIn += frame.length;
    if (this.capture) this.capture(frame, 'in', now);
    this.checksumTrusted = checksumTrusted;
    try {
      this.handleFrame(frame, now);
      this.runDeferred();
    } catch {
      // A bug must cost one frame, never the stack; the counter makes it visible.
      this.drop('internal-error');
    }
    this.checksumTrusted = false;
  }

  private runDeferred(): void {
    // Bounded: a deferred call may defer another, but not forever.
    for (let i = 0; i < 1024 && this.deferred.length > 0; i++) (this.deferred.shift() as () => void)();
  }

  /** Fires the timers that are due at `now`. */
  poll(now: number): void {
    try {
      this.reassembler.poll(now);
      for (const ip of this.neighbors.poll(now)) this.sendArpRequest(ip);
      this.timers.run(now);
      this.dns.poll(now);
      this.runDeferred();
      this.tcp.flushAcks();
    } catch {
      this.drop('internal-error');
    }
  }

  /** Ends an input burst: sends the ACKs that batchAcks deferred. */
  flush(): void {
    try {
      this.runDeferred();
      this.tcp.flushAcks();
    } catch {
      this.drop('internal-error');
    }
  }

  /**
   * Turns segmentation offload (StackOptions.segmentationOffload) on or off for connections opened
   * from now on — the link learns what its guest takes after the stack starts (a card's features
   * are negotiated when the guest's driver loads). Open connections keep what they negotiated.
   */
  setSegmentationOffload(on: boolean): void {
    this.tcp.setSegmentOffload(on);
  }

  /** When poll() should next be called (absolute ms), or undefined when nothing is scheduled. */
  nextDeadline(): number | undefined {
    let d: number | undefined;
    if (this.deferred.length > 0) return this.clock.now();
    for (const t of [this.reassembler.nextDeadline(), this.neighbors.nextDeadline(), this.timers.nextDeadline(), this.dns.nextDeadline()]) {
      if (t !== undefined && (d === undefined || t < d)) d = t;
    }
    return d;
  }

  /** Open flows, for the demo's flow table and for diagnostics. */
  flows(): FlowEvent[] {
    return [...this.tcp.flows(), ...this.udp.flowList()];
  }

  /**
   * Port forwarding: opens a TCP connection from the gateway address to `guestPort` on the guest
   * (default: the most recently leased address, else the first lease address). `attach` receives
   * the connection's handlers and returns the stream for the far side (e.g. an accepted host
   * socket), which should stay paused until the connection resumes it — once the guest accepted.
   * If the guest refuses or never answers, the stream is destroyed.
   */
  connectToGuest(guestPort: number, attach: (handlers: TcpStreamHandlers) => TcpStream, guestIp?: Ipv4Address): boolean {
    const ip = guestIp ?? this.lastLeaseIp ?? this.config.firstLease;
    try {
      return this.tcp.connectToGuest({ ip, port: guestPort }, this.config.gateway, attach);
    } catch {
      this.drop('internal-error');
      return false;
    }
  }

  /** Resets every flow (the stack is going away); upstream streams are destroyed. */
  shutdown(): void {
    this.tcp.closeAll('shutdown');
    this.udp.closeAll('shutdown');
  }

  counters(): StackCounters {
    return {
      ...this.stats,
      drops: Object.fromEntries(this.drops) as StackCounters['drops'],
      arpCacheEntries: this.neighbors.size,
      reassemblyBytesHeld: this.reassembler.bytesHeld,
      tcpConnections: this.tcp.countByState(),
      tcpConnectionsOpened: this.tcp.connectionsOpened,
      tcpBufferedBytes: this.tcp.bufferedBytes(),
      udpFlows: this.udp.size,
      dns: this.dns.counters(),
    };
  }

  /** True when `ip` is one of the addresses weft itself answers for on the link. */
  ownsAddress(ip: Ipv4Address): boolean {
    return ip === this.config.gateway || ip === this.config.dns;
  }

  // ── input path ──────────────────────────────────────────────────────────────

  private handleFrame(frame: Uint8Array, now: number): void {
    const eth = parseEthernet(frame);
    if (isDrop(eth)) return this.drop(eth);
    if (eth.dst !== this.config.gatewayMac && !isGroupMac(eth.dst)) return this.drop('eth-not-for-us');
    if (isGroupMac(eth.src) || eth.src === 0) return this.drop('eth-bad-source');
    switch (eth.ethertype) {
      case ETHERTYPE_ARP:
        return this.handleArp(eth, now);
      case ETHERTYPE_IPV4:
        return this.handleIpv4(eth, now);
      case ETHERTYPE_IPV6:
        return this.drop('ipv6-unsupported');
      default:
        return this.drop('eth-unknown-ethertype');
    }
  }

  private handleArp(eth: EthernetFrame, now: number): void {
    const arp = parseArp(eth.payload);
    if (isDrop(arp)) return this.drop(arp);
    if (arp.senderMac !== eth.src) return this.drop('arp-sender-mismatch');
    if (this.ownsAddress(arp.senderIp)) return this.drop('arp-address-conflict');
    // Learn from requests, replies and gratuitous announcements alike (sender = target IP).
    if (this.inSubnet(arp.senderIp) && arp.senderIp !== 0) {
      this.sendQueued(this.neighbors.learn(arp.senderIp, arp.senderMac, now), arp.senderMac);
    }
    if (arp.operation !== ARP_REQUEST) return;
    if (!this.ownsAddress(arp.targetIp)) {
      // Gratuitous ARP and requests for other guests are not ours to answer.
      if (arp.senderIp !== arp.targetIp) this.drop('arp-not-for-us');
      return;
    }
    this.sendArp(eth.src, {
      operation: ARP_REPLY,
      senderMac: this.config.gatewayMac,
      senderIp: arp.targetIp,
      targetMac: arp.senderMac,
      targetIp: arp.senderIp,
    });
  }

  private handleIpv4(eth: EthernetFrame, now: number): void {
    const ip = parseIpv4Packet(eth.payload);
    if (isDrop(ip)) return this.drop(ip);
    if (ip.src !== 0 && this.inSubnet(ip.src) && !this.ownsAddress(ip.src) && ip.src !== this.subnetBroadcast) {
      // The link is ours alone: a packet from a guest address confirms its MAC.
      this.sendQueued(this.neighbors.learn(ip.src, eth.src, now), eth.src);
    }
    let payload = ip.payload;
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      const whole = this.reassembler.add(ip, now);
      if (!whole) return;
      this.stats.datagramsReassembled++;
      payload = whole.payload;
      this.checksumTrusted = false; // offload marks whole packets, never fragments
    }
    switch (ip.protocol) {
      case IPPROTO_ICMP:
        return this.handleIcmp(ip.src, ip.dst, payload, eth.src);
      case IPPROTO_UDP:
        return this.handleUdp(ip.src, ip.dst, payload, eth.src, now);
      case IPPROTO_TCP:
        return this.handleTcp(ip.src, ip.dst, payload);
      default:
        return this.drop('ipv4-unsupported-protocol');
    }
  }

  private handleIcmp(src: Ipv4Address, dst: Ipv4Address, payload: Uint8Array, srcMac: MacAddress): void {
    const icmp = parseIcmp(payload);
    if (isDrop(icmp)) return this.drop(icmp);
    if (!this.ownsAddress(dst)) return this.drop('icmp-no-route');
    if (icmp.type !== ICMP_ECHO_REQUEST) return this.drop('icmp-unhandled-type');
    if (icmp.code !== 0) return this.drop('icmp-bad-code');
    const reply = { type: ICMP_ECHO_REPLY, code: 0, restOfHeader: icmp.restOfHeader, data: icmp.data };
    this.sendIpv4(dst, src, IPPROTO_ICMP, 8 + icmp.data.length, (buf, off) => emitIcmp(reply, buf, off), srcMac);
  }

  private handleUdp(src: Ipv4Address, dst: Ipv4Address, payload: Uint8Array, srcMac: MacAddress, now: number): void {
    const udp = parseUdp(payload, src, dst, !this.checksumTrusted);
    if (isDrop(udp)) return this.drop(udp);
    if (udp.dstPort === DHCP_SERVER_PORT && (dst === IPV4_BROADCAST || dst === this.config.gateway)) {
      return this.handleDhcp(udp.payload, srcMac, now);
    }
    if (dst === IPV4_BROADCAST || dst === this.subnetBroadcast || dst >>> 28 === 0xe) return this.drop('udp-broadcast-ignored');
    if (!this.isGuestSource(src)) return this.drop('udp-bad-source');
    if (dst === this.config.dns && udp.dstPort === 53) {
      const guest = { ip: src, port: udp.srcPort };
      this.dns.query(udp.payload, 'udp', now, (reply) => this.sendUdp({ ip: dst, port: 53 }, guest, reply));
      return;
    }
    if (dst === this.config.dns || (this.inSubnet(dst) && dst !== this.config.gateway)) {
      // Nothing listens there (yet): say so, as a host would, so clients fail fast.
      return this.sendIcmpError(ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PORT, src, dst, IPPROTO_UDP, payload.subarray(0, 8), payload.length, srcMac);
    }
    this.udp.input(src, udp.srcPort, dst, udp.dstPort, udp.payload, payload);
  }

  private handleTcp(src: Ipv4Address, dst: Ipv4Address, payload: Uint8Array): void {
    const seg = parseTcp(payload);
    if (isDrop(seg)) return this.drop(seg);
    if (!this.checksumTrusted && !verifyTcpChecksum(payload, src, dst)) return this.drop('tcp-bad-checksum');
    if (dst === IPV4_BROADCAST || dst === this.subnetBroadcast || dst >>> 28 === 0xe) return this.drop('tcp-to-broadcast');
    if (!this.isGuestSource(src)) return this.drop('tcp-bad-source');
    if (seg.srcPort === 0 || seg.dstPort === 0) return this.drop('tcp-port-zero');
    this.tcp.input(src, dst, seg);
  }

  /** Guest flows must come from a guest address on our link, never from ours or a broadcast. */
  private isGuestSource(ip: Ipv4Address): boolean {
    return this.inSubnet(ip) && !this.ownsAddress(ip) && ip !== this.subnetBroadcast && ip !== this.config.network;
  }

  private handleDhcp(payload: Uint8Array, srcMac: MacAddress, now: number): void {
    const msg = parseDhcp(payload);
    if (isDrop(msg)) return this.drop(msg);
    if (msg.chaddr !== srcMac) return this.drop('dhcp-chaddr-mismatch');
    const reply = this.dhcp.handle(msg, now);
    if (reply === null) return;
    if (isDrop(reply)) return this.drop(reply);
    const datagram = { srcPort: DHCP_SERVER_PORT, dstPort: DHCP_CLIENT_PORT, payload: reply.payload };
    this.sendIpv4(
      this.config.gateway,
      reply.dstIp,
      IPPROTO_UDP,
      UDP_HEADER_LENGTH + reply.payload.length,
      (buf, off) => emitUdp(datagram, this.config.gateway, reply.dstIp, buf, off),
      reply.dstMac,
    );
  }

  // ── output path ─────────────────────────────────────────────────────────────

  /**
   * Sends an IPv4 datagram whose payload `fill` writes. Fits in the MTU (or `unsegmented`: a TCP
   * segment the link segments) → built in place in the frame; larger → fragmented. Without
   * `dstMac`, the destination is resolved with ARP.
   */
  private sendIpv4(
    src: Ipv4Address,
    dst: Ipv4Address,
    protocol: number,
    payloadLength: number,
    fill: (buf: Uint8Array, off: number) => number,
    dstMac?: MacAddress,
    unsegmented = false,
  ): void {
    const id = this.nextIpId;
    this.nextIpId = (this.nextIpId + 1) & 0xffff;
    const mtuPayload = this.config.mtu - IPV4_HEADER_LENGTH;
    if (payloadLength <= mtuPayload || (unsegmented && payloadLength <= 65535 - IPV4_HEADER_LENGTH)) {
      const frame = this.allocFrame(IPV4_HEADER_LENGTH + payloadLength);
      const off = ETHERNET_HEADER_LENGTH;
      emitIpv4Header({ src, dst, protocol, payloadLength, id }, frame, off);
      fill(frame, off + IPV4_HEADER_LENGTH);
      return this.sendFrame(frame, dst, dstMac);
    }
    if (payloadLength > 65535 - IPV4_HEADER_LENGTH) return this.drop('ipv4-too-large-to-send');
    const whole = new Uint8Array(payloadLength);
    fill(whole, 0);
    const chunk = mtuPayload & ~7;
    for (let offset = 0; offset < payloadLength; offset += chunk) {
      const len = Math.min(chunk, payloadLength - offset);
      const moreFragments = offset + len < payloadLength;
      const frame = this.allocFrame(IPV4_HEADER_LENGTH + len);
      const off = ETHERNET_HEADER_LENGTH;
      emitIpv4Header({ src, dst, protocol, payloadLength: len, id, moreFragments, fragmentOffset: offset }, frame, off);
      frame.set(whole.subarray(offset, offset + len), off + IPV4_HEADER_LENGTH);
      this.stats.fragmentsSent++;
      this.sendFrame(frame, dst, dstMac);
    }
  }

  private sendIcmpError(
    type: number,
    code: number,
    guest: Ipv4Address,
    from: Ipv4Address,
    protocol: number,
    transportHead: Uint8Array,
    transportLength: number,
    guestMac?: MacAddress,
  ): void {
    // Quote the offending header and the first 8 bytes of its payload (RFC 792); the original
    // header is rebuilt since reassembly may have consumed the fragments' own headers.
    const head = transportHead.subarray(0, 8);
    const quoted = new Uint8Array(IPV4_HEADER_LENGTH + head.length);
    emitIpv4Header({ src: guest, dst: from, protocol, payloadLength: transportLength, id: 0 }, quoted, 0);
    quoted.set(head, IPV4_HEADER_LENGTH);
    const msg = { type, code, restOfHeader: 0, data: quoted };
    this.sendIpv4(from, guest, IPPROTO_ICMP, 8 + quoted.length, (buf, off) => emitIcmp(msg, buf, off), guestMac);
  }

  private sendTcp(src: Ipv4Address, dst: Ipv4Address, repr: TcpRepr, payloadLength: number, copy?: (out: Uint8Array, off: number) => void): void {
    const headerLength = tcpHeaderLength(repr.options);
    // Only a connection opened while segmentation offload was on sends segments longer than the
    // MTU (negotiate()). Such a segment goes out whole, with a partial checksum as from a NIC
    // driver — even after offload was turned off, since the link splits what it cannot take — and
    // summing 64 KiB here would be wasted.
    const partial = IPV4_HEADER_LENGTH + headerLength + payloadLength > this.config.mtu;
    this.sendIpv4(
      src,
      dst,
      IPPROTO_TCP,
      headerLength + payloadLength,
      (buf, off) => {
        if (copy) copy(buf, off + headerLength);
        return emitTcpHeader(repr, payloadLength, buf, off, src, dst, partial);
      },
      undefined,
      partial,
    );
  }

  private sendUdp(from: FlowEndpoint, to: FlowEndpoint, payload: Uint8Array): void {
    if (payload.length > 65535 - IPV4_HEADER_LENGTH - UDP_HEADER_LENGTH) return this.drop('udp-too-large');
    const d = { srcPort: from.port, dstPort: to.port, payload };
    this.sendIpv4(from.ip, to.ip, IPPROTO_UDP, UDP_HEADER_LENGTH + payload.length, (buf, off) => emitUdp(d, from.ip, to.ip, buf, off));
  }

  private udpUnreachable(guest: FlowEndpoint, target: FlowEndpoint, error: UpstreamError, header: Uint8Array): void {
    const code = error.kind === 'refused' ? ICMP_UNREACH_PORT : error.kind === 'blocked' ? ICMP_UNREACH_ADMIN : ICMP_UNREACH_HOST;
    const length = (header[4] << 8) | header[5];
    this.sendIcmpError(ICMP_DEST_UNREACHABLE, code, guest.ip, target.ip, IPPROTO_UDP, header, length);
  }

  private sendArp(dstMac: MacAddress, arp: ArpPacket): void {
    const frame = this.allocFrame(28);
    emitEthernetHeader(frame, 0, dstMac, this.config.gatewayMac, ETHERTYPE_ARP);
    emitArp(arp, frame, ETHERNET_HEADER_LENGTH);
    this.emitFrame(frame);
  }

  private sendArpRequest(ip: Ipv4Address): void {
    this.sendArp(BROADCAST_MAC, {
      operation: ARP_REQUEST,
      senderMac: this.config.gatewayMac,
      senderIp: this.config.gateway,
      targetMac: 0,
      targetIp: ip,
    });
  }

  /** A frame buffer with room for `l3Length` bytes after the Ethernet header, padded to the minimum. */
  private allocFrame(l3Length: number): Uint8Array {
    return this.frames.alloc(Math.max(MIN_FRAME, ETHERNET_HEADER_LENGTH + l3Length));
  }

  private sendFrame(frame: Uint8Array, dstIp: Ipv4Address, dstMac: MacAddress | undefined): void {
    const now = this.clock.now();
    if (dstMac === undefined) {
      if (dstIp === IPV4_BROADCAST || dstIp === this.subnetBroadcast) dstMac = BROADCAST_MAC;
      else dstMac = this.neighbors.lookup(dstIp, now);
    }
    if (dstMac === undefined) {
      emitEthernetHeader(frame, 0, 0, this.config.gatewayMac, ETHERTYPE_IPV4);
      if (this.neighbors.enqueue(dstIp, frame, now)) this.sendArpRequest(dstIp);
      return;
    }
    emitEthernetHeader(frame, 0, dstMac, this.config.gatewayMac, ETHERTYPE_IPV4);
    this.emitFrame(frame);
  }

  /** Sends frames that waited for ARP, now that `mac` is known. */
  private sendQueued(frames: Uint8Array[], mac: MacAddress): void {
    for (const frame of frames) {
      emitEthernetHeader(frame, 0, mac, this.config.gatewayMac, ETHERTYPE_IPV4);
      this.emitFrame(frame);
    }
  }

  private emitFrame(frame: Uint8Array): void {
    this.stats.framesOut++;
    this.stats.bytesOut += frame.length;
    if (this.capture) this.capture(frame, 'out', this.clock.now());
    this.output(frame);
  }

  private inSubnet(ip: Ipv4Address): boolean {
    return ((ip & this.mask) >>> 0) === this.config.network;
  }

  private drop(reason: DropReason, count = 1): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + count);
    this.events.emit('drop', { reason, count });
  }
}
