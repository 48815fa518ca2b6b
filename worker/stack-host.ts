// One weft Stack running in a browser worker, and what it needs there: a Wisp upstream over the
// browser's WebSocket (or none), DNS forwarding (relay or DNS over HTTPS), the one timer, the relay
// state, drop reports, captures and a measure of the worker's busy time. The frames it sends go to
// `output` and the events it reports to `emit`: a dedicated worker wires them to one page, a shared
// LAN's worker to a switch and every tab (see lan-host.ts).

import { DropReports } from './drop-reports';
import type { Scheduler } from '../core/scheduler';
import { UpstreamDnsForwarder } from '../core/services/dns-upstream-forwarder';
import type { DnsForwarder } from '../core/services/dns-server';
import { Stack } from '../core/stack';
import type { StackOptions } from '../core/stack-options';
import type { LeaseEvent } from '../core/stack-events';
import { checksumPath } from '../core/wire/checksum-simd';
import { formatIpv4, formatMac, parseIpv4 } from '../core/wire/address';
import { RELAY_RESOLVER, WispUpstream, type WispUpstreamState } from '../core/wisp/wisp-upstream';
import { monotonicClock, StackTimer } from '../platform/stack-timer';
import { browserWebSocketCanPause, browserWebSocketFactory } from './browser-ws-transport';
import { DohForwarder } from './doh-forwarder';
import { summarizeFlow, type NetworkEvent, type NetworkSettings, type NetworkStats, type RelayState } from './worker-api';

/**
 * Where the browser cannot pause the relay's WebSocket (no WebSocketStream), a stream the guest reads
 * slower than the relay sends must hold the difference; past this it is reset.
 */
const MAX_HELD_BYTES_WITHOUT_PAUSE = 32 * 1024 * 1024;
/** Failed connection attempts in a row after which the relay state is 'failed' (retries go on). */
const RELAY_ATTEMPTS_BEFORE_FAILED = 5;

const browserScheduler: Scheduler = {
  schedule: (fn, ms) => setTimeout(fn, ms),
  cancel: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
  defer: (fn) => queueMicrotask(fn),
};
/** Epoch milliseconds with sub-millisecond resolution (pcap timestamps keep the microseconds). */
const clock = monotonicClock;
const randomBytes = (out: Uint8Array) => void crypto.getRandomValues(out as Uint8Array<ArrayBuffer>);

/** Takes each frame the stack sends or receives, with its time (a capture). */
export type FrameTap = (frame: Uint8Array, timeMs: number) => void;

/** The stack's part of NetworkStats (what does not depend on the page's frame path). */
export type HostStats = Omit<NetworkStats, 'framesToPage' | 'framesFromPage' | 'framePath' | 'ringDrops' | 'lan'>;

export class StackHost {
  readonly stack: Stack;
  readonly upstream: WispUpstream | undefined;
  private readonly timer: StackTimer;
  private relay: RelayState = 'none';
  private relayAttempts = 0;
  private readonly drops = new DropReports((drops) => this.emit({ type: 'drops', drops }));
  private busyMs = 0;
  private busyDepth = 0;
  private segmentationOffload = false;
  private readonly taps = new Set<FrameTap>();
  private stopped = false;

  /** Starts the stack (and the relay connection); throws when the settings are not usable. */
  constructor(
    settings: NetworkSettings,
    output: (frame: Uint8Array) => void,
    private readonly emit: (e: NetworkEvent) => void,
  ) {
    const network = settingsToNetwork(settings);
    const gateway = network.gateway ?? parseIpv4('10.0.2.2');
    const relayUrl = settings.relayUrl;
    if (relayUrl) {
      this.setRelay('connecting', relayUrl);
      this.upstream = new WispUpstream({
        url: relayUrl,
        connect: browserWebSocketFactory(this.measured),
        scheduler: browserScheduler,
        clock,
        random: randomBytes,
        gateway,
        allowHostLoopback: settings.allowHostLoopback ?? false,
        ...(browserWebSocketCanPause() ? {} : { maxPausedBytes: MAX_HELD_BYTES_WITHOUT_PAUSE }),
        ...(settings.password ? { password: settings.password } : {}),
        onState: (s) => this.onRelayState(s, relayUrl),
      });
    }
    let forwarder: DnsForwarder | undefined;
    if (settings.dohUrl) {
      forwarder = new DohForwarder({ url: settings.dohUrl, onError: (message) => this.emit({ type: 'error', message }) });
    } else if (this.upstream) {
      forwarder = new UpstreamDnsForwarder({ upstream: this.upstream, resolvers: [RELAY_RESOLVER] });
    }
    const options: StackOptions = {
      network,
      upstream: this.upstream,
      dns: {
        forwarder,
        records: new Map(Object.entries(settings.dnsRecords ?? {}).map(([name, ip]) => [name.toLowerCase().replace(/\.$/, ''), parseIpv4(ip)])),
      },
      clock,
      random: randomBytes,
      batchAcks: true,
      segmentationOffload: this.segmentationOffload,
      wake: () => this.rearm(),
      output,
      capture: (frame, _dir, timeMs) => {
        for (const tap of this.taps) tap(frame, timeMs);
      },
    };
    try {
      this.stack = new Stack(options);
    } catch (e) {
      this.upstream?.close();
      throw e;
    }
    const stack = this.stack;
    this.timer = new StackTimer(stack, clock, this.measured);
    stack.on('lease', (e) => this.emit(leaseEvent(e)));
    stack.on('flow-open', (e) => this.emit({ type: 'flow-open', flow: summarizeFlow(e, formatIpv4) }));
    stack.on('flow-close', (e) => this.emit({ type: 'flow-close', flow: summarizeFlow(e, formatIpv4) }));
    stack.on('drop', (e) => this.countDrop(e.reason, e.count));
    this.rearm();
  }

  /** The live leases as 'lease' events, for a tab that joins after they were announced. */
  leaseEvents(): NetworkEvent[] {
    return this.stack.leases().map(leaseEvent);
  }

  /** Runs `fn` and adds its wall time to the busy time (the worker's own work, not its idle waits). */
  readonly measured = (fn: () => void): void => {
    if (this.busyDepth > 0) {
      fn();
      return;
    }
    const t0 = performance.now();
    this.busyDepth++;
    try {
      fn();
    } finally {
      this.busyDepth--;
      this.busyMs += performance.now() - t0;
    }
  };

  /** The relay connection's state now. */
  get relayState(): RelayState {
    return this.relay;
  }

  /** After a burst of input: sends the ACKs it coalesced and re-arms the timer. */
  inputDone(): void {
    this.stack.flush();
    this.rearm();
  }

  rearm(): void {
    this.timer.rearm();
  }

  setSegmentationOffload(on: boolean): void {
    this.segmentationOffload = on;
    this.stack.setSegmentationOffload(on);
  }

  /** Hands every frame the stack sends or receives to `tap` until the returned function is called. */
  tap(tap: FrameTap): () => void {
    this.taps.add(tap);
    return () => this.taps.delete(tap);
  }

  stats(): HostStats {
    return {
      ...this.stack.counters(),
      relay: this.relay,
      workerBusyMs: this.busyMs,
      segmentationOffload: this.segmentationOffload,
      checksum: checksumPath(),
    };
  }

  /** Counts frames dropped outside the stack (reported with its own drops, at most once a second). */
  countDrop(reason: string, count: number): void {
    if (!this.stopped) this.drops.count(reason, count);
  }

  /** Stops the timer, the stack and the relay connection. */
  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.timer.stop();
    this.drops.stop();
    this.taps.clear();
    this.stack.shutdown();
    this.upstream?.close();
    if (this.relay !== 'none') this.setRelay('none');
  }

  /**
   * Relay state from the upstream's typed state: 'connected' once a handshake completes (and while
   * the relay has closed an idle connection, which comes back when a flow needs it); 'reconnecting'
   * when an established connection drops; 'failed' after RELAY_ATTEMPTS_BEFORE_FAILED attempts in a
   * row came to nothing (the upstream keeps retrying with backoff, and a later success is 'connected').
   */
  private onRelayState(s: WispUpstreamState, url: string): void {
    if (s.state === 'idle') return;
    if (s.state === 'ready') {
      this.relayAttempts = 0;
      this.setRelay('connected', url);
      return;
    }
    if (this.relay === 'connected') {
      this.relayAttempts = 0;
      this.setRelay('reconnecting', url, s.message);
      return;
    }
    this.relayAttempts++;
    if (this.relayAttempts >= RELAY_ATTEMPTS_BEFORE_FAILED) {
      this.setRelay('failed', url, `${this.relayAttempts} attempts failed (last: ${s.message}); still retrying`);
    }
  }

  private setRelay(state: RelayState, url?: string, message?: string): void {
    if (state === this.relay) return;
    this.relay = state;
    this.emit({ type: 'relay', state, ...(url ? { url } : {}), ...(message ? { message } : {}) });
  }
}

function settingsToNetwork(s: NetworkSettings): NonNullable<StackOptions['network']> {
  const n = s.network ?? {};
  return {
    ...(n.network ? { network: parseIpv4(n.network) } : {}),
    ...(n.prefixLength !== undefined ? { prefixLength: n.prefixLength } : {}),
    ...(n.gateway ? { gateway: parseIpv4(n.gateway) } : {}),
    ...(n.dns ? { dns: parseIpv4(n.dns) } : {}),
    ...(n.firstLease ? { firstLease: parseIpv4(n.firstLease) } : {}),
    ...(s.mtu !== undefined ? { mtu: s.mtu } : {}),
  };
}

function leaseEvent(e: LeaseEvent): NetworkEvent {
  return { type: 'lease', mac: formatMac(e.mac), ip: formatIpv4(e.ip), ...(e.hostname ? { hostname: e.hostname } : {}) };
}
