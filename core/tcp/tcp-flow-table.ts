// All guest TCP connections: demultiplexing by 4-tuple, creation on SYN, RST for segments that
// belong to nothing, and the bounds that keep a hostile guest from exhausting memory — total
// connections, half-open connections (a SYN flood evicts the oldest half-open, so new legitimate
// connections still open), and TIME_WAIT entries.

import { ByteBudget } from './byte-budget';
import type { TcpConfig } from '../config';
import type { TimerQueue } from '../timer-queue';
import type { FlowEndpoint, TcpCloseReason, TcpStream, TcpStreamHandlers, Upstream } from '../upstream';
import type { Ipv4Address } from '../wire/address';
import { IPV4_HEADER_LENGTH } from '../wire/ipv4';
import { ACK, FIN, RST, SYN, TCP_HEADER_MIN, type SegmentPayload, type TcpRepr, type TcpSegment } from '../wire/tcp';
import type { DropReason } from '../wire/parse-result';
import { IsnGenerator } from './isn';
import { seqAdd } from './seq';
import { TcpActiveOpen } from './tcp-active-open';
import { TcpConnection, type TcpConnectionHost, type TcpFlow, type TcpState } from './tcp-connection';
import type { Instant } from '../clock';

export interface TcpFlowEvent {
  protocol: 'tcp';
  guest: FlowEndpoint;
  target: FlowEndpoint;
  state: TcpState;
  bytesFromGuest: number;
  bytesToGuest: number;
  openedAt: number;
  reason?: TcpCloseReason;
  /** Segments weft sent to the guest again (RACK/SACK repair, loss probes, timeouts). */
  retransmits: number;
  /** Retransmission timeouts that fired. */
  timeouts: number;
  /** Tail loss probes sent. */
  lossProbes: number;
  /** Congestion reductions undone because DSACKs or timestamps proved them needless. */
  spuriousUndone: number;
}

/** What the flow table needs from the stack that owns it. */
export interface TcpFlowTableHost {
  /** The link does TCP segmentation offload: data segments may be up to 64 KiB. */
  segmentOffload?: boolean;
  now(): Instant;
  random(out: Uint8Array): void;
  /** Sends a TCP segment from `src` to `dst` (the guest). */
  send(src: Ipv4Address, dst: Ipv4Address, repr: TcpRepr, payloadLength: number, payload?: SegmentPayload): void;
  drop(reason: DropReason): void;
  flowOpened(e: TcpFlowEvent): void;
  flowClosed(e: TcpFlowEvent): void;
}

export class TcpFlowTable {
  private readonly conns = new Map<string, TcpFlow>();
  /** Insertion-ordered views for oldest-first eviction. */
  private readonly halfOpen = new Map<string, TcpFlow>();
  private readonly timeWait = new Map<string, TcpFlow>();
  private readonly isn: IsnGenerator;
  private readonly connectionHost: TcpConnectionHost;
  private readonly hasUpstream: boolean;
  private readonly ackOwed = new Set<TcpConnection>();
  /** When true, pure ACKs wait for flushAcks() at the end of an input batch. */
  deferAcks = false;
  connectionsOpened = 0;

  constructor(
    private readonly config: TcpConfig,
    linkMtu: number,
    upstream: Upstream | undefined,
    timers: TimerQueue,
    private readonly host: TcpFlowTableHost,
  ) {
    const secret = new Uint8Array(8);
    host.random(secret);
    this.isn = new IsnGenerator(secret);
    this.connectionHost = {
      config,
      linkMss: linkMtu - IPV4_HEADER_LENGTH - TCP_HEADER_MIN,
      segmentOffload: host.segmentOffload === true,
      upstream: upstream as Upstream,
      sendBudget: new ByteBudget(config.sendBufferTotalBytes),
      receiveBudget: new ByteBudget(config.receiveBufferTotalBytes),
      drop: (reason) => host.drop(reason),
      now: host.now,
      send: (conn, repr, len, payload) => host.send(conn.target.ip, conn.guest.ip, repr, len, payload),
      reschedule: (conn) => timers.schedule(conn, conn.nextDeadline()),
      stateChanged: (conn, from) => this.onStateChanged(conn, from),
      deferAck: (conn) => {
        if (!this.deferAcks) return false;
        this.ackOwed.add(conn);
        return true;
      },
      closed: (conn, reason) => {
        timers.cancel(conn);
        this.onClosed(conn, reason);
      },
      replaced: (open, conn) => {
        timers.cancel(open);
        this.conns.set(conn.key, conn);
        if (this.halfOpen.has(conn.key)) this.halfOpen.set(conn.key, conn); // keeps its place in the eviction order
      },
    };
    this.hasUpstream = upstream !== undefined;
  }

  get size(): number {
    return this.conns.size;
  }

  /** Segmentation offload for connections opened from now on (open ones keep what they negotiated). */
  setSegmentOffload(on: boolean): void {
    this.connectionHost.segmentOffload = on;
  }

  /** Connections by state, for counters and the demo's flow table. */
  countByState(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const c of this.conns.values()) out[c.state] = (out[c.state] ?? 0) + 1;
    return out;
  }

  flows(): TcpFlowEvent[] {
    return [...this.conns.values()].map((c) => this.describe(c));
  }

  /** Bytes held in all connections' buffers. */
  bufferedBytes(): number {
    let n = 0;
    for (const c of this.conns.values()) n += c.bufferedBytes;
    return n;
  }

  input(src: Ipv4Address, dst: Ipv4Address, seg: TcpSegment): void {
    const key = `${src}:${seg.srcPort}>${dst}:${seg.dstPort}`;
    const existing = this.conns.get(key);
    const flags = seg.flags;
    if (existing) {
      // A fresh SYN for a tuple in TIME_WAIT opens a new connection (as RFC 6191 allows).
      if (existing.state === 'time-wait' && flags & SYN && !(flags & ACK) && !(flags & RST)) {
        existing.abort('reopened', false);
      } else {
        existing.onSegment(seg);
        return;
      }
    }
    if ((flags & (SYN | ACK | RST)) !== SYN) {
      if (!(flags & RST)) this.sendReset(src, dst, seg);
      this.host.drop('tcp-no-connection');
      return;
    }
    if (flags & FIN) {
      this.host.drop('tcp-syn-fin');
      return;
    }
    if (!this.hasUpstream) {
      this.sendReset(src, dst, seg);
      this.host.drop('tcp-no-upstream');
      return;
    }
    if (this.halfOpen.size >= this.config.maxHalfOpen) {
      const oldest = this.halfOpen.values().next().value as TcpFlow;
      oldest.abort('syn-flood-evicted', true);
      this.host.drop('tcp-half-open-evicted');
    }
    if (this.conns.size >= this.config.maxConnections) {
      const tw = this.timeWait.values().next().value as TcpFlow | undefined;
      if (tw) tw.abort('time-wait-evicted', false);
      else {
        this.sendReset(src, dst, seg);
        this.host.drop('tcp-too-many-connections');
        return;
      }
    }
    const now = this.host.now();
    const guest = { ip: src, port: seg.srcPort };
    const target = { ip: dst, port: seg.dstPort };
    const tsOffset = new Uint8Array(4);
    this.host.random(tsOffset);
    const conn = TcpConnection.passive(
      this.connectionHost,
      key,
      guest,
      target,
      seg,
      this.isn.isn(dst, seg.dstPort, src, seg.srcPort, now),
      new DataView(tsOffset.buffer).getUint32(0),
    );
    this.conns.set(key, conn);
    this.halfOpen.set(key, conn);
    this.connectionsOpened++;
    this.host.flowOpened(this.describe(conn));
    conn.start({ protocol: 'tcp', guest, target });
  }

  /** Sends the ACKs deferred during an input batch. */
  flushAcks(): void {
    if (this.ackOwed.size === 0) return;
    for (const c of this.ackOwed) c.flushAck();
    this.ackOwed.clear();
  }

  /**
   * Opens a connection from `local` (weft's address; a free ephemeral port is chosen) to the guest,
   * for port forwarding. Returns false when no port is free or the table is full.
   */
  connectToGuest(guest: FlowEndpoint, localIp: Ipv4Address, attach: (h: TcpStreamHandlers) => TcpStream): boolean {
    if (this.conns.size >= this.config.maxConnections) return false;
    const r = new Uint8Array(2);
    this.host.random(r);
    const start = (r[0] << 8) | r[1];
    for (let i = 0; i < 16384; i++) {
      const port = 49152 + ((start + i) % 16384);
      const key = `${guest.ip}:${guest.port}>${localIp}:${port}`;
      if (this.conns.has(key)) continue;
      const now = this.host.now();
      const tsOffset = new Uint8Array(4);
      this.host.random(tsOffset);
      const local = { ip: localIp, port };
      const iss = this.isn.isn(localIp, port, guest.ip, guest.port, now);
      const conn = new TcpActiveOpen(this.connectionHost, key, guest, local, iss, new DataView(tsOffset.buffer).getUint32(0), attach);
      if (conn.state === 'closed') return false;
      this.conns.set(key, conn);
      this.halfOpen.set(key, conn);
      this.connectionsOpened++;
      this.host.flowOpened(this.describe(conn));
      return true;
    }
    return false;
  }

  /**
   * ARP for `ip` went unanswered (the output path gave up on it): the active opens to it end now as
   * 'guest-unreachable', rather than sending SYNs that would only start ARP over, for a minute.
   */
  guestUnreachable(ip: Ipv4Address): void {
    // Active opens are half-open until the guest answers, so they are all in this bounded map.
    for (const c of [...this.halfOpen.values()]) {
      if (c.state === 'syn-sent' && c.guest.ip === ip) c.abort('guest-unreachable', false);
    }
  }

  /** Aborts every connection (the stack is shutting down). */
  closeAll(reason: TcpCloseReason): void {
    for (const c of [...this.conns.values()]) c.abort(reason, true);
  }

  private onStateChanged(conn: TcpFlow, from: TcpState): void {
    if (!conn.halfOpen) this.halfOpen.delete(conn.key);
    if (conn.state === 'time-wait') {
      this.timeWait.set(conn.key, conn);
      if (this.timeWait.size > this.config.maxTimeWait) {
        const oldest = this.timeWait.values().next().value as TcpFlow;
        oldest.abort('time-wait-evicted', false);
      }
    } else if (from === 'time-wait') {
      this.timeWait.delete(conn.key);
    }
  }

  private onClosed(conn: TcpFlow, reason: TcpCloseReason): void {
    if (this.conns.get(conn.key) === conn) this.conns.delete(conn.key);
    this.halfOpen.delete(conn.key);
    this.timeWait.delete(conn.key);
    this.host.flowClosed({ ...this.describe(conn), reason });
  }

  private describe(c: TcpFlow): TcpFlowEvent {
    return {
      protocol: 'tcp',
      guest: c.guest,
      target: c.target,
      state: c.state,
      bytesFromGuest: c.bytesFromGuest,
      bytesToGuest: c.bytesToGuest,
      openedAt: c.openedAt,
      reason: c.closeReason,
      ...c.sendStats,
    };
  }

  /** RFC 9293 §3.10.7.1: the reset for a segment that belongs to no connection. */
  private sendReset(src: Ipv4Address, dst: Ipv4Address, seg: TcpSegment): void {
    const len = seg.payload.length + (seg.flags & SYN ? 1 : 0) + (seg.flags & FIN ? 1 : 0);
    const repr: TcpRepr =
      seg.flags & ACK
        ? { srcPort: seg.dstPort, dstPort: seg.srcPort, seq: seg.ack, ack: 0, flags: RST, window: 0 }
        : { srcPort: seg.dstPort, dstPort: seg.srcPort, seq: 0, ack: seqAdd(seg.seq, len), flags: RST | ACK, window: 0 };
    this.host.send(dst, src, repr, 0);
  }
}
