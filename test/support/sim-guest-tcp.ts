// A small TCP peer that plays the guest in simulations, and the oracle those simulations trust: it
// opens one connection to the stack, sends a byte stream reliably and receives one, and throws an
// OracleViolation (failing the test where it happened) the moment weft sends what a correct TCP
// never would.
//
// It shares no logic with weft's TCP, only the wire codecs: a checker built from the code it checks
// repeats its bugs. Sequence numbers are unwrapped once, where a segment comes in, into plain
// offsets from each stream's first byte (ISS + 1 for what it sends, IRS + 1 for what it receives);
// everything after that is ordinary arithmetic. The receiving half is a set of held byte ranges
// (sim-guest-stream.ts) from which the ACK and SACK blocks are read off; what it accepts follows
// RFC 9293 §3.10.7.4 as written (stricter than Linux, which also takes a FIN at the window's edge).
// The sending half is deliberately simple: a fixed congestion window, RTO with exponential backoff,
// fast retransmit on three duplicate ACKs with NewReno-style partial-ACK retransmission.
//
// What it refuses from weft: data before the stream's start or past the right edge of any window it
// advertised; a byte different from the one first sent at that offset; a FIN that moves; data at or
// past the FIN; an empty segment whose sequence number lies outside [IRS, right edge] (FIN + 1 once
// the FIN is known); a SYN-ACK with another ISN, or that acknowledges anything but the SYN; a
// segment without ACK after the handshake; an ACK or SACK block covering bytes it never sent.

import type { FlowEndpoint } from '../../core/upstream';
import { BROADCAST_MAC, type Ipv4Address, type MacAddress } from '../../core/wire/address';
import { ARP_REPLY, ARP_REQUEST, emitArp, parseArp } from '../../core/wire/arp';
import { emitEthernetHeader, ETHERNET_HEADER_LENGTH, ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet } from '../../core/wire/ethernet';
import { emitIpv4Header, IPPROTO_TCP, IPV4_HEADER_LENGTH, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { ACK, emitTcp, FIN, parseTcp, PSH, RST, SYN, tcpHeaderLength, verifyTcpChecksum, type TcpOptions, type TcpSegment } from '../../core/wire/tcp';
import { OracleViolation, ReceivedStream } from './sim-guest-stream';

export { OracleViolation } from './sim-guest-stream';

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

/** One received segment as the test sees it, with the simulated time it arrived. */
export interface SimSegmentEvent {
  at: number;
  seg: TcpSegment;
}

/** A sequence number `offset` bytes after `base` (ISS + 1 or IRS + 1), as it goes on the wire. */
const wrap = (base: number, offset: number): number => (base + offset) >>> 0;

/** The offset of `seq` from `base`, taken as the one nearest `near` (an offset): one wrap, here only. */
const unwrap = (base: number, seq: number, near: number): number => near + ((seq - wrap(base, near)) | 0);

export class SimGuestTcp {
  state: SimGuestState = 'idle';
  readonly counters: SimGuestCounters = {
    framesIn: 0,
    segmentsIn: 0,
    segmentsOut: 0,
    dataSegmentsOut: 0,
    retransmits: 0,
    timeouts: 0,
    fastRetransmits: 0,
    badIpv4: 0,
    badTcpChecksum: 0,
    ignored: 0,
    acksOut: 0,
    rstIn: 0,
    duplicateData: 0,
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
  /** The receive offset last sent in an ACK field (RFC 7323's Last.ACK.sent). */
  private lastAckSent: number | undefined;

  // Sending, in offsets from ISS + 1 (the SYN is at −1).
  private readonly txBase: number;
  private out = new Uint8Array(64 * 1024);
  private outLen = 0;
  private sndUna = -1;
  private sndNxtOffset = 0;
  private sndMax = 0;
  private peerWnd = 0;
  /** The segment that last set the window (RFC 9293's SND.WL1 as a receive offset, SND.WL2 as a send offset). */
  private wl1 = 0;
  private wl2 = 0;
  /** Our FIN's offset (the length of what we send), once the application closed. */
  private finOffset: number | undefined;
  private rto: number;
  private rtoDeadline: number | undefined;
  private retries = 0;
  private dupAcks = 0;
  private inRecovery = false;
  private recover = 0;

  // Receiving, in offsets from IRS + 1.
  private irs = 0;
  private readonly rx = new ReceivedStream();
  /** The right edge of the window we advertised; it never moves left (RFC 9293 §3.8.6). */
  private advRight = 0;
  /** Where weft's FIN sits, from the first segment that carried it. */
  private peerFin: number | undefined;
  /** Where the latest out-of-order bytes (or FIN) landed: its range is SACKed first. */
  private latestArrival: number | undefined;
  /** Duplicate data to report first in the next ACK (RFC 2883), when `dsack` is on. */
  private dsackBlock: [number, number] | undefined;
  /** What the application has read: bytes below it no longer hold the window closed. */
  private consumed = 0;
  /** While true, the application does not read: the window closes as data arrives. */
  readPaused = false;
  private ipId = 1;

  private readonly rcvBuffer: number;
  private readonly baseRto: number;

  constructor(
    private readonly opts: SimGuestOptions,
    private readonly output: (frame: Uint8Array) => void,
  ) {
    this.txBase = (opts.iss + 1) >>> 0;
    this.rcvBuffer = opts.receiveBuffer ?? 64 * 1024;
    this.baseRto = this.rto = opts.rtoMs ?? 200;
  }

  // ── the application's side ────────────────────────────────────────────────

  /** Sends the SYN. */
  connect(): void {
    if (this.state !== 'idle') return;
    this.state = 'syn-sent';
    this.sendSyn();
    this.rtoDeadline = this.now() + this.rto;
  }

  /** Queues bytes to send. */
  write(data: Uint8Array): void {
    if (this.finOffset !== undefined) throw new Error('write after close');
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
    if (this.finOffset !== undefined) return;
    this.finOffset = this.outLen;
    this.transmit(this.now());
  }

  /** Aborts with an RST. */
  abort(): void {
    if (this.state !== 'open') return;
    this.emit({ seq: wrap(this.txBase, this.sndNxtOffset), ack: 0, flags: RST });
    this.state = 'reset';
  }

  /** The application reads everything received so far; a window update goes out if it reopened. */
  read(): void {
    const before = this.windowBytes();
    this.consumed = this.receivedBytes;
    if (this.state === 'open' && this.windowBytes() - before >= Math.min(this.rcvBuffer / 2, this.peerMss)) this.sendAck();
  }

  /** Bytes received in order (weft's FIN not counted). */
  get receivedBytes(): number {
    const next = this.rx.next;
    return this.peerFin !== undefined && next > this.peerFin ? this.peerFin : next;
  }

  /** Everything received in order, as one array. */
  receivedData(): Uint8Array {
    return this.rx.prefix(this.receivedBytes);
  }

  /** weft's FIN has arrived in order. */
  get finReceived(): boolean {
    return this.peerFin !== undefined && this.rx.next > this.peerFin;
  }

  /** RCV.NXT as a sequence number (0 before the handshake). */
  get rcvNxt(): number {
    return this.state === 'idle' || this.state === 'syn-sent' ? 0 : wrap(this.irs + 1, this.rx.next);
  }

  /** SND.NXT as a sequence number. */
  get sndNxt(): number {
    return wrap(this.txBase, this.sndNxtOffset);
  }

  get finAcked(): boolean {
    return this.finOffset !== undefined && this.sndUna > this.finOffset;
  }

  /** Bytes sent and not yet acknowledged. */
  get inFlight(): number {
    return this.sndMax - this.sndUna;
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
      this.sendData(this.sndNxtOffset, 1, false);
      this.sndNxtOffset = this.sndMax = this.sndNxtOffset + 1;
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
    emitArp(
      { operation: ARP_REPLY, senderMac: this.opts.mac, senderIp: this.opts.ip, targetMac: arp.senderMac, targetIp: arp.senderIp },
      f,
      ETHERNET_HEADER_LENGTH,
    );
    this.output(f);
  }

  private onTcp(seg: TcpSegment, now: number): void {
    const flags = seg.flags;
    if (this.state === 'syn-sent') return this.onSynSent(seg, now);
    if (this.state !== 'open') return;
    const start = unwrap(this.irs + 1, seg.seq, this.rx.next);
    if (flags & RST) {
      this.counters.rstIn++;
      // RFC 5961 on our side too: only a reset at RCV.NXT counts.
      if (start === this.rx.next) {
        this.state = 'reset';
        this.rtoDeadline = undefined;
      }
      return;
    }
    if (flags & SYN) {
      if (seg.seq !== this.irs) this.violation(seg, `a SYN with ISN ${seg.seq} after ${this.irs}`);
      this.sendAck(); // the SYN-ACK again: our ACK of it was lost
      return;
    }
    if (!(flags & ACK)) this.violation(seg, 'a segment without ACK after the handshake');
    const ack = unwrap(this.txBase, seg.ack, this.sndUna);
    if (ack < 0 || ack > this.sndMax) this.violation(seg, `ACK of offset ${ack}, but only [0, ${this.sndMax}] was sent`);
    for (const [l, r] of seg.options.sack ?? []) {
      const [lo, ro] = [unwrap(this.txBase, l, this.sndUna), unwrap(this.txBase, r, this.sndUna)];
      if (!(lo >= 0 && lo < ro && ro <= this.sndMax)) this.violation(seg, `SACK block [${lo}, ${ro}) outside [0, ${this.sndMax}] sent`);
    }
    const fin = (flags & FIN) !== 0;
    this.checkPlacement(seg, start, fin);
    const duplicate = this.rx.overlap(start, seg.payload);
    const dupBytes = duplicate.reduce((n, [l, r]) => n + r - l, 0);
    if (dupBytes > 0 && dupBytes === seg.payload.length) this.counters.duplicateData++;
    if (this.opts.dsack && duplicate.length > 0) this.dsackBlock = duplicate[0];

    if (!this.acceptable(start, seg.payload.length + (fin ? 1 : 0))) {
      this.sendAck(); // e.g. data we hold already, or a zero-window probe (SEQ = RCV.NXT − 1)
      return;
    }
    // RFC 7323 §4.3, as Linux: TS.Recent follows only segments at or below the last ACK sent, so
    // out-of-order data does not move it and the echo stays that of the last in-order segment.
    const ts = seg.options.timestamp;
    const inOrder = this.lastAckSent === undefined || start <= this.lastAckSent;
    if (this.tsOk && ts && inOrder && ((ts.value - this.tsRecent) | 0) >= 0) this.tsRecent = ts.value;
    this.onAck(seg, start, ack, now);
    if (seg.payload.length > 0 || fin) {
      this.take(start, seg.payload, fin);
      this.sendAck();
    }
    this.transmit(now);
  }

  private onSynSent(seg: TcpSegment, now: number): void {
    const synAck = SYN | ACK;
    if (seg.flags & RST) {
      if (seg.flags & ACK && seg.ack === this.txBase) {
        this.counters.rstIn++;
        this.state = 'reset';
        this.rtoDeadline = undefined;
      }
      return;
    }
    if ((seg.flags & synAck) !== synAck) return;
    if (seg.ack !== this.txBase) this.violation(seg, `a SYN-ACK acknowledging ${seg.ack}, not our SYN (${this.opts.iss >>> 0})`);
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
    this.irs = seg.seq;
    // The window our SYN offered (never scaled) is the first one weft may fill.
    this.advRight = Math.min(this.rcvBuffer, 0xffff);
    this.sndUna = 0;
    this.peerWnd = seg.window; // never scaled in a SYN
    this.wl1 = -1;
    this.wl2 = 0;
    this.state = 'open';
    this.rto = this.baseRto;
    this.retries = 0;
    this.rtoDeadline = undefined;
    this.sendAck();
    this.transmit(now);
  }

  private violation(seg: TcpSegment, what: string): never {
    const flags = [
      [SYN, 'S'],
      [FIN, 'F'],
      [RST, 'R'],
      [PSH, 'P'],
      [ACK, '.'],
    ]
      .filter(([f]) => seg.flags & (f as number))
      .map(([, n]) => n)
      .join('');
    throw new OracleViolation(
      `weft sent ${what} (t=${this.now()} seq=${seg.seq} ack=${seg.ack} [${flags}] len=${seg.payload.length}, RCV.NXT at offset ${this.rx.next})`,
    );
  }

  // ── the receiving half ────────────────────────────────────────────────────

  /**
   * Where a segment's sequence numbers may lie at all, whatever the window is now: weft may only
   * send into space we advertised, and its stream ends for good at its FIN.
   */
  private checkPlacement(seg: TcpSegment, start: number, fin: boolean): void {
    const end = start + seg.payload.length;
    if (seg.payload.length > 0) {
      if (start < 0) this.violation(seg, `data before the stream's first byte (offset ${start})`);
      if (end > this.advRight) this.violation(seg, `data up to offset ${end}, past every window we advertised (right edge ${this.advRight})`);
      if (this.peerFin !== undefined && end > this.peerFin) this.violation(seg, `data up to offset ${end}, past its FIN at ${this.peerFin}`);
    }
    if (fin) {
      if (this.peerFin !== undefined && end !== this.peerFin) this.violation(seg, `a FIN at offset ${end}, having sent it at ${this.peerFin}`);
      // A FIN at the edge is outside the window, but Linux sends one there too: only trimmed, below.
      if (end > this.advRight) this.violation(seg, `a FIN at offset ${end}, past every window we advertised (right edge ${this.advRight})`);
      // Once the FIN is known, data past it is refused above; before, check what is already held.
      if (this.peerFin === undefined && this.rx.end > end) this.violation(seg, `a FIN at offset ${end} below data it sent up to ${this.rx.end}`);
      this.peerFin = end;
    } else if (seg.payload.length === 0) {
      const highest = this.peerFin !== undefined ? this.peerFin + 1 : this.advRight;
      if (start < -1 || start > highest) this.violation(seg, `sequence number at offset ${start}, outside [-1, ${highest}]`);
    }
  }

  /** RFC 9293 §3.10.7.4, the four cases of the segment acceptability test, by offsets. */
  private acceptable(start: number, len: number): boolean {
    const next = this.rx.next;
    const wnd = Math.max(0, this.advRight - next);
    const inWindow = (o: number) => next <= o && o < next + wnd;
    if (len === 0) return wnd === 0 ? start === next : inWindow(start);
    return wnd > 0 && (inWindow(start) || inWindow(start + len - 1));
  }

  /** Keeps the part of an acceptable segment inside the window; the rest is trimmed (§3.10.7.4). */
  private take(start: number, payload: Uint8Array, fin: boolean): void {
    const next = this.rx.next;
    const from = Math.max(start, next);
    const to = Math.min(start + payload.length, this.advRight);
    if (from < to) {
      this.rx.hold(from, payload.subarray(from - start, to - start));
      if (from > next) this.latestArrival = from;
    }
    const finAt = start + payload.length;
    if (fin && finAt >= next && finAt < this.advRight) {
      this.rx.holdSlot(finAt);
      if (finAt > next) this.latestArrival = finAt;
    }
    if (!this.readPaused) this.consumed = this.receivedBytes;
  }

  /**
   * SACK blocks: the range holding the latest arrival first (RFC 2018 §4), then the others lowest
   * first, nearest the holes weft must repair. A FIN held above a hole is in them as its slot.
   */
  private sackBlocks(max: number): Array<[number, number]> {
    const ranges = this.rx.above();
    const latest = ranges.findIndex(([l, r]) => this.latestArrival !== undefined && l <= this.latestArrival && this.latestArrival < r);
    if (latest > 0) ranges.unshift(...ranges.splice(latest, 1));
    return ranges.slice(0, max);
  }

  private windowBytes(): number {
    return Math.max(0, this.rcvBuffer - (this.receivedBytes - this.consumed));
  }

  /** The window field to advertise; the right edge never moves left (RFC 9293 §3.8.6). */
  private windowField(): number {
    const next = this.rx.next;
    const field = Math.min(0xffff, this.windowBytes() >>> this.rcvShift);
    this.advRight = Math.max(this.advRight, next + field * 2 ** this.rcvShift);
    return Math.min(0xffff, Math.floor(Math.max(0, this.advRight - next) / 2 ** this.rcvShift));
  }

  // ── the sending half ──────────────────────────────────────────────────────

  private get sendMss(): number {
    return Math.max(1, Math.min(this.peerMss, this.opts.mss ?? 536) - (this.tsOk ? 12 : 0));
  }

  /** Queued bytes not yet sent. */
  private unsent(): number {
    return this.outLen - this.sndNxtOffset;
  }

  /** The ACK field and window of an acceptable segment; `seq` and `ack` as offsets. */
  private onAck(seg: TcpSegment, seq: number, ack: number, now: number): void {
    const wnd = seg.window * 2 ** this.sndShift;
    let windowChanged = false;
    if (this.wl1 < seq || (this.wl1 === seq && this.wl2 <= ack)) {
      windowChanged = wnd !== this.peerWnd;
      this.peerWnd = wnd;
      this.wl1 = seq;
      this.wl2 = ack;
    }
    if (ack > this.sndUna) {
      this.sndUna = ack;
      if (this.sndNxtOffset < ack) this.sndNxtOffset = ack;
      this.dupAcks = 0;
      this.retries = 0;
      this.rto = this.baseRto;
      this.rtoDeadline = this.sndUna === this.sndMax ? undefined : now + this.rto;
      if (this.inRecovery) {
        if (ack >= this.recover) this.inRecovery = false;
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
      const room = Math.min(this.sndUna + this.peerWnd - this.sndNxtOffset, cap - (this.sndNxtOffset - this.sndUna));
      const len = Math.min(avail, this.sendMss, room);
      if (len > 0) {
        const fin = this.finOffset !== undefined && len === avail;
        this.sendData(this.sndNxtOffset, len, fin);
        this.advance(len + (fin ? 1 : 0), now);
        continue;
      }
      if (avail === 0 && this.finOffset !== undefined && this.sndNxtOffset <= this.finOffset && room >= 0) {
        this.sendData(this.sndNxtOffset, 0, true);
        this.advance(1, now);
      }
      break;
    }
    // Data waits behind a closed window and nothing is in flight: the timer probes it.
    if (this.unsent() > 0 && this.sndUna === this.sndMax && this.rtoDeadline === undefined) this.rtoDeadline = now + this.rto;
  }

  private advance(n: number, now: number): void {
    this.sndNxtOffset += n;
    if (this.sndNxtOffset > this.sndMax) this.sndMax = this.sndNxtOffset;
    if (this.rtoDeadline === undefined) this.rtoDeadline = now + this.rto;
  }

  private retransmitFirst(): void {
    // Every other retransmission starts a third of a segment below SND.UNA, as a stack that
    // re-packetizes may: weft must trim bytes it has from the front of bytes it lacks.
    const from = this.sndUna - Math.min(this.sndUna, this.counters.retransmits % 2 === 1 ? Math.floor(this.sendMss / 3) : 0);
    const len = Math.max(0, Math.min(this.sendMss, Math.min(this.outLen, this.sndMax) - from));
    const fin = this.finOffset !== undefined && this.sndMax > this.finOffset && from + len === this.finOffset;
    if (len === 0 && !fin) return;
    this.counters.retransmits++;
    this.sendData(from, len, fin);
  }

  private sendData(offset: number, len: number, fin: boolean): void {
    const payload = this.out.subarray(offset, offset + len);
    if (len > 0) this.counters.dataSegmentsOut++;
    const window = this.windowField();
    this.emit({
      seq: wrap(this.txBase, offset),
      ack: this.ackField(),
      flags: ACK | (len > 0 ? PSH : 0) | (fin ? FIN : 0),
      payload,
      window,
      options: this.tsOption(),
    });
  }

  // ── building segments ─────────────────────────────────────────────────────

  /** RCV.NXT for the ACK field; remembered as Last.ACK.sent. */
  private ackField(): number {
    this.lastAckSent = this.rx.next;
    return wrap(this.irs + 1, this.rx.next);
  }

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
    const max = this.tsOk ? 3 : 4;
    if (this.sackOk) {
      const blocks = this.sackBlocks(max);
      if (this.dsackBlock) blocks.unshift(this.dsackBlock);
      if (blocks.length > 0) options.sack = blocks.slice(0, max).map(([l, r]) => [wrap(this.irs + 1, l), wrap(this.irs + 1, r)]);
    }
    this.dsackBlock = undefined;
    this.counters.acksOut++;
    const window = this.windowField();
    this.emit({ seq: wrap(this.txBase, this.sndNxtOffset), ack: this.ackField(), flags: ACK, window, options });
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
  frame(seg: {
    seq: number;
    ack: number;
    flags: number;
    window?: number;
    payload?: Uint8Array;
    options?: TcpOptions;
    srcPort?: number;
    dstPort?: number;
  }): Uint8Array {
    const o = this.opts;
    const options = seg.options ?? {};
    const payload = seg.payload ?? new Uint8Array(0);
    const tcpLength = tcpHeaderLength(options) + payload.length;
    const f = new Uint8Array(ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + tcpLength);
    emitEthernetHeader(f, 0, o.gatewayMac, o.mac, ETHERTYPE_IPV4);
    emitIpv4Header(
      { src: o.ip, dst: o.remote.ip, protocol: IPPROTO_TCP, payloadLength: tcpLength, id: this.ipId, dontFragment: true },
      f,
      ETHERNET_HEADER_LENGTH,
    );
    this.ipId = (this.ipId + 1) & 0xffff;
    const repr = {
      srcPort: seg.srcPort ?? o.port,
      dstPort: seg.dstPort ?? o.remote.port,
      seq: seg.seq >>> 0,
      ack: seg.ack >>> 0,
      flags: seg.flags,
      window: seg.window ?? 0,
      options,
      payload,
    };
    emitTcp(repr, f, ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH, o.ip, o.remote.ip);
    return f;
  }

  private emit(seg: { seq: number; ack: number; flags: number; window?: number; payload?: Uint8Array; options?: TcpOptions }): void {
    this.counters.segmentsOut++;
    this.output(this.frame(seg));
  }
}
