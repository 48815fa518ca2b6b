// The relay's socket to a TCP destination. It tries the policy-approved addresses in order, holds
// what the client sends before the connection is up, and reports exactly one `closed` with a Wisp
// close reason. The socket is half-open capable: the far end's FIN is reported as `ended`, and the
// session decides (weft's half-close extension keeps the stream open; plain Wisp closes it).

import net from 'node:net';
import { CloseReason } from '../../core/wisp/wisp-codec';
import { formatIp, type IpAddress } from './ip-range';

export interface DestinationEvents {
  connected(address: string): void;
  data(chunk: Uint8Array): void;
  /** The far end sent FIN (TCP only); writes still work. */
  ended?(): void;
  /** Called once; nothing follows. `detail` is the socket error, if any. */
  closed(reason: number, detail?: string): void;
}

/** Maps a connect-time errno to the Wisp close reason the client sees. */
export function connectErrorReason(code: string | undefined): number {
  switch (code) {
    case 'ECONNREFUSED':
      return CloseReason.REFUSED;
    case 'ETIMEDOUT':
      return CloseReason.CONNECT_TIMEOUT;
    default:
      // EHOSTUNREACH, ENETUNREACH, EADDRNOTAVAIL, EAFNOSUPPORT, …: the host cannot be reached.
      return CloseReason.UNREACHABLE;
  }
}

/** Sockets closed gracefully (FIN after queued data) that have not finished closing yet. */
const lingering = new Set<net.Socket>();

/** Shutdown: cut off every socket still flushing after a graceful close. */
export function destroyLingeringSockets(): void {
  for (const s of lingering) s.destroy();
  lingering.clear();
}

interface PendingWrite {
  data: Uint8Array;
  flushed: () => void;
}

/** The TcpDestination a socket belongs to: the socket's listeners are shared, not one closure each. */
const OWNER = Symbol('weft.tcpDestination');
type OwnedSocket = net.Socket & { [OWNER]: TcpDestination };

function onSocketError(this: OwnedSocket, e: NodeJS.ErrnoException): void {
  this[OWNER].lastError = e;
}
function onSocketConnect(this: OwnedSocket): void {
  this[OWNER].onConnect(this);
}
function onSocketEnd(this: OwnedSocket): void {
  this[OWNER].onEnd();
}
function onSocketData(this: OwnedSocket, chunk: Buffer): void {
  this[OWNER].onData(chunk);
}
function onSocketClose(this: OwnedSocket): void {
  this[OWNER].onClose(this);
}

export class TcpDestination {
  private socket: net.Socket | undefined;
  private connected = false;
  private done = false;
  /** Writes that arrived before the connection was up (created when needed). */
  private pending: PendingWrite[] | undefined;
  private paused = false;
  private endRequested = false;
  /** Which of the addresses is being tried; the list is let go once connected. */
  private index = 0;
  private addresses: IpAddress[] | undefined;
  lastError: NodeJS.ErrnoException | undefined;

  constructor(
    addresses: IpAddress[],
    private readonly port: number,
    private readonly events: DestinationEvents,
  ) {
    this.addresses = addresses;
    if (addresses.length > 0) this.attempt(0);
  }

  /**
   * A socket a published port accepted (weft's publish extension): already connected, so no
   * `connected` event follows; the rest behaves as for a socket this relay opened.
   */
  static adopt(socket: net.Socket, events: DestinationEvents): TcpDestination {
    const d = new TcpDestination([], 0, events);
    d.connected = true;
    d.addresses = undefined;
    d.own(socket);
    return d;
  }

  /** Makes `socket` this destination's: the shared listeners route its events here. */
  private own(socket: net.Socket): void {
    (socket as OwnedSocket)[OWNER] = this;
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('error', onSocketError);
    socket.on('end', onSocketEnd);
    socket.on('data', onSocketData);
    socket.on('close', onSocketClose);
  }

  private attempt(index: number): void {
    if (this.done) return;
    const addresses = this.addresses ?? [];
    if (index >= addresses.length) {
      const code = this.lastError?.code;
      this.finish(connectErrorReason(code), code ?? this.lastError?.message);
      return;
    }
    this.index = index;
    const a = addresses[index];
    const socket = net.connect({ host: formatIp(a), port: this.port, family: a.family, allowHalfOpen: true });
    this.own(socket);
    socket.on('connect', onSocketConnect);
  }

  /** @internal socket listener */
  onConnect(socket: net.Socket): void {
    if (this.done) return;
    this.connected = true;
    const address = formatIp(this.addresses![this.index]);
    this.addresses = undefined;
    if (this.paused) socket.pause();
    const queued = this.pending ?? [];
    this.pending = undefined;
    for (const w of queued) socket.write(w.data, () => w.flushed());
    if (this.endRequested) socket.end();
    this.events.connected(address);
  }

  /** @internal socket listener */
  onEnd(): void {
    if (!this.done) this.events.ended?.();
  }

  /** @internal socket listener */
  onData(chunk: Buffer): void {
    if (!this.done) this.events.data(chunk);
  }

  /** @internal socket listener */
  onClose(socket: net.Socket): void {
    if (this.done || socket !== this.socket) return;
    if (!this.connected) {
      this.attempt(this.index + 1);
      return;
    }
    const e = this.lastError;
    this.finish(e ? CloseReason.NETWORK_ERROR : CloseReason.VOLUNTARY, e?.code ?? e?.message);
  }

  /** Queues client bytes; `flushed` runs once they have been handed to the kernel. */
  write(data: Uint8Array, flushed: () => void): void {
    if (this.done) return;
    if (!this.connected || !this.socket) (this.pending ??= []).push({ data, flushed });
    else this.socket.write(data, () => flushed());
  }

  /** The client will send no more: FIN after what is queued. */
  end(): void {
    if (this.done || this.endRequested) return;
    this.endRequested = true;
    if (this.connected) this.socket?.end();
  }

  pause(): void {
    this.paused = true;
    if (this.connected) this.socket?.pause();
  }

  resume(): void {
    this.paused = false;
    if (this.connected) this.socket?.resume();
  }

  /**
   * Ends the connection without any further event. `graceful` (the client closed voluntarily)
   * flushes what is queued and sends FIN; otherwise the far end gets a RST.
   */
  close(graceful: boolean): void {
    if (this.done) return;
    this.done = true;
    this.pending = undefined;
    const s = this.socket;
    if (!s || s.destroyed) return;
    if (graceful && this.connected) {
      s.end();
      lingering.add(s);
      s.once('close', () => lingering.delete(s));
      // A far end that never reads must not hold the socket forever.
      setTimeout(() => s.destroy(), 10_000).unref();
    } else if (this.connected) {
      s.resetAndDestroy();
    } else {
      s.destroy();
    }
  }

  private finish(reason: number, detail?: string): void {
    if (this.done) return;
    this.done = true;
    this.pending = undefined;
    this.socket?.destroy();
    this.events.closed(reason, detail);
  }
}
