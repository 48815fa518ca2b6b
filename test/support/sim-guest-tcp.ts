// A small TCP peer that plays the guest in simulations: it opens one connection to the stack,
// sends a byte stream reliably and receives one, so tests can drive weft's TCP through a faulty
// link and check what comes out. It is deliberately simple — a fixed congestion window, RTO with
// exponential backoff, fast retransmit on three duplicate ACKs with NewReno-style partial-ACK
// retransmission, an out-of-order buffer, an ACK for every segment received (with SACK blocks when
// negotiated) — but correct: it checks every checksum and never acknowledges bytes it lacks.
// Frames are built with core/wire emitters and the stack's frames parsed with core/wire parsers.

import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt } from '../../core/tcp/seq';
import type { FlowEndpoint } from '../../core/upstream';
import { BROADCAST_MAC, type Ipv4Address, type MacAddress } from '../../core/wire/address';
import { ARP_REPLY, ARP_REQUEST, emitArp, parseArp } from '../../core/wire/arp';
import { emitEthernetHeader, ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet } from '../../core/wire/ethernet';
import { emitIpv4Header, IPPROTO_TCP, IPV4_HEADER_LENGTH, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { ACK, emitTcp, FIN, parseTcp, PSH, RST, SYN, tcpHeaderLength, verifyTcpChecksum, type TcpOptions, type TcpSegment } from '../../core/wire/tcp';

export interface SimGuestOptions {
  /** The simulation's clock (ms); timestamps and timers read it. */
  clock: { now(): number };
  mac: MacAddress;
  ip: Ipv4Address;
  port: number;
  gatewayMac: MacAddress;
  /** Where the connection goes (weft terminates it and opens the upstream). */
  remote: FlowEndpoint;
  /** Our initial sequence number. */
  iss: number;
  /** SYN options; each is offered only when set. */
  mss?: number;
  sackPermitted?: boolean;
  timestamps?: boolean;
  windowScale?: number;
  /** Receive buffer (bytes): the window is what the application has not read of it. Default 64 KiB. */
  receiveBuffer?: number;
  /** Initial retransmission timeout; doubled per expiry, reset by new ACKs. Default 200 ms. */
  rtoMs?: number;
  maxRtoMs?: number;
  /** Bytes in flight at most (a fixed congestion window). Default 64 KiB. */
  maxInFlight?: number;
  /** Consecutive expiries before the connection is given up. Default 15. */
  maxRetransmits?: number;
  /** Report duplicate data in a DSACK block (RFC 2883), as Linux does. Default off. */
  dsack?: boolean;
}

export type SimGuestState = 'idle' | 'syn-sent' | 'open' | 'reset' | 'failed';

export interface SimGuestCounters {
  framesIn: number;
  segmentsIn: number;
  segmentsOut: number;
  dataSegmentsOut: number;
  retransmits: number;
  timeouts: number;
  fastRetransmits: number;
  /** Frames rejected: bad IPv4 header (checksum, lengths) or bad TCP checksum. */
  badIpv4: number;
  badTcpChecksum: number;
  /** Frames for another MAC, address, port or protocol. */
  ignored: number;
  acksOut: number;
  rstIn: number;
  /** Segments whose data was all duplicate. */
  duplicateData: number;
}

interface Piece {
  seq: number;
  data: Uint8Array;
}

/** One received segment as the test sees it, with the simulated time it arrived. */
export interface SimSegmentEvent {
  at: number;
  seg: TcpSegment;
}

export class SimGuestTcp {
  state: SimGuestState = 'idle';
  readonly counters: SimGuestCounters = {
    framesIn: 0, segmentsIn: 0, segmentsOut: 0, dataSegmentsOut: 0, retransmits: 0, timeouts: 0, fastRetransmits: 0,
    badIpv4: 0, badTcpChecksum: 0, ignored: 0, acksOut: 0, rstIn: 0, duplicateData: 0,
  };
  /** Called for every valid segment of this connection (after checksum checks). */
  onSegment?: (e: SimSegmentEvent) => void;

  // Negotiated at the handshake.
  private peerMss = 536;
  private sackOk = false;
  private tsOk = false;
  private sndShift = 0;
  private rcvShift = 0;
  private tsRecent = 0;
  /** RCV.NXT as last sent in an ACK field (RFC 7323's Last.ACK.sent). */
  private lastAckSent: number | undefined;

  // Sending.
  private out = new Uint8Array(64 * 1024);
  private outLen = 0;
  sndUna: number;
  sndNxt: number;
  private sndMax: number;
  private peerWnd = 0;
  private wl1 = 0;
  private wl2 = 0;
  private finQueued = false;
  private finSeq: number | undefined;
  private rto: number;
  private rtoDeadline: number | undefined;
  private retries = 0;
  private dupAcks = 0;
  private inRecovery = false;
  private recover = 0;

  // Receiving.
  rcvNxt = 0;
  private advRight = 0;
  private readonly ooo: Piece[] = [];
  private lastOooSeq: number | undefined;
  /** Duplicate data to report first in the next ACK (RFC 2883), when `dsack` is on. */
  private dsackBlock: [number, number] | undefined;
  private readonly received: Uint8Array[] = [];
  receivedBytes = 0;
  /** Bytes received in order and not yet read by the application (they hold the window closed). */
  private unread = 0;
  /** While true, the application does not read: the window closes as data arrives. */
  readPaused = false;
  private peerFinSeq: number | undefined;
  finReceived = false;
  private ipId = 1;

  private readonly rcvBuffer: number;
  private readonly baseRto: number;

  constructor(
    private readonly opts: SimGuestOptions,
    private readonly output: (frame: Uint8Array) => void,
  ) {
    this.sndUna = this.sndNxt = this.sndMax = opts.iss >>> 0;
    this.rcvBuffer = opts.receiveBuffer ?? 64 * 1024;
    this.baseRto = this.rto = opts.rtoMs ?? 200;
  }

  // ── the application's side ────────────────────────────────────────────────

  /** Sends the SYN. */
  connect(): void {
    if (this.state !== 'idle') return;
    this.state = 'syn-sent';
    this.sndNxt = this.sndMax = seqAdd(this.opts.iss, 1);
    this.sendSyn();
    this.rtoDeadline = this.now() + this.rto;
  }

  /** Queues bytes to send. */
  write(data: Uint8Array): void {
    if (this.finQueued) throw new Error('write after close');
    if (this.outLen + data.length > this.out.length) {
      let cap = this.out.length;
      while (cap < this.outLen + data.length) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.out.subarray(0, this.outLen));
      this.out = next;
    }
    this.out.set(data, this.outLen);
    this.outLen += data.length;
    this.transmit(this.now());
  }

  /** Half-close: a FIN follows the queued bytes. */
  close(): void {
    if (this.finQueued) return;
    this.finQueued = true;
    this.finSeq = seqAdd(this.opts.iss, 1 + this.outLen);
    this.transmit(this.now());
  }

  /** Aborts with an RST. */
  abort(): void {
    if (this.state !== 'open') return;
    this.emit({ seq: this.sndNxt, ack: 0, flags: RST });
    this.state = 'reset';
  }

  /** The application reads everything received so far; a window update goes out if it reopened. */
  read(): void {
    const before = this.windowBytes();
    this.unread = 0;
    if (this.state === 'open' && this.windowBytes() - before >= Math.min(this.rcvBuffer / 2, this.peerMss)) this.sendAck();
  }

  /** Everything received in order, as one array. */
  receivedData(): Uint8Array {
    const all = new Uint8Array(this.receivedBytes);
    let off = 0;
    for (const c of this.received) {
      all.set(c, off);
      off += c.length;
    }
    return all;
  }

  get finAcked(): boolean {
    return this.finSeq !== undefined && seqGt(this.sndUna, this.finSeq);
  }

  /** Bytes sent and not yet acknowledged. */
  get inFlight(): number {
    return seqDiff(this.sndMax, this.sndUna);
  }

  // ── time ──────────────────────────────────────────────────────────────────

  nextDeadline(): number | undefined {
    return this.state === 'open' || this.state === 'syn-sent' ? this.rtoDeadline : undefined;
  }

  poll(now: number): void {
    if (this.rtoDeadline === undefined || now < this.rtoDeadline) return;
    if (this.state !== 'open' && this.state !== 'syn-sent') return;
    this.counters.timeouts++;
    if (++this.retries > (this.opts.maxRetransmits ?? 15)) {
      this.state = 'failed';
      this.rtoDeadline = undefined;
      return;
    }
    this.rto = Math.min(this.rto * 2, this.opts.maxRtoMs ?? 10_000);
    this.rtoDeadline = now + this.rto;
    if (this.state === 'syn-sent') return this.sendSyn();
    if (this.sndUna !== this.sndMax) {
      this.inRecovery = true;
      this.recover = this.sndMax;
      this.dupAcks = 0;
      this.retransmitFirst();
    } else if (this.unsent() > 0) {
      // Zero-window probe: one byte past the closed window.
      this.sendData(this.sndNxt, 1, false);
      this.sndNxt = this.sndMax = seqAdd(this.sndNxt, 1);
    } else {
      this.rtoDeadline = undefined;
    }
  }

  // ── frames from the stack ─────────────────────────────────────────────────

  input(frame: Uint8Array): void {
    const now = this.now();
    this.counters.framesIn++;
    const eth = parseEthernet(frame);
    if (isDrop(eth) || (eth.dst !== this.opts.mac && eth.dst !== BROADCAST_MAC)) {
      this.counters.ignored++;
      return;
    }
    if (eth.ethertype === ETHERTYPE_ARP) return this.onArp(eth.payload);
    if (eth.ethertype !== ETHERTYPE_IPV4) {
      this.counters.ignored++;
      return;
    }
    const ip = parseIpv4Packet(eth.payload);
    if (isDrop(ip)) {
      this.counters.badIpv4++;
      return;
    }
    if (ip.protocol !== IPPROTO_TCP || ip.dst !== this.opts.ip || ip.src !== this.opts.remote.ip || ip.moreFragments || ip.fragmentOffset !== 0) {
      this.counters.ignored++;
      return;
    }
    if (!verifyTcpChecksum(ip.payload, ip.src, ip.dst)) {
      this.counters.badTcpChecksum++;
      return;
    }
    const seg = parseTcp(ip.payload);
    if (isDrop(seg) || seg.srcPort !== this.opts.remote.port || seg.dstPort !== this.opts.port) {
      this.counters.ignored++;
      return;
    }
    this.counters.segmentsIn++;
    this.onSegment?.({ at: now, seg: { ...seg, payload: seg.payload.slice() } });
    this.onTcp(seg, now);
  }

  private onArp(payload: Uint8Array): void {
    const arp = parseArp(payload);
    if (isDrop(arp) || arp.operation !== ARP_REQUEST || arp.targetIp !== this.opts.ip) {
      this.counters.ignored++;
      return;
    }
    const f = new Uint8Array(ETHERNET_HEADER_LENGTH + 28);
    emitEthernetHeader(f, 0, arp.senderMac, this.opts.mac, ETHERTYPE_ARP);
    emitArp({ operation: ARP_REPLY, senderMac: this.opts.mac, senderIp: this.opts.ip, targetMac: arp.senderMac, targetIp: arp.senderIp }, f, ETHERNET_HEADER_LENGTH);
    this.output(f);
  }

  private onTcp(seg: TcpSegment, now: number): void {
    const flags = seg.flags;
    if (this.state === 'syn-sent') return this.onSynSent(seg, now);
    if (this.state !== 'open') return;
    if (flags & RST) {
      this.counters.rstIn++;
      // RFC 5961 on our side too: only a reset at RCV.NXT counts.
      if (seg.seq === this.rcvNxt) {
        this.state = 'reset';
        this.rtoDeadline = undefined;
      }
      return;
    }
    const ts = seg.options.timestamp;
    // RFC 7323 §4.3, as Linux: TS.Recent follows only segments at or below the last ACK sent, so
    // out-of-order data does not move it and the echo stays that of the last in-order segment.
    const inOrder = this.lastAckSent === undefined || seqLe(seg.seq, this.lastAckSent);
    if (this.tsOk && ts && inOrder && seqGe(ts.value, this.tsRecent)) this.tsRecent = ts.value;
    if (flags & SYN) {
      this.sendAck(); // the SYN-ACK again: our ACK of it was lost
      return;
    }
    if (flags & ACK) this.onAck(seg, now);
    if (seg.payload.length > 0 || flags & FIN) {
      this.onData(seg.seq, seg.payload, (flags & FIN) !== 0);
      this.sendAck();
    } else if (!this.acceptableEmpty(seg.seq)) {
      this.sendAck(); // e.g. a zero-window probe (SEQ = RCV.NXT − 1): answer with our window
    }
    this.transmit(now);
  }

  private onSynSent(seg: TcpSegment, now: number): void {
    const synAck = SYN | ACK;
    if (seg.flags & RST) {
      if (seg.flags & ACK && seg.ack === this.sndNxt) {
        this.counters.rstIn++;
        this.state = 'reset';
        this.rtoDeadline = undefined;
      }
      return;
    }
    if ((seg.flags & synAck) !== synAck || seg.ack !== this.sndNxt) return;
    const o = seg.options;
    const offered = this.opts;
    this.peerMss = o.mss ?? 536;
    this.sackOk = offered.sackPermitted === true && o.sackPermitted === true;
    this.tsOk = offered.timestamps === true && o.timestamp !== undefined;
    if (o.timestamp) this.tsRecent = o.timestamp.value;
    if (offered.windowScale !== undefined && o.windowScale !== undefined) {
      this.sndShift = o.windowScale;
      this.rcvShift = offered.windowScale;
    }
    this.rcvNxt = seqAdd(seg.seq, 1);
    this.advRight = seqAdd(this.rcvNxt, Math.min(this.rcvBuffer, 0xffff));
    this.sndUna = seg.ack;
    this.peerWnd = seg.window; // never scaled in a SYN
    this.wl1 = seg.seq;
    this.wl2 = seg.ack;
    this.state = 'open';
    this.rto = this.baseRto;
    this.retries = 0;
    this.rtoDeadline = undefined;
    this.sendAck();
    this.transmit(now);
  }

  private acceptableEmpty(seq: number): boolean {
    const wnd = seqDiff(this.advRight, this.rcvNxt);
    return wnd <= 0 ? seq === this.rcvNxt : seqGe(seq, this.rcvNxt) && seqLt(seq, this.advRight);
  }

  // ── the sending half ──────────────────────────────────────────────────────

  private get sendMss(): number {
    return Math.max(1, Math.min(this.peerMss, this.opts.mss ?? 536) - (this.tsOk ? 12 : 0));
  }

  /** Queued bytes not yet sent. */
  private unsent(): number {
    return this.outLen - seqDiff(this.sndNxt, seqAdd(this.opts.iss, 1));
  }

  private onAck(seg: TcpSegment, now: number): void {
    const ack = seg.ack;
    if (seqGt(ack, this.sndMax)) {
      this.sendAck(); // acknowledges something never sent
      return;
    }
    const wnd = seg.window << this.sndShift;
    let windowChanged = false;
    if (seqLt(this.wl1, seg.seq) || (this.wl1 === seg.seq && seqLe(this.wl2, ack))) {
      windowChanged = wnd !== this.peerWnd;
      this.peerWnd = wnd;
      this.wl1 = seg.seq;
      this.wl2 = ack;
    }
    if (seqGt(ack, this.sndUna)) {
      this.sndUna = ack;
      if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
      this.dupAcks = 0;
      this.retries = 0;
      this.rto = this.baseRto;
      this.rtoDeadline = this.sndUna === this.sndMax ? undefined : now + this.rto;
      if (this.inRecovery) {
        if (seqGe(ack, this.recover)) this.inRecovery = false;
        else this.retransmitFirst(); // a partial ACK: the next hole was lost too
      }
    } else if (ack === this.sndUna && seg.payload.length === 0 && !(seg.flags & FIN) && !windowChanged && this.sndMax !== this.sndUna) {
      if (++this.dupAcks === 3 && !this.inRecovery) {
        this.counters.fastRetransmits++;
        this.inRecovery = true;
        this.recover = this.sndMax;
        this.retransmitFirst();
      }
    }
  }

  /** Sends new data (and the FIN) as the window and the fixed congestion window allow. */
  private transmit(now: number): void {
    if (this.state !== 'open') return;
    const cap = this.opts.maxInFlight ?? 64 * 1024;
    for (;;) {
      const avail = this.unsent();
      const room = Math.min(seqDiff(seqAdd(this.sndUna, this.peerWnd), this.sndNxt), cap - seqDiff(this.sndNxt, this.sndUna));
      const len = Math.min(avail, this.sendMss, room);
      if (len > 0) {
        const fin = this.finQueued && len === avail;
        this.sendData(this.sndNxt, len, fin);
        this.advance(len + (fin ? 1 : 0), now);
        continue;
      }
      if (avail === 0 && this.finQueued && seqLe(this.sndNxt, this.finSeq as number) && room >= 0) {
        this.sendData(this.sndNxt, 0, true);
        this.advance(1, now);
      }
      break;
    }
    // Data waits behind a closed window and nothing is in flight: the timer probes it.
    if (this.unsent() > 0 && this.sndUna === this.sndMax && this.rtoDeadline === undefined) this.rtoDeadline = now + this.rto;
  }

  private advance(n: number, now: number): void {
    this.sndNxt = seqAdd(this.sndNxt, n);
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    if (this.rtoDeadline === undefined) this.rtoDeadline = now + this.rto;
  }

  private retransmitFirst(): void {
    const dataEnd = seqAdd(this.opts.iss, 1 + this.outLen);
    const len = Math.max(0, Math.min(this.sendMss, seqDiff(seqLt(dataEnd, this.sndMax) ? dataEnd : this.sndMax, this.sndUna)));
    const fin = this.finSeq !== undefined && seqGt(this.sndMax, this.finSeq) && seqAdd(this.sndUna, len) === this.finSeq;
    if (len === 0 && !fin) return;
    this.counters.retransmits++;
    this.sendData(this.sndUna, len, fin);
  }

  private sendData(seq: number, len: number, fin: boolean): void {
    const offset = seqDiff(seq, seqAdd(this.opts.iss, 1));
    const payload = this.out.subarray(offset, offset + len);
    if (len > 0) this.counters.dataSegmentsOut++;
    this.emit({ seq, ack: this.rcvNxt, flags: ACK | (len > 0 ? PSH : 0) | (fin ? FIN : 0), payload, window: this.windowField(), options: this.tsOption() });
  }

  // ── the receiving half ────────────────────────────────────────────────────

  private windowBytes(): number {
    return Math.max(0, this.rcvBuffer - this.unread);
  }

  /** The window field to advertise; the right edge never moves left (RFC 9293 §3.8.6). */
  private windowField(): number {
    const field = Math.min(0xffff, this.windowBytes() >>> this.rcvShift);
    const right = seqAdd(this.rcvNxt, field << this.rcvShift);
    if (seqGt(right, this.advRight)) this.advRight = right;
    return Math.min(0xffff, Math.max(0, seqDiff(this.advRight, this.rcvNxt)) >>> this.rcvShift);
  }

  private onData(seq: number, payload: Uint8Array, fin: boolean): void {
    let start = seq;
    let data = payload;
    if (seqLt(start, this.rcvNxt)) {
      const skip = Math.min(data.length, seqDiff(this.rcvNxt, start));
      data = data.subarray(skip);
      start = seqAdd(start, skip);
    }
    let finInWindow = fin;
    const room = seqDiff(this.advRight, start);
    if (data.length > room) {
      data = data.subarray(0, Math.max(0, room));
      finInWindow = false;
    }
    if (payload.length > 0 && data.length === 0) {
      this.counters.duplicateData++;
      if (this.opts.dsack) this.dsackBlock = [seq, seqAdd(seq, payload.length)];
    } else if (this.opts.dsack && data.length > 0 && start !== this.rcvNxt && this.ooo.some((p) => p.seq === start && p.data.length >= data.length)) {
      this.dsackBlock = [start, seqAdd(start, data.length)];
    }
    if (finInWindow) this.peerFinSeq = seqAdd(seq, payload.length);
    if (data.length > 0) {
      if (start === this.rcvNxt) {
        this.deliver(data);
        this.pullInOrder();
      } else if (!this.ooo.some((p) => p.seq === start && p.data.length >= data.length)) {
        this.ooo.push({ seq: start, data: data.slice() });
        this.lastOooSeq = start;
      }
    }
    if (this.peerFinSeq !== undefined && this.rcvNxt === this.peerFinSeq && !this.finReceived) {
      this.finReceived = true;
      this.rcvNxt = seqAdd(this.rcvNxt, 1);
    }
  }

  private deliver(data: Uint8Array): void {
    this.received.push(data.slice());
    this.receivedBytes += data.length;
    this.rcvNxt = seqAdd(this.rcvNxt, data.length);
    if (this.readPaused) this.unread += data.length;
  }

  private pullInOrder(): void {
    for (let progress = true; progress; ) {
      progress = false;
      for (let i = 0; i < this.ooo.length; i++) {
        const p = this.ooo[i];
        if (seqGt(p.seq, this.rcvNxt)) continue;
        this.ooo.splice(i, 1);
        const end = seqAdd(p.seq, p.data.length);
        if (seqGt(end, this.rcvNxt)) this.deliver(p.data.subarray(seqDiff(this.rcvNxt, p.seq)));
        progress = true;
        break;
      }
    }
  }

  /** Out-of-order ranges as SACK blocks: the one holding the latest arrival first, then in order. */
  private sackBlocks(): Array<[number, number]> {
    // A FIN held out of order is SACKed like data (Linux queues it with the out-of-order data).
    const finOoo = this.peerFinSeq !== undefined && !this.finReceived ? [{ seq: this.peerFinSeq, len: 1 }] : [];
    if (!this.sackOk || this.ooo.length + finOoo.length === 0) return [];
    const sorted = [...this.ooo.map((p) => ({ seq: p.seq, len: p.data.length })), ...finOoo].sort((a, b) => seqDiff(a.seq, b.seq));
    const ranges: Array<[number, number]> = [];
    for (const p of sorted) {
      const end = seqAdd(p.seq, p.len);
      const last = ranges[ranges.length - 1];
      if (last && seqLe(p.seq, last[1])) {
        if (seqGt(end, last[1])) last[1] = end;
      } else ranges.push([p.seq, end]);
    }
    const latest = this.lastOooSeq;
    const first = ranges.findIndex(([l, r]) => latest !== undefined && seqLe(l, latest) && seqLt(latest, r));
    if (first > 0) ranges.unshift(...ranges.splice(first, 1));
    return ranges.slice(0, this.tsOk ? 3 : 4);
  }

  // ── building segments ─────────────────────────────────────────────────────

  private tsOption(): TcpOptions {
    return this.tsOk ? { timestamp: { value: this.tsValue(), echo: this.tsRecent } } : {};
  }

  /** Our timestamp clock: milliseconds, never 0 (an echo of 0 means none to the peer). */
  private tsValue(): number {
    return (Math.floor(this.now()) + 1) >>> 0;
  }

  private now(): number {
    return this.opts.clock.now();
  }

  /** Tells the peer RCV.NXT and our window now (with SACK blocks when there is a hole). */
  sendAck(): void {
    const options = this.tsOption();
    const sack = this.sackBlocks();
    if (this.dsackBlock && this.sackOk) {
      sack.unshift(this.dsackBlock);
      if (sack.length > (this.tsOk ? 3 : 4)) sack.pop();
      this.dsackBlock = undefined;
    }
    if (sack.length > 0) options.sack = sack;
    this.counters.acksOut++;
    this.emit({ seq: this.sndNxt, ack: this.rcvNxt, flags: ACK, window: this.windowField(), options });
  }

  private sendSyn(): void {
    const o = this.opts;
    const options: TcpOptions = {};
    if (o.mss !== undefined) options.mss = o.mss;
    if (o.sackPermitted) options.sackPermitted = true;
    if (o.timestamps) options.timestamp = { value: this.tsValue(), echo: 0 };
    if (o.windowScale !== undefined) options.windowScale = o.windowScale;
    this.emit({ seq: o.iss >>> 0, ack: 0, flags: SYN, window: Math.min(this.rcvBuffer, 0xffff), options });
  }

  /** A raw segment from this guest's address and port, for tests that forge traffic (RST storms). */
  frame(seg: { seq: number; ack: number; flags: number; window?: number; payload?: Uint8Array; options?: TcpOptions; srcPort?: number; dstPort?: number }): Uint8Array {
    const o = this.opts;
    const options = seg.options ?? {};
    const payload = seg.payload ?? new Uint8Array(0);
    const tcpLength = tcpHeaderLength(options) + payload.length;
    const f = new Uint8Array(ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + tcpLength);
    emitEthernetHeader(f, 0, o.gatewayMac, o.mac, ETHERTYPE_IPV4);
    emitIpv4Header({ src: o.ip, dst: o.remote.ip, protocol: IPPROTO_TCP, payloadLength: tcpLength, id: this.ipId, dontFragment: true }, f, ETHERNET_HEADER_LENGTH);
    this.ipId = (this.ipId + 1) & 0xffff;
    const repr = { srcPort: seg.srcPort ?? o.port, dstPort: seg.dstPort ?? o.remote.port, seq: seg.seq >>> 0, ack: seg.ack >>> 0, flags: seg.flags, window: seg.window ?? 0, options, payload };
    emitTcp(repr, f, ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH, o.ip, o.remote.ip);
    return f;
  }

  private emit(seg: { seq: number; ack: number; flags: number; window?: number; payload?: Uint8Array; options?: TcpOptions }): void {
    this.counters.segmentsOut++;
    if (seg.flags & ACK) this.lastAckSent = seg.ack;
    this.output(this.frame(seg));
  }
}
