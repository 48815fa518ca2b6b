// `weft vm --upstream direct`: guest flows become this host's own sockets (node:net, node:dgram).
// The gateway address stands for the host's loopback when --allow-host-loopback is given; otherwise
// flows to it are blocked. Every handler is called asynchronously (never from inside openTcp/openUdp),
// onClose exactly once per TCP stream, and nothing at all after destroy() or close().

import dgram from 'node:dgram';
import net from 'node:net';
import {
  UpstreamError,
  type FlowEndpoint,
  type FlowMeta,
  type TcpCloseReason,
  type TcpStream,
  type TcpStreamHandlers,
  type UdpFlow,
  type UdpFlowHandlers,
  type Upstream,
  type UpstreamErrorKind,
} from '../core/upstream';
import { SEND_BUFFER_SLACK_BYTES } from '../core/tcp/tcp-sender';
import { formatIpv4, type Ipv4Address } from '../core/wire/address';

export interface DirectUpstreamOptions {
  /** The stack's gateway address (10.0.2.2 by default); with allowHostLoopback it maps to 127.0.0.1. */
  gateway: Ipv4Address;
  /** Let flows to the gateway reach this host's loopback services (default false: they are refused). */
  allowHostLoopback?: boolean;
  /**
   * For weft's own flows whose destinations the guest does not choose (DNS resolvers such as
   * 127.0.0.53): allow loopback destinations. Never for guest flows.
   */
  trustedDestinations?: boolean;
  /** How long a TCP connect may take before it fails with 'timeout' (default 20 000 ms). */
  connectTimeoutMs?: number;
  /** One structured object per event ({ event: 'upstream-tcp-close', flow, … }). */
  log?: (event: object) => void;
}

export const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;
/** The largest UDP payload IPv4 can carry: 65 535 − 20 (IP header) − 8 (UDP header). */
export const MAX_UDP_PAYLOAD = 65_507;
/** Datagrams a UDP flow holds while its socket is still connecting; later ones are dropped. */
const MAX_PENDING_DATAGRAMS = 64;

const HOST_LOOPBACK = '127.0.0.1';

/** Maps a socket errno (err.code) to the kind of failure the stack reports to the guest. */
export function errorKindForErrno(code: string | undefined): UpstreamErrorKind {
  switch (code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'EHOSTDOWN':
    case 'ENETDOWN':
      return 'unreachable';
    case 'ETIMEDOUT':
      return 'timeout';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'ECONNABORTED':
      return 'reset';
    default:
      return 'error';
  }
}

function upstreamErrorFrom(e: unknown, flow: string): UpstreamError {
  const err = e as NodeJS.ErrnoException;
  const code = typeof err?.code === 'string' ? err.code : undefined;
  return new UpstreamError(errorKindForErrno(code), `${flow}: ${code ?? ''}${code ? ' ' : ''}${err?.message ?? String(e)}`.trim());
}

function flowName(meta: FlowMeta, dst: FlowEndpoint): string {
  return `${meta.protocol} ${formatIpv4(meta.guest.ip)}:${meta.guest.port} → ${formatIpv4(dst.ip)}:${dst.port}`;
}

/** The host to connect to for a destination, or why the flow may not go there. */
type Route = { host: string } | { error: UpstreamError };

export class DirectUpstream implements Upstream {
  private readonly gateway: Ipv4Address;
  private readonly allowHostLoopback: boolean;
  private readonly trustedDestinations: boolean;
  private readonly connectTimeoutMs: number;
  private readonly log: (event: object) => void;
  private readonly tcpSockets = new Set<net.Socket>();
  private readonly udpSockets = new Set<dgram.Socket>();
  /**
   * Outbound sockets read into room the stack lends them (TcpStreamHandlers.readRoom) or, without
   * it, into this one buffer (net.connect's onread), and the stack copies what it keeps before the
   * callback returns: a fresh 64 KiB Buffer per read was a quarter of weft's CPU in a QEMU
   * download, most of it garbage collection beside the main thread.
   */
  private readonly readBuffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);

  constructor(options: DirectUpstreamOptions) {
    this.gateway = options.gateway;
    this.allowHostLoopback = options.allowHostLoopback ?? false;
    this.trustedDestinations = options.trustedDestinations ?? false;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS;
    this.log = options.log ?? (() => {});
  }

  /** Destroys every socket still open (shutdown); their flows get no further callbacks that matter. */
  closeAll(): void {
    for (const s of this.tcpSockets) s.destroy();
    for (const s of this.udpSockets) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
  }

  /** Host sockets (TCP and UDP) not yet closed: 0 when every flow has been cleaned up. */
  get openSockets(): number {
    return this.tcpSockets.size + this.udpSockets.size;
  }

  private route(dst: FlowEndpoint, flow: string): Route {
    // Node refuses port 0 with a throw; the kernel would answer it with a refusal.
    if (dst.port === 0) return { error: new UpstreamError('refused', `${flow}: port 0`) };
    if (this.trustedDestinations) return { host: formatIpv4(dst.ip) };
    if (dst.ip === this.gateway) {
      if (this.allowHostLoopback) return { host: HOST_LOOPBACK };
      return { error: new UpstreamError('blocked', `${flow}: the gateway reaches host loopback only with --allow-host-loopback`) };
    }
    const first = dst.ip >>> 24;
    // 127/8 is this host's loopback, and 0/8 reaches it too on Linux: only the gateway mapping may lead there.
    if (first === 127 || first === 0) {
      return { error: new UpstreamError('blocked', `${flow}: ${formatIpv4(dst.ip)} is not reachable from a guest`) };
    }
    return { host: formatIpv4(dst.ip) };
  }

  openTcp(dst: FlowEndpoint, meta: FlowMeta, handlers: TcpStreamHandlers): TcpStream {
    const flow = flowName(meta, dst);
    const route = this.route(dst, flow);
    if ('error' in route) {
      this.log({ event: 'upstream-tcp-close', flow, error: route.error.kind, message: route.error.message });
      return failedTcpStream(route.error, handlers);
    }
    let stream: DirectTcpStream | undefined;
    // net.Socket hands writableHighWaterMark to its Duplex base; @types/node does not list it.
    const socket = net.connect({
      host: route.host,
      port: dst.port,
      allowHalfOpen: true,
      writableHighWaterMark: WRITE_HIGH_WATER_MARK,
      onread: {
        // Called after each read for the next one's buffer: room in the connection's send buffer
        // when it has some, so the bytes are not copied again, else the shared one.
        buffer: () => stream?.readRoom() ?? this.readBuffer,
        callback: (n: number, buf: Uint8Array) => {
          stream?.received(buf.subarray(0, n));
          return true; // false would pause the socket; the stack pauses it through pause()
        },
      },
    } as net.NetConnectOpts);
    stream = new DirectTcpStream(socket, flow, handlers, this.tcpSockets, this.log, {
      connectTimeoutMs: this.connectTimeoutMs,
      via: `${route.host}:${dst.port}`,
      readsIntoBuffer: true,
    });
    return stream;
  }

  openUdp(dst: FlowEndpoint, meta: FlowMeta, handlers: UdpFlowHandlers): UdpFlow {
    const flow = flowName(meta, dst);
    const route = this.route(dst, flow);
    if ('error' in route) {
      this.log({ event: 'upstream-udp-error', flow, error: route.error.kind, message: route.error.message });
      return failedUdpFlow(route.error, handlers);
    }
    return new DirectUdpFlow(route.host, dst, flow, handlers, this.udpSockets, this.log);
  }
}

/** A stream that never opened: onClose(error) follows on a microtask unless destroy() comes first. */
function failedTcpStream(error: UpstreamError, handlers: TcpStreamHandlers): TcpStream {
  let destroyed = false;
  queueMicrotask(() => {
    if (!destroyed) handlers.onClose(error);
  });
  return {
    write: () => true,
    end: () => {},
    destroy: () => {
      destroyed = true;
    },
    pause: () => {},
    resume: () => {},
  };
}

function failedUdpFlow(error: UpstreamError, handlers: UdpFlowHandlers): UdpFlow {
  let closed = false;
  queueMicrotask(() => {
    if (!closed) handlers.onError(error);
  });
  return {
    send: () => {},
    close: () => {
      closed = true;
    },
  };
}

/** A TCP socket as the stack's TcpStream: an outbound connection, or (port forwarding) an accepted one. */
/**
 * Bytes queued in a socket before write() asks the stack to hold off. A burst of guest segments
 * is written corked (one writev), and a 64 KiB burst should not count as back-pressure.
 */
const WRITE_HIGH_WATER_MARK = 64 * 1024;
/** Up to four 65,468-byte segments per read at MTU 65520: as much as a full send buffer still takes. */
const READ_BUFFER_BYTES = SEND_BUFFER_SLACK_BYTES;
const NO_BYTES = new Uint8Array(0);

export class DirectTcpStream implements TcpStream {
  private readonly socket: net.Socket;
  /** This turn's reads went to the stack as "more follows"; a call without it is due. */
  private readsPending = false;
  private ended = false;
  private readonly endOfReads = () => {
    this.readsPending = false;
    if (!this.done && !this.ended) this.handlers.onData(NO_BYTES, false);
  };
  /** Writes are corked until the current burst of guest frames has been handled. */
  private corked = false;
  private readonly uncork = () => {
    this.corked = false;
    if (!this.socket.destroyed) this.socket.uncork();
  };
  private connectTimer: NodeJS.Timeout | undefined;
  private connected = false;
  /** Set once onClose has been called or destroy() was asked for: no handler runs after that. */
  private done = false;
  private error: UpstreamError | undefined;
  private bytesIn = 0;
  private bytesOut = 0;

  /**
   * `connecting` (an outbound socket): onConnect follows its 'connect', or a timeout error. Without
   * it the socket is already connected (accepted by a server). `readsIntoBuffer`: the socket was
   * made with an onread that calls received(); otherwise its 'data' events do.
   */
  constructor(
    socket: net.Socket,
    private readonly flow: string,
    private readonly handlers: TcpStreamHandlers,
    live: Set<net.Socket>,
    private readonly log: (event: object) => void,
    connecting?: { connectTimeoutMs: number; via: string; readsIntoBuffer?: boolean },
  ) {
    this.socket = socket;
    live.add(socket);
    socket.setNoDelay(true);
    if (connecting) {
      const { connectTimeoutMs, via } = connecting;
      this.connectTimer = setTimeout(() => {
        this.connectTimer = undefined;
        this.fail(new UpstreamError('timeout', `${flow}: no connection within ${connectTimeoutMs} ms`));
      }, connectTimeoutMs);
      socket.on('connect', () => {
        this.clearConnectTimer();
        if (this.done) return;
        this.connected = true;
        this.log({ event: 'upstream-tcp-connect', flow, via });
        this.handlers.onConnect();
      });
    } else {
      this.connected = true;
    }
    if (!connecting?.readsIntoBuffer) socket.on('data', (data: Buffer) => this.received(data));
    socket.on('end', () => {
      // The FIN sends what a "more follows" held back.
      this.ended = true;
      if (!this.done) this.handlers.onEnd();
    });
    socket.on('drain', () => {
      if (!this.done) this.handlers.onDrain();
    });
    socket.on('error', (e) => {
      this.error ??= upstreamErrorFrom(e, flow);
    });
    socket.on('close', () => {
      live.delete(socket);
      this.clearConnectTimer();
      this.finish(this.error);
    });
  }

  /**
   * One read from the socket (valid only during this call). A read ends where the socket's buffer
   * did, not at a segment's end: handed over alone, each 64 KiB read would end in a tiny segment
   * at MTU 65520. So reads go as "more follows", and once this turn's reads are in (setImmediate)
   * an empty call without it lets the last short segment go.
   */
  received(data: Uint8Array): void {
    if (this.done) return;
    this.bytesIn += data.length;
    this.handlers.onData(data, true);
    if (!this.readsPending) {
      this.readsPending = true;
      setImmediate(this.endOfReads);
    }
  }

  /**
   * Takes `data` without copying it (the TCP receiver already copied it out of the frame; the
   * socket may queue it). The guest's segments arrive a frame or two per read: they are corked and
   * leave in one writev once every read of this turn of the event loop is done (setImmediate), not
   * one per read (next tick) — in the QEMU benchmark that cut weft's CPU per upload by a sixth.
   */
  write(data: Uint8Array): boolean {
    if (this.done || this.socket.destroyed || !this.socket.writable) return true;
    this.bytesOut += data.length;
    if (!this.corked) {
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    return this.socket.write(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  }

  end(): void {
    if (this.done || this.socket.destroyed) return;
    this.socket.end();
  }

  /** The stack ended the flow (`reason`: why, e.g. 'guest-reset', 'guest-refused'); logged. */
  destroy(reason?: TcpCloseReason): void {
    if (this.done) return;
    this.done = true;
    this.clearConnectTimer();
    this.log({ event: 'upstream-tcp-close', flow: this.flow, reason: reason ?? 'destroyed', bytesIn: this.bytesIn, bytesOut: this.bytesOut });
    if (this.socket.destroyed) return;
    // Mirror the guest's RST to the far end when there is a connection to reset: for a forwarded
    // (accepted) socket that is every end the stack reports — refused, unreachable, reset.
    if (this.connected && !this.socket.connecting) this.socket.resetAndDestroy();
    else this.socket.destroy();
  }

  pause(): void {
    if (!this.done) this.socket.pause();
  }

  /** Room the stack lends for the next read, if any (see TcpStreamHandlers.readRoom). */
  readRoom(): Uint8Array | undefined {
    return this.done ? undefined : this.handlers.readRoom?.();
  }

  resume(): void {
    if (!this.done) this.socket.resume();
  }

  private clearConnectTimer(): void {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
  }

  /** Ends the stream now with `error` (the socket's own 'close' comes later and is ignored). */
  private fail(error: UpstreamError): void {
    if (this.done) return;
    this.socket.destroy();
    this.finish(error);
  }

  private finish(error: UpstreamError | undefined): void {
    if (this.done) return;
    this.done = true;
    this.log({
      event: 'upstream-tcp-close',
      flow: this.flow,
      ...(error ? { error: error.kind, message: error.message } : {}),
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
    });
    this.handlers.onClose(error);
  }
}

class DirectUdpFlow implements UdpFlow {
  private readonly socket: dgram.Socket;
  private connected = false;
  private closed = false;
  /** Datagrams sent before the socket finished connecting (bounded; the rest are dropped). */
  private pending: Buffer[] | undefined = [];
  private dropped = 0;

  constructor(
    host: string,
    private readonly dst: FlowEndpoint,
    private readonly flow: string,
    private readonly handlers: UdpFlowHandlers,
    live: Set<dgram.Socket>,
    private readonly log: (event: object) => void,
  ) {
    const socket = dgram.createSocket({ type: 'udp4' });
    this.socket = socket;
    live.add(socket);
    socket.on('message', (data: Buffer) => {
      // A connected socket only receives from its peer, which the guest knows as `dst`.
      if (!this.closed) this.handlers.onDatagram(data, this.dst);
    });
    socket.on('error', (e) => this.report(e));
    socket.on('close', () => live.delete(socket));
    this.log({ event: 'upstream-udp-open', flow, via: `${host}:${dst.port}` });
    socket.on('connect', () => {
      if (this.closed) return;
      this.connected = true;
      const queued = this.pending ?? [];
      this.pending = undefined;
      for (const d of queued) this.transmit(d);
    });
    // connect() binds to an ephemeral port first; ICMP errors then come back as socket errors.
    // A failed connect arrives as an 'error' event (no callback is given).
    socket.connect(dst.port, host);
  }

  /** Copies `data` (the socket may queue it), so the caller may reuse its buffer at once. */
  send(data: Uint8Array): void {
    if (this.closed) return;
    if (data.length > MAX_UDP_PAYLOAD) {
      this.dropped++;
      queueMicrotask(() => {
        if (!this.closed) {
          this.handlers.onError(new UpstreamError('error', `${this.flow}: datagram of ${data.length} bytes exceeds ${MAX_UDP_PAYLOAD}`));
        }
      });
      return;
    }
    if (!this.connected) {
      if (this.pending && this.pending.length < MAX_PENDING_DATAGRAMS) this.pending.push(Buffer.from(data));
      else this.dropped++;
      return;
    }
    this.transmit(Buffer.from(data));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pending = undefined;
    this.log({ event: 'upstream-udp-close', flow: this.flow, ...(this.dropped ? { dropped: this.dropped } : {}) });
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }

  private transmit(data: Buffer): void {
    this.socket.send(data, (e) => {
      if (e) this.report(e);
    });
  }

  private report(e: unknown): void {
    if (this.closed) return;
    if (!this.connected) {
      // The connect itself failed: nothing queued can go out any more.
      this.dropped += this.pending?.length ?? 0;
      this.pending = undefined;
    }
    const error = upstreamErrorFrom(e, this.flow);
    this.log({ event: 'upstream-udp-error', flow: this.flow, error: error.kind, message: error.message });
    this.handlers.onError(error);
  }
}
