// The Upstream is where guest flows go once the stack has terminated them: direct host sockets in
// Node, Wisp streams over a WebSocket in a page, or anything else. core/ only defines the shape;
// implementations live outside it. Calls into an Upstream return at once; results come back through
// the handler callbacks, possibly much later (the stack is re-entered from I/O callbacks).

import type { Ipv4Address } from './wire/address';

export interface FlowEndpoint {
  ip: Ipv4Address;
  port: number;
}

/** Who asked for a flow, for logs and policy. */
export interface FlowMeta {
  protocol: 'tcp' | 'udp';
  guest: FlowEndpoint;
  /** The destination the guest addressed (before any mapping such as gateway → host loopback). */
  target: FlowEndpoint;
}

/** Why an upstream flow failed; the stack maps these to RST or ICMP for the guest. */
export type UpstreamErrorKind =
  | 'refused' // the destination answered with RST / port unreachable
  | 'unreachable' // no route, host down, DNS failure
  | 'timeout' // connect attempt timed out
  | 'blocked' // policy refused it (relay or local)
  | 'throttled' // rate limit
  | 'reset' // an established flow was reset by the far end
  | 'error'; // anything else

/**
 * Why the stack ended a TCP flow: the `reason` of its flow-close event and log line, and what
 * TcpStream.destroy() is told. For a connection the stack opens into the guest (port forwarding,
 * Stack.connectToGuest), the ones the other side acts on:
 * - 'guest-refused': the guest answered our SYN with RST (nothing listens on that port);
 * - 'guest-unreachable': the guest never answered — not ARP for its address (the stack gives up
 *   after its ARP retries, about 3 s) or not our SYNs (after MAX_SYN_RETRIES, about a minute);
 * - 'guest-reset': the guest reset a connection that was open;
 * - 'retransmit-limit', 'keepalive-timeout': the guest stopped acknowledging; 'shutdown': the stack
 *   is going away.
 */
export type TcpCloseReason =
  | 'closed' // both sides closed in order
  | 'guest-reset'
  | 'guest-refused'
  | 'guest-unreachable'
  | 'handshake-timeout'
  | 'retransmit-limit'
  | 'keepalive-timeout'
  | 'send-buffer-overflow'
  | 'upstream-closed'
  | 'upstream-drain-timeout' // the guest closed; what it sent could not be delivered in time
  | `upstream-${UpstreamErrorKind}`
  | 'reopened'
  | 'syn-flood-evicted'
  | 'time-wait-evicted'
  | 'shutdown';

export class UpstreamError extends Error {
  constructor(
    readonly kind: UpstreamErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'UpstreamError';
  }
}

export interface TcpStreamHandlers {
  /** The upstream connection is established; the guest's handshake may complete. */
  onConnect(): void;
  /**
   * Bytes from the far end. The stream keeps delivering until pause() is called. `more`: more
   * bytes follow at once (this turn of the event loop), so the connection may hold back a segment
   * smaller than a full one until a call without it — which the stream must then make (an empty
   * `data` is fine). Streams that read in fixed-size pieces use it to keep every segment full.
   * `data` is only valid during the call (a stream may read into one buffer it reuses): copy what
   * you keep.
   */
  onData(data: Uint8Array, more?: boolean): void;
  /**
   * Optional: where the stream may read its next bytes in place — free room at the end of the
   * connection's send buffer, or undefined (read into your own buffer). Passed to onData as a view
   * from its start, the bytes are taken where they lie instead of copied. Ask again after each
   * onData: the room is valid until the next one.
   */
  readRoom?(): Uint8Array | undefined;
  /** The far end sent FIN (half-close): no more onData. */
  onEnd(): void;
  /** The stream can take more writes after write() returned false. */
  onDrain(): void;
  /** The stream is gone. Without an error it closed cleanly after both directions ended. */
  onClose(error?: UpstreamError): void;
}

export interface TcpStream {
  /**
   * Queues bytes towards the far end; returns false when the caller should wait for onDrain. The
   * stream takes `data` as it is (no copy): the caller must not change it afterwards.
   */
  write(data: Uint8Array): boolean;
  /** Half-close: the guest sent FIN. */
  end(): void;
  /**
   * Abort at once (the guest sent RST, or the stack gave up); no callbacks follow. `reason` says
   * why, as the flow's flow-close event will: for an active open into the guest 'guest-refused'
   * (RST to our SYN) or 'guest-unreachable' (no answer to ARP or to our SYNs), for an open
   * connection 'guest-reset' and the others of TcpCloseReason. Optional: the stack always passes
   * it, and a stream that has no use for it may leave the parameter out.
   */
  destroy(reason?: TcpCloseReason): void;
  /** Back-pressure from the guest: stop and resume onData. */
  pause(): void;
  resume(): void;
}

export interface UdpFlowHandlers {
  onDatagram(data: Uint8Array, from: FlowEndpoint): void;
  /** The flow failed (e.g. port unreachable reported by the far end); the stack tells the guest. */
  onError(error: UpstreamError): void;
}

export interface UdpFlow {
  send(data: Uint8Array): void;
  close(): void;
}

export interface Upstream {
  openTcp(dst: FlowEndpoint, meta: FlowMeta, handlers: TcpStreamHandlers): TcpStream;
  openUdp(dst: FlowEndpoint, meta: FlowMeta, handlers: UdpFlowHandlers): UdpFlow;
}
