// The stack: one virtual Ethernet link with weft's router on it. It is sans-I/O — frames come in
// through input(), go out through the output callback, and time is read only from the injected
// clock (see clock.ts) — so the same code runs in a Web Worker, in Node, and in deterministic tests
// that move a simulated clock.
//
// This file wires the parts together, holds the driver's API (input, poll, flush, nextDeadline) and
// demuxes what comes in. What goes out leaves through ip/ipv4-output.ts and link/ethernet-port.ts;
// ICMP lives in services/icmp-responder.ts. A second IP version would get its own input branch and
// output path beside IPv4's, on the same port; a second link would be a second EthernetPort.

import { instant, type Clock, type Instant } from './clock';
import { DEFAULT_LIMITS, DEFAULT_TCP, DEFAULT_UDP, guestAddressProblem, resolveNetworkConfig, type NetworkConfig, type StackLimits } from './config';
import { TypedEvents } from './events';
import { Ipv4Output } from './ip/ipv4-output';
import { Ipv4Reassembler } from './ip/ipv4-reassembly';
import { EthernetPort } from './link/ethernet-port';
import { DhcpServer } from './services/dhcp-server';
import { DnsServer, weftLocalRecords } from './services/dns-server';
import { IcmpResponder } from './services/icmp-responder';
import { LocalServicesUpstream } from './services/local-services';
import type { FlowEvent, LeaseEvent, StackCounters, StackEvents } from './stack-events';
import type { StackOptions } from './stack-options';
import { TcpFlowTable } from './tcp/tcp-flow-table';
import { TimerQueue } from './timer-queue';
import { GuestUdpPorts, type GuestUdpHandlers, type GuestUdpSocket } from './udp/guest-udp-ports';
import { UdpNat } from './udp/udp-nat';
import type { TcpStream, TcpStreamHandlers } from './upstream';
import { IPV4_BROADCAST, ipv4Network, ipv4SubnetBroadcast, isGroupMac, isMulticastIpv4, prefixMask, type Ipv4Address, type MacAddress } from './wire/address';
import { ARP_REQUEST, parseArp } from './wire/arp';
import { parseDhcp } from './wire/dhcp';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, parseEthernet, type EthernetFrame } from './wire/ethernet';
import { IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, parseIpv4Packet } from './wire/ipv4';
import { parseTcp, verifyTcpChecksum } from './wire/tcp';
import { isDrop, type DropReason } from './wire/parse-result';
import { emitUdp, parseUdp, UDP_HEADER_LENGTH } from './wire/udp';

const DHCP_SERVER_PORT = 67;
const DHCP_CLIENT_PORT = 68;

export class Stack {
  readonly config: NetworkConfig;
  readonly limits: StackLimits;
  private readonly events = new TypedEvents<StackEvents>();
  private readonly clock: Clock;
  private readonly mask: number;
  private readonly subnetBroadcast: Ipv4Address;
  private readonly port: EthernetPort;
  private readonly ipv4: Ipv4Output;
  private readonly icmp: IcmpResponder;
  private readonly reassembler: Ipv4Reassembler;
  private readonly dhcp: DhcpServer;
  private readonly timers: TimerQueue;
  private readonly tcp: TcpFlowTable;
  private readonly udp: UdpNat;
  private readonly guestUdp: GuestUdpPorts;
  private readonly dns: DnsServer;
  /** Calls deferred to the end of the current input()/poll()/flush() (local services use it). */
  private readonly deferred: Array<() => void> = [];
  private lastLeaseIp: Ipv4Address | undefined;
  private datagramsReassembled = 0;
  private readonly drops = new Map<DropReason, number>();
  /** The link vouched for the transport checksum of the frame being handled (checksum offload). */
  private checksumTrusted = false;

  constructor(opts: StackOptions) {
    this.config = resolveNetworkConfig(opts.network);
    this.limits = { ...DEFAULT_LIMITS, ...opts.limits };
    this.clock = opts.clock;
    const clock = opts.clock;
    this.mask = prefixMask(this.config.prefixLength);
    this.subnetBroadcast = ipv4SubnetBroadcast(this.config.network, this.mask);
    const countDrop = (reason: DropReason, count = 1) => this.drop(reason, count);
    this.port = new EthernetPort({
      mac: this.config.gatewayMac,
      output: opts.output,
      ...(opts.outputGathered ? { outputGathered: opts.outputGathered } : {}),
      capture: opts.capture,
      clock,
      ...(opts.allocFrame ? { allocFrame: opts.allocFrame } : {}),
    });
    this.ipv4 = new Ipv4Output(this.port, {
      mtu: this.config.mtu,
      gateway: this.config.gateway,
      subnetBroadcast: this.subnetBroadcast,
      limits: this.limits,
      clock,
      random: opts.random,
      drop: countDrop,
      // No ARP answer: the connections being opened into that guest fail now, not after their SYN retries.
      unresolved: (ip) => this.tcp.guestUnreachable(ip),
    });
    this.icmp = new IcmpResponder(this.ipv4, (ip) => this.ownsAddress(ip), countDrop);
    this.reassembler = new Ipv4Reassembler(this.limits, countDrop);
    this.dhcp = new DhcpServer(this.config, (lease) => {
      this.lastLeaseIp = lease.ip;
      // Guests on one LAN find each other by name: <hostname>.weft.internal.
      if (lease.hostname !== undefined) this.dns.setGuestName(lease.hostname, lease.ip);
      this.ipv4.learn(lease.ip, lease.mac, clock.now());
      this.events.emit('lease', lease);
    });
    this.timers = new TimerQueue(opts.wake);
    const now = () => clock.now();
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
      send: (src, dst, repr, len, payload) => this.ipv4.sendTcp(src, dst, repr, len, payload),
      drop: countDrop,
      flowOpened,
      flowClosed,
    });
    this.tcp.deferAcks = opts.batchAcks === true;
    this.udp = new UdpNat({ ...DEFAULT_UDP, ...opts.udp }, upstream, this.timers, {
      now,
      sendToGuest: (from, to, payload) => this.ipv4.sendUdp(from, to, payload),
      unreachable: (flow, error, header) => this.icmp.udpUnreachable(flow.guest, flow.target, error, header),
      drop: countDrop,
      flowOpened,
      flowClosed,
    });
    this.guestUdp = new GuestUdpPorts(
      (localPort, guestIp, guestPort, payload) => this.ipv4.sendUdp({ ip: this.config.gateway, port: localPort }, { ip: guestIp, port: guestPort }, payload),
      opts.random,
      this.udp.config.maxFlows,
    );
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
    this.port.received(frame, now);
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

  /** Fires the timers due by the clock's time; the driver calls it once nextDeadline() has come. */
  poll(): void {
    const now = this.clock.now();
    try {
      this.reassembler.poll(now);
      this.ipv4.poll(now);
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

  /** When poll() should next be called (absolute ms on the clock's scale), or undefined when nothing is scheduled. */
  nextDeadline(): Instant | undefined {
    let d: number | undefined;
    if (this.deferred.length > 0) return this.clock.now();
    for (const t of [this.reassembler.nextDeadline(), this.ipv4.nextDeadline(), this.timers.nextDeadline(), this.dns.nextDeadline()]) {
      if (t !== undefined && (d === undefined || t < d)) d = t;
    }
    // The reassembler, ARP and DNS keep plain-number deadlines made from the `now` this stack gave
    // them, which it read from its clock: on the clock's scale.
    return d === undefined ? undefined : instant(d);
  }

  /** Open flows, for the demo's flow table and for diagnostics. */
  flows(): FlowEvent[] {
    return [...this.tcp.flows(), ...this.udp.flowList()];
  }

  /**
   * The live DHCP leases, as the 'lease' events that announced them (with the latest hostname):
   * for whoever starts listening late, such as a tab joining a LAN that others opened.
   */
  leases(): LeaseEvent[] {
    const now = this.clock.now();
    return this.dhcp
      .leases()
      .filter((l) => l.expiresAt > now)
      .map(({ mac, ip, hostname, expiresAt }) => (hostname === undefined ? { mac, ip, expiresAt } : { mac, ip, hostname, expiresAt }));
  }

  /**
   * The MAC holding a live DHCP lease on `ip`, if any: for a LAN's switch (LearningSwitch.guardLeases),
   * so that no guest speaks for another's address to the rest of the LAN.
   */
  leaseHolderOf(ip: Ipv4Address): MacAddress | undefined {
    return this.dhcp.holderOf(ip, this.clock.now());
  }

  /**
   * Port forwarding: opens a TCP connection from the gateway address to `guestPort` on the guest
   * (default: the most recently leased address, else the first lease address). `attach` receives
   * the connection's handlers and returns the stream for the far side (e.g. an accepted host
   * socket), which should stay paused until the connection resumes it — once the guest accepted.
   * If the guest refuses or never answers, the stream is destroyed with the reason
   * (`destroy('guest-refused')`: RST to our SYN; `'guest-unreachable'`: no answer to ARP, within
   * about 3 s, or to our SYNs, after about a minute); a reset later is `'guest-reset'`.
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

  /**
   * A UDP socket on the gateway address connected to the guest's `guestPort` (port forwarding):
   * send() reaches the guest; its answers to that socket's port come to `handlers`. Undefined when
   * the bound on such sockets (the UDP flow limit) is reached.
   */
  openGuestUdp(guestPort: number, handlers: GuestUdpHandlers, guestIp?: Ipv4Address): GuestUdpSocket | undefined {
    return this.guestUdp.open(guestIp ?? this.lastLeaseIp ?? this.config.firstLease, guestPort, handlers);
  }

  /** Resets every flow (the stack is going away); upstream streams are destroyed. */
  shutdown(): void {
    this.tcp.closeAll('shutdown');
    this.udp.closeAll('shutdown');
    this.guestUdp.closeAll();
  }

  counters(): StackCounters {
    return {
      ...this.port.counters(),
      datagramsReassembled: this.datagramsReassembled,
      fragmentsSent: this.ipv4.fragmentsSent,
      drops: Object.fromEntries(this.drops) as StackCounters['drops'],
      arpCacheEntries: this.ipv4.arpCacheEntries,
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
    // weft's own addresses are never learned: a guest announcing one cannot draw weft's traffic.
    if (this.ownsAddress(arp.senderIp)) return this.drop('arp-address-conflict');
    if (this.leasedToAnother(arp.senderIp, arp.senderMac, now)) return this.drop('arp-lease-conflict');
    // Learn from requests, replies and gratuitous announcements alike (sender = target IP).
    if (this.isGuestSource(arp.senderIp)) this.ipv4.learn(arp.senderIp, arp.senderMac, now);
    if (arp.operation !== ARP_REQUEST) return;
    if (!this.ownsAddress(arp.targetIp)) {
      // Gratuitous ARP and requests for other guests are not ours to answer.
      if (arp.senderIp !== arp.targetIp) this.drop('arp-not-for-us');
      return;
    }
    this.ipv4.answerArp(arp);
  }

  private handleIpv4(eth: EthernetFrame, now: number): void {
    const ip = parseIpv4Packet(eth.payload);
    if (isDrop(ip)) return this.drop(ip);
    if (this.isGuestSource(ip.src)) {
      // Another guest's leased address as the source: spoofed, and it must not move that binding.
      if (this.leasedToAnother(ip.src, eth.src, now)) return this.drop('ipv4-lease-conflict');
      // A packet from a guest address confirms its MAC.
      this.ipv4.learn(ip.src, eth.src, now);
    }
    let payload = ip.payload;
    if (ip.moreFragments || ip.fragmentOffset !== 0) {
      const whole = this.reassembler.add(ip, now);
      if (!whole) return;
      this.datagramsReassembled++;
      payload = whole.payload;
      this.checksumTrusted = false; // offload marks whole packets, never fragments
    }
    switch (ip.protocol) {
      case IPPROTO_ICMP:
        return this.icmp.input(ip.src, ip.dst, payload, eth.src);
      case IPPROTO_UDP:
        return this.handleUdp(ip.src, ip.dst, payload, eth.src, now);
      case IPPROTO_TCP:
        return this.handleTcp(ip.src, ip.dst, payload);
      default:
        return this.drop('ipv4-unsupported-protocol');
    }
  }

  private handleUdp(src: Ipv4Address, dst: Ipv4Address, payload: Uint8Array, srcMac: MacAddress, now: number): void {
    const udp = parseUdp(payload, src, dst, !this.checksumTrusted);
    if (isDrop(udp)) return this.drop(udp);
    if (udp.dstPort === DHCP_SERVER_PORT && (dst === IPV4_BROADCAST || dst === this.config.gateway)) {
      return this.handleDhcp(udp.payload, srcMac, now);
    }
    if (dst === IPV4_BROADCAST || dst === this.subnetBroadcast || isMulticastIpv4(dst)) return this.drop('udp-broadcast-ignored');
    if (!this.isGuestSource(src)) return this.drop('udp-bad-source');
    if (dst === this.config.dns && udp.dstPort === 53) {
      const guest = { ip: src, port: udp.srcPort };
      this.dns.query(udp.payload, 'udp', now, (reply) => this.ipv4.sendUdp({ ip: dst, port: 53 }, guest, reply));
      return;
    }
    if (dst === this.config.dns || (this.inSubnet(dst) && dst !== this.config.gateway)) {
      // Nothing listens there (yet): say so, as a host would, so clients fail fast.
      return this.icmp.portUnreachable(src, dst, IPPROTO_UDP, payload, srcMac);
    }
    if (dst === this.config.gateway && this.guestUdp.input(src, udp.srcPort, udp.dstPort, udp.payload)) return;
    this.udp.input(src, udp.srcPort, dst, udp.dstPort, udp.payload, payload);
  }

  private handleTcp(src: Ipv4Address, dst: Ipv4Address, payload: Uint8Array): void {
    const seg = parseTcp(payload);
    if (isDrop(seg)) return this.drop(seg);
    if (!this.checksumTrusted && !verifyTcpChecksum(payload, src, dst)) return this.drop('tcp-bad-checksum');
    if (dst === IPV4_BROADCAST || dst === this.subnetBroadcast || isMulticastIpv4(dst)) return this.drop('tcp-to-broadcast');
    if (!this.isGuestSource(src)) return this.drop('tcp-bad-source');
    if (seg.srcPort === 0 || seg.dstPort === 0) return this.drop('tcp-port-zero');
    this.tcp.input(src, dst, seg);
  }

  /** Guest flows must come from a guest address on our link, never from ours or a broadcast. */
  private isGuestSource(ip: Ipv4Address): boolean {
    return guestAddressProblem(this.config, ip) === undefined;
  }

  /**
   * True when `ip` is leased (live) to a MAC other than `mac`: the binding follows the lease, so a
   * guest announcing or sending from another's address is refused. Unleased addresses (a guest's
   * static one) are learned from whoever uses them, as on any Ethernet.
   */
  private leasedToAnother(ip: Ipv4Address, mac: MacAddress, now: number): boolean {
    const holder = this.dhcp.holderOf(ip, now);
    return holder !== undefined && holder !== mac;
  }

  private handleDhcp(payload: Uint8Array, srcMac: MacAddress, now: number): void {
    const msg = parseDhcp(payload);
    if (isDrop(msg)) return this.drop(msg);
    if (msg.chaddr !== srcMac) return this.drop('dhcp-chaddr-mismatch');
    const reply = this.dhcp.handle(msg, now);
    if (reply === null) return;
    if (isDrop(reply)) return this.drop(reply);
    const datagram = { srcPort: DHCP_SERVER_PORT, dstPort: DHCP_CLIENT_PORT, payload: reply.payload };
    const { gateway } = this.config;
    const fill = (buf: Uint8Array, off: number) => emitUdp(datagram, gateway, reply.dstIp, buf, off);
    this.ipv4.send(gateway, reply.dstIp, IPPROTO_UDP, UDP_HEADER_LENGTH + reply.payload.length, fill, reply.dstMac);
  }

  private inSubnet(ip: Ipv4Address): boolean {
    return ipv4Network(ip, this.mask) === this.config.network;
  }

  private drop(reason: DropReason, count = 1): void {
    this.drops.set(reason, (this.drops.get(reason) ?? 0) + count);
    this.events.emit('drop', { reason, count });
  }
}
