// One guest TCP connection, terminated by weft and spliced onto an upstream stream. The state
// machine follows RFC 9293 with weft in the passive role, plus one state of its own, `connecting`:
// the guest's SYN is held (retransmissions absorbed) until the upstream connect succeeds, so the
// guest sees a refused or unreachable destination as an RST instead of an accept-then-reset.
// A connection is built from the guest's SYN (or, for an active open, its SYN-ACK: before that,
// ./tcp-active-open.ts stands in), so its sender, receiver and segment writer exist from the start.
// All its timers are slots of one TcpTimers (./tcp-timers.ts).

import type { TcpConfig } from '../config';
import type { DropReason } from '../wire/parse-result';
import type { TimerOwner } from '../timer-queue';
import type { FlowEndpoint, FlowMeta, TcpCloseReason, TcpStreamHandlers, Upstream, UpstreamError, UpstreamErrorKind } from '../upstream';
import { ACK, FIN, PSH, RST, SYN, type SegmentPayload, type TcpRepr, type TcpSegment } from '../wire/tcp';
import { negotiate } from './tcp-negotiation';
import { TcpReceiver } from './tcp-receiver';
import { TcpSegmentWriter } from './tcp-segment-writer';
import { SEND_BUFFER_SLACK_BYTES, TcpSender } from './tcp-sender';
import type { ByteBudget } from './byte-budget';
import { TcpTimers } from './tcp-timers';
import { UpstreamPipe } from './upstream-pipe';
import { seqAdd, seqDiff, type SeqNum } from './seq';
import { after, type Instant } from '../clock';

export type TcpState =
  | 'syn-sent'
  | 'connecting'
  | 'syn-received'
  | 'established'
  | 'close-wait'
  | 'last-ack'
  | 'fin-wait-1'
  | 'fin-wait-2'
  | 'closing'
  | 'time-wait'
  | 'closed';

/** Counters of weft's sending towards the guest: what was sent again, and why. */
export interface TcpSendStats {
  retransmits: number;
  timeouts: number;
  lossProbes: number;
  spuriousUndone: number;
}

/**
 * What the flow table holds for a 4-tuple: a connection, or an active open whose SYN the guest has
 * not answered yet (./tcp-active-open.ts).
 */
export interface TcpFlow extends TimerOwner {
  readonly key: string;
  readonly guest: FlowEndpoint;
  /** weft's side: the destination the guest asked for, or the local end of an active open. */
  readonly target: FlowEndpoint;
  readonly openedAt: Instant;
  readonly state: TcpState;
  readonly halfOpen: boolean;
  readonly closeReason: TcpCloseReason | undefined;
  readonly bytesFromGuest: number;
  readonly bytesToGuest: number;
  /** Bytes held in the flow's own buffers (for memory accounting). */
  readonly bufferedBytes: number;
  readonly sendStats: TcpSendStats;
  onSegment(seg: TcpSegment): void;
  /** Tears the flow down at once, telling the guest with RST if `tellGuest` (and it knows our sequence numbers). */
  abort(reason: TcpCloseReason, tellGuest: boolean): void;
  nextDeadline(): Instant | undefined;
}

/** What a connection needs from its surroundings (the flow table provides it). */
export interface TcpConnectionHost {
  readonly config: TcpConfig;
  /** Our MSS towards the guest (link MTU − 40). */
  readonly linkMss: number;
  /** The link does TCP segmentation offload: data segments may carry up to ~64 KiB (read at the handshake). */
  segmentOffload: boolean;
  readonly upstream: Upstream;
  /** The stack's bound on the bytes all connections hold from their upstreams. */
  readonly sendBudget?: ByteBudget;
  /** The stack's bound on the bytes all connections hold from their guests for upstreams that have not taken them. */
  readonly receiveBudget?: ByteBudget;
  /** Counts a segment (or its text) dropped. */
  drop?(reason: DropReason): void;
  now(): Instant;
  /**
   * Sends a segment to the guest from `local`, with `payloadLength` bytes of `payload` (copied
   * into the frame, or sent from where they lie).
   */
  send(flow: TcpFlow, repr: TcpRepr, payloadLength: number, payload?: SegmentPayload): void;
  /** Timers changed: the flow's deadline must be (re)scheduled. */
  reschedule(flow: TcpFlow): void;
  stateChanged(flow: TcpFlow, from: TcpState): void;
  /** Asks to send this connection's pure ACK later, at the end of the input batch; false = send now. */
  deferAck(conn: TcpConnection): boolean;
  closed(flow: TcpFlow, reason: TcpCloseReason): void;
  /** The guest accepted an active open: `conn` takes the place of `open` (same key, timers moved). */
  replaced(open: TcpFlow, conn: TcpConnection): void;
}

/** SYN (active open) or SYN-ACK retransmissions before the handshake is given up. */
export const MAX_SYN_RETRIES = 5;
/** RFC 5961 §7's throttle (Linux allows 1000/s for the whole host; one guest connection needs few). */
export const CHALLENGE_ACKS_PER_SECOND = 100;
/** How long a closing connection waits for a blocked upstream to take the guest's last bytes. */
const UPSTREAM_DRAIN_MS = 60_000;
/** Less room than this at the send buffer's end (it is about to wrap) and a read goes to the stream's own buffer. */
const MIN_READ_ROOM = 64 * 1024;

export class TcpConnection implements TcpFlow {
  state: TcpState;
  timerScheduledAt?: Instant;
  readonly iss: SeqNum;
  readonly irs: SeqNum;
  private challengeWindowStart = -Infinity;
  private challengesSent = 0;
  private readonly timers = new TcpTimers();
  private readonly sender: TcpSender;
  private readonly receiver: TcpReceiver;
  private readonly writer: TcpSegmentWriter;

  private synAckRetries = 0;
  private lastGuestActivity: Instant;
  private keepaliveProbesSent = 0;
  private closeWhenDrained: TcpCloseReason | undefined;
  /** What this connection counts in the stack's receive budget: its backlog and out-of-order bytes. */
  private receiveHeld = 0;

  bytesFromGuest = 0;
  bytesToGuest = 0;
  closeReason: TcpCloseReason | undefined;
  /** A pure ACK is owed and waits for the end of the input batch. */
  ackDeferred = false;

  /** A connection the guest opened (its SYN in hand); the upstream is opened by start(). */
  static passive(
    host: TcpConnectionHost,
    key: string,
    guest: FlowEndpoint,
    target: FlowEndpoint,
    syn: TcpSegment,
    iss: SeqNum,
    tsOffset: number,
  ): TcpConnection {
    const c = new TcpConnection(host, key, guest, target, iss, tsOffset, syn, 'connecting', host.now(), new UpstreamPipe(), false);
    c.timers.set('connect', after(c.openedAt, host.config.connectTimeoutMs));
    return c;
  }

  /**
   * An active open the guest accepted with `synAck` (./tcp-active-open.ts hands over what it held:
   * when it began, the stream and whether that stream has ended). Completes the handshake.
   */
  static active(
    host: TcpConnectionHost,
    key: string,
    guest: FlowEndpoint,
    local: FlowEndpoint,
    iss: SeqNum,
    tsOffset: number,
    synAck: TcpSegment,
    held: { openedAt: Instant; pipe: UpstreamPipe; upstreamEnded: boolean },
  ): TcpConnection {
    return new TcpConnection(host, key, guest, local, iss, tsOffset, synAck, 'syn-sent', held.openedAt, held.pipe, held.upstreamEnded);
  }

  /** Settles options from the guest's SYN or SYN-ACK and creates the two halves. */
  private constructor(
    private readonly host: TcpConnectionHost,
    readonly key: string,
    readonly guest: FlowEndpoint,
    readonly target: FlowEndpoint,
    iss: SeqNum,
    tsOffset: number,
    syn: TcpSegment,
    state: TcpState,
    readonly openedAt: Instant,
    private readonly pipe: UpstreamPipe,
    private upstreamEnded: boolean, // the upstream sent its FIN
  ) {
    this.state = state;
    this.lastGuestActivity = host.now();
    this.iss = iss;
    this.irs = syn.seq;
    const n = negotiate(host.config, host.linkMss, host.segmentOffload, syn);
    this.receiver = new TcpReceiver(syn.seq, n.receiver, this.timers);
    this.sender = new TcpSender(
      iss,
      n.sender,
      {
        sendSegment: (seq, len, fin) => this.sendData(seq, len, fin),
        sendProbe: () => this.sendControl(seqAdd(this.sender.sndUna, -1), ACK),
      },
      this.timers,
      host.sendBudget,
    );
    const output = {
      srcPort: target.port,
      dstPort: guest.port,
      linkMss: host.linkMss,
      now: () => host.now(),
      send: (repr: TcpRepr, len: number, payload?: SegmentPayload) => host.send(this, repr, len, payload),
    };
    this.writer = new TcpSegmentWriter(output, n, tsOffset, this.receiver, () => this.windowHeld());
  }

  /** The stream's events, for the upstream this connection opens (or took over from an active open). */
  streamHandlers(): TcpStreamHandlers {
    return {
      onConnect: () => this.upstreamEvent(() => this.onUpstreamConnect()),
      onData: (data, more) => this.upstreamEvent(() => this.onUpstreamData(data, more === true)),
      readRoom: () => this.readRoom(),
      onEnd: () => this.upstreamEvent(() => this.onUpstreamEnd()),
      onDrain: () => this.upstreamEvent(() => this.onUpstreamDrain()),
      onClose: (error) => this.upstreamEvent(() => this.onUpstreamClose(error)),
    };
  }

  /** Opens the upstream stream; called by the table once the connection is registered. */
  start(meta: FlowMeta): void {
    this.pipe.attach(this.host.upstream.openTcp(this.target, meta, this.streamHandlers()));
    this.host.reschedule(this);
  }

  /** The rest of an active open, once this connection has taken its place: the guest's SYN-ACK acknowledged. */
  completeActiveOpen(synAck: TcpSegment): void {
    this.sender.initWindow(synAck.window, synAck.seq, synAck.ack);
    this.setState('established');
    this.sendAck();
    for (const chunk of this.pipe.takeEarly()) this.onUpstreamData(chunk, false);
    this.pipe.release();
    if (this.upstreamEnded) this.closeSend();
    this.host.reschedule(this);
  }

  get rcvNxt(): SeqNum {
    return this.receiver.rcvNxt;
  }

  get halfOpen(): boolean {
    return this.state === 'connecting' || this.state === 'syn-received' || this.state === 'syn-sent';
  }

  /** Both sides know each other's sequence numbers and neither has finished: the sender and keep-alive run. */
  private get synchronized(): boolean {
    return !this.halfOpen && this.state !== 'time-wait' && this.state !== 'closed';
  }

  get bufferedBytes(): number {
    return this.sender.buffered + this.pipe.backlogBytes + this.receiver.oooBytes;
  }

  /** How weft's sending towards the guest went: what was sent again, and why. */
  get sendStats(): TcpSendStats {
    const s = this.sender;
    return { retransmits: s.segmentsRetransmitted, timeouts: s.timeouts, lossProbes: s.lossProbes, spuriousUndone: s.spuriousUndone };
  }

  // ── guest segments ──────────────────────────────────────────────────────

  onSegment(seg: TcpSegment): void {
    const now = this.host.now();
    this.lastGuestActivity = now;
    this.keepaliveProbesSent = 0;
    if (this.synchronized) this.armKeepalive();
    const flags = seg.flags;

    if (this.state === 'connecting') {
      if (flags & RST) this.abort('guest-reset', false);
      // A retransmitted SYN is absorbed: the SYN-ACK follows once the upstream connects.
      return;
    }
    if (this.state === 'time-wait') {
      if (flags & RST) return this.finish('guest-reset');
      // Data or a FIN again: our last ACK was lost, and the guest retransmits its oldest
      // unacknowledged segment (data, not always the FIN). Acknowledge it (RFC 9293 §3.10.7.4);
      // a FIN also restarts the 2MSL wait.
      if (flags & FIN || seg.payload.length > 0) this.sendAck();
      if (flags & FIN) {
        this.timers.set('time-wait', after(now, this.host.config.timeWaitMs));
        this.host.reschedule(this);
      }
      return;
    }
    if (this.state === 'closed' || this.state === 'syn-sent') return;

    if (!(flags & RST) && this.writer.stale(seg)) {
      this.sendAck();
      return;
    }

    const segLen = seg.payload.length + (flags & SYN ? 1 : 0) + (flags & FIN ? 1 : 0);
    if (!this.receiver.acceptable(seg.seq, segLen)) {
      if (this.state === 'syn-received' && flags & SYN && seg.seq === this.irs) {
        this.sendSynAck(); // the guest never got our SYN-ACK
      } else if (!(flags & RST)) {
        this.receiver.rejected(seg.seq, seg.payload.length); // old text: reported by D-SACK
        this.sendAck();
      }
      return;
    }
    if (flags & RST) {
      // RFC 5961 §3: only an exact match resets; anything else in window gets a challenge ACK.
      if (seg.seq === this.receiver.rcvNxt) this.abort('guest-reset', false);
      else this.challengeAck();
      return;
    }
    if (flags & SYN) {
      this.challengeAck(); // RFC 5961 §4: challenge ACK for a SYN on a synchronized connection
      return;
    }
    if (!(flags & ACK)) return;

    this.writer.noteTimestamp(seg);

    if (this.state === 'syn-received') {
      if (seg.ack !== seqAdd(this.iss, 1)) {
        this.sendControl(seg.ack, RST);
        return;
      }
      this.timers.clear('handshake');
      this.sender.initWindow(this.writer.sendWindow(seg), seg.seq, seg.ack);
      this.setState('established');
      if (this.upstreamEnded) this.closeSend();
    }

    const ok = this.sender.onAck(
      {
        seq: seg.seq,
        ack: seg.ack,
        window: this.writer.sendWindow(seg),
        sack: seg.options.sack,
        dupCandidate: seg.payload.length === 0 && !(flags & FIN),
      },
      now,
      this.writer.echoedSendTime(seg),
    );
    if (!ok) {
      this.sendAck();
      return;
    }
    if (this.sender.failed) return this.abort('retransmit-limit', true);
    this.resumeUpstreamIfRoom();

    if (this.sender.finAcked) {
      if (this.state === 'fin-wait-1') this.setState('fin-wait-2');
      else if (this.state === 'closing') this.enterTimeWait(now);
      else if (this.state === 'last-ack') return this.finish('closed');
    }

    if (seg.payload.length > 0 && this.host.receiveBudget?.overFor(this.receiveHeld)) {
      // The stack holds its budget of guests' bytes and this connection more than its share: the
      // text (and a FIN behind it) is dropped, as a full host drops it; the duplicate ACK says what
      // we have, and the guest sends it again once the upstream has taken some.
      this.host.drop?.('tcp-receive-budget');
      this.receiver.ackNow = true;
    } else if (this.state === 'established' || this.state === 'fin-wait-1' || this.state === 'fin-wait-2') {
      const delivered = this.receiver.accept(seg.seq, seg.payload, (flags & FIN) !== 0, now);
      for (const chunk of delivered) this.deliverUpstream(chunk);
      this.countReceiveHeld();
      if ((this.state as TcpState) === 'closed') return;
      if (this.receiver.finReceived) this.onGuestFin(now);
    } else if (seg.payload.length > 0 || flags & FIN) {
      // Text after the guest's FIN is a retransmission at best; acknowledge what we have.
      this.receiver.ackNow = true;
    }
    if (this.receiver.ackNow) {
      // In-order data in a burst needs one ACK at its end, not one per segment; duplicate ACKs
      // (out-of-order data) go at once, since the guest counts them for fast retransmit.
      if (this.ackDeferred || (this.receiver.oooBytes === 0 && this.host.deferAck(this))) this.ackDeferred = true;
      else this.sendAck();
    }
    this.host.reschedule(this);
  }

  /** Sends the ACK deferred to the end of an input batch, unless a segment already carried it. */
  flushAck(): void {
    if (this.ackDeferred && this.state !== 'closed') this.sendAck();
    this.ackDeferred = false;
  }

  private onGuestFin(now: Instant): void {
    if (this.state === 'established') this.setState('close-wait');
    else if (this.state === 'fin-wait-1') {
      if (this.sender.finAcked) this.enterTimeWait(now);
      else this.setState('closing');
    } else if (this.state === 'fin-wait-2') this.enterTimeWait(now);
    this.endUpstreamIfFlushed();
  }

  // ── upstream events ─────────────────────────────────────────────────────

  private upstreamEvent(fn: () => void): void {
    if (this.state === 'closed' && !this.closeWhenDrained) return;
    fn();
    this.host.reschedule(this);
  }

  private onUpstreamConnect(): void {
    if (this.state !== 'connecting') return;
    this.timers.clear('connect');
    this.setState('syn-received');
    this.sendSynAck();
  }

  private onUpstreamData(data: Uint8Array, more: boolean): void {
    if (this.state === 'closed' || this.state === 'time-wait') return;
    if (this.state === 'syn-sent') {
      // The other side should wait for resume(); keep what came anyway, and hold it off.
      if (data.length > 0) this.pipe.holdEarly(data);
      return;
    }
    this.bytesToGuest += data.length;
    if (data.length > 0 && !this.sender.write(data)) return this.abort('send-buffer-overflow', true);
    if (this.sender.full) this.pauseUpstream();
    // With more to come at once, a short last segment waits for it (one full segment, not two).
    if (!this.halfOpen) this.sender.output(this.host.now(), more);
  }

  /** Room for the stream's next read in the send buffer itself, once data goes straight to it. */
  private readRoom(): Uint8Array | undefined {
    if (this.state === 'closed' || this.state === 'time-wait' || this.state === 'syn-sent') return undefined;
    return this.sender.buffer.tailRoom(MIN_READ_ROOM, SEND_BUFFER_SLACK_BYTES);
  }

  private onUpstreamEnd(): void {
    this.upstreamEnded = true;
    if (!this.halfOpen) this.closeSend();
  }

  private onUpstreamDrain(): void {
    this.pipe.drain();
    this.countReceiveHeld();
    this.endUpstreamIfFlushed();
    if (this.closeWhenDrained && this.pipe.flushed) return this.finish(this.closeWhenDrained);
    // The guest may be stalled on a closed window: tell it the window opened — unless it has sent
    // its FIN (it sends no more; in TIME-WAIT it may be gone, and would answer with RST).
    if (
      this.state !== 'closed' &&
      !this.receiver.finReceived &&
      this.receiver.windowGain(this.windowHeld()) >= Math.max(2 * this.sender.mss, this.host.config.receiveBufferBytes / 4)
    ) {
      this.sendAck();
    }
  }

  private onUpstreamClose(error?: UpstreamError): void {
    this.pipe.closed();
    if (this.closeWhenDrained) return this.finish(this.closeWhenDrained);
    if (error) {
      if (this.state === 'connecting') return this.refuse(error.kind);
      return this.abort(`upstream-${error.kind}`, true);
    }
    if (this.halfOpen) return this.abort('upstream-closed', true);
    // A clean close: the upstream ended its side (and took ours, if we sent one).
    if (!this.upstreamEnded) this.onUpstreamEnd();
    if (this.pipe.backlogBytes > 0) this.abort('upstream-closed', true);
  }

  // ── sending to the guest ─────────────────────────────────────────────────

  private closeSend(): void {
    this.sender.finish();
    if (this.state === 'established') this.setState('fin-wait-1');
    else if (this.state === 'close-wait') this.setState('last-ack');
    this.sender.output(this.host.now());
  }

  private sendSynAck(): void {
    const now = this.host.now();
    this.writer.synAck(this.iss);
    const rto = this.host.config.initialRtoMs * 2 ** this.synAckRetries;
    this.timers.set('handshake', after(now, Math.min(rto, this.host.config.maxRtoMs)));
  }

  private sendData(seq: SeqNum, len: number, fin: boolean): void {
    const offset = seqDiff(seq, this.sender.sndUna);
    const buffer = this.sender.buffer;
    const payload = len > 0 ? buffer.range(offset, len) : undefined;
    // PSH marks the end of what we have, as Linux does; on every segment it costs the guest wake-ups.
    const push = len > 0 && offset + len >= buffer.length;
    this.sendSegment(seq, ACK | (push ? PSH : 0) | (fin ? FIN : 0), len, payload);
  }

  /**
   * A challenge ACK, at most CHALLENGE_ACKS_PER_SECOND per connection (RFC 5961 §7): a storm of
   * forged RSTs or SYNs must not turn into a storm of ACKs. Per connection, not stack-wide, so one
   * connection's count says nothing about another's (the side channel of CVE-2016-5696).
   */
  private challengeAck(): void {
    const now = this.host.now();
    if (now - this.challengeWindowStart >= 1000) {
      this.challengeWindowStart = now;
      this.challengesSent = 0;
    }
    if (this.challengesSent >= CHALLENGE_ACKS_PER_SECOND) return;
    this.challengesSent++;
    this.sendAck();
  }

  private sendAck(): void {
    const seq = this.state === 'syn-received' ? seqAdd(this.iss, 1) : this.sender.sndNxt;
    this.sendSegment(seq, ACK, 0);
  }

  private sendSegment(seq: SeqNum, flags: number, len: number, payload?: SegmentPayload): void {
    this.writer.segment(seq, flags, len, payload);
    this.ackDeferred = false;
  }

  private sendControl(seq: SeqNum, flags: number): void {
    if (flags & RST) return this.sendReset(seq, 0, RST);
    this.sendSegment(seq, flags, 0);
  }

  /** RST carries no options and no window. */
  private sendReset(seq: number, ack: number, flags: number): void {
    this.host.send(this, { srcPort: this.target.port, dstPort: this.guest.port, seq, ack, flags, window: 0 }, 0);
  }

  // ── the upstream direction ──────────────────────────────────────────────

  /**
   * The held bytes the advertised window counts: the backlog — or the whole buffer while the stack's
   * receive budget is spent and this connection holds more than its share, so its window stops
   * opening (it never shrinks: what was offered stays offered).
   */
  private windowHeld(): number {
    return this.host.receiveBudget?.overFor(this.receiveHeld) ? this.host.config.receiveBufferBytes : this.pipe.backlogBytes;
  }

  /** Brings this connection's part of the receive budget up to date (after data came, or the upstream took some). */
  private countReceiveHeld(): void {
    const held = this.state === 'closed' && !this.closeWhenDrained ? 0 : this.pipe.backlogBytes + this.receiver.oooBytes;
    const budget = this.host.receiveBudget;
    if (!budget || held === this.receiveHeld) return;
    if (held > this.receiveHeld) budget.add(held - this.receiveHeld);
    else budget.release(this.receiveHeld - held);
    this.receiveHeld = held;
  }

  private deliverUpstream(chunk: Uint8Array): void {
    this.bytesFromGuest += chunk.length;
    if (!this.pipe.write(chunk)) this.abort('upstream-closed', true);
  }

  private endUpstreamIfFlushed(): void {
    if (this.receiver.finReceived) this.pipe.endIfFlushed();
  }

  private pauseUpstream(): void {
    this.pipe.pause();
    if (this.sender.waitsForBudget) this.host.sendBudget?.wait(this.wakeFromBudget);
  }

  private resumeUpstreamIfRoom(): void {
    if (this.sender.roomToResume) this.pipe.resume();
  }

  /** The stack's budget has room again: go on if this buffer has room, else its own ACKs will resume it. */
  private readonly wakeFromBudget = () => {
    if (this.state === 'closed') return;
    if (this.sender.waitsForBudget) this.host.sendBudget?.wait(this.wakeFromBudget);
    else this.resumeUpstreamIfRoom();
  };

  // ── timers ───────────────────────────────────────────────────────────────

  /** Runs what is due, in a fixed order: handshake timers, TIME-WAIT, the delayed ACK, the sender's, keep-alive. */
  onTimer(now: Instant): Instant | undefined {
    const timers = this.timers;
    if (this.state === 'closed') {
      if (this.closeWhenDrained && timers.due('drain', now)) {
        this.closeWhenDrained = undefined;
        timers.clear('drain');
        this.pipe.destroy('upstream-drain-timeout');
        this.host.closed(this, 'upstream-drain-timeout');
      }
      return this.nextDeadline();
    }
    if (timers.due('connect', now)) {
      this.refuse('timeout');
      return undefined;
    }
    if (timers.due('handshake', now)) {
      if (++this.synAckRetries > MAX_SYN_RETRIES) {
        this.abort('handshake-timeout', true);
        return undefined;
      }
      this.sendSynAck();
    }
    if (timers.due('time-wait', now)) {
      this.finish('closed');
      return this.nextDeadline();
    }
    if (timers.due('delayed-ack', now)) this.sendAck();
    if (!this.halfOpen) {
      this.sender.onTimer(now);
      if (this.sender.failed) {
        this.abort('retransmit-limit', true);
        return undefined;
      }
      if (timers.due('keepalive', now)) this.keepalive();
    }
    return this.nextDeadline();
  }

  /** The keep-alive timer fired: probe, or give up after keepaliveProbes unanswered probes. */
  private keepalive(): void {
    if (this.keepaliveProbesSent >= this.host.config.keepaliveProbes) return this.abort('keepalive-timeout', true);
    this.keepaliveProbesSent++;
    this.armKeepalive();
    this.sendControl(seqAdd(this.sender.sndUna, -1), ACK);
  }

  /** Keep-alive runs while synchronized: idle time after the guest's last segment, then one probe per interval. */
  private armKeepalive(): void {
    const cfg = this.host.config;
    this.timers.set('keepalive', after(after(this.lastGuestActivity, cfg.keepaliveIdleMs), this.keepaliveProbesSent * cfg.keepaliveIntervalMs));
  }

  nextDeadline(): Instant | undefined {
    // A closed connection may still wait for its upstream to drain, and runs nothing else (the
    // sender's slots may still be armed: an upstream end after the close still sends our FIN).
    return this.state === 'closed' ? this.timers.get('drain') : this.timers.nextDeadline();
  }

  // ── endings ──────────────────────────────────────────────────────────────

  private enterTimeWait(now: Instant): void {
    this.setState('time-wait');
    this.timers.set('time-wait', after(now, this.host.config.timeWaitMs));
    this.endUpstreamIfFlushed();
  }

  /** The upstream could not be reached: the guest's SYN is answered with RST. */
  private refuse(kind: UpstreamErrorKind): void {
    this.sendReset(0, this.receiver.rcvNxt, RST | ACK);
    this.pipe.destroy(`upstream-${kind}`);
    this.finish(`upstream-${kind}`);
  }

  /** Tears the connection down at once, telling the guest with RST if `tellGuest`. */
  abort(reason: TcpCloseReason, tellGuest: boolean): void {
    if (this.state === 'closed') return;
    // Before our SYN-ACK the guest knows no sequence number of ours: seq 0, as for a refusal.
    if (tellGuest) this.sendReset(this.state === 'connecting' ? 0 : this.sender.sndNxt, this.receiver.rcvNxt, RST | ACK);
    this.pipe.destroy(reason);
    this.finish(reason);
  }

  /** Ends the connection; a clean end waits (bounded) for a blocked upstream to take the last bytes. */
  private finish(reason: TcpCloseReason): void {
    if (this.state === 'closed') {
      if (this.closeWhenDrained) {
        this.closeWhenDrained = undefined;
        this.countReceiveHeld();
        this.timers.clear('drain');
        this.host.closed(this, reason);
      }
      return;
    }
    this.setState('closed');
    this.closeReason = reason;
    this.sender.dispose();
    this.host.sendBudget?.forget(this.wakeFromBudget);
    this.timers.clearAllBut();
    if (this.pipe.draining) {
      this.closeWhenDrained = reason;
      this.timers.set('drain', after(this.host.now(), UPSTREAM_DRAIN_MS));
      this.host.reschedule(this);
      return;
    }
    this.countReceiveHeld();
    this.host.closed(this, reason);
  }

  private setState(next: TcpState): void {
    const prev = this.state;
    if (prev === next) return;
    const wasSynchronized = this.synchronized;
    this.state = next;
    // Keep-alive and the sender run only while synchronized (the sender's timers disarm themselves
    // once all is acknowledged, which TIME-WAIT implies).
    if (this.synchronized && !wasSynchronized) this.armKeepalive();
    else if (next === 'time-wait') this.timers.clear('keepalive');
    this.host.stateChanged(this, prev);
  }
}
