// The upstream the stack's flows actually use: a router that serves weft's own services (DNS over
// TCP on the DNS address) inside the stack and hands everything else to the real upstream. Without
// a real upstream, other flows fail as unreachable (the guest sees RST / ICMP unreachable).

import {
  UpstreamError,
  type FlowEndpoint,
  type FlowMeta,
  type TcpStream,
  type TcpStreamHandlers,
  type UdpFlow,
  type UdpFlowHandlers,
  type Upstream,
} from '../upstream';
import type { Ipv4Address } from '../wire/address';
import type { DnsServer } from './dns-server';
import { openLocalDnsTcp } from './dns-tcp-stream';

export class LocalServicesUpstream implements Upstream {
  constructor(
    private readonly inner: Upstream | undefined,
    private readonly dnsAddress: Ipv4Address,
    private readonly dns: DnsServer,
    private readonly now: () => number,
    /** Runs `fn` after the current stack call (the stack's deferred-call queue). */
    private readonly defer: (fn: () => void) => void,
  ) {}

  openTcp(dst: FlowEndpoint, meta: FlowMeta, handlers: TcpStreamHandlers): TcpStream {
    if (dst.ip === this.dnsAddress && dst.port === 53) return openLocalDnsTcp(this.dns, handlers, this.now, this.defer);
    if (this.inner) return this.inner.openTcp(dst, meta, handlers);
    let destroyed = false;
    this.defer(() => {
      if (!destroyed) handlers.onClose(new UpstreamError('unreachable', 'no upstream is configured'));
    });
    return { write: () => true, end: () => {}, destroy: () => (destroyed = true), pause: () => {}, resume: () => {} };
  }

  openUdp(dst: FlowEndpoint, meta: FlowMeta, handlers: UdpFlowHandlers): UdpFlow {
    if (this.inner) return this.inner.openUdp(dst, meta, handlers);
    let closed = false;
    this.defer(() => {
      if (!closed) handlers.onError(new UpstreamError('unreachable', 'no upstream is configured'));
    });
    return { send: () => {}, close: () => (closed = true) };
  }
}
