// The weft Web Worker: owns one Stack, drives its timers, connects it to a Wisp relay over the
// browser's WebSocketStream or WebSocket (or to nothing but DNS over HTTPS), and talks to the page:
// control calls through comlink, frames as packed, transferred batches over a MessagePort.

import * as Comlink from 'comlink';
import { PcapWriter } from '../core/pcap-writer';
import { monotonicClock, StackTimer } from '../platform/stack-timer';
import type { Scheduler } from '../core/scheduler';
import { UpstreamDnsForwarder } from '../core/services/dns-upstream-forwarder';
import type { DnsForwarder } from '../core/services/dns-server';
import { Stack } from '../core/stack';
import type { StackOptions } from '../core/stack-options';
import { formatIpv4, formatMac, parseIpv4 } from '../core/wire/address';
import { RELAY_RESOLVER, WispUpstream, type Publication, type WispUpstreamState } from '../core/wisp/wisp-upstream';
import { publishGuestPort } from '../core/wisp/guest-publication';
import { browserWebSocketCanPause, browserWebSocketFactory } from './browser-ws-transport';
import { DohForwarder } from './doh-forwarder';
import { FrameBatcher, unpackFrames } from './frame-batch';
import { FrameRingReader, FrameRingWriter } from './frame-ring';
import { GuestConnector } from './guest-tcp';
import {
  RING_DOORBELL,
  summarizeFlow,
  type FlowSummary,
  type FramePath,
  type FrameRingBuffers,
  type GuestConnectRequest,
  type GuestConnectResult,
  type GuestTcpEnd,
  type NetworkEvent,
  type PublishEvent,
  type NetworkSettings,
  type NetworkStats,
  type RelayState,
  type WeftWorkerApi,
} from './worker-api';

/** Captures stop growing past this (the page can download and restart). */
const MAX_CAPTURE_BYTES = 64 * 1024 * 1024;
/**
 * Where the browser cannot pause the relay's WebSocket (no WebSocketStream), a stream the guest reads
 * slower than the relay sends must hold the difference; past this it is reset.
 */
const MAX_HELD_BYTES_WITHOUT_PAUSE = 32 * 1024 * 1024;
/** Failed connection attempts in a row after which the relay state is 'failed' (retries go on). */
const RELAY_ATTEMPTS_BEFORE_FAILED = 5;
/** Drop counters are reported at most this often. */
const DROP_REPORT_MS = 1000;

const browserScheduler: Scheduler = {
  schedule: (fn, ms) => setTimeout(fn, ms),
  cancel: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
  defer: (fn) => queueMicrotask(fn),
};
/** Epoch milliseconds with sub-millisecond resolution (pcap timestamps keep the microseconds). */
const clock = monotonicClock;
const randomBytes = (out: Uint8Array) => void crypto.getRandomValues(out as Uint8Array<ArrayBuffer>);

class WeftWorker implements WeftWorkerApi {
  private stack: Stack | undefined;
  private upstream: WispUpstream | undefined;
  /** The page's publications (network.publish), by the page's id. */
  private readonly publications = new Map<number, { publication: Publication; onEvent: (e: PublishEvent) => void }>();
  private port: MessagePort | undefined;
  private timer: StackTimer | undefined;
  private relay: RelayState = 'none';
  private emit: (e: NetworkEvent) => void = () => {};
  private capture: { chunks: Uint8Array[]; bytes: number; writer: PcapWriter } | undefined;
  private framesToPage = 0;
  private framesFromPage = 0;
  private pendingDrops: Record<string, number> = {};
  private dropTimer: ReturnType<typeof setTimeout> | undefined;
  private relayAttempts = 0;
  private busyMs = 0;
  private busyDepth = 0;
  private framePath: FramePath = 'transfer';
  private rings: { fromPage: FrameRingReader; toPage: FrameRingWriter } | undefined;
  private segmentationOffload = false;
  /** The page's connections into the guest (connectTcp). */
  private guests: GuestConnector | undefined;

  /** Runs `fn` and adds its wall time to busyMs (the worker's own work, not its idle waits). */
  private readonly measured = (fn: () => void): void => {
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

  async start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void> {
    if (this.stack) throw new Error('the network is already started');
    this.emit = onEvent;
    this.port = framePort;
    const network = settingsToNetwork(settings);
    const gateway = network.gateway ?? parseIpv4('10.0.2.2');

    if (settings.relayUrl) {
      this.setRelay('connecting', settings.relayUrl);
      this.upstream = new WispUpstream({
        url: settings.relayUrl,
        connect: browserWebSocketFactory(this.measured),
        scheduler: browserScheduler,
        clock,
        random: randomBytes,
        gateway,
        allowHostLoopback: settings.allowHostLoopback ?? false,
        ...(browserWebSocketCanPause() ? {} : { maxPausedBytes: MAX_HELD_BYTES_WITHOUT_PAUSE }),
        ...(settings.password ? { password: settings.password } : {}),
        onState: (s) => this.onRelayState(s, settings.relayUrl as string),
      });
    }
    let forwarder: DnsForwarder | undefined;
    if (settings.dohUrl) {
      forwarder = new DohForwarder({ url: settings.dohUrl, onError: (message) => this.emit({ type: 'error', message }) });
    } else if (this.upstream) {
      forwarder = new UpstreamDnsForwarder({ upstream: this.upstream, resolvers: [RELAY_RESOLVER] });
    }

    let output: (frame: Uint8Array) => void;
    if (rings) {
      this.framePath = 'sab';
      const toPage = new FrameRingWriter(rings.toPage, () => framePort.postMessage(RING_DOORBELL));
      this.rings = { fromPage: new FrameRingReader(rings.toWorker), toPage };
      output = (frame) => {
        if (toPage.push(frame)) this.framesToPage++;
        else this.countDrop('frame-ring-full', 1);
      };
    } else {
      const batcher = new FrameBatcher(
        (batch, count) => {
          this.framesToPage += count;
          framePort.postMessage(batch, [batch]);
        },
        (fn) => queueMicrotask(fn),
      );
      output = (frame) => batcher.push(frame);
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
      capture: (frame, _dir, timeMs) => this.captureFrame(frame, timeMs),
    };
    const stack = new Stack(options);
    this.stack = stack;
    this.timer = new StackTimer(stack, clock, this.measured);
    stack.on('lease', (e) => this.emit({ type: 'lease', mac: formatMac(e.mac), ip: formatIpv4(e.ip), ...(e.hostname ? { hostname: e.hostname } : {}) }));
    stack.on('flow-open', (e) => this.emit({ type: 'flow-open', flow: summarizeFlow(e, formatIpv4) }));
    stack.on('flow-close', (e) => this.emit({ type: 'flow-close', flow: summarizeFlow(e, formatIpv4) }));
    stack.on('drop', (e) => this.countDrop(e.reason, e.count));
    this.guests = new GuestConnector(stack);

    const fromPage = this.rings?.fromPage;
    framePort.onmessage = (e: MessageEvent) => {
      const batch: unknown = e.data;
      if (batch === RING_DOORBELL) {
        fromPage?.ring();
        return;
      }
      if (!(batch instanceof ArrayBuffer)) return;
      this.measured(() => {
        this.framesFromPage += unpackFrames(batch, (frame) => stack.input(frame));
        stack.flush();
        this.rearm();
      });
    };
    framePort.start();
    if (fromPage) {
      fromPage.start(
        (frame) => {
          this.framesFromPage++;
          stack.input(frame);
        },
        () => {
          stack.flush();
          this.rearm();
        },
        this.measured,
      );
    }
    this.rearm();
  }

  async stop(): Promise<void> {
    this.timer?.stop();
    if (this.dropTimer) clearTimeout(this.dropTimer);
    this.timer = this.dropTimer = undefined;
    this.rings?.fromPage.close();
    this.rings = undefined;
    this.guests?.close();
    this.guests = undefined;
    this.stack?.shutdown();
    for (const id of [...this.publications.keys()]) await this.unpublish(id);
    this.upstream?.close();
    this.port?.close();
    this.stack = undefined;
    this.upstream = undefined;
    this.port = undefined;
    if (this.relay !== 'none') this.setRelay('none');
  }

  async setSegmentationOffload(on: boolean): Promise<void> {
    this.segmentationOffload = on;
    this.stack?.setSegmentationOffload(on);
  }

  async stats(): Promise<NetworkStats> {
    if (!this.stack) throw new Error('the network is not started');
    return {
      ...this.stack.counters(),
      relay: this.relay,
      framesToPage: this.framesToPage,
      framesFromPage: this.framesFromPage,
      workerBusyMs: this.busyMs,
      framePath: this.framePath,
      segmentationOffload: this.segmentationOffload,
      ringDrops: this.ringDrops(),
    };
  }

  /** Frames the rings dropped (full, or a frame too long for them), both directions; zeros without rings. */
  private ringDrops(): NetworkStats['ringDrops'] {
    const dropped = (c: { droppedFull: number; droppedOversized: number } | undefined) => (c ? c.droppedFull + c.droppedOversized : 0);
    return { toWorker: dropped(this.rings?.fromPage.counters()), toPage: dropped(this.rings?.toPage.counters()) };
  }

  async flows(): Promise<FlowSummary[]> {
    return (this.stack?.flows() ?? []).map((f) => summarizeFlow(f, formatIpv4));
  }

  async startCapture(): Promise<void> {
    const chunks: Uint8Array[] = [];
    const capture = {
      chunks,
      bytes: 0,
      writer: new PcapWriter((c) => {
        chunks.push(c);
        capture.bytes += c.length;
      }),
    };
    capture.writer.start();
    this.capture = capture;
  }

  async stopCapture(): Promise<Uint8Array> {
    const c = this.capture;
    this.capture = undefined;
    if (!c) throw new Error('no capture is running');
    const out = new Uint8Array(c.bytes);
    let off = 0;
    for (const chunk of c.chunks) {
      out.set(chunk, off);
      off += chunk.length;
    }
    return Comlink.transfer(out, [out.buffer]);
  }

  async connectTcp(request: GuestConnectRequest, onEnd: (end: GuestTcpEnd) => void): Promise<GuestConnectResult> {
    if (!this.guests) throw new Error('the network is not started');
    const r = await this.guests.connect(request, (end) => {
      // onEnd is the page's function behind a comlink proxy: called once, then let go.
      onEnd(end);
      (onEnd as unknown as Comlink.Remote<unknown>)[Comlink.releaseProxy]();
    });
    // The streams move to the page (see guest-tcp.ts for why transferable streams).
    return r.ok ? Comlink.transfer(r, [r.readable, r.writable]) : r;
  }

  async abortTcp(id: number): Promise<void> {
    this.guests?.abort(id);
  }

  async publish(id: number, guestPort: number, relayPort: number, onEvent: (e: PublishEvent) => void): Promise<void> {
    const stack = this.stack;
    if (!stack || !this.upstream) {
      onEvent({ type: 'refused', code: 'ERR_WEFT_NO_RELAY', message: 'publish needs a relay: createNetwork({ relayUrl })' });
      return;
    }
    await this.unpublish(id);
    const publication = publishGuestPort(this.upstream, stack, guestPort, relayPort, {
      published: (_guestPort, port) => onEvent({ type: 'published', port }),
      refused: (_guestPort, message) => onEvent({ type: 'refused', code: 'ERR_WEFT_PUBLISH_REFUSED', message }),
    });
    this.publications.set(id, { publication, onEvent });
  }

  async unpublish(id: number): Promise<void> {
    const p = this.publications.get(id);
    if (!p) return;
    this.publications.delete(id);
    p.publication.close();
    // onEvent is the page's function behind a comlink proxy: let it go with the publication.
    (p.onEvent as unknown as Comlink.Remote<unknown>)[Comlink.releaseProxy]();
  }

  private captureFrame(frame: Uint8Array, timeMs: number): void {
    const c = this.capture;
    if (c && c.bytes < MAX_CAPTURE_BYTES) c.writer.write(frame, timeMs);
  }

  private rearm(): void {
    this.timer?.rearm();
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

  private countDrop(reason: string, count: number): void {
    this.pendingDrops[reason] = (this.pendingDrops[reason] ?? 0) + count;
    if (this.dropTimer) return;
    this.dropTimer = setTimeout(() => {
      this.dropTimer = undefined;
      const drops = this.pendingDrops;
      this.pendingDrops = {};
      this.emit({ type: 'drops', drops });
    }, DROP_REPORT_MS);
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

Comlink.expose(new WeftWorker());
