// One guest TCP connection, terminated by weft and spliced onto an upstream stream. The state
// machine follows RFC 9293 with weft in the passive role, plus one state of its own, `connecting`:
// the guest's SYN is held (retransmissions absorbed) until the upstream connect succeeds, so the
// guest sees a refused or unreachable destination as an RST instead of an accept-then-reset.

import type { TcpConfig } from '../config';
import type { TimerOwner } from '../timer-queue';
import type { FlowEndpoint, FlowMeta, TcpStream, TcpStreamHandlers, Upstream, UpstreamError, UpstreamErrorKind } from '../upstream';
import { ACK, FIN, PSH, RST, SYN, type TcpRepr, type TcpSegment } from '../wire/tcp';
import { negotiate, synOffer } from './tcp-negotiation';
import { TcpReceiver } from './tcp-receiver';
import { TcpSegmentWriter } from './tcp-segment-writer';
import { TcpSender } from './tcp-sender';
import { UpstreamPipe } from './upstream-pipe';
import { seqAdd, seqDiff } from './seq';

/** Why a connection ended: the `reason` of its flow-close event and log line. */
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

/** What a connection needs from its surroundings (the flow table provides it). */
export interface TcpConnectionEnv {
  readonly config: TcpConfig;
  /** Our MSS towards the guest (link MTU − 40). */
  readonly linkMss: number;
  /** The link does TCP segmentation offload: data segments may carry up to ~64 KiB (read at the handshake). */
  segmentOffload: boolean;
  readonly upstream: Upstream;
  now(): number;
  /**
   * Sends a segment to the guest from `local`. `payloadLength` bytes are written by `copyPayload`
   * at the given offset of the frame buffer.
   */
  send(conn: TcpConnection, repr: TcpRepr, payloadLength: number, copyPayload?: (out: Uint8Array, offset: number) => void): void;
  /** Timers changed: the connection's deadline must be (re)scheduled. */
  reschedule(conn: TcpConnection): void;
  stateChanged(conn: TcpConnection, from: TcpState): void;
  /** Asks to send this connection's pure ACK later, at the end of the input batch; false = send now. */
  deferAck(conn: TcpConnection): boolean;
  closed(conn: TcpConnection, reason: TcpCloseReason): void;
}

const MAX_SYNACK_RETRIES = 5;
/** RFC 5961 §7's throttle (Linux allows 1000/s for the whole host; one guest connection needs few). */
export const CHALLENGE_ACKS_PER_SECOND = 100;
/** How long a closing connection waits for a blocked upstream to take the guest's last bytes. */
const UPSTREAM_DRAIN_MS = 60_000;

export class TcpConnection implements TimerOwner {
  state: TcpState = 'connecting';
  timerScheduledAt?: number;
  readonly openedAt: number;
  readonly iss: number;
  // Set by negotiate() from the guest's SYN (passive open) or SYN-ACK (active open).
  irs = 0;
  private challengeWindowStart = -Infinity;
  private challengesSent = 0;
  private sender!: TcpSender;
  private receiver!: TcpReceiver;
  private writer!: TcpSegmentWriter;
  /** The sender's buffer bound, settled with the segment size at negotiation. */
  private sendBufferBytes = 0;
  private readonly tsOffset: number;

  private readonly pipe = new UpstreamPipe();
  private upstreamEnded = false; // the upstream sent its FIN

  private connectDeadline: number | undefined;
  private synAckDeadline: number | undefined;
  private synAckRetries = 0;
  private timeWaitDeadline: number | undefined;
  private drainDeadline: number | undefined;
  private lastGuestActivity: number;
  private keepaliveProbesSent = 0;
  private closeWhenDrained: TcpCloseReason | undefined;

  bytesFromGuest = 0;
  bytesToGuest = 0;
  closeReason: TcpCloseReason | undefined;
  /** A pure ACK is owed and waits for the end of the input batch. */
  ackDeferred = false;

  /** A connection the guest opened (its SYN in hand); the upstream is opened by start(). */
  static passive(env: TcpConnectionEnv, key: string, guest: FlowEndpoint, target: FlowEndpoint, syn: TcpSegment, iss: number, tsOffset: number): TcpConnection {
    const c = new TcpConnection(env, key, guest, target, iss, tsOffset);
    c.negotiate(syn);
    c.connectDeadline = c.openedAt + env.config.connectTimeoutMs;
    return c;
  }

  /**
   * A connection weft opens to the guest (port forwarding): `local` is weft's side. `attach` gets
   * the connection's handlers and returns the stream for the other side, which the connection
   * resumes once the guest accepted (or destroys if it refused).
   */
  static active(env: TcpConnectionEnv, key: string, guest: FlowEndpoint, local: FlowEndpoint, iss: number, tsOffset: number, attach: (h: TcpStreamHandlers) => TcpStream): TcpConnection {
    const c = new TcpConnection(env, key, guest, local, iss, tsOffset);
    c.state = 'syn-sent';
    c.pipe.attach(attach(c.handlers()));
    c.sendSyn();
    return c;
  }

  private constructor(
    private readonly env: TcpConnectionEnv,
    readonly key: string,
    readonly guest: FlowEndpoint,
    readonly target: FlowEndpoint,
    iss: number,
    tsOffset: number,
  ) {
    const now = env.now();
    this.openedAt = now;
    this.lastGuestActivity = now;
    this.iss = iss;
    this.tsOffset = tsOffset;
  }

  /** Settles options from the guest's SYN or SYN-ACK and creates the two halves. */
  private negotiate(syn: TcpSegment): void {
    const env = this.env;
    this.irs = syn.seq;
    const n = negotiate(env.config, env.linkMss, env.segmentOffload, syn);
    this.receiver = new TcpReceiver(syn.seq, n.receiver);
    this.sendBufferBytes = n.sender.sendBufferBytes;
    this.sender = new TcpSender(this.iss, n.sender, {
      sendSegment: (seq, len, fin) => this.sendData(seq, len, fin),
      sendProbe: () => this.sendControl(seqAdd(this.sender.sndUna, -1), ACK),
    });
    const output = {
      srcPort: this.target.port,
      dstPort: this.guest.port,
      linkMss: env.linkMss,
      now: () => env.now(),
      send: (repr: TcpRepr, len: number, copy?: (out: Uint8Array, offset: number) => void) => env.send(this, repr, len, copy),
    };
    this.writer = new TcpSegmentWriter(output, n, this.tsOffset, this.receiver, () => this.pipe.backlogBytes);
  }

  private handlers(): TcpStreamHandlers {
    return {
      onConnect: () => this.upstreamEvent(() => this.onUpstreamConnect()),
      onData: (data, more) => this.upstreamEvent(() => this.onUpstreamData(data, more === true)),
      onEnd: () => this.upstreamEvent(() => this.onUpstreamEnd()),
      onDrain: () => this.upstreamEvent(() => this.onUpstreamDrain()),
      onClose: (error) => this.upstreamEvent(() => this.onUpstreamClose(error)),
    };
  }

  /** Opens the upstream stream; called by the table once the connection is registered. */
  start(meta: FlowMeta): void {
    this.pipe.attach(this.env.upstream.openTcp(this.target, meta, this.handlers()));
    this.env.reschedule(this);
  }

  get rcvNxt(): number {
    return this.receiver.rcvNxt;
  }

  get halfOpen(): boolean {
    return this.state === 'connecting' || this.state === 'syn-received' || this.state === 'syn-sent';
  }

  /** Bytes this connection holds in its own buffers (for memory accounting). */
  get bufferedBytes(): number {
    if (!this.sender) return 0;
    return this.sender.buffered + this.pipe.backlogBytes + this.receiver.oooBytes;
  }

  get retransmissions(): number {
    return this.sender ? this.sender.segmentsRetransmitted : 0;
  }

  /** How weft's sending towards the guest went: what was sent again, and why. */
  get sendStats(): { retransmits: number; timeouts: number; lossProbes: number; spuriousUndone: number } {
    const s = this.sender;
    return s
      ? { retransmits: s.segmentsRetransmitted, timeouts: s.timeouts, lossProbes: s.lossProbes, spuriousUndone: s.spuriousUndone }
      : { retransmits: 0, timeouts: 0, lossProbes: 0, spuriousUndone: 0 };
  }

  // ── guest segments ──────────────────────────────────────────────────────

  onSegment(seg: TcpSegment): void {
    const now = this.env.now();
    this.lastGuestActivity = now;
    this.keepaliveProbesSent = 0;
    const flags = seg.flags;

    if (this.state === 'connecting') {
      if (flags & RST) this.abort('guest-reset', false);
      // A retransmitted SYN is absorbed: the SYN-ACK follows once the upstream connects.
      return;
    }
    if (this.state === 'syn-sent') return this.onSynSentSegment(seg);
    if (this.state === 'time-wait') {
      if (flags & RST) return this.finish('guest-reset');
      // Data or a FIN again: our last ACK was lost, and the guest retransmits its oldest
      // unacknowledged segment (data, not always the FIN). Acknowledge it (RFC 9293 §3.10.7.4);
      // a FIN also restarts the 2MSL wait.
      if (flags & FIN || seg.payload.length > 0) this.sendAck();
      if (flags & FIN) {
        this.timeWaitDeadline = now + this.env.config.timeWaitMs;
        this.env.reschedule(this);
      }
      return;
    }
    if (this.state === 'closed') return;

    if (!(flags & RST) && this.writer.stale(seg)) {
      this.sendAck();
      return;
    }

    const segLen = seg.payload.length + (flags & SYN ? 1 : 0) + (flags & FIN ? 1 : 0);
    if (!this.receiver.acceptable(seg.seq, segLen)) {
      if (this.state === 'syn-received' && flags & SYN && seg.seq === this.irs) {
        this.sendSynAck(); // the guest never got our SYN-ACK
      } else if (!(flags & RST)) {
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
      this.synAckDeadline = undefined;
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

    if (this.state === 'established' || this.state === 'fin-wait-1' || this.state === 'fin-wait-2') {
      const delivered = this.receiver.accept(seg.seq, seg.payload, (flags & FIN) !== 0, now);
      for (const chunk of delivered) this.deliverUpstream(chunk);
      if ((this.state as TcpState) === 'closed') return;
      if (this.receiver.finReceived) this.onGuestFin(now);
    } else if (seg.payload.length > 0 || flags & FIN) {
      // Text after the guest's FIN is a retransmission at best; acknowledge what we have.
      this.receiver.ackNow = true;
    }
    if (this.receiver.ackNow) {
      // In-order data in a burst needs one ACK at its end, not one per segment; duplicate ACKs
      // (out-of-order data) go at once, since the guest counts them for fast retransmit.
      if (this.ackDeferred || (this.receiver.oooBytes === 0 && this.env.deferAck(this))) this.ackDeferred = true;
      else this.sendAck();
    }
    this.env.reschedule(this);
  }

  /** Sends the ACK deferred to the end of an input batch, unless a segment already carried it. */
  flushAck(): void {
    if (this.ackDeferred && this.state !== 'closed') this.sendAck();
    this.ackDeferred = false;
  }

  private onGuestFin(now: number): void {
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
    this.env.reschedule(this);
  }

  private onUpstreamConnect(): void {
    if (this.state !== 'connecting') return;
    this.connectDeadline = undefined;
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
    if (this.sender.full) this.pipe.pause();
    // With more to come at once, a short last segment waits for it (one full segment, not two).
    if (!this.halfOpen) this.sender.output(this.env.now(), more);
  }

  private onUpstreamEnd(): void {
    this.upstreamEnded = true;
    if (!this.halfOpen) this.closeSend();
  }

  private onUpstreamDrain(): void {
    this.pipe.drain();
    this.endUpstreamIfFlushed();
    if (this.closeWhenDrained && this.pipe.flushed) return this.finish(this.closeWhenDrained);
    // The guest may be stalled on a closed window: tell it the window opened — unless it has sent
    // its FIN (it sends no more; in TIME-WAIT it may be gone, and would answer with RST).
    if (this.state !== 'closed' && !this.receiver.finReceived && this.receiver.windowGain(this.pipe.backlogBytes) >= Math.max(2 * this.sender.mss, this.env.config.receiveBufferBytes / 4)) {
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
    this.sender.output(this.env.now());
  }

  /** Our SYN for an active open: we offer everything; negotiate() keeps what the guest echoes. */
  private sendSyn(): void {
    const cfg = this.env.config;
    const options = synOffer(cfg, this.env.linkMss, (this.env.now() + this.tsOffset) >>> 0);
    this.env.send(this, { srcPort: this.target.port, dstPort: this.guest.port, seq: this.iss, ack: 0, flags: SYN, window: Math.min(cfg.receiveBufferBytes, 0xffff), options }, 0);
    const rto = cfg.initialRtoMs * 2 ** this.synAckRetries;
    this.synAckDeadline = this.env.now() + Math.min(rto, cfg.maxRtoMs);
    this.env.reschedule(this);
  }

  /** RFC 9293 §3.10.7.3, for the one way weft opens connections (no simultaneous open). */
  private onSynSentSegment(seg: TcpSegment): void {
    const flags = seg.flags;
    if (flags & ACK && seg.ack !== seqAdd(this.iss, 1)) {
      if (!(flags & RST)) this.sendControl(seg.ack, RST);
      return;
    }
    if (flags & RST) {
      if (flags & ACK) {
        this.pipe.destroy();
        this.finish('guest-refused');
      }
      return;
    }
    if (!(flags & SYN) || !(flags & ACK)) return;
    this.negotiate(seg);
    this.synAckDeadline = undefined;
    this.sender.initWindow(seg.window, seg.seq, seg.ack);
    this.setState('established');
    this.sendAck();
    for (const chunk of this.pipe.takeEarly()) this.onUpstreamData(chunk, false);
    this.pipe.release();
    if (this.upstreamEnded) this.closeSend();
    this.env.reschedule(this);
  }

  private sendSynAck(): void {
    const now = this.env.now();
    this.writer.synAck(this.iss);
    const rto = this.env.config.initialRtoMs * 2 ** this.synAckRetries;
    this.synAckDeadline = now + Math.min(rto, this.env.config.maxRtoMs);
  }

  private sendData(seq: number, len: number, fin: boolean): void {
    const offset = seqDiff(seq, this.sender.sndUna);
    const buffer = this.sender.buffer;
    const copy = len > 0 ? (out: Uint8Array, off: number) => buffer.copy(offset, len, out, off) : undefined;
    // PSH marks the end of what we have, as Linux does; on every segment it costs the guest wake-ups.
    const push = len > 0 && offset + len >= buffer.length;
    this.sendSegment(seq, ACK | (push ? PSH : 0) | (fin ? FIN : 0), len, copy);
  }

  /**
   * A challenge ACK, at most CHALLENGE_ACKS_PER_SECOND per connection (RFC 5961 §7): a storm of
   * forged RSTs or SYNs must not turn into a storm of ACKs. Per connection, not stack-wide, so one
   * connection's count says nothing about another's (the side channel of CVE-2016-5696).
   */
  private challengeAck(): void {
    const now = this.env.now();
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

  private sendSegment(seq: number, flags: number, len: number, copy?: (out: Uint8Array, off: number) => void): void {
    this.writer.segment(seq, flags, len, copy);
    this.ackDeferred = false;
  }

  private sendControl(seq: number, flags: number): void {
    if (flags & RST) return this.sendReset(seq, 0, RST);
    this.sendSegment(seq, flags, 0);
  }

  /** RST carries no options and no window. */
  private sendReset(seq: number, ack: number, flags: number): void {
    this.env.send(this, { srcPort: this.target.port, dstPort: this.guest.port, seq, ack, flags, window: 0 }, 0);
  }

  // ── the upstream direction ──────────────────────────────────────────────

  private deliverUpstream(chunk: Uint8Array): void {
    this.bytesFromGuest += chunk.length;
    if (!this.pipe.write(chunk)) this.abort('upstream-closed', true);
  }

  private endUpstreamIfFlushed(): void {
    if (this.receiver.finReceived) this.pipe.endIfFlushed();
  }

  private resumeUpstreamIfRoom(): void {
    if (this.sender.buffered < this.sendBufferBytes / 2) this.pipe.resume();
  }

  // ── timers ───────────────────────────────────────────────────────────────

  onTimer(now: number): number | undefined {
    if (this.state === 'closed') {
      if (this.closeWhenDrained && this.drainDeadline !== undefined && now >= this.drainDeadline) {
        this.closeWhenDrained = undefined;
        this.pipe.destroy();
        this.env.closed(this, 'upstream-drain-timeout');
      }
      return this.closeWhenDrained ? this.drainDeadline : undefined;
    }
    if (this.connectDeadline !== undefined && now >= this.connectDeadline) {
      this.refuse('timeout');
      return undefined;
    }
    if (this.state === 'syn-sent') {
      if (this.synAckDeadline !== undefined && now >= this.synAckDeadline) {
        if (++this.synAckRetries > MAX_SYNACK_RETRIES) {
          this.pipe.destroy();
          this.finish('guest-unreachable');
          return undefined;
        }
        this.sendSyn();
      }
      return this.synAckDeadline;
    }
    if (this.synAckDeadline !== undefined && now >= this.synAckDeadline) {
      if (++this.synAckRetries > MAX_SYNACK_RETRIES) {
        this.abort('handshake-timeout', true);
        return undefined;
      }
      this.sendSynAck();
    }
    if (this.timeWaitDeadline !== undefined && now >= this.timeWaitDeadline) {
      this.finish('closed');
      return this.nextDeadline();
    }
    if (this.receiver.delackDue(now)) this.sendAck();
    if (!this.halfOpen) {
      this.sender.onTimer(now);
      if (this.sender.failed) {
        this.abort('retransmit-limit', true);
        return undefined;
      }
      this.keepalive(now);
    }
    return this.nextDeadline();
  }

  private keepalive(now: number): void {
    const cfg = this.env.config;
    if (this.state === 'time-wait' || this.state === 'closed') return;
    const due = this.lastGuestActivity + cfg.keepaliveIdleMs + this.keepaliveProbesSent * cfg.keepaliveIntervalMs;
    if (now < due) return;
    if (this.keepaliveProbesSent >= cfg.keepaliveProbes) return this.abort('keepalive-timeout', true);
    this.keepaliveProbesSent++;
    this.sendControl(seqAdd(this.sender.sndUna, -1), ACK);
  }

  nextDeadline(): number | undefined {
    if (this.state === 'closed') return this.closeWhenDrained ? this.drainDeadline : undefined;
    if (this.state === 'syn-sent') return this.synAckDeadline;
    let d: number | undefined;
    const consider = (t: number | undefined) => {
      if (t !== undefined && (d === undefined || t < d)) d = t;
    };
    consider(this.connectDeadline);
    consider(this.synAckDeadline);
    consider(this.timeWaitDeadline);
    consider(this.receiver.nextDeadline());
    if (!this.halfOpen && this.state !== 'time-wait') {
      consider(this.sender.nextDeadline());
      const cfg = this.env.config;
      consider(this.lastGuestActivity + cfg.keepaliveIdleMs + this.keepaliveProbesSent * cfg.keepaliveIntervalMs);
    }
    return d;
  }

  // ── endings ──────────────────────────────────────────────────────────────

  private enterTimeWait(now: number): void {
    this.setState('time-wait');
    this.timeWaitDeadline = now + this.env.config.timeWaitMs;
    this.endUpstreamIfFlushed();
  }

  /** The upstream could not be reached: the guest's SYN is answered with RST. */
  private refuse(kind: UpstreamErrorKind): void {
    this.sendReset(0, this.receiver.rcvNxt, RST | ACK);
    this.pipe.destroy();
    this.finish(`upstream-${kind}`);
  }

  /** Tears the connection down at once, telling the guest with RST if `tellGuest`. */
  abort(reason: TcpCloseReason, tellGuest: boolean): void {
    if (this.state === 'closed') return;
    if (this.state === 'syn-sent') tellGuest = false;
    // Before our SYN-ACK the guest knows no sequence number of ours: seq 0, as for a refusal.
    if (tellGuest) this.sendReset(this.state === 'connecting' ? 0 : this.sender.sndNxt, this.receiver.rcvNxt, RST | ACK);
    this.pipe.destroy();
    this.finish(reason);
  }

  /** Ends the connection; a clean end waits (bounded) for a blocked upstream to take the last bytes. */
  private finish(reason: TcpCloseReason): void {
    if (this.state === 'closed') {
      if (this.closeWhenDrained) {
        this.closeWhenDrained = undefined;
        this.env.closed(this, reason);
      }
      return;
    }
    this.setState('closed');
    this.closeReason = reason;
    this.connectDeadline = this.synAckDeadline = this.timeWaitDeadline = undefined;
    if (this.pipe.draining) {
      this.closeWhenDrained = reason;
      this.drainDeadline = this.env.now() + UPSTREAM_DRAIN_MS;
      this.env.reschedule(this);
      return;
    }
    this.env.closed(this, reason);
  }

  private setState(next: TcpState): void {
    const prev = this.state;
    if (prev === next) return;
    this.state = next;
    this.env.stateChanged(this, prev);
  }
}

