// `--upstream wisp://HOST:PORT/PATH/`: guest flows become streams on one WebSocket to a Wisp
// server (weft relay, wisp-js, …). The protocol lives in core/wisp/wisp-client.ts; this file adds
// the socket (behind WispTransport, so a browser worker can supply its own), timers, reconnects
// with backoff, and the gateway mapping. The streams themselves are in wisp-flows.ts.

import { CloseReason, closeReasonName, type PacketAllocator } from './wisp-codec';
import { WispClientSession } from './wisp-client';
import { WispProtocolError } from './wisp-errors';
import type { FlowEndpoint, FlowMeta, TcpStream, TcpStreamHandlers, UdpFlow, UdpFlowHandlers, Upstream } from '../upstream';
import { formatIpv4, parseIpv4, type Ipv4Address } from '../wire/address';
import { WispTcpStream, WispUdpFlow, type AttachFailure, type WispStreamHost, type WispStreamHandlers } from './wisp-flows';
import type { Scheduler, TimerHandle } from '../scheduler';
import type { Clock } from '../clock';

export { upstreamErrorKind } from './wisp-flows';

/**
 * WebSocket close code with which weft relay ends a client that opened no stream in time
 * (--first-stream-timeout). Nothing was lost, so the upstream does not reconnect at once: it
 * reconnects when a flow next needs the relay.
 */
export const WS_CLOSE_NO_STREAM = 4000;

/** The hostname that means "the relay's own DNS resolver" (weft relay maps it, port 53 only). */
export const RELAY_RESOLVER_HOSTNAME = 'resolver.weft.internal';
/**
 * The endpoint a DNS forwarder uses to reach the relay's resolver through this upstream: an address
 * no guest can use (0.0.0.53), sent to the relay as RELAY_RESOLVER_HOSTNAME.
 */
export const RELAY_RESOLVER: FlowEndpoint = { ip: parseIpv4('0.0.0.53'), port: 53 };

/** A WebSocket as the upstream needs it. Messages are whole binary WebSocket messages. */
export interface WispTransport {
  onopen: () => void;
  onmessage: (data: Uint8Array) => void;
  /** `rejected`: the server answered the upgrade but refused it (HTTP error, subprotocol mismatch). */
  onclose: (info: { code: number; reason: string; rejected?: boolean }) => void;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  readonly bufferedAmount: number;
  /**
   * Stop and restart reading from the socket (Node's ws can; a browser WebSocket cannot). Plain Wisp
   * has no flow control towards the client, so this is how a stream the guest is not reading holds
   * back the server — at the price of holding back every other stream on the socket too.
   */
  pause?(): void;
  resume?(): void;
  /**
   * Optional, named as on RTCDataChannel: a transport that can tell when its bufferedAmount has
   * fallen to bufferedAmountLowThreshold or below calls onbufferedamountlow then (Node's ws can;
   * a browser WebSocket cannot, and then the upstream polls bufferedAmount while sending waits).
   */
  bufferedAmountLowThreshold?: number;
  onbufferedamountlow?: () => void;
}

/**
 * The upstream's connection, as it changes: 'ready' once a handshake completes; 'disconnected' when
 * a connection drops or an attempt fails (it retries with backoff); 'idle' when the relay closed it
 * for opening no stream (it reconnects when a flow needs it). Each change is reported once.
 */
export type WispUpstreamState = { state: 'ready'; version: 1 | 2 } | { state: 'disconnected'; message: string; code?: number } | { state: 'idle' };

/** A connection the relay accepted on a published port, waiting for the host to carry it to the guest. */
export interface InboundConnection {
  /** Who connected to the relay's port. */
  remote: { address: string; port: number };
  /**
   * The stream as the stack's TcpStream for the guest side `meta` (an active open into the guest:
   * Stack.connectToGuest's attach). It starts paused; the stack resumes it once the guest accepts.
   */
  adopt(meta: FlowMeta, handlers: TcpStreamHandlers): TcpStream;
  /** The guest cannot take it (no lease, connection table full): close it at the relay. */
  refuse(): void;
}

export interface PublishHandlers {
  /** The relay listens for us on `port` (again after each reconnect; the port may change). */
  onPublished(port: number): void;
  /** The relay refused, or cannot publish at all; `reason` says why. The publication stays asked for. */
  onRefused(reason: string): void;
  onConnection(c: InboundConnection): void;
}

export interface Publication {
  /** The relay's port, while published. */
  readonly port: number | undefined;
  /** Stops listening at the relay (connections already carried stay open). */
  close(): void;
}

/** Opens a WebSocket; `protocols` is ['wisp-v2'] when offering Wisp v2, [] for v1. */
export type WispTransportFactory = (url: string, protocols: string[]) => WispTransport;

/**
 * Held bytes (over all paused streams) at which the WebSocket stops being read, and resumes. That
 * stalls every stream on the socket (a guest that stops reading one stream while it waits for
 * another would wait forever), so with weft's flow control extension, where the server stops
 * reading a paused stream's destination itself, it is only a far backstop.
 */
const PAUSE_READING_AT = 512 * 1024;
const RESUME_READING_AT = 128 * 1024;
const PAUSE_READING_AT_FLOW_CONTROL = 32 * 1024 * 1024;
const RESUME_READING_AT_FLOW_CONTROL = 8 * 1024 * 1024;
/**
 * Unsent WebSocket bytes at which streams stop sending DATA, and the level at which they start
 * again: the transport says when (onbufferedamountlow), or else it is checked every millisecond
 * while blocked. Credits bound each stream, not their sum.
 */
const SEND_BLOCK_AT = 4 * 1024 * 1024;
const SEND_UNBLOCK_AT = 1024 * 1024;
const SEND_CHECK_MS = 1;

export interface WispUpstreamOptions {
  /** ws:// or wss:// URL of the Wisp endpoint (wisp:// is accepted and means ws://). */
  url: string;
  connect: WispTransportFactory;
  /** Offer Wisp v2 (default). A server that rejects the subprotocol is retried with v1. */
  version?: 1 | 2;
  password?: { username: string; password: string };
  maxStreams?: number;
  /** A stream not connected within this time fails with 'timeout' (default 20 000 ms). */
  connectTimeoutMs?: number;
  /**
   * Data held for one paused stream before it is reset (default 4 MiB). With a transport that can
   * pause, reading stops long before that; the bound is for transports that cannot. With weft's
   * flow control (a weft relay), the server stops reading the stream's destination, and the bound
   * is 8 times this: what arrives after the PAUSE was on its way.
   */
  maxPausedBytes?: number;
  /** Reconnect delays: the first, doubling up to the last (defaults 250 ms and 10 s). */
  backoffMs?: { initial: number; max: number };
  /**
   * The stack's gateway address. Flows to it mean "this host": with allowHostLoopback they are sent
   * to 127.0.0.1 (which the relay must allow, e.g. weft relay --allow-loopback); without, refused here.
   */
  gateway?: Ipv4Address;
  allowHostLoopback?: boolean;
  log?: (event: object) => void;
  /** The connection's state changes, typed (the log says the same in words). */
  onState?: (state: WispUpstreamState) => void;
  /** Allocates outgoing DATA packets (they are written whole: it need not zero-fill). */
  allocate?: PacketAllocator;
  /** Timers, time and randomness for reconnects and timeouts (core starts none itself). */
  scheduler: Scheduler;
  clock: Clock;
  random: (out: Uint8Array) => void;
}

export class WispUpstream implements Upstream, WispStreamHost {
  readonly url: string;
  private readonly o: Required<Omit<WispUpstreamOptions, 'password' | 'log' | 'onState' | 'gateway' | 'scheduler' | 'clock' | 'random' | 'allocate'>> &
    Pick<WispUpstreamOptions, 'password' | 'gateway' | 'allocate'>;
  readonly scheduler: Scheduler;
  private readonly clock: Clock;
  private readonly random: (out: Uint8Array) => void;
  private readonly log: (event: object) => void;
  private readonly onState: (state: WispUpstreamState) => void;
  /** The state reported for this connection attempt (a drop is seen twice: the socket closing, then the session ending). */
  private reported: WispUpstreamState['state'] | undefined;
  private transport: WispTransport | undefined;
  private session!: WispClientSession;
  private readonly sinks = new Map<number, WispStreamHandlers>();
  private delayMs: number;
  private reconnectTimer: TimerHandle | undefined;
  private pollTimer: TimerHandle | undefined;
  private useV1 = false;
  private stopped = false;
  /** The relay closed us for opening no stream (WS_CLOSE_NO_STREAM): reconnect on the next flow. */
  private dormant = false;
  private heldBytes = 0;
  private readingPaused = false;
  /** The session is corked until the deferred uncork runs (writes of one batch coalesce). */
  private corked = false;
  private sendBlocked = false;
  private sendCheckTimer: TimerHandle | undefined;
  /** Times a WebSocket to the server was established (for tests and logs). */
  connections = 0;
  /** Publications asked for (publish extension), by listener id; re-asked on every connection. */
  private readonly listeners = new Map<number, { asked: number; port: number | undefined; handlers: PublishHandlers }>();
  private nextListenerId = 1;

  constructor(options: WispUpstreamOptions) {
    this.url = options.url.replace(/^wisp:/, 'ws:').replace(/^wisps:/, 'wss:');
    this.o = {
      url: this.url,
      connect: options.connect,
      version: options.version ?? 2,
      password: options.password,
      maxStreams: options.maxStreams ?? 4096,
      connectTimeoutMs: options.connectTimeoutMs ?? 20_000,
      maxPausedBytes: options.maxPausedBytes ?? 4 * 1024 * 1024,
      backoffMs: options.backoffMs ?? { initial: 250, max: 10_000 },
      gateway: options.gateway,
      allowHostLoopback: options.allowHostLoopback ?? false,
      allocate: options.allocate,
    };
    this.log = options.log ?? (() => {});
    this.onState = options.onState ?? (() => {});
    this.scheduler = options.scheduler;
    this.clock = options.clock;
    this.random = options.random;
    this.delayMs = this.o.backoffMs.initial;
    this.useV1 = this.o.version === 1;
    this.newSession();
    this.open();
  }

  /** True once the handshake with the server is complete (and until the connection drops). */
  get isReady(): boolean {
    return this.session.isOpen;
  }

  /** The same as close(), named like DirectUpstream's for `weft vm` shutdown. */
  closeAll(): void {
    this.close();
  }

  /** Stops reconnecting and closes the WebSocket; open flows get onClose(error). */
  close(): void {
    this.stopped = true;
    this.cancel(this.reconnectTimer);
    this.cancel(this.pollTimer);
    this.cancel(this.sendCheckTimer);
    this.session.abort(new WispProtocolError('connection-lost', 'the upstream was closed'));
    this.transport?.close(1000, 'closing');
    this.transport = undefined;
  }

  openTcp(dst: FlowEndpoint, meta: FlowMeta, handlers: TcpStreamHandlers): TcpStream {
    return new WispTcpStream(this, dst, meta, handlers, this.o.connectTimeoutMs, this.o.maxPausedBytes);
  }

  openUdp(dst: FlowEndpoint, meta: FlowMeta, handlers: UdpFlowHandlers): UdpFlow {
    return new WispUdpFlow(this, dst, meta, handlers);
  }

  /**
   * Asks the relay to listen for us (weft's publish extension; the relay needs --publish-ports):
   * on `port` of its range, or 0 for any. Kept across reconnects, asking for the port it had.
   */
  publish(port: number, handlers: PublishHandlers): Publication {
    const id = this.nextListenerId++;
    const entry = { asked: port, port: undefined as number | undefined, handlers };
    this.listeners.set(id, entry);
    if (this.dormant) {
      this.dormant = false;
      this.open();
    }
    if (this.session.isOpen) this.askListen(id);
    return {
      get port() {
        return entry.port;
      },
      close: () => {
        if (!this.listeners.delete(id)) return;
        this.session.unlisten(id);
      },
    };
  }

  private askListen(id: number): void {
    const l = this.listeners.get(id);
    if (!l) return;
    const r = this.session.listen(id, l.port ?? l.asked);
    if (r !== undefined)
      this.scheduler.defer(() => l.handlers.onRefused('the relay does not offer publishing (weft relay --publish-ports, with a token or password)'));
  }

  private listenResult(id: number, status: number, port: number): void {
    const l = this.listeners.get(id);
    if (!l) return;
    if (status === 0) {
      l.port = port;
      this.log({ event: 'wisp-published', url: this.url, port });
      l.handlers.onPublished(port);
      return;
    }
    // After a reconnect the old port may have been taken meanwhile: any port will do then.
    if (l.port !== undefined && l.asked === 0) {
      l.port = undefined;
      this.askListen(id);
      return;
    }
    l.port = undefined;
    l.handlers.onRefused(`the relay refused to listen${l.asked ? ` on port ${l.asked}` : ''} (${closeReasonName(status)})`);
  }

  private accepted(listenerId: number, id: number, remote: { address: string; port: number }): void {
    const l = this.listeners.get(listenerId);
    if (!l) {
      this.session.close(id, CloseReason.BLOCKED);
      return;
    }
    let taken = false;
    l.handlers.onConnection({
      remote,
      adopt: (meta, handlers) => {
        taken = true;
        return new WispTcpStream(this, meta.target, meta, handlers, this.o.connectTimeoutMs, this.o.maxPausedBytes, {
          id,
          remote: `${remote.address}:${remote.port}`,
        });
      },
      refuse: () => {
        if (!taken) this.session.close(id, CloseReason.REFUSED);
      },
    });
  }

  // ---- used by the stream classes ----------------------------------------------------------------

  /** Opens a stream on the current session, or says why it could not. */
  attach(type: 'tcp' | 'udp', dst: FlowEndpoint, sink: WispStreamHandlers): number | AttachFailure {
    if (this.dormant) {
      this.dormant = false;
      this.open();
    }
    let host = formatIpv4(dst.ip);
    if (dst.ip === RELAY_RESOLVER.ip) host = RELAY_RESOLVER_HOSTNAME;
    else if (this.o.gateway !== undefined && dst.ip === this.o.gateway) {
      if (!this.o.allowHostLoopback) return { kind: 'blocked', message: 'the gateway reaches host loopback only with --allow-host-loopback' };
      host = '127.0.0.1';
    }
    const id = this.session.openStream(type, host, dst.port);
    if (typeof id === 'string') return { kind: id === 'wisp-too-many-streams' ? 'throttled' : 'unreachable', message: id };
    this.sinks.set(id, sink);
    if (this.session.isOpen) {
      const confirms = this.session.confirmsOpens;
      this.scheduler.defer(() => sink.ready(confirms));
    }
    return id;
  }

  adopt(id: number, sink: WispStreamHandlers): void {
    this.sinks.set(id, sink);
  }

  write(id: number, data: Uint8Array): boolean {
    if (!this.corked) {
      // Writes until the call stack unwinds (one batch of guest segments) go out together.
      this.corked = true;
      this.session.cork();
      this.scheduler.defer(() => {
        this.corked = false;
        this.session.uncork();
      });
    }
    const ok = this.session.write(id, data);
    this.schedulePoll();
    return ok;
  }

  pauseStream(id: number, paused: boolean): boolean {
    return this.session.pauseStream(id, paused);
  }

  held(delta: number): void {
    this.heldBytes += delta;
    const t = this.transport;
    const flow = this.session.controlsFlow;
    if (!this.readingPaused && this.heldBytes > (flow ? PAUSE_READING_AT_FLOW_CONTROL : PAUSE_READING_AT) && t?.pause) {
      this.readingPaused = true;
      t.pause();
    } else if (this.readingPaused && this.heldBytes <= (flow ? RESUME_READING_AT_FLOW_CONTROL : RESUME_READING_AT)) {
      this.readingPaused = false;
      t?.resume?.();
    }
  }

  end(id: number): boolean {
    return this.session.end(id);
  }

  detach(id: number, reason: number = CloseReason.VOLUNTARY): void {
    if (!this.sinks.delete(id)) return;
    this.session.close(id, reason);
  }

  // ---- connection management ---------------------------------------------------------------------

  private newSession(): void {
    this.session = new WispClientSession(
      {
        version: this.o.version,
        udp: true,
        ...(this.o.password ? { password: this.o.password } : {}),
        maxStreams: this.o.maxStreams,
        maxDataPayload: 64 * 1024 - 5,
        maxQueuedBytes: 4 * 1024 * 1024,
        handshakeTimeoutMs: 10_000,
        halfClose: true,
        flowControl: true,
        publish: true,
        ...(this.o.allocate ? { allocate: this.o.allocate } : {}),
      },
      {
        send: (m) => this.send(m),
        ready: (info) => {
          this.delayMs = this.o.backoffMs.initial;
          this.log({ event: 'wisp-ready', url: this.url, version: info.version, extensions: info.extensions, ...(info.motd ? { motd: info.motd } : {}) });
          this.report({ state: 'ready', version: info.version });
          const confirms = this.session.confirmsOpens;
          for (const sink of [...this.sinks.values()]) sink.ready(confirms);
          for (const id of [...this.listeners.keys()]) this.askListen(id);
        },
        listenResult: (id, status, port) => this.listenResult(id, status, port),
        streamAccepted: (listenerId, id, remote) => this.accepted(listenerId, id, remote),
        streamConfirmed: (id) => this.sinks.get(id)?.confirmed(),
        streamData: (id, p) => this.sinks.get(id)?.data(p),
        streamWritable: (id) => this.sinks.get(id)?.writable(),
        streamEnded: (id) => this.sinks.get(id)?.ended(),
        streamClosed: (id, reason) => {
          const sink = this.sinks.get(id);
          this.sinks.delete(id);
          sink?.closed(reason);
        },
        terminate: (e) => {
          if (!this.dormant) {
            this.log({ event: 'wisp-disconnected', url: this.url, code: e.code, message: e.message });
            this.report({ state: 'disconnected', message: e.message });
          }
          const t = this.transport;
          this.transport = undefined;
          t?.close(1000, e.code);
          this.afterDisconnect();
        },
      },
    );
  }

  private open(): void {
    if (this.stopped) return;
    this.reported = undefined;
    const protocols = this.useV1 ? [] : ['wisp-v2'];
    const t = this.o.connect(this.url, protocols);
    this.transport = t;
    this.readingPaused = false;
    if (t.bufferedAmountLowThreshold !== undefined) {
      t.bufferedAmountLowThreshold = SEND_UNBLOCK_AT;
      t.onbufferedamountlow = () => {
        if (this.transport === t) this.unblockSend();
      };
    }
    let opened = false;
    t.onopen = () => {
      if (this.transport !== t) return;
      opened = true;
      this.connections++;
      this.session.start(this.clock.now(), this.useV1 ? 1 : 2);
      this.schedulePoll();
    };
    t.onmessage = (data) => {
      if (this.transport !== t) return;
      this.session.receive(data, this.clock.now());
      this.schedulePoll();
    };
    t.onclose = ({ code, reason, rejected }) => {
      if (this.transport !== t) return;
      this.transport = undefined;
      // A server that refuses the v2 subprotocol fails the upgrade: use v1 from now on, at once.
      // (A relay that is merely down fails before any answer and keeps us on v2.)
      const retryV1 = !opened && rejected === true && !this.useV1;
      this.dormant = opened && code === WS_CLOSE_NO_STREAM && this.sinks.size === 0 && this.listeners.size === 0;
      if (this.dormant) {
        this.log({ event: 'wisp-idle', url: this.url, code, reason });
        this.report({ state: 'idle' });
      } else {
        this.log({ event: 'wisp-disconnected', url: this.url, code, reason, ...(retryV1 ? { retry: 'v1' } : {}) });
        this.report({ state: 'disconnected', code, message: `WebSocket closed (${code}${reason ? ` ${reason}` : ''})` });
      }
      if (retryV1) {
        this.useV1 = true;
        this.delayMs = 0;
      }
      if (opened) {
        this.session.abort(new WispProtocolError('connection-lost', `the WebSocket closed (${code}${reason ? ` ${reason}` : ''})`));
      } else {
        // Nothing went out on this WebSocket: flows waiting for it wait for the next one.
        this.scheduleReconnect();
      }
    };
  }

  private send(message: Uint8Array): void {
    const t = this.transport;
    if (!t) return;
    t.send(message);
    if (!this.sendBlocked && t.bufferedAmount > SEND_BLOCK_AT) {
      this.sendBlocked = true;
      this.session.setSendBlocked(true);
      // A transport with onbufferedamountlow says when; others are polled.
      if (t.onbufferedamountlow === undefined) this.sendCheckTimer = this.scheduler.schedule(() => this.checkSendBuffer(), SEND_CHECK_MS);
    }
  }

  private checkSendBuffer(): void {
    this.sendCheckTimer = undefined;
    if (!this.sendBlocked) return;
    if ((this.transport?.bufferedAmount ?? 0) > SEND_UNBLOCK_AT) {
      this.sendCheckTimer = this.scheduler.schedule(() => this.checkSendBuffer(), SEND_CHECK_MS);
      return;
    }
    this.unblockSend();
  }

  private unblockSend(): void {
    if (!this.sendBlocked) return;
    this.sendBlocked = false;
    this.session.setSendBlocked(false);
  }

  /** Streams have been told (by abort); start a fresh session that queues new flows. */
  private afterDisconnect(): void {
    this.cancel(this.pollTimer);
    this.cancel(this.sendCheckTimer);
    this.sendCheckTimer = undefined;
    this.sendBlocked = false;
    if (this.stopped) return;
    this.sinks.clear();
    this.newSession();
    if (!this.dormant) this.scheduleReconnect();
  }

  /** Reports a state change once: a drop seen by both the socket and the session is one change. */
  private report(s: WispUpstreamState): void {
    if (this.reported === s.state) return;
    this.reported = s.state;
    this.onState(s);
  }

  private cancel(handle: TimerHandle | undefined): void {
    if (handle !== undefined) this.scheduler.cancel(handle);
  }

  /** A uniform fraction in [0, 1) from the injected random source. */
  private randomFraction(): number {
    const b = new Uint8Array(4);
    this.random(b);
    return new DataView(b.buffer).getUint32(0) / 2 ** 32;
  }

  private scheduleReconnect(): void {
    if (this.stopped) return;
    const delay = this.delayMs;
    // Jitter so many clients of one relay do not reconnect in lockstep.
    this.delayMs = Math.min(this.o.backoffMs.max, Math.max(this.o.backoffMs.initial, this.delayMs * 2));
    this.reconnectTimer = this.scheduler.schedule(() => this.open(), delay * (0.8 + 0.4 * this.randomFraction()));
  }

  private schedulePoll(): void {
    this.cancel(this.pollTimer);
    const at = this.session.nextDeadline();
    if (at === Infinity) return;
    this.pollTimer = this.scheduler.schedule(() => this.session.poll(this.clock.now()), Math.max(0, at - this.clock.now()) + 1);
  }
}
