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

export class TcpDestination {
  private socket: net.Socket | undefined;
  private connected = false;
  private done = false;
  private pending: PendingWrite[] = [];
  private paused = false;
  private endRequested = false;
  private lastError: NodeJS.ErrnoException | undefined;

  constructor(
    private readonly addresses: IpAddress[],
    private readonly port: number,
    private readonly events: DestinationEvents,
  ) {
    this.attempt(0);
  }

  private attempt(index: number): void {
    if (this.done) return;
    if (index >= this.addresses.length) {
      const code = this.lastError?.code;
      this.finish(connectErrorReason(code), code ?? this.lastError?.message);
      return;
    }
    const address = formatIp(this.addresses[index]);
    const socket = net.connect({ host: address, port: this.port, family: this.addresses[index].family, allowHalfOpen: true });
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('error', (e: NodeJS.ErrnoException) => {
      this.lastError = e;
    });
    socket.on('connect', () => {
      if (this.done) return;
      this.connected = true;
      if (this.paused) socket.pause();
      const queued = this.pending;
      this.pending = [];
      for (const w of queued) socket.write(w.data, () => w.flushed());
      if (this.endRequested) socket.end();
      this.events.connected(address);
    });
    socket.on('end', () => {
      if (!this.done) this.events.ended?.();
    });
    socket.on('data', (chunk: Buffer) => {
      if (!this.done) this.events.data(chunk);
    });
    socket.on('close', () => {
      if (this.done || socket !== this.socket) return;
      if (!this.connected) {
        this.attempt(index + 1);
        return;
      }
      const e = this.lastError;
      this.finish(e ? CloseReason.NETWORK_ERROR : CloseReason.VOLUNTARY, e?.code ?? e?.message);
    });
  }

  /** Queues client bytes; `flushed` runs once they have been handed to the kernel. */
  write(data: Uint8Array, flushed: () => void): void {
    if (this.done) return;
    if (!this.connected || !this.socket) this.pending.push({ data, flushed });
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
    this.pending = [];
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
    this.pending = [];
    this.socket?.destroy();
    this.events.closed(reason, detail);
  }
}
