// One Ethernet LAN for several guests (the one-LAN issue): a learning switch whose ports are the
// guests' NICs and weft's router (the Stack's EthernetPort output goes in at the router port, and
// what the switch delivers there goes to Stack.input). Unicast between guests goes port to port
// without passing through the router and reaches no other port; broadcast, multicast and unknown
// destinations are flooded. Sources are learned with aging into a bounded table. The router's MACs
// are fixed to the router port: a guest that sends with one of them is dropped, so it cannot
// draw weft's traffic to itself.

import type { Instant } from '../clock';
import { isGroupMac, readMac, type MacAddress } from '../wire/address';

const ETHERNET_HEADER = 14;

export type SwitchDropReason = 'switch-runt' | 'switch-bad-source' | 'switch-spoofed-router-mac' | 'switch-same-port' | 'switch-port-removed';

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
  /** A MAC not seen for this long is unknown again (flooded to), as a port may have moved. */
  agingMs: number;
  now: () => Instant;
}

interface Port {
  name: string;
  deliver: (frame: Uint8Array) => void;
  stats: SwitchPortCounters;
  removed: boolean;
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

  constructor(private readonly opts: LearningSwitchOptions) {}

  get macsLearned(): number {
    return this.table.size;
  }

  /** A port whose NIC receives frames through `deliver` (which then owns each frame it gets). */
  addPort(name: string, deliver: (frame: Uint8Array) => void): SwitchPort {
    const port: Port = { name, deliver, stats: { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, drops: {} }, removed: false };
    this.ports.push(port);
    return {
      name,
      input: (frame) => this.forward(port, frame),
      counters: () => ({ ...port.stats, drops: { ...port.stats.drops } }),
      remove: () => this.remove(port),
    };
  }

  /** The router's port: `macs` (weft's own) are always behind it. */
  addRouterPort(macs: readonly MacAddress[], deliver: (frame: Uint8Array) => void): SwitchPort {
    const p = this.addPort('router', deliver);
    const port = this.ports[this.ports.length - 1];
    for (const m of macs) this.fixed.set(m, port);
    return p;
  }

  private remove(port: Port): void {
    if (port.removed) return;
    port.removed = true;
    this.ports.splice(this.ports.indexOf(port), 1);
    for (const [mac, e] of this.table) if (e.port === port) this.table.delete(mac);
    for (const [mac, p] of this.fixed) if (p === port) this.fixed.delete(mac);
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
    const now = this.opts.now();
    if (!owner) this.learn(src, from, now);
    if (isGroupMac(dst)) return this.flood(from, frame);
    const to = this.fixed.get(dst) ?? this.lookup(dst, now);
    if (!to) return this.flood(from, frame);
    if (to === from) return this.drop(from, 'switch-same-port');
    this.send(to, frame);
  }

  private learn(mac: MacAddress, port: Port, now: Instant): void {
    const e = this.table.get(mac);
    if (e) {
      // Most recently seen last: the Map's order is the eviction order.
      this.table.delete(mac);
      e.port = port;
      e.seen = now;
      this.table.set(mac, e);
      return;
    }
    if (this.table.size >= this.opts.maxMacs) this.table.delete(this.table.keys().next().value as MacAddress);
    this.table.set(mac, { port, seen: now });
  }

  private lookup(mac: MacAddress, now: Instant): Port | undefined {
    const e = this.table.get(mac);
    if (!e) return undefined;
    if (now - e.seen >= this.opts.agingMs) {
      this.table.delete(mac);
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
  }
}
