// One LAN room of `weft relay --lan`: a learning switch whose ports are the members' WebSockets,
// and weft's router on its router port — a Stack of its own, hosted here, with DHCP (a lease per
// MAC), DNS (guests' names as <hostname>.weft.internal) and NAT to the internet. The router's
// upstream is a Wisp connection into this relay (memory-wisp.ts), so what the room's guests reach
// outside is under the relay's policy and limits exactly as a page's own Wisp connection would be.
//
// Why the relay routes and not one of the members: the room then has one DHCP server and one name
// table whoever comes and goes, it does not end when the member that routed leaves, and the
// guests' traffic to the internet goes member → relay → internet, not member → relay → routing
// member → relay → internet (twice the relay's bandwidth, and the routing page's upload).

import { randomFillSync } from 'node:crypto';
import { resolveNetworkConfig } from '../../core/config';
import { LearningSwitch, type SwitchDropReason, type SwitchPort } from '../../core/link/learning-switch';
import { UpstreamDnsForwarder } from '../../core/services/dns-upstream-forwarder';
import { Stack } from '../../core/stack';
import type { LeaseEvent } from '../../core/stack-events';
import { formatIpv4, formatMac } from '../../core/wire/address';
import { RELAY_RESOLVER, type WispTransport } from '../../core/wisp/wisp-upstream';
import { monotonicClock, StackTimer } from '../../platform/stack-timer';
import type { EventLog } from '../log';
import { WispUpstream } from '../wisp-upstream';

/** The room's IP MTU: what v86's and QEMU's NICs take without jumbo frames. */
export const ROOM_MTU = 1500;
/** MACs the room's switch remembers (a member's flood of source MACs is bounded before this, per member). */
const SWITCH_MACS = 1024;
/** A Linux bridge's default ageing time. */
const SWITCH_AGING_MS = 300_000;
/**
 * Leases: every address from 10.0.2.15 to 10.0.2.254, held ten minutes (renewed after five), so the
 * addresses of members that left come back soon. At most --lan-max-members × MAX_MACS_PER_MEMBER
 * guests are on the room at once, fewer than the pool.
 */
const LEASE_COUNT = 240;
const LEASE_SECONDS = 600;

/** What a room needs from the relay that hosts it. */
export interface LanRoomHost {
  log: EventLog;
  /** A new in-memory Wisp connection into this relay, for the room's router (`label` names it in logs). */
  openWisp(label: string): WispTransport;
  /** Flows to the gateway go to the relay host's loopback (the relay allows loopback: --allow-loopback). */
  gatewayIsHost: boolean;
  /** The room's DHCP leased an address (the members are told who has it). */
  onLease(lease: LeaseEvent): void;
  /** The room's switch dropped a member's frame (a spoofed router address, another's lease, …). */
  onSwitchDrop(reason: SwitchDropReason): void;
}

export class LanRoom {
  readonly openedAt = Date.now();
  private readonly sw: LearningSwitch;
  private readonly stack: Stack;
  private readonly timer: StackTimer;
  private readonly upstream: WispUpstream;
  private readonly router: SwitchPort;
  private readonly ports = new Set<SwitchPort>();
  private closed = false;

  constructor(
    readonly name: string,
    /** sha256 of the relay's salt and the room's key (the key itself is not kept). */
    readonly keyDigest: Buffer,
    host: LanRoomHost,
  ) {
    const network = resolveNetworkConfig({ mtu: ROOM_MTU, leaseCount: LEASE_COUNT, leaseTimeSeconds: LEASE_SECONDS });
    this.upstream = new WispUpstream({
      url: `memory:lan/${name}`,
      connect: () => host.openWisp(`lan:${name}`),
      gateway: network.gateway,
      allowHostLoopback: host.gatewayIsHost,
    });
    this.sw = new LearningSwitch({
      maxMacs: SWITCH_MACS,
      agingMs: SWITCH_AGING_MS,
      now: () => monotonicClock.now(),
      onDrop: (_port, reason) => host.onSwitchDrop(reason),
    });
    let timer: StackTimer | undefined;
    let router: SwitchPort | undefined;
    this.stack = new Stack({
      network,
      upstream: this.upstream,
      dns: { forwarder: new UpstreamDnsForwarder({ upstream: this.upstream, resolvers: [RELAY_RESOLVER] }) },
      clock: monotonicClock,
      random: (out) => randomFillSync(out),
      batchAcks: true,
      wake: () => timer?.rearm(),
      // Frames the router sends go into the switch at its port (towards one member, or flooded).
      output: (frame) => router?.input(frame),
    });
    this.router = router = this.sw.addRouterPort([this.stack.config.gatewayMac], (frame) => this.stack.input(frame));
    this.sw.guardLeases((ip) => this.stack.leaseHolderOf(ip));
    this.timer = timer = new StackTimer(this.stack, monotonicClock);
    this.stack.on('lease', (e) => {
      host.log('lan-lease', { room: name, mac: formatMac(e.mac), ip: formatIpv4(e.ip), ...(e.hostname ? { hostname: e.hostname } : {}) });
      host.onLease(e);
    });
    this.timer.rearm();
  }

  get members(): number {
    return this.ports.size;
  }

  /** A port for a member: frames for it go to `deliver` (which may keep them: no one writes them again). */
  join(label: string, deliver: (frame: Uint8Array) => void): SwitchPort {
    const port = this.sw.addPort(label, deliver);
    this.ports.add(port);
    return port;
  }

  leave(port: SwitchPort): void {
    if (!this.ports.delete(port)) return;
    port.remove();
  }

  /** After a member's message: the ACKs the router coalesced go out, and its timer follows new deadlines. */
  endOfBatch(): void {
    if (this.closed) return;
    this.stack.flush();
    this.timer.rearm();
  }

  /** Frames the room's router took from the switch (in) and sent into it (out). */
  counters(): { routerFramesIn: number; routerFramesOut: number } {
    const c = this.router.counters();
    // The switch counts from the port's side: what the router sent is its port's "in".
    return { routerFramesIn: c.framesOut, routerFramesOut: c.framesIn };
  }

  /** The last member left (or the relay stops): the router's flows are reset and its Wisp connection closed. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.timer.stop();
    for (const p of this.ports) p.remove();
    this.ports.clear();
    this.stack.shutdown();
    this.upstream.close();
  }
}
