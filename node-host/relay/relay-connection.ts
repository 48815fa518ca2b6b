// One Wisp client on the relay: glues a WispServerSession (the protocol) to its WebSocket and to
// the destination sockets, with policy, rate and bandwidth limits, metrics and the per-stream log.
//
// Back-pressure. Client → destination: credits; a packet's credit comes back only once the socket
// has taken it (and, with --bandwidth, once the budget allows). Destination → client: Wisp has no
// credits that way, so when the WebSocket's unsent bytes pass HIGH_WATER every TCP destination of
// this client stops reading until they fall below LOW_WATER. With weft's flow control extension the
// client also pauses single streams (PAUSE/RESUME): that stream's destination stops being read.
// Answers the relay makes itself (CLOSE for a refused CONNECT, say) have no destination to pause:
// past READ_PAUSE_WATER the client's own WebSocket stops being read, so a client that sends
// requests and never reads the answers cannot grow the queue; MAX_UNSENT is the backstop (1008).

import net from 'node:net';
import type { Writable } from 'node:stream';
import { performance } from 'node:perf_hooks';
import { CloseReason, closeReasonName } from '../../core/wisp/wisp-codec';
import type { WispProtocolError } from '../../core/wisp/wisp-errors';
import { WispServerSession, type WispServerHost, type WispStreamRequest } from '../../core/wisp/wisp-server';
import type { EventLog } from '../log';
import type { DestinationPolicy } from './destination-policy';
import type { IpAddress } from './ip-range';
import type { RelayMetrics } from './relay-metrics';
import type { RelayOptions } from './relay-options';
import { normalizeHostname } from './hostname';
import { ResolveError, type Resolve } from './resolver';
import { TcpDestination, type DestinationEvents } from './tcp-destination';
import type { LogThrottle } from './log-throttle';
import { type KeyedRateLimiter, TokenBucket } from './token-bucket';
import { UdpDestination } from './udp-destination';
import { RELAY_RESOLVER_HOSTNAME, WS_CLOSE_NO_STREAM } from '../../core/wisp/wisp-upstream';

const HIGH_WATER = 4 * 1024 * 1024;
const LOW_WATER = 1024 * 1024;
/** Unsent bytes past which the client's WebSocket is not read until they fall below LOW_WATER. */
const READ_PAUSE_WATER = 2 * HIGH_WATER;
/** Unsent bytes past which the client is closed with 1008: it does not read what it asked for. */
const MAX_UNSENT = 4 * HIGH_WATER;
/**
 * What one queued WebSocket message costs beyond its bytes (frame header, callback, buffers): a
 * flood of 9-byte answers costs mostly this, and is counted so.
 */
const MESSAGE_OVERHEAD = 512;
/** CONTINUE value: packets each TCP stream may have in flight towards the relay. */
export const BUFFER_PACKETS = 128;
const HANDSHAKE_TIMEOUT_MS = 10_000;
/**
 * Client bytes not yet handed to destination sockets, over all streams of one client. Credits bound
 * packets; with up to MAX_MESSAGE_BYTES per packet that alone could be a lot, so this is the backstop.
 */
const MAX_UPLOAD_BUFFERED = 64 * 1024 * 1024;
/**
 * Client bytes waiting on one TCP stream. A client whose DATA packets are at most 64 KiB (weft's,
 * v86's) never has more than twice its credits waiting, even while CONTINUEs cross its DATA: 16 MiB.
 * Past this bound the packets are large, and each one a client may send within its credits costs the
 * relay a copy of up to 1 MiB: such a client buffered up to 64 MiB at a stalled destination before.
 */
const MAX_STREAM_UPLOAD_BUFFERED = 2 * BUFFER_PACKETS * 64 * 1024 + 4 * 1024 * 1024;
/** No UDP datagram carries more (65,535 less the IPv4 and UDP headers). */
const MAX_UDP_PAYLOAD = 65_507;
/** Datagrams a UDP stream keeps while its name resolves. */
const MAX_EARLY_DATAGRAMS = 16;

/** A DNS server of the relay's own: guests may reach it on port 53 whatever the policy says. */
export interface RelayResolver {
  address: IpAddress;
  port: number;
}

/** What every client connection needs from the relay server that owns it (shared by all of them). */
export interface RelayConnectionHost {
  options: RelayOptions;
  /**
   * The relay's resolvers (--dns-server, else the host's resolv.conf). Only the first is open to
   * clients, on port 53 (as resolver.weft.internal or by its address), as the help says.
   */
  resolvers: RelayResolver[];
  policy: DestinationPolicy;
  resolve: Resolve;
  metrics: RelayMetrics;
  log: EventLog;
  streamRate: KeyedRateLimiter | undefined;
  checkPassword: ((c: { username: string; password: string }) => boolean) | undefined;
  /** Password tries per client IP: a few at once, then one a second. */
  passwordTries: KeyedRateLimiter;
  /** Lines about refusals and protocol errors, per client IP. */
  refusalLog: LogThrottle;
  /** Ports this relay listens on for its clients now (publish extension), over all clients. */
  publishedPorts: Set<number>;
}

/** A port the relay listens on for this client (publish extension). */
interface Published {
  server: net.Server;
  port: number;
}

/** Ports tried for a LISTEN that names none, before the range counts as full. */
const PUBLISH_TRIES = 64;

export interface ClientInfo {
  ip: string;
  port: number;
  version: 1 | 2;
  /** The client proved itself at the upgrade (token), so a password is optional for it. */
  preauthorized: boolean;
  /** How logs name the client (default IP:PORT); a LAN room's router is `lan:<room>`. */
  label?: string;
}

/**
 * What a connection uses of its WebSocket: ws's WebSocket, or the in-memory one a LAN room's router
 * reaches the relay through (memory-wisp.ts).
 */
export interface ClientSocket {
  readonly readyState: number;
  readonly OPEN: number;
  readonly isPaused: boolean;
  send(data: Uint8Array, options: { binary: boolean }, cb: (err?: Error) => void): void;
  close(code?: number, reason?: string): void;
  terminate(): void;
  pause(): void;
  resume(): void;
  on(event: 'message', listener: (data: Buffer, isBinary: boolean) => void): this;
  on(event: 'close', listener: (code: number) => void): this;
  on(event: 'error', listener: (e: Error) => void): this;
}

interface RelayStream {
  request: WispStreamRequest;
  openedAt: number;
  connectedAt?: number;
  address?: string;
  tcp?: TcpDestination;
  udp?: UdpDestination;
  /** Client bytes that arrived while the address was still being resolved. */
  early?: Uint8Array[];
  bytesUp: number;
  bytesDown: number;
  bandwidthPaused: boolean;
  /** The client paused this stream (flow control extension). */
  clientPaused: boolean;
  /** Bytes of this stream counted in uploadBuffered. */
  unflushed: number;
  connectTimer?: NodeJS.Timeout;
  refusal?: string;
  /** The client sent END while the address was still being resolved. */
  endEarly?: boolean;
  /** Datagrams from the destination dropped while the WebSocket was congested. */
  udpDropped?: number;
}

/** DATA packets are written whole: no need to zero them first. */
const allocateUnsafe = (length: number): Uint8Array => Buffer.allocUnsafe(length);

/** WebSocket close codes for the ways a client can be thrown out. */
function wsCloseCode(error: WispProtocolError): number {
  switch (error.code) {
    case 'credit-overrun':
    case 'auth-failed':
    case 'auth-required':
      return 1008; // policy violation
    default:
      return 1002; // protocol error
  }
}

export class RelayConnection implements WispServerHost {
  private readonly session: WispServerSession;
  private readonly streams = new Map<number, RelayStream>();
  private readonly openedAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  /** Armed until the first stream opens (--first-stream-timeout): an idle socket holds a slot. */
  private firstStreamTimer: NodeJS.Timeout | undefined;
  private unsentBytes = 0;
  private congested = false;
  private readonly upBudget: TokenBucket | undefined;
  private readonly downBudget: TokenBucket | undefined;
  private closed = false;
  /** Whether this client's password try was granted (undefined: not asked yet). */
  private passwordTry: boolean | undefined;
  /** Closed for not reading its answers: nothing more is queued for it. */
  private overrun = false;
  private uploadBuffered = 0;
  private readonly client: string;
  private username: string | undefined;
  /** Listener id → the port listened on (publish extension); null while binding. */
  private readonly published = new Map<number, Published | null>();

  /** The client's socket is corked until the end of this turn (see the 'message' listener). */
  private corked = false;

  /**
   * `transport`, when given, is the socket under the WebSocket: the answers to the messages of one
   * read go out in one write.
   */
  constructor(
    private readonly ws: ClientSocket,
    private readonly info: ClientInfo,
    private readonly ctx: RelayConnectionHost,
    private readonly transport?: Pick<Writable, 'cork' | 'uncork'>,
  ) {
    this.client = info.label ?? (info.ip.includes(':') ? `[${info.ip}]:${info.port}` : `${info.ip}:${info.port}`);
    const o = ctx.options;
    if (o.bandwidth > 0) {
      // A quarter second of burst keeps pacing smooth without letting a client jump far ahead.
      const burst = Math.max(64 * 1024, o.bandwidth / 4);
      this.upBudget = new TokenBucket(o.bandwidth, burst, performance.now());
      this.downBudget = new TokenBucket(o.bandwidth, burst, performance.now());
    }
    this.session = new WispServerSession(
      {
        version: info.version,
        bufferPackets: BUFFER_PACKETS,
        udp: true,
        halfClose: true,
        flowControl: true,
        allocate: allocateUnsafe,
        checkPassword: ctx.checkPassword ? (c) => this.checkPassword(c) : undefined,
        passwordRequired: ctx.checkPassword !== undefined && !info.preauthorized,
        maxStreams: o.maxStreamsPerClient,
        handshakeTimeoutMs: HANDSHAKE_TIMEOUT_MS,
        idleTimeoutMs: o.idleTimeoutMs,
        ...(o.publishPorts ? { publish: { maxListeners: o.maxPublishedPerClient } } : {}),
      },
      // The connection is the session's host itself: one object per client, not ten closures.
      this,
    );
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary) return; // Wisp is binary; a text frame carries nothing we can use
      if (this.transport && !this.corked) {
        // The answers to what one read from the client holds (a batch of CONNECTs can hold hundreds)
        // go out in one write at the end of the turn: one write each made a CONNECT flood's refusals
        // the largest cost of that abuse. Data from destinations is not held back.
        this.corked = true;
        this.transport.cork();
        process.nextTick(this.uncork);
      }
      this.session.receive(new Uint8Array(data.buffer, data.byteOffset, data.length), performance.now());
      this.schedule();
    });
    ws.on('close', (code: number) => this.onClose(code));
    ws.on('error', () => {
      // 'close' follows; ws reports oversized messages (maxPayload) here with close code 1009.
    });
    this.session.start(performance.now());
    this.schedule();
    if (o.firstStreamTimeoutMs > 0) {
      this.firstStreamTimer = setTimeout(() => this.noStreamOpened(), o.firstStreamTimeoutMs);
      this.firstStreamTimer.unref();
    }
  }

  /** A client that connected and opened nothing gives its slot back (its own client can reconnect). */
  private noStreamOpened(): void {
    if (this.closed) return;
    this.ctx.metrics.connectionError('no-stream');
    this.ctx.log('client-idle', { client: this.client, message: `no stream opened within ${this.ctx.options.firstStreamTimeoutMs} ms` });
    this.closeWs(WS_CLOSE_NO_STREAM, 'no stream opened');
  }

  /**
   * A password try, if this address has one left (a few at once, then one a second): past that the
   * answer is "wrong" without a check, so guessing runs at a try a second, not thousands.
   */
  private checkPassword(c: { username: string; password: string }): boolean {
    // One try per handshake, however many readings of its credentials the session checks.
    if (this.passwordTry === undefined) {
      this.passwordTry = this.ctx.passwordTries.tryTake(this.info.ip, performance.now());
      if (!this.passwordTry) this.ctx.metrics.connectionError('password-tries-throttled');
    }
    return this.passwordTry && this.ctx.checkPassword?.(c) === true;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** @internal WispServerHost: the handshake is complete. */
  ready(r: { version: 1 | 2; extensions: number[]; username?: string }): void {
    this.username = r.username;
    this.ctx.log('client-ready', { client: this.client, version: r.version, extensions: r.extensions, ...(r.username ? { username: r.username } : {}) });
  }

  /** SIGTERM: close every stream with 0x02, then the WebSocket. */
  drain(): void {
    if (this.closed) return;
    this.session.closeAllStreams(CloseReason.VOLUNTARY);
    this.ws.close(1001, 'relay shutting down');
  }

  // ---- WebSocket side -------------------------------------------------------------------------

  /** @internal WispServerHost: called by the session. */
  send(message: Uint8Array): void {
    if (this.closed || this.overrun || this.ws.readyState !== this.ws.OPEN) return;
    const cost = message.length + MESSAGE_OVERHEAD;
    this.unsentBytes += cost;
    this.ws.send(message, { binary: true }, () => {
      this.unsentBytes -= cost;
      if (this.unsentBytes >= LOW_WATER) return;
      if (this.congested) {
        this.congested = false;
        for (const s of this.streams.values()) if (!s.bandwidthPaused && !s.clientPaused) s.tcp?.resume();
      }
      if (this.ws.isPaused && !this.closed) this.ws.resume();
    });
    if (!this.congested && this.unsentBytes > HIGH_WATER) {
      this.congested = true;
      for (const s of this.streams.values()) s.tcp?.pause();
    }
    if (this.unsentBytes > READ_PAUSE_WATER && !this.ws.isPaused) this.ws.pause();
    if (this.unsentBytes > MAX_UNSENT) {
      this.overrun = true;
      this.cutOff('unread-overrun', `more than ${MAX_UNSENT} bytes of answers unread`, 'not reading');
    }
  }

  private readonly uncork = (): void => {
    this.corked = false;
    this.transport?.uncork();
  };

  /**
   * Ends a client that broke a bound, once: every stream is reset now (what they buffered is freed),
   * later packets are ignored (not logged and counted again), and the WebSocket is closed with 1008.
   */
  private cutOff(code: string, message: string, closeText: string): void {
    this.ctx.metrics.connectionError(code);
    this.ctx.log('client-error', { client: this.client, code, message });
    this.session.connectionLost();
    this.closeWs(1008, closeText);
  }

  /** Closes the WebSocket with `code`; a client that ignores the close frame is cut off 2 s later. */
  private closeWs(code: number, reason: string): void {
    this.ws.close(code, reason);
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  /**
   * Keeps one timer armed for the session's next deadline. Deadlines only move later with traffic
   * (idle streams) or appear later than the armed one (new streams), so while a timer is armed
   * nothing needs recomputing; an early wake-up just polls and re-arms.
   */
  private schedule(): void {
    if (this.closed || this.timer) return;
    const at = this.session.nextDeadline();
    if (at === Infinity) return;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.session.poll(performance.now());
        this.schedule();
      },
      Math.max(0, at - performance.now()) + 1,
    );
  }

  /** @internal WispServerHost: called by the session. */
  terminate(error: WispProtocolError): void {
    if (error.code === 'connection-lost') return;
    this.ctx.metrics.connectionError(error.code);
    const extra = this.ctx.refusalLog.admit(this.info.ip, performance.now());
    if (extra) this.ctx.log('client-error', { client: this.client, code: error.code, message: error.message, ...extra });
    this.closeWs(wsCloseCode(error), error.message.slice(0, 120));
  }

  private onClose(code: number): void {
    if (this.closed) return;
    this.session.connectionLost();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    clearTimeout(this.firstStreamTimer);
    for (const id of [...this.published.keys()]) this.unlisten(id);
    this.ctx.log('client-close', {
      client: this.client,
      code,
      durationMs: Date.now() - this.openedAt,
      ...(this.session.ignored.size ? { ignored: Object.fromEntries(this.session.ignored) } : {}),
    });
  }

  // ---- published ports (weft's publish extension) ---------------------------------------------

  /** Listens on `asked` (0: a free port of --publish-ports) for this client. */
  /** @internal WispServerHost: called by the session. */
  async listen(listenerId: number, asked: number): Promise<void> {
    const [lo, hi] = this.ctx.options.publishPorts!;
    const refuse = (reason: number, why: string) => {
      this.published.delete(listenerId);
      this.ctx.log('publish-refused', { client: this.client, listener: listenerId, port: asked, why });
      this.session.listenResult(listenerId, reason, 0);
    };
    clearTimeout(this.firstStreamTimer);
    if (asked !== 0 && (asked < lo || asked > hi)) return refuse(CloseReason.BLOCKED, `port ${asked} is not in --publish-ports ${lo}-${hi}`);
    this.published.set(listenerId, null);
    const size = hi - lo + 1;
    const start = Math.floor(Math.random() * size);
    const candidates = asked !== 0 ? [asked] : Array.from({ length: Math.min(size, PUBLISH_TRIES) }, (_, i) => lo + ((start + i) % size));
    for (const port of candidates) {
      if (this.ctx.publishedPorts.has(port)) continue;
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.inbound(listenerId, port, socket));
      const ok = await new Promise<boolean>((resolve) => {
        server.once('error', () => resolve(false));
        server.listen(port, this.ctx.options.host, () => resolve(true));
      });
      if (!ok) continue;
      // The client went away (or gave the listener up) while this port was being bound.
      if (this.closed || this.published.get(listenerId) !== null) {
        server.close();
        return;
      }
      server.on('error', () => {});
      this.ctx.publishedPorts.add(port);
      this.published.set(listenerId, { server, port });
      this.ctx.metrics.publishedPorts = this.ctx.publishedPorts.size;
      this.ctx.log('published', { client: this.client, listener: listenerId, port });
      this.session.listenResult(listenerId, 0, port);
      return;
    }
    if (this.published.get(listenerId) !== null) return;
    refuse(asked !== 0 ? CloseReason.REFUSED : CloseReason.THROTTLED, asked !== 0 ? `port ${asked} is in use` : `no free port in --publish-ports ${lo}-${hi}`);
  }

  /** @internal WispServerHost: called by the session. */
  unlisten(listenerId: number): void {
    const p = this.published.get(listenerId);
    this.published.delete(listenerId);
    if (!p) return;
    p.server.close();
    this.ctx.publishedPorts.delete(p.port);
    this.ctx.metrics.publishedPorts = this.ctx.publishedPorts.size;
    this.ctx.log('unpublished', { client: this.client, listener: listenerId, port: p.port });
  }

  /** A connection to a published port: a stream to the client, opened by the relay. */
  private inbound(listenerId: number, port: number, socket: net.Socket): void {
    const id = this.closed ? undefined : this.session.acceptStream(listenerId, socket.remoteAddress ?? '?', socket.remotePort ?? 0, performance.now());
    if (id === undefined) {
      socket.destroy();
      return;
    }
    const request: WispStreamRequest = { id, type: 'tcp', hostname: `published:${port}`, port: socket.remotePort ?? 0 };
    const now = performance.now();
    const s: RelayStream = {
      request,
      openedAt: now,
      connectedAt: now,
      address: socket.remoteAddress,
      bytesUp: 0,
      bytesDown: 0,
      bandwidthPaused: false,
      clientPaused: false,
      unflushed: 0,
    };
    this.streams.set(id, s);
    this.ctx.metrics.streamsTotal.tcp++;
    this.ctx.metrics.openStreams.tcp++;
    this.ctx.metrics.publishedConnections++;
    s.tcp = TcpDestination.adopt(socket, new StreamEvents(this, s));
    if (this.congested) s.tcp.pause();
    else socket.resume();
  }

  // ---- streams --------------------------------------------------------------------------------

  private isResolver(a: IpAddress): boolean {
    const r = this.ctx.resolvers[0];
    return r !== undefined && r.port === 53 && r.address.family === a.family && r.address.bytes.every((b, i) => b === a.bytes[i]);
  }

  /** @internal WispServerHost: called by the session. */
  openStream(asked: WispStreamRequest): void {
    const { metrics, policy, streamRate } = this.ctx;
    clearTimeout(this.firstStreamTimer);
    // Rules are matched against, and the resolver asked for, one and the same spelling.
    const hostname = normalizeHostname(asked.hostname);
    const request = hostname === undefined || hostname === asked.hostname ? asked : { ...asked, hostname };
    const s: RelayStream = { request, openedAt: performance.now(), bytesUp: 0, bytesDown: 0, bandwidthPaused: false, clientPaused: false, unflushed: 0 };
    this.streams.set(request.id, s);
    metrics.streamsTotal[request.type]++;
    metrics.openStreams[request.type]++;
    if (hostname === undefined) {
      s.refusal = 'not a hostname (bytes no hostname has, or an invalid name)';
      this.session.closeStream(request.id, CloseReason.INVALID_INFO);
      return;
    }
    if (streamRate && !streamRate.tryTake(this.info.ip, performance.now())) {
      s.refusal = `more than ${this.ctx.options.rate} new streams per second from ${this.info.ip}`;
      this.session.closeStream(request.id, CloseReason.THROTTLED);
      return;
    }
    if (!policy.portAllowed(request.port)) {
      s.refusal = `port ${request.port} is not in --ports`;
      this.session.closeStream(request.id, CloseReason.BLOCKED);
      return;
    }
    s.connectTimer = setTimeout(() => {
      s.refusal = `no connection within ${this.ctx.options.connectTimeoutMs} ms`;
      this.session.closeStream(request.id, CloseReason.CONNECT_TIMEOUT);
    }, this.ctx.options.connectTimeoutMs);
    if (request.hostname === RELAY_RESOLVER_HOSTNAME) {
      // "The relay's resolver": the one place a client may reach past the policy, and only DNS.
      const r = this.ctx.resolvers[0];
      if (request.port !== 53 || !r) {
        s.refusal = r ? `${RELAY_RESOLVER_HOSTNAME} is reachable on port 53 only` : 'this relay has no DNS resolver configured';
        this.session.closeStream(request.id, r ? CloseReason.BLOCKED : CloseReason.UNREACHABLE);
        return;
      }
      this.connect(s, [r.address], r.port);
      return;
    }
    this.ctx.resolve(request.hostname).then(
      (addresses) => this.connect(s, addresses),
      (e: unknown) => {
        if (this.streams.get(request.id) !== s) return;
        s.refusal = e instanceof ResolveError ? `DNS: ${e.message}` : String(e);
        this.session.closeStream(request.id, CloseReason.UNREACHABLE);
      },
    );
  }

  /** `resolverPort`: the destination is the relay's own resolver (already vetted), on that port. */
  private connect(s: RelayStream, addresses: IpAddress[], resolverPort?: number): void {
    const { id, hostname, type } = s.request;
    const port = resolverPort ?? s.request.port;
    if (this.streams.get(id) !== s) return; // closed while resolving
    const allowed: IpAddress[] = [];
    const why: string[] = [];
    for (const a of addresses) {
      if (resolverPort !== undefined || (port === 53 && this.isResolver(a))) {
        allowed.push(a);
        continue;
      }
      const d = this.ctx.policy.check(hostname, a, port);
      if (d.allowed) allowed.push(a);
      else why.push(d.why);
    }
    if (allowed.length === 0) {
      s.refusal = why.join('; ');
      this.session.closeStream(id, CloseReason.BLOCKED);
      return;
    }
    // One small object per stream (no closures): an idle stream's memory is mostly its socket.
    const events = new StreamEvents(this, s);
    if (type === 'tcp') {
      s.tcp = new TcpDestination(allowed, port, events);
      for (const data of s.early?.splice(0) ?? []) s.tcp.write(data, () => this.release(s, data.length));
      if (s.endEarly) s.tcp.end();
    } else {
      s.udp = new UdpDestination(allowed[0], port, events);
      for (const data of s.early?.splice(0) ?? []) s.udp.send(data);
      this.uploadBuffered -= s.unflushed;
      s.unflushed = 0;
    }
    s.early = undefined;
  }

  /** The destination socket connected (StreamEvents). */
  destinationConnected(s: RelayStream, address: string): void {
    s.address = address;
    s.connectedAt = performance.now();
    clearTimeout(s.connectTimer);
    s.connectTimer = undefined;
    this.ctx.metrics.connectLatency((s.connectedAt - s.openedAt) / 1000);
    this.session.connected(s.request.id, performance.now());
    if (this.congested || s.clientPaused) s.tcp?.pause();
  }

  destinationEnded(s: RelayStream): void {
    this.session.destinationEnded(s.request.id);
  }

  destinationClosed(s: RelayStream, reason: number, detail?: string): void {
    if (detail && s.connectedAt === undefined) s.refusal = detail;
    this.session.closeStream(s.request.id, reason);
  }

  /** @internal WispServerHost: called by the session. */
  streamData(id: number, payload: Uint8Array): void {
    const s = this.streams.get(id);
    if (!s) return;
    s.bytesUp += payload.length;
    this.ctx.metrics.bytes.upload += payload.length;
    if (s.request.type === 'udp') return this.datagramUp(s, payload);
    if (s.request.type === 'tcp') {
      s.unflushed += payload.length;
      this.uploadBuffered += payload.length;
      if (this.uploadBuffered > MAX_UPLOAD_BUFFERED) {
        this.cutOff('upload-overrun', `more than ${MAX_UPLOAD_BUFFERED} bytes waiting for destinations`, 'too much data in flight');
        return;
      }
      if (s.unflushed > MAX_STREAM_UPLOAD_BUFFERED) {
        this.cutOff('upload-overrun', `more than ${MAX_STREAM_UPLOAD_BUFFERED} bytes waiting for one destination`, 'too much data in flight');
        return;
      }
    }
    if (s.tcp) s.tcp.write(payload, () => this.release(s, payload.length));
    // Still resolving: credits bound how much can pile up here (the session enforces them).
    else (s.early ??= []).push(payload);
  }

  /**
   * A datagram from the client. UDP cannot be paused at its source, so what does not fit is dropped,
   * as a full link drops it: a datagram larger than any UDP datagram, one over --bandwidth, one past
   * the few kept while the name resolves (those count with the client's other buffered bytes).
   */
  private datagramUp(s: RelayStream, payload: Uint8Array): void {
    const fits = payload.length <= MAX_UDP_PAYLOAD && (this.upBudget?.tryConsume(payload.length, performance.now()) ?? true);
    if (fits && s.udp) return s.udp.send(payload);
    if (fits && (s.early?.length ?? 0) < MAX_EARLY_DATAGRAMS && this.uploadBuffered + payload.length <= MAX_UPLOAD_BUFFERED) {
      s.unflushed += payload.length;
      this.uploadBuffered += payload.length;
      (s.early ??= []).push(payload);
      return;
    }
    s.udpDropped = (s.udpDropped ?? 0) + 1;
  }

  /** The client half-closed (weft extension): FIN to the destination after its queued data. */
  /** @internal WispServerHost: called by the session. */
  streamEnd(id: number): void {
    const s = this.streams.get(id);
    if (!s) return;
    if (s.tcp) s.tcp.end();
    else s.endEarly = true;
  }

  /** The client paused or resumed reading this stream (flow control extension). */
  /** @internal WispServerHost: called by the session. */
  streamPaused(id: number, paused: boolean): void {
    const s = this.streams.get(id);
    if (!s || s.clientPaused === paused) return;
    s.clientPaused = paused;
    if (paused) s.tcp?.pause();
    else if (!this.congested && !s.bandwidthPaused) s.tcp?.resume();
  }

  /** A client packet left our buffers: give its credit back, after the bandwidth budget allows. */
  private release(s: RelayStream, bytes: number): void {
    if (this.streams.get(s.request.id) !== s) return;
    s.unflushed -= bytes;
    this.uploadBuffered -= bytes;
    const id = s.request.id;
    const wait = this.upBudget?.consume(bytes, performance.now()) ?? 0;
    if (wait === 0) this.session.released(id);
    else setTimeout(() => this.session.released(id), wait).unref();
  }

  fromDestination(s: RelayStream, chunk: Uint8Array): void {
    if (s.udp && (this.congested || !(this.downBudget?.tryConsume(chunk.length, performance.now()) ?? true))) {
      // UDP cannot be paused at its source; while the WebSocket is backed up or the client is over
      // --bandwidth, datagrams are dropped.
      s.udpDropped = (s.udpDropped ?? 0) + 1;
      return;
    }
    s.bytesDown += chunk.length;
    this.ctx.metrics.bytes.download += chunk.length;
    this.session.sendData(s.request.id, chunk, performance.now());
    const wait = s.tcp ? (this.downBudget?.consume(chunk.length, performance.now()) ?? 0) : 0;
    if (wait > 0 && s.tcp && !s.bandwidthPaused) {
      s.bandwidthPaused = true;
      s.tcp.pause();
      setTimeout(() => {
        s.bandwidthPaused = false;
        if (!this.congested && !s.clientPaused) s.tcp?.resume();
      }, wait).unref();
    }
  }

  /** @internal WispServerHost: called by the session. */
  streamClosed(id: number, reason: number, by: 'client' | 'server'): void {
    const s = this.streams.get(id);
    if (!s) return;
    this.streams.delete(id);
    this.uploadBuffered -= s.unflushed;
    clearTimeout(s.connectTimer);
    // A voluntary close flushes what is queued and sends FIN; anything else resets the destination.
    s.tcp?.close(reason === CloseReason.VOLUNTARY);
    s.udp?.close();
    const { metrics } = this.ctx;
    metrics.openStreams[s.request.type]--;
    const reasonName = closeReasonName(reason);
    let extra: { suppressed?: number } | undefined = {};
    if (s.connectedAt === undefined && by === 'server') {
      metrics.refused(reasonName);
      extra = this.ctx.refusalLog.admit(this.info.ip, performance.now());
      if (!extra) return;
    }
    const { port, type } = s.request;
    const hostname = s.request.hostname.slice(0, 255); // an invalid name can be as long as a message
    this.ctx.log('stream-close', {
      client: this.client,
      ...(this.username ? { username: this.username } : {}),
      stream: id,
      type,
      destination: hostname.includes(':') ? `[${hostname}]:${port}` : `${hostname}:${port}`,
      ...(s.address ? { address: s.address } : {}),
      bytesUp: s.bytesUp,
      bytesDown: s.bytesDown,
      durationMs: Math.round(performance.now() - s.openedAt),
      reason: reasonName,
      closeReason: reason,
      by,
      ...(s.refusal ? { why: s.refusal } : {}),
      ...(s.udpDropped ? { dropped: s.udpDropped } : {}),
      ...extra,
    });
  }
}

/** A stream's destination events, routed to its connection. */
class StreamEvents implements DestinationEvents {
  constructor(
    private readonly conn: RelayConnection,
    private readonly s: RelayStream,
  ) {}

  connected(address: string): void {
    this.conn.destinationConnected(this.s, address);
  }

  data(chunk: Uint8Array): void {
    this.conn.fromDestination(this.s, chunk);
  }

  ended(): void {
    this.conn.destinationEnded(this.s);
  }

  closed(reason: number, detail?: string): void {
    this.conn.destinationClosed(this.s, reason, detail);
  }
}
