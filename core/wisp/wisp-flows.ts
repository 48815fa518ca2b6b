// The guest-facing side of Wisp streams: WispTcpStream and WispUdpFlow implement the stack's
// TcpStream and UdpFlow on top of a WispStreamHost (the WispUpstream that owns the connection).
//
// Contract notes. Handlers are always called asynchronously (never inside openTcp/openUdp), onClose
// exactly once per TCP stream, nothing after destroy()/close(). A stream counts as connected when the
// server confirms it (v2 extension 0x05) or — servers without it — as soon as its CONNECT is sent.
// Half-close needs weft's extension on both ends (END packets); against plain Wisp servers end()
// sends nothing and the stream lives on until the server closes it.
// Wisp has no flow control towards the client either: while the stack has paused a stream, its
// data waits in the stream up to maxPausedBytes, and past that the stream is reset rather than grow.
// With weft's flow control extension the server is asked to stop reading that stream's destination
// (PAUSE), so only what was already on its way arrives; the bound is then FLOW_CONTROLLED_BOUND x
// higher. What is on its way is not only what the buffers between hold (the relay's queue, both
// kernels' socket buffers: ~14 MiB on loopback): until the PAUSE reaches the server it keeps
// reading, and weft keeps draining — at 500 MB/s a 40 ms delay on a loaded machine is 20 MiB more.
// That is the likeliest cause of a healthy 256 MiB download through the relay reset once in a
// loaded test suite under the old 16 MiB bound (it did not recur alone, so it is not proven).

import { CloseReason, closeReasonName } from './wisp-codec';
import {
  UpstreamError,
  type FlowEndpoint,
  type FlowMeta,
  type TcpStream,
  type TcpStreamHandlers,
  type UdpFlow,
  type UdpFlowHandlers,
  type UpstreamErrorKind,
} from '../upstream';
import { formatIpv4 } from '../wire/address';
import type { Scheduler, TimerHandle } from '../scheduler';

/**
 * With flow control, a paused stream holds up to this many times maxPausedBytes before it is reset:
 * with the default 4 MiB, 32 MiB, where the upstream also stops reading the WebSocket
 * (PAUSE_READING_AT_FLOW_CONTROL), so one stream alone is reset, not every stream stalled.
 */
export const FLOW_CONTROLLED_BOUND = 8;

export type AttachFailure = { kind: UpstreamErrorKind; message: string };

/** What a stream needs from the upstream that owns the WebSocket. */
export interface WispStreamHost {
  readonly scheduler: Scheduler;
  attach(type: 'tcp' | 'udp', dst: FlowEndpoint, sink: WispStreamHandlers): number | AttachFailure;
  /** Routes an existing stream's events (one the server opened: publish extension) to `sink`. */
  adopt(id: number, sink: WispStreamHandlers): void;
  write(id: number, data: Uint8Array): boolean;
  /** Half-close; false when the server cannot carry it. */
  end(id: number): boolean;
  /** Asks the server to stop or restart reading the stream's destination; false when it cannot. */
  pauseStream(id: number, paused: boolean): boolean;
  detach(id: number, reason?: number): void;
  /** Bytes held for paused streams changed by `delta` (the host may stop reading the WebSocket). */
  held(delta: number): void;
}

/** Maps a Wisp close reason to how the stack reports it to the guest. */
export function upstreamErrorKind(reason: number): UpstreamErrorKind {
  switch (reason) {
    case CloseReason.REFUSED:
      return 'refused';
    case CloseReason.UNREACHABLE:
      return 'unreachable';
    case CloseReason.CONNECT_TIMEOUT:
    case CloseReason.DATA_TIMEOUT:
      return 'timeout';
    case CloseReason.BLOCKED:
      return 'blocked';
    case CloseReason.THROTTLED:
      return 'throttled';
    case CloseReason.NETWORK_ERROR:
      return 'reset';
    default:
      return 'error';
  }
}

/** The per-stream callbacks the upstream routes session events to. */
export interface WispStreamHandlers {
  data(payload: Uint8Array): void;
  writable(): void;
  confirmed(): void;
  /** The server's side sends no more (half-close extension). */
  ended(): void;
  closed(reason: number): void;
  /** The session is ready (CONNECT went out); `confirms`: wait for streamConfirmed. */
  ready(confirms: boolean): void;
}

export class WispTcpStream implements TcpStream {
  private id: number | undefined;
  private done = false;
  private connected = false;
  private paused = false;
  private held: Uint8Array[] = [];
  private heldBytes = 0;
  /** END (or a voluntary CLOSE) arrived: onEnd once the guest has read what is held. */
  private remoteEnded = false;
  /** A voluntary CLOSE arrived: onClose() after that. */
  private remoteClosed = false;
  private endDelivered = false;
  /** The server was asked to stop reading (flow control extension): only data in flight arrives. */
  private flowControlled = false;

  private readonly timer: TimerHandle;
  private readonly flow: string;

  /**
   * `adopted`: the id of a stream the server opened (publish extension) instead of opening one:
   * it is connected already, and starts paused — the stack resumes it once the guest accepts the
   * connection it carries, and until then the server is asked not to read its end.
   */
  constructor(
    private readonly up: WispStreamHost,
    dst: FlowEndpoint,
    meta: FlowMeta,
    private readonly handlers: TcpStreamHandlers,
    timeoutMs: number,
    private readonly maxPausedBytes: number,
    adopted?: { id: number; remote: string },
  ) {
    this.flow = adopted
      ? `tcp ${adopted.remote} → ${formatIpv4(meta.guest.ip)}:${meta.guest.port} (published)`
      : `tcp ${formatIpv4(meta.guest.ip)}:${meta.guest.port} → ${formatIpv4(dst.ip)}:${dst.port}`;
    this.timer = this.up.scheduler.schedule(() => this.fail('timeout', `no connection within ${timeoutMs} ms`, CloseReason.CONNECT_TIMEOUT), timeoutMs);
    const sink = this.sink();
    if (adopted) {
      this.id = adopted.id;
      up.adopt(adopted.id, sink);
      this.pause();
      this.up.scheduler.defer(() => this.markConnected());
      return;
    }
    const id = up.attach('tcp', dst, sink);
    if (typeof id !== 'number') {
      this.up.scheduler.defer(() => this.fail(id.kind, id.message));
      return;
    }
    this.id = id;
  }

  private sink(): WispStreamHandlers {
    return {
      ready: (confirms) => {
        if (!confirms) this.markConnected();
      },
      confirmed: () => this.markConnected(),
      data: (p) => this.deliver(p),
      writable: () => {
        if (!this.done) this.handlers.onDrain();
      },
      ended: () => {
        this.remoteEnded = true;
        this.afterHeld();
      },
      closed: (reason) => this.serverClosed(reason),
    };
  }

  write(data: Uint8Array): boolean {
    if (this.done || this.id === undefined) return true;
    return this.up.write(this.id, data);
  }

  end(): void {
    // Without the extension Wisp cannot carry a FIN: the stream lives on until the server closes it.
    if (!this.done && this.id !== undefined) this.up.end(this.id);
  }

  destroy(): void {
    if (this.done) return;
    this.done = true;
    this.dropHeld();
    this.up.scheduler.cancel(this.timer);
    if (this.id !== undefined) this.up.detach(this.id);
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    if (!this.flowControlled && !this.done && this.id !== undefined) this.flowControlled = this.up.pauseStream(this.id, true);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    while (!this.paused && !this.done && this.held.length > 0) {
      const p = this.held.shift()!;
      this.heldBytes -= p.length;
      this.up.held(-p.length);
      this.handlers.onData(p);
    }
    // The server reads the destination again only once the guest has taken all that was held.
    if (!this.paused && this.flowControlled && !this.done && this.id !== undefined) {
      this.flowControlled = false;
      this.up.pauseStream(this.id, false);
    }
    this.afterHeld();
  }

  /** Drops what is held (the stream is over) and gives the bytes back to the host's count. */
  private dropHeld(): void {
    if (this.heldBytes > 0) this.up.held(-this.heldBytes);
    this.held = [];
    this.heldBytes = 0;
  }

  private markConnected(): void {
    if (this.done || this.connected) return;
    this.connected = true;
    this.up.scheduler.cancel(this.timer);
    this.handlers.onConnect();
  }

  private deliver(p: Uint8Array): void {
    if (this.done) return;
    if (!this.connected) this.markConnected(); // data proves the connection exists
    if (!this.paused && this.held.length === 0) {
      this.handlers.onData(p);
      return;
    }
    // The payload is a view into the WebSocket message, which is ours to keep.
    this.held.push(p);
    this.heldBytes += p.length;
    this.up.held(p.length);
    const bound = this.flowControlled ? FLOW_CONTROLLED_BOUND * this.maxPausedBytes : this.maxPausedBytes;
    if (this.heldBytes > bound) {
      this.fail('reset', `more than ${bound} bytes arrived while the guest was not reading`, CloseReason.CLIENT_ERROR);
    }
  }

  private serverClosed(reason: number): void {
    if (this.done) return;
    if (reason === CloseReason.VOLUNTARY && this.connected) {
      // The far end finished: the guest sees FIN after any data it has not read yet.
      this.remoteEnded = true;
      this.remoteClosed = true;
      this.afterHeld();
      return;
    }
    this.done = true;
    this.dropHeld();
    this.up.scheduler.cancel(this.timer);
    this.handlers.onClose(new UpstreamError(upstreamErrorKind(reason), `${this.flow}: the Wisp server closed the stream (${closeReasonName(reason)})`));
  }

  /** Once nothing is held: the far end's FIN, then (after a voluntary CLOSE) the clean close. */
  private afterHeld(): void {
    if (this.done || this.paused || this.held.length > 0) return;
    if (this.remoteEnded && !this.endDelivered) {
      this.endDelivered = true;
      this.handlers.onEnd();
    }
    if (this.remoteClosed && !this.done) {
      this.done = true;
      this.up.scheduler.cancel(this.timer);
      this.handlers.onClose();
    }
  }

  private fail(kind: UpstreamErrorKind, message: string, reason?: number): void {
    if (this.done) return;
    this.done = true;
    this.dropHeld();
    this.up.scheduler.cancel(this.timer);
    if (this.id !== undefined) this.up.detach(this.id, reason);
    this.handlers.onClose(new UpstreamError(kind, `${this.flow}: ${message}`));
  }
}

export class WispUdpFlow implements UdpFlow {
  private id: number | undefined;
  private closed = false;
  private readonly flow: string;

  constructor(
    private readonly up: WispStreamHost,
    private readonly dst: FlowEndpoint,
    meta: FlowMeta,
    private readonly handlers: UdpFlowHandlers,
  ) {
    this.flow = `udp ${formatIpv4(meta.guest.ip)}:${meta.guest.port} → ${formatIpv4(dst.ip)}:${dst.port}`;
  }

  /** Opens the stream lazily, and again after the server closed it or the connection dropped. */
  send(data: Uint8Array): void {
    if (this.closed) return;
    if (this.id === undefined) {
      const id = this.up.attach('udp', this.dst, {
        ready: () => {},
        confirmed: () => {},
        writable: () => {},
        ended: () => {},
        data: (p) => {
          if (!this.closed) this.handlers.onDatagram(p, this.dst);
        },
        closed: (reason) => {
          this.id = undefined;
          if (this.closed || reason === CloseReason.VOLUNTARY || reason === CloseReason.DATA_TIMEOUT) return;
          this.handlers.onError(new UpstreamError(upstreamErrorKind(reason), `${this.flow}: the Wisp server closed the stream (${closeReasonName(reason)})`));
        },
      });
      if (typeof id !== 'number') {
        this.up.scheduler.defer(() => {
          if (!this.closed) this.handlers.onError(new UpstreamError(id.kind, `${this.flow}: ${id.message}`));
        });
        return;
      }
      this.id = id;
    }
    this.up.write(this.id, data);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.id !== undefined) this.up.detach(this.id);
  }
}
