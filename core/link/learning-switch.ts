// One Ethernet LAN for several guests (the one-LAN issue): a learning switch whose ports are the
// guests' NICs and weft's router (the Stack's EthernetPort output goes in at the router port, and
// what the switch delivers there goes to Stack.input). Unicast between guests goes port to port
// without passing through the router and reaches no other port; broadcast, multicast and unknown
// destinations are flooded. Sources are learned with aging into a bounded table, and each port holds
// at most its share of it, so a guest flooding random source MACs evicts only its own. The router's
// MACs are fixed to the router port: a guest that sends with one of them is dropped, so it cannot
// draw weft's traffic to itself. Nor may a guest speak for the router's IP addresses (an ARP
// announcing one, an IPv4 packet from one): the other guests would take its word for the gateway
// or the DNS server, so such frames are dropped before they reach anyone. Given the router's leases
// (guardLeases), a guest speaking for an address leased to another MAC reaches only the router (which
// counts and drops it), never the other guests, who would take its word for that guest's address.

import type { Instant } from '../clock';
import { isGroupMac, readIpv4, readMac, type Ipv4Address, type MacAddress } from '../wire/address';

const ETHERNET_HEADER = 14;
const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
/** Where the sender's IPv4 address sits in an ARP frame, and the source address in an IPv4 one. */
const ARP_SENDER_IP = ETHERNET_HEADER + 14;
const IPV4_SOURCE = ETHERNET_HEADER + 12;

export type SwitchDropReason =
  | 'switch-runt'
  | 'switch-bad-source'
  | 'switch-spoofed-router-mac'
  | 'switch-spoofed-router-ip'
  | 'switch-lease-conflict'
  | 'switch-same-port'
  | 'switch-port-removed';

export interface SwitchPortCounters {
  framesIn: number;
  framesOut: number;
  bytesIn: number;
  bytesOut: number;
  /** Frames this port sent that the switch dropped, by reason. */
  drops: Partial<Record<SwitchDropReason, number>>;
}

export interface SwitchPort {
  readonly name: string;
  /** A frame from this port's NIC. */
  input(frame: Uint8Array): void;
  counters(): SwitchPortCounters;
  /** Takes the port off the switch; its learned MACs are forgotten. */
  remove(): void;
}

export interface LearningSwitchOptions {
  /** MACs the table holds at most; the least recently seen goes first (a MAC flood cannot grow it). */
  maxMacs: number;
  /**
   * MACs one port holds at most (default maxMacs): past it the port's own least recently seen goes,
   * so a flood from one guest cannot push the others' MACs out (they would then be flooded to it).
   */
  maxMacsPerPort?: number;
  /** A MAC not seen for this long is unknown again (flooded to), as a port may have moved. */
  agingMs: number;
  now: () => Instant;
  /** Told of each dropped frame as it is dropped, for live counters (a port's counters() has the totals). */
  onDrop?: (port: string, reason: SwitchDropReason) => void;
}

interface Port {
  name: string;
  deliver: (frame: Uint8Array) => void;
  stats: SwitchPortCounters;
  removed: boolean;
  /** The MACs learned on this port, least recently seen first. */
  macs: Map<MacAddress, Entry>;
}

interface Entry {
  port: Port;
  seen: Instant;
}

export class LearningSwitch {
  private readonly ports: Port[] = [];
  /** Learned MACs, least recently seen first (Map order). */
  private readonly table = new Map<MacAddress, Entry>();
  /** The router's own MACs and its port: never learned, never moved. */
  private readonly fixed = new Map<MacAddress, Port>();
  /** The router's IPv4 addresses: no other port may send from them. */
  private routerIps: readonly Ipv4Address[] = [];
  private routerPort: Port | undefined;
  /** The MAC holding a live lease on an address, if any (see guardLeases). */
  private leaseHolder: ((ip: Ipv4Address) => MacAddress | undefined) | undefined;
  private readonly maxPerPort: number;
  private evicted = 0;

  constructor(private readonly opts: LearningSwitchOptions) {
    this.maxPerPort = Math.min(opts.maxMacs, opts.maxMacsPerPort ?? opts.maxMacs);
  }

  get macsLearned(): number {
    return this.table.size;
  }

  /** MACs pushed out of a full table or a port's full share (a flood shows here). */
  get macsEvicted(): number {
    return this.evicted;
  }

  /** A port whose NIC receives frames through `deliver` (which then owns each frame it gets). */
  addPort(name: string, deliver: (frame: Uint8Array) => void): SwitchPort {
    const port: Port = { name, deliver, stats: { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, drops: {} }, removed: false, macs: new Map() };
    this.ports.push(port);
    return {
      name,
      input: (frame) => this.forward(port, frame),
      counters: () => ({ ...port.stats, drops: { ...port.stats.drops } }),
      remove: () => this.remove(port),
    };
  }

  /**
   * From now on, an ARP or IPv4 frame from a guest whose sender or source address is leased (live)
   * to another MAC goes to the router alone: the router counts and drops it, and no other guest
   * hears it (one guest cannot pose as another to the rest of the LAN).
   */
  guardLeases(holder: (ip: Ipv4Address) => MacAddress | undefined): void {
    this.leaseHolder = holder;
  }

  /** The router's port: `macs` (weft's own) are always behind it, and only it sends from `ips`. */
  addRouterPort(macs: readonly MacAddress[], deliver: (frame: Uint8Array) => void, ips: readonly Ipv4Address[] = []): SwitchPort {
    const p = this.addPort('router', deliver);
    const port = this.ports[this.ports.length - 1];
    for (const m of macs) this.fixed.set(m, port);
    this.routerPort = port;
    this.routerIps = [...ips];
    return p;
  }

  private remove(port: Port): void {
    if (port.removed) return;
    port.removed = true;
    this.ports.splice(this.ports.indexOf(port), 1);
    for (const mac of port.macs.keys()) this.table.delete(mac);
    port.macs.clear();
    for (const [mac, p] of this.fixed) if (p === port) this.fixed.delete(mac);
    if (port === this.routerPort) {
      this.routerPort = undefined;
      this.routerIps = [];
    }
  }

  private forward(from: Port, frame: Uint8Array): void {
    if (from.removed) return this.drop(from, 'switch-port-removed');
    if (frame.length < ETHERNET_HEADER) return this.drop(from, 'switch-runt');
    from.stats.framesIn++;
    from.stats.bytesIn += frame.length;
    const dst = readMac(frame, 0);
    const src = readMac(frame, 6);
    if (isGroupMac(src)) return this.drop(from, 'switch-bad-source');
    const owner = this.fixed.get(src);
    if (owner && owner !== from) return this.drop(from, 'switch-spoofed-router-mac');
    // The address a guest's ARP or IPv4 frame speaks for (the router's own frames are not checked).
    const sender = from === this.routerPort ? undefined : senderIp(frame);
    if (sender !== undefined && this.routerIps.includes(sender)) return this.drop(from, 'switch-spoofed-router-ip');
    const now = this.opts.now();
    if (!owner) this.learn(src, from, now);
    const to = isGroupMac(dst) ? undefined : (this.fixed.get(dst) ?? this.lookup(dst, now));
    if (to === from) return this.drop(from, 'switch-same-port');
    if (sender !== undefined && this.leasedToAnother(sender, src)) {
      // Only the router hears it: it counts the attempt (arp-lease-conflict, ipv4-lease-conflict).
      if (to !== this.routerPort) this.drop(from, 'switch-lease-conflict');
      if (this.routerPort && (to === undefined || to === this.routerPort)) this.send(this.routerPort, frame);
      return;
    }
    if (!to) return this.flood(from, frame);
    this.send(to, frame);
  }

  /** `ip` is leased (live) to a MAC other than `src` (see guardLeases). */
  private leasedToAnother(ip: Ipv4Address, src: MacAddress): boolean {
    const holder = this.leaseHolder?.(ip);
    return holder !== undefined && holder !== src;
  }

  private learn(mac: MacAddress, port: Port, now: Instant): void {
    let e = this.table.get(mac);
    // A burst from one MAC: refreshed at most once a millisecond (two Map moves per frame cost more
    // than the table's order gains at that grain).
    if (e && e.port === port && now - e.seen < 1) return;
    if (e) this.forget(mac, e);
    else if (this.table.size >= this.opts.maxMacs) this.evict(this.table);
    if (port.macs.size >= this.maxPerPort) this.evict(port.macs);
    e ??= { port, seen: now };
    e.port = port;
    e.seen = now;
    // Most recently seen last: the Maps' order is the eviction order.
    this.table.set(mac, e);
    port.macs.set(mac, e);
  }

  /** Removes the least recently seen MAC of `from` (the whole table or one port's share). */
  private evict(from: Map<MacAddress, Entry>): void {
    const [mac, e] = from.entries().next().value as [MacAddress, Entry];
    this.forget(mac, e);
    this.evicted++;
  }

  private forget(mac: MacAddress, e: Entry): void {
    this.table.delete(mac);
    e.port.macs.delete(mac);
  }

  private lookup(mac: MacAddress, now: Instant): Port | undefined {
    const e = this.table.get(mac);
    if (!e) return undefined;
    if (now - e.seen >= this.opts.agingMs) {
      this.forget(mac, e);
      return undefined;
    }
    return e.port;
  }

  /**
   * To every other port. A port may keep or transfer what it is given (a worker posts frames with
   * transfer), so all but the last get their own copy.
   */
  private flood(from: Port, frame: Uint8Array): void {
    const to = this.ports.filter((p) => p !== from);
    to.forEach((p, i) => {
      this.send(p, i === to.length - 1 ? frame : frame.slice());
    });
  }

  private send(to: Port, frame: Uint8Array): void {
    to.stats.framesOut++;
    to.stats.bytesOut += frame.length;
    to.deliver(frame);
  }

  private drop(from: Port, reason: SwitchDropReason): void {
    from.stats.drops[reason] = (from.stats.drops[reason] ?? 0) + 1;
    this.opts.onDrop?.(from.name, reason);
  }
}

/** The sender of an ARP or the source of an IPv4 packet; undefined for other frames. */
function senderIp(frame: Uint8Array): Ipv4Address | undefined {
  const type = (frame[12] << 8) | frame[13];
  const off = type === ETHERTYPE_IPV4 ? IPV4_SOURCE : type === ETHERTYPE_ARP ? ARP_SENDER_IP : -1;
  return off >= 0 && frame.length >= off + 4 ? readIpv4(frame, off) : undefined;
}
