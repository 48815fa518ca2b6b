// An in-memory Upstream for unit tests of the stack's TCP and UDP: the test decides when a connect
// succeeds or fails and what the far end sends. Real sockets are used by the integration tests.
import {
  UpstreamError,
  type FlowEndpoint,
  type TcpCloseReason,
  type TcpStream,
  type TcpStreamHandlers,
  type UdpFlow,
  type UdpFlowHandlers,
  type Upstream,
  type UpstreamErrorKind,
} from '../../core/upstream';

export class FakeTcpStream implements TcpStream {
  written: Uint8Array[] = [];
  ended = false;
  destroyed = false;
  /** The reason the stack gave destroy(). */
  destroyReason: TcpCloseReason | undefined;
  paused = false;
  /** write() returns false once this many bytes are written (back-pressure). */
  highWaterMark = Infinity;

  constructor(
    readonly dst: FlowEndpoint,
    readonly handlers: TcpStreamHandlers,
  ) {}

  get bytesWritten(): number {
    return this.written.reduce((n, c) => n + c.length, 0);
  }

  write(data: Uint8Array): boolean {
    this.written.push(data.slice());
    return this.bytesWritten < this.highWaterMark;
  }
  end(): void {
    this.ended = true;
  }
  destroy(reason?: TcpCloseReason): void {
    this.destroyed = true;
    this.destroyReason = reason;
  }
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
  }

  connect(): void {
    this.handlers.onConnect();
  }
  fail(kind: UpstreamErrorKind): void {
    this.handlers.onClose(new UpstreamError(kind, kind));
  }
  send(data: Uint8Array): void {
    this.handlers.onData(data);
  }
  finish(): void {
    this.handlers.onEnd();
  }
}

export class FakeUdpFlow implements UdpFlow {
  sent: Uint8Array[] = [];
  closed = false;
  constructor(
    readonly dst: FlowEndpoint,
    readonly handlers: UdpFlowHandlers,
  ) {}
  send(data: Uint8Array): void {
    this.sent.push(data.slice());
  }
  close(): void {
    this.closed = true;
  }
}

export class FakeUpstream implements Upstream {
  tcp: FakeTcpStream[] = [];
  udp: FakeUdpFlow[] = [];

  openTcp(dst: FlowEndpoint, _meta: unknown, handlers: TcpStreamHandlers): TcpStream {
    const s = new FakeTcpStream(dst, handlers);
    this.tcp.push(s);
    return s;
  }

  openUdp(dst: FlowEndpoint, _meta: unknown, handlers: UdpFlowHandlers): UdpFlow {
    const f = new FakeUdpFlow(dst, handlers);
    this.udp.push(f);
    return f;
  }
}
