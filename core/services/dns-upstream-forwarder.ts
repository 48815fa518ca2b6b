// Forwards the DNS server's queries to real resolvers through any core Upstream (direct sockets in
// Node, Wisp streams to a relay). UDP queries share a small pool of flows per resolver, replies matched
// by ID and source; a flow is retired after a number of queries, so the source port changes now and
// then. TCP queries each get a connection with RFC 1035 §4.2.2 framing (a 2-byte length before each
// message). When a resolver fails (port unreachable, connection refused, timeout reported by the
// server's cancel), later queries go to the next one, and a failed UDP query is retried there once.

import type { FlowEndpoint, FlowMeta, TcpStream, UdpFlow, Upstream } from '../upstream';
import { DNS_HEADER_LENGTH, readDnsId } from '../wire/dns';
import { IPV4_ANY } from '../wire/address';
import type { DnsForwarder, DnsForwardHandle, DnsTransport } from './dns-server';

export interface UpstreamDnsForwarderOptions {
  upstream: Upstream;
  /** Resolvers in order of preference (e.g. from /etc/resolv.conf or --dns-server). */
  resolvers: FlowEndpoint[];
  /** Where queries appear to come from, for the upstream's logs and policy (default 0.0.0.0:0). */
  source?: FlowEndpoint;
  /** UDP flows open at once per resolver (default 4). */
  poolSize?: number;
  /** Queries sent on one UDP flow before it is retired (default 100). */
  queriesPerFlow?: number;
  /** Queries in flight on one UDP flow (default 256) and TCP connections at once (default 64). */
  maxPendingPerFlow?: number;
  maxTcp?: number;
  /** Called with a short reason each time a resolver fails. */
  onResolverError?: (resolver: FlowEndpoint, reason: string) => void;
}

/** The largest DNS message (TCP framing allows 65 535 bytes). */
const MAX_MESSAGE = 65_535;

interface UdpQuery {
  query: Uint8Array;
  done: (reply: Uint8Array | undefined) => void;
  /** Resolvers tried so far. */
  attempts: number;
  flow?: PoolFlow;
  cancelled: boolean;
}

interface PoolFlow {
  resolver: number;
  flow: UdpFlow;
  pending: Map<number, UdpQuery>;
  sent: number;
  retired: boolean;
  closed: boolean;
}

export class UpstreamDnsForwarder implements DnsForwarder {
  private readonly upstream: Upstream;
  private readonly resolvers: FlowEndpoint[];
  private readonly source: FlowEndpoint;
  private readonly poolSize: number;
  private readonly queriesPerFlow: number;
  private readonly maxPendingPerFlow: number;
  private readonly maxTcp: number;
  private readonly onResolverError: (resolver: FlowEndpoint, reason: string) => void;
  /** The resolver new queries go to; moves on when one fails. */
  private current = 0;
  private readonly flows: PoolFlow[] = [];
  private nextFlow = 0;
  private tcpOpen = 0;

  constructor(opts: UpstreamDnsForwarderOptions) {
    if (opts.resolvers.length === 0) throw new RangeError('UpstreamDnsForwarder needs at least one resolver');
    this.upstream = opts.upstream;
    this.resolvers = [...opts.resolvers];
    this.source = opts.source ?? { ip: IPV4_ANY, port: 0 };
    this.poolSize = Math.max(1, opts.poolSize ?? 4);
    this.queriesPerFlow = Math.max(1, opts.queriesPerFlow ?? 100);
    this.maxPendingPerFlow = Math.max(1, opts.maxPendingPerFlow ?? 256);
    this.maxTcp = Math.max(1, opts.maxTcp ?? 64);
    this.onResolverError = opts.onResolverError ?? (() => {});
  }

  /** UDP flows and TCP connections open now (0 once everything has been answered or cancelled). */
  get openFlows(): number {
    return this.flows.length + this.tcpOpen;
  }

  forward(query: Uint8Array, transport: DnsTransport, done: (reply: Uint8Array | undefined) => void): DnsForwardHandle {
    if (query.length < DNS_HEADER_LENGTH || query.length > MAX_MESSAGE) {
      done(undefined);
      return { cancel() {} };
    }
    return transport === 'tcp' ? this.forwardTcp(query, done) : this.forwardUdp(query, done);
  }

  // ---- UDP ----------------------------------------------------------------------------------

  private forwardUdp(query: Uint8Array, done: (reply: Uint8Array | undefined) => void): DnsForwardHandle {
    const q: UdpQuery = { query, done, attempts: 0, cancelled: false };
    this.sendUdp(q);
    return {
      cancel: () => {
        if (q.cancelled) return;
        q.cancelled = true;
        const f = q.flow;
        if (!f) return;
        f.pending.delete(readDnsId(query));
        // No answer in time: the resolver is likely down; try the next one for later queries.
        this.resolverFailed(f.resolver, 'timeout');
        this.closeIfIdle(f);
      },
    };
  }

  private sendUdp(q: UdpQuery): void {
    const id = readDnsId(q.query);
    const flow = this.pickFlow(id);
    if (!flow) {
      q.flow = undefined;
      q.done(undefined);
      return;
    }
    q.attempts++;
    q.flow = flow;
    flow.pending.set(id, q);
    flow.sent++;
    if (flow.sent >= this.queriesPerFlow) flow.retired = true;
    flow.flow.send(q.query);
  }

  /** A flow to the current resolver with room for `id`; opens one while the pool has space. */
  private pickFlow(id: number): PoolFlow | undefined {
    const usable = this.flows.filter(
      (f) => f.resolver === this.current && !f.retired && !f.closed && !f.pending.has(id) && f.pending.size < this.maxPendingPerFlow,
    );
    const open = this.flows.filter((f) => f.resolver === this.current && !f.retired && !f.closed).length;
    if (open < this.poolSize) return this.openFlow(this.current);
    if (usable.length === 0) return undefined;
    return usable[this.nextFlow++ % usable.length];
  }

  private openFlow(resolver: number): PoolFlow | undefined {
    const dst = this.resolvers[resolver];
    const meta: FlowMeta = { protocol: 'udp', guest: this.source, target: dst };
    const f: PoolFlow = { resolver, flow: undefined as unknown as UdpFlow, pending: new Map(), sent: 0, retired: false, closed: false };
    try {
      f.flow = this.upstream.openUdp(dst, meta, {
        onDatagram: (data, from) => this.onDatagram(f, data, from),
        onError: (e) => this.onFlowError(f, e.kind),
      });
    } catch {
      this.resolverFailed(resolver, 'open-failed');
      return undefined;
    }
    this.flows.push(f);
    return f;
  }

  private onDatagram(f: PoolFlow, data: Uint8Array, from: FlowEndpoint): void {
    if (f.closed) return;
    const dst = this.resolvers[f.resolver];
    if (from.ip !== dst.ip || from.port !== dst.port) return; // not from the resolver: ignore
    if (data.length < DNS_HEADER_LENGTH || (data[2] & 0x80) === 0) return;
    const id = readDnsId(data);
    const q = f.pending.get(id);
    if (!q) return; // late, duplicate or spoofed
    f.pending.delete(id);
    this.closeIfIdle(f);
    q.done(data);
  }

  private onFlowError(f: PoolFlow, reason: string): void {
    if (f.closed) return;
    this.closeFlow(f);
    this.resolverFailed(f.resolver, reason);
    for (const q of f.pending.values()) {
      if (q.cancelled) continue;
      if (q.attempts < this.resolvers.length) this.sendUdp(q);
      else q.done(undefined);
    }
    f.pending.clear();
  }

  private closeIfIdle(f: PoolFlow): void {
    if ((f.retired || f.resolver !== this.current) && f.pending.size === 0) this.closeFlow(f);
  }

  private closeFlow(f: PoolFlow): void {
    if (f.closed) return;
    f.closed = true;
    const i = this.flows.indexOf(f);
    if (i >= 0) this.flows.splice(i, 1);
    try {
      f.flow.close();
    } catch {
      // already gone
    }
  }

  private resolverFailed(resolver: number, reason: string): void {
    this.onResolverError(this.resolvers[resolver], reason);
    if (resolver !== this.current || this.resolvers.length === 1) return;
    this.current = (this.current + 1) % this.resolvers.length;
    for (const f of [...this.flows]) this.closeIfIdle(f);
  }

  // ---- TCP ----------------------------------------------------------------------------------

  private forwardTcp(query: Uint8Array, done: (reply: Uint8Array | undefined) => void): DnsForwardHandle {
    if (this.tcpOpen >= this.maxTcp) {
      done(undefined);
      return { cancel() {} };
    }
    const resolver = this.current;
    const dst = this.resolvers[resolver];
    const meta: FlowMeta = { protocol: 'tcp', guest: this.source, target: dst };
    let finished = false;
    let destroyWanted = false;
    let stream: TcpStream | undefined;
    let received = new Uint8Array(0);
    this.tcpOpen++;
    const finish = (reply: Uint8Array | undefined, destroy: boolean, failure?: string): void => {
      if (finished) return;
      finished = true;
      this.tcpOpen--;
      if (destroy) {
        destroyWanted = true;
        stream?.destroy();
      }
      if (failure) this.resolverFailed(resolver, failure);
      done(reply);
    };
    const framed = new Uint8Array(2 + query.length);
    framed[0] = query.length >>> 8;
    framed[1] = query.length & 0xff;
    framed.set(query, 2);
    try {
      stream = this.upstream.openTcp(dst, meta, {
        onConnect: () => {
          if (finished) return;
          // No half-close after the query: some servers take EOF as the end of the whole exchange.
          stream?.write(framed);
        },
        onData: (data) => {
          if (finished) return;
          const joined = new Uint8Array(received.length + data.length);
          joined.set(received);
          joined.set(data, received.length);
          received = joined;
          if (received.length < 2) return;
          const length = (received[0] << 8) | received[1];
          if (received.length >= 2 + length) finish(received.slice(2, 2 + length), true);
        },
        onEnd: () => finish(undefined, true, 'tcp-closed-early'),
        onDrain: () => {},
        onClose: (e) => finish(undefined, false, e ? e.kind : 'tcp-closed-early'),
      });
    } catch {
      finish(undefined, false, 'open-failed');
    }
    if (destroyWanted) stream?.destroy(); // finished from inside openTcp, before `stream` was set
    return { cancel: () => finish(undefined, true, 'timeout') };
  }
}
