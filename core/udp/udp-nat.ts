// UDP from the guest to anywhere: one upstream flow per guest 5-tuple, kept while it is used.
// Flows idle for the timeout (default 60 s) close; past the cap (default 1024) the least recently
// used flow is evicted. Replies come back from the address the guest sent to, as a NAT would.

import type { UdpConfig } from '../config';
import type { TimerOwner, TimerQueue } from '../timer-queue';
import type { FlowEndpoint, Upstream, UdpFlow, UpstreamError } from '../upstream';
import type { Ipv4Address } from '../wire/address';
import type { DropReason } from '../wire/parse-result';
import { copyBytes } from '../wire/bytes';
import { after, type Instant } from '../clock';

export interface UdpFlowEvent {
  protocol: 'udp';
  guest: FlowEndpoint;
  target: FlowEndpoint;
  bytesFromGuest: number;
  bytesToGuest: number;
  openedAt: number;
  reason?: UdpCloseReason;
}

/** Why a UDP flow ended: no datagram for the idle time, evicted for a newer one, or the stack stopped. */
export type UdpCloseReason = 'idle' | 'evicted' | 'shutdown';

/** What the NAT needs from the stack that owns it. */
export interface UdpNatHost {
  now(): Instant;
  /** Sends a datagram to the guest from `from`. */
  sendToGuest(from: FlowEndpoint, to: FlowEndpoint, payload: Uint8Array): void;
  /** Tells the guest its datagram could not be delivered (ICMP destination unreachable). */
  unreachable(flow: { guest: FlowEndpoint; target: FlowEndpoint }, error: UpstreamError, lastHeader: Uint8Array): void;
  drop(reason: DropReason): void;
  flowOpened(e: UdpFlowEvent): void;
  flowClosed(e: UdpFlowEvent): void;
}

class NatFlow implements TimerOwner {
  timerScheduledAt?: Instant;
  upstream!: UdpFlow;
  lastActivity: Instant;
  bytesFromGuest = 0;
  bytesToGuest = 0;
  /** The first 8 bytes of the last datagram sent (quoted in ICMP errors). */
  lastHeader = new Uint8Array(8);
  closed = false;

  constructor(
    readonly key: string,
    readonly guest: FlowEndpoint,
    readonly target: FlowEndpoint,
    readonly openedAt: Instant,
    private readonly nat: UdpNat,
  ) {
    this.lastActivity = openedAt;
  }

  onTimer(now: Instant): Instant | undefined {
    if (this.closed) return undefined;
    const idleUntil = after(this.lastActivity, this.nat.config.idleTimeoutMs);
    if (now >= idleUntil) {
      this.nat.close(this, 'idle');
      return undefined;
    }
    return idleUntil;
  }
}

export class UdpNat {
  /** Insertion order = least recently used first. */
  private readonly flows = new Map<string, NatFlow>();

  constructor(
    readonly config: UdpConfig,
    private readonly upstream: Upstream | undefined,
    private readonly timers: TimerQueue,
    private readonly host: UdpNatHost,
  ) {}

  get size(): number {
    return this.flows.size;
  }

  flowList(): UdpFlowEvent[] {
    return [...this.flows.values()].map((f) => this.describe(f));
  }

  /** A datagram from the guest; `udpHeader` is its 8-byte header, quoted in ICMP errors. */
  input(src: Ipv4Address, srcPort: number, dst: Ipv4Address, dstPort: number, payload: Uint8Array, udpHeader: Uint8Array): void {
    if (!this.upstream) return this.host.drop('udp-no-upstream');
    const key = `${src}:${srcPort}>${dst}:${dstPort}`;
    const now = this.host.now();
    let flow = this.flows.get(key);
    if (flow) {
      this.flows.delete(key); // re-insert below: most recently used goes last
    } else {
      if (this.flows.size >= this.config.maxFlows) {
        const oldest = this.flows.values().next().value as NatFlow;
        this.close(oldest, 'evicted');
        this.host.drop('udp-flow-evicted');
      }
      flow = this.open(key, { ip: src, port: srcPort }, { ip: dst, port: dstPort }, now);
    }
    this.flows.set(key, flow);
    flow.lastActivity = now;
    flow.bytesFromGuest += payload.length;
    flow.lastHeader.set(udpHeader.subarray(0, 8));
    // The payload is a view into the guest's frame; the upstream may hold it, so copy.
    flow.upstream.send(copyBytes(payload));
  }

  private open(key: string, guest: FlowEndpoint, target: FlowEndpoint, now: Instant): NatFlow {
    const flow = new NatFlow(key, guest, target, now, this);
    flow.upstream = (this.upstream as Upstream).openUdp(
      target,
      { protocol: 'udp', guest, target },
      {
        onDatagram: (data) => {
          if (flow.closed) return;
          flow.lastActivity = this.host.now();
          flow.bytesToGuest += data.length;
          this.host.sendToGuest(target, guest, data);
        },
        onError: (error) => {
          if (flow.closed) return;
          this.host.unreachable(flow, error, flow.lastHeader);
        },
      },
    );
    this.timers.schedule(flow, after(now, this.config.idleTimeoutMs));
    this.host.flowOpened(this.describe(flow));
    return flow;
  }

  close(flow: NatFlow, reason: UdpCloseReason): void {
    if (flow.closed) return;
    flow.closed = true;
    this.timers.cancel(flow);
    if (this.flows.get(flow.key) === flow) this.flows.delete(flow.key);
    flow.upstream.close();
    this.host.flowClosed({ ...this.describe(flow), reason });
  }

  closeAll(reason: UdpCloseReason): void {
    for (const f of [...this.flows.values()]) this.close(f, reason);
  }

  private describe(f: NatFlow): UdpFlowEvent {
    return { protocol: 'udp', guest: f.guest, target: f.target, bytesFromGuest: f.bytesFromGuest, bytesToGuest: f.bytesToGuest, openedAt: f.openedAt };
  }
}
