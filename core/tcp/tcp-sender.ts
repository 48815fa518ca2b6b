// The sending half of a guest connection: bytes from the upstream travel to the guest. It owns the
// send buffer, the windows, congestion control and loss recovery:
// - RFC 6298 retransmission timeout (Karn's rule, exponential backoff); on a timeout every piece
//   not SACKed is deemed lost and resent in slow start, but the SACK scoreboard is kept (RFC 6675
//   §5.1, as Linux does) unless the guest shows it reneged;
// - with SACK: RFC 6675 recovery (pipe, lost pieces resent lowest first, then new data) where RACK
//   (RFC 8985, ./rack.ts) decides what is lost — by time, with a reordering window — and finds lost
//   retransmissions; tail loss probes (./loss-probe.ts) instead of waiting for the timeout;
// - on a loss, the window is cut once per episode by half the share of recent rounds' bytes that
//   were lost (DCTCP's rule applied to loss, ./loss-fraction.ts), never below the initial window,
//   and keeps growing through the recovery;
// - without SACK: NewReno fast retransmit and recovery (RFC 6582);
// - undo of spurious reductions (Eifel timestamps or DSACKs, ./reduction-undo.ts) restores cwnd;
// - zero-window probing and sender-side silly-window avoidance.
// Segments leave through `TcpSenderHost`; the per-piece bookkeeping is in ./sack-scoreboard.ts; the
// recovery state (open, disorder, recovery, loss) and what moves it are in ./recovery-state.ts; the
// timers (retransmit, reorder, loss-probe, persist) are slots of the connection's ./tcp-timers.ts.

import { SendBuffer } from './send-buffer';
import type { ByteBudget } from './byte-budget';
import { LossProbe } from './loss-probe';
import { LossFraction } from './loss-fraction';
import { ReductionUndo } from './reduction-undo';
import { Rack } from './rack';
import { nextRecoveryState, reducing, type RecoveryEvent, type RecoveryState } from './recovery-state';
import { SackScoreboard, type SentPiece } from './sack-scoreboard';
import { seqAdd, seqDiff, seqGe, seqGt, seqLe, seqLt, toSeq, type SeqNum } from './seq';
import type { TcpTimers } from './tcp-timers';
import { after, type Instant } from '../clock';

/** What the sender needs from its connection: a way to put segments on the wire. */
export interface TcpSenderHost {
  /** Sends `len` bytes of the send buffer starting at sequence `seq`, with FIN after them if `fin`. */
  sendSegment(seq: SeqNum, len: number, fin: boolean): void;
  /** Sends an ACK with seq = SND.UNA − 1 and no data, which makes the guest answer with its window. */
  sendProbe(): void;
}

export interface SenderConfig {
  /** Payload bytes per segment (the guest's MSS less our option overhead). */
  mss: number;
  /**
   * Largest payload output() puts in one segment of new data (default: mss), for a link with TCP
   * segmentation offload that cuts it into MSS-sized frames. Windows and congestion control count
   * bytes, so it changes only how many calls to sendSegment carry them; a segment longer than mss
   * is a whole number of MSS unless it ends the queued data. Retransmissions, loss probes and
   * zero-window/SWS sends stay MSS-sized. Can be changed later with setSegmentLimit().
   */
  maxSegment?: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** The upstream is paused once this many bytes wait in the send buffer (see sendBufferMaxBytes). */
  sendBufferBytes: number;
  /**
   * How far the pause point may grow with the guest's window: to sendBufferBytes beyond the
   * largest window it has offered, at most this (default: sendBufferBytes, no growth). See limit.
   */
  sendBufferMaxBytes?: number;
  /** Consecutive RTO expiries before the connection is given up. */
  maxRetransmits: number;
  sackPermitted: boolean;
}

/** An ACK's acknowledgement fields, as the connection hands them over. */
export interface AckInfo {
  seq: SeqNum;
  ack: SeqNum;
  window: number;
  sack?: Array<[SeqNum, SeqNum]>;
  /** No data and no FIN: it may count as a duplicate ACK. */
  dupCandidate: boolean;
}

/** Cap on cwnd so it stays an exact, bounded integer however long a clean link runs. */
const MAX_CWND = 64 * 1024 * 1024;
/**
 * What the send buffer takes past full: the upstream is paused once it is full, and a chunk already
 * on its way still fits. An upstream hands over at most this much at once (DirectUpstream's reads).
 */
export const SEND_BUFFER_SLACK_BYTES = 256 * 1024;
const NO_SACK = { dsack: undefined, firstBlock: 0 };
/** Persist (zero-window probe) interval bounds, RFC 9293 §3.8.6.1. */
const MAX_PERSIST_MS = 60_000;

export class TcpSender {
  readonly buffer: SendBuffer;
  /** Oldest unacknowledged sequence number; the buffer's first byte has this sequence number. */
  sndUna: SeqNum;
  /** Highest sequence number sent so far; new data goes out here (retransmissions go by piece). */
  sndMax: SeqNum;
  sndWnd = 0;
  maxSndWnd = 0;
  private sndWl1 = toSeq(0);
  private sndWl2 = toSeq(0);

  private finQueued = false;
  /** Sequence number of our FIN, once the upstream has ended. */
  finSeq: SeqNum | undefined;

  cwnd: number;
  /** The most the send buffer's limit can grow to (sendBufferMaxBytes, at least sendBufferBytes). */
  private readonly maxBufferBytes: number;
  /** RFC 6928's initial window: also the least a loss leaves ssthresh at (see reducedSsthresh). */
  private readonly initialWindow: number;
  ssthresh = MAX_CWND;
  private state: RecoveryState = 'open';
  /** SND.MAX when the running recovery or loss began: it ends once SND.UNA gets there. */
  private recoveryPoint = toSeq(0);
  /** Duplicate ACKs in a row (counted without SACK only: NewReno's trigger). */
  private dupAcks = 0;
  /** Bytes acknowledged in congestion avoidance since cwnd last grew (RFC 3465 byte counting). */
  private bytesAckedInAvoidance = 0;
  private readonly lossFraction = new LossFraction();
  private readonly undo = new ReductionUndo();

  private readonly board = new SackScoreboard();
  private readonly rack: Rack;
  private readonly delivered: SentPiece[] = [];
  private readonly arrived: SentPiece[] = [];
  private xmitOrder = 0;
  private maxSegment: number;

  srtt: number | undefined;
  private rttvar = 0;
  rto: number;
  private retransmits = 0;
  private rttSeq: SeqNum | undefined;
  private rttStart = 0;
  private persistInterval = 0;
  private readonly probe: LossProbe;

  /** Set when the retransmission limit is reached; the connection must abort. */
  failed = false;
  segmentsRetransmitted = 0;
  timeouts = 0;
  /** Reductions undone because the retransmissions behind them proved needless. */
  spuriousUndone = 0;

  constructor(
    iss: SeqNum,
    private readonly cfg: SenderConfig,
    private readonly out: TcpSenderHost,
    /** The connection's timers; the sender runs 'retransmit', 'reorder', 'persist' and, through its LossProbe, 'loss-probe'. */
    private readonly timers: TcpTimers,
    /** The stack's bound on what all its connections hold (none: only this connection's own limit). */
    private budget?: ByteBudget,
  ) {
    // The SYN occupies iss; data starts after it. The connection acknowledges the SYN itself.
    this.sndUna = this.sndMax = seqAdd(iss, 1);
    this.probe = new LossProbe(timers);
    this.maxBufferBytes = Math.max(cfg.sendBufferBytes, cfg.sendBufferMaxBytes ?? 0);
    this.buffer = new SendBuffer(Math.min(16 * 1024, cfg.sendBufferBytes), this.maxBufferBytes + SEND_BUFFER_SLACK_BYTES);
    this.initialWindow = this.cwnd = Math.min(10 * cfg.mss, Math.max(2 * cfg.mss, 14600)); // RFC 6928
    this.rto = cfg.initialRtoMs;
    this.rack = new Rack(this.sndUna);
    this.maxSegment = cfg.mss;
    this.setSegmentLimit(cfg.maxSegment ?? cfg.mss);
  }

  /** Tail loss probes sent. */
  get lossProbes(): number {
    return this.probe.sent;
  }

  get recoveryState(): RecoveryState {
    return this.state;
  }

  /** Sets the guest's window from its SYN (not scaled) and the reference point for updates. */
  initWindow(wnd: number, segSeq: SeqNum, segAck: SeqNum): void {
    this.sndWnd = wnd;
    this.maxSndWnd = wnd;
    this.sndWl1 = segSeq;
    this.sndWl2 = segAck;
  }

  /**
   * Lets new-data segments carry up to `bytes` of payload (segmentation offload); at least one MSS.
   * See SenderConfig.maxSegment.
   */
  setSegmentLimit(bytes: number): void {
    this.maxSegment = Math.max(this.cfg.mss, Math.floor(bytes));
  }

  get segmentLimit(): number {
    return this.maxSegment;
  }

  get mss(): number {
    return this.cfg.mss;
  }

  /** SND.NXT: the next new sequence number (retransmissions do not move it back). */
  get sndNxt(): SeqNum {
    return this.sndMax;
  }

  /** Bytes queued (unacknowledged + unsent). */
  get buffered(): number {
    return this.buffer.length;
  }

  /**
   * Bytes the buffer holds before the upstream is paused: sendBufferBytes ready to send beyond the
   * largest window the guest has offered, within sendBufferMaxBytes. With a fixed pause point below
   * the guest's window, everything buffered was soon in flight: the upstream was paused until the
   * guest acknowledged half of it, and the guest then sat idle while it was read again. (Linux
   * grows a socket's send buffer with its congestion window for the same reason.)
   */
  get limit(): number {
    return Math.min(this.maxBufferBytes, this.cfg.sendBufferBytes + this.maxSndWnd);
  }

  /** True when the upstream should be paused: this buffer is at its limit, or the stack's budget is spent. */
  get full(): boolean {
    return this.buffer.length >= this.limit || (this.budget?.overFor(this.buffer.length) ?? false);
  }

  /**
   * True when a paused upstream may go on: half of sendBufferBytes is free below the limit, and
   * the stack's budget has room.
   */
  get roomToResume(): boolean {
    return this.buffer.length < this.limit - this.cfg.sendBufferBytes / 2 && !this.waitsForBudget;
  }

  /** The stack's budget holds this upstream back: its own ACKs may never come, so the budget wakes it. */
  get waitsForBudget(): boolean {
    return this.budget !== undefined && !this.budget.roomFor(this.buffer.length);
  }

  /** The connection closed: what it held leaves the stack's budget. */
  dispose(): void {
    this.budget?.release(this.buffer.length);
    this.budget = undefined;
  }

  get finSent(): boolean {
    return this.finSeq !== undefined && seqGt(this.sndMax, this.finSeq);
  }

  get finAcked(): boolean {
    return this.finSeq !== undefined && seqGt(this.sndUna, this.finSeq);
  }

  /** Everything queued, FIN included if any, has been acknowledged. */
  get idle(): boolean {
    return this.buffer.length === 0 && this.sndUna === this.sndMax;
  }

  /** Queues upstream bytes; false if the hard cap would be passed (the upstream ignored pause). */
  write(data: Uint8Array): boolean {
    if (this.finQueued || !this.buffer.append(data)) return false;
    this.budget?.add(data.length);
    return true;
  }

  /** The upstream ended: a FIN follows the queued data. */
  finish(): void {
    if (this.finQueued) return;
    this.finQueued = true;
    this.finSeq = seqAdd(this.sndUna, this.buffer.length);
  }

  private get flight(): number {
    return seqDiff(this.sndMax, this.sndUna);
  }

  /**
   * Queued bytes never sent. The FIN follows the last byte, so once it is out there are none —
   * whether or not it is acknowledged yet (flight counts the FIN only while it is outstanding, so
   * buffer − flight would turn into a phantom byte past the FIN once the guest acknowledges it).
   */
  private get unsent(): number {
    return this.finSent ? 0 : this.buffer.length - this.flight;
  }

  /** Bytes believed in the network (RFC 6675 pipe); NewReno recovery counts the whole flight. */
  private pipe(): number {
    if (this.state === 'recovery' && !this.cfg.sackPermitted) return this.flight;
    return this.flight - this.board.notInFlight;
  }

  // ── acknowledgements ─────────────────────────────────────────────────────

  /**
   * Processes the acknowledgement fields of an acceptable segment; `tsEcr` is its echoed timestamp
   * in this clock's milliseconds, if timestamps are on. Returns false when the segment acknowledges
   * data never sent (the caller answers with an ACK and drops it).
   */
  onAck(seg: AckInfo, now: Instant, tsEcr?: number): boolean {
    const { ack } = seg;
    if (seqGt(ack, this.sndMax)) return false;
    if (tsEcr === 0) tsEcr = undefined;
    let windowChanged = false;
    if (seqGe(ack, this.sndUna) && (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack)))) {
      windowChanged = seg.window !== this.sndWnd;
      this.sndWnd = seg.window;
      this.sndWl1 = seg.seq;
      this.sndWl2 = ack;
      if (seg.window > this.maxSndWnd) this.maxSndWnd = seg.window;
    }
    const sack = this.cfg.sackPermitted;
    const delivered = this.delivered;
    delivered.length = 0;
    const sackedBefore = this.board.sackedBytes;
    // delivered[0, firstBlock): the pieces of the first SACK block.
    const { dsack, firstBlock } = sack && seg.sack ? this.board.applySack(seg.sack, ack, this.sndUna, this.sndMax, this.cfg.mss, delivered) : NO_SACK;
    const advanced = seqGt(ack, this.sndUna);
    const acked = advanced ? seqDiff(ack, this.sndUna) : 0;
    const cumStart = delivered.length;
    if (advanced) this.board.ackTo(ack, delivered);
    const deliveredBytes = acked + this.board.sackedBytes - sackedBefore;
    if (sack) {
      const arrived = this.arrived;
      arrived.length = 0;
      for (let i = 0; i < firstBlock; i++) arrived.push(delivered[i]);
      if (delivered.length > cumStart && delivered[cumStart].start === this.sndUna) arrived.push(delivered[cumStart]);
      this.rack.onDelivered(delivered, cumStart, arrived, now, tsEcr);
    }
    if (dsack) this.onDsack(dsack, now);

    if (advanced) this.onNewAck(ack, acked, now, tsEcr);
    else if (ack === this.sndUna && seg.dupCandidate && !windowChanged && this.flight > 0 && !sack) this.onDupAck(now);

    this.lossFraction.onDelivered(deliveredBytes, this.sndUna, this.sndMax);
    if (sack) {
      const news = advanced || deliveredBytes > 0;
      if (this.probe.onAck(ack, dsack, news, !news && seg.dupCandidate) && !reducing(this.state)) {
        // Only the probe got through: it repaired a loss. Reduce as for a loss, at once.
        this.ssthresh = this.reducedSsthresh();
        this.cwnd = this.ssthresh;
        this.bytesAckedInAvoidance = 0;
      }
      // The piece at SND.UNA SACKed means the guest dropped what it SACKed (reneging): start over.
      if (this.board.length > 0 && this.board.at(0).sacked) this.board.clearSacks();
      this.detectLoss(now);
    }
    this.note(this.dupAcks > 0 || this.board.sackedBytes > 0 ? 'out-of-order' : 'in-order');
    if (this.sndWnd > 0) this.timers.clear('persist');
    this.output(now);
    this.armProbe(now);
    return true;
  }

  /** Moves the recovery state (./recovery-state.ts); what each move costs is done by the caller. */
  private note(event: RecoveryEvent): void {
    this.state = nextRecoveryState(this.state, event);
  }

  private onNewAck(ack: SeqNum, acked: number, now: Instant, tsEcr: number | undefined): void {
    const consumed = Math.min(acked, this.buffer.length);
    this.buffer.consume(consumed);
    this.budget?.release(consumed);
    this.sndUna = ack;
    this.retransmits = 0;

    // RTT: timestamps give a sample on every new ACK; otherwise time one segment (Karn's rule).
    if (tsEcr !== undefined) this.sampleRtt((now >>> 0) - tsEcr);
    else if (this.rttSeq !== undefined && seqGe(ack, this.rttSeq)) {
      this.sampleRtt(now - this.rttStart);
      this.rttSeq = undefined;
    }

    // Eifel: the ACK was sent for a copy older than our first retransmission — nothing was lost.
    if (this.undo.eifel(tsEcr)) this.undoReduction();

    const mss = this.cfg.mss;
    if (reducing(this.state) && seqGe(ack, this.recoveryPoint)) {
      this.note('recovered');
      this.dupAcks = 0;
      this.rack.onRecoveryEnd();
      this.undo.end(this.sndMax);
    } else if (this.state === 'recovery' && !this.cfg.sackPermitted) {
      // NewReno partial ACK: the next hole is lost too; retransmit it and deflate.
      this.retransmitHead(now);
      this.cwnd = Math.max(mss, this.cwnd - acked + mss);
    } else {
      // The cut was taken once, when the episode began; the window grows on through it.
      if (this.state !== 'recovery') this.dupAcks = 0;
      this.growWindow(acked, mss);
    }

    if (this.flight === 0) this.timers.clear('retransmit');
    else this.timers.set('retransmit', after(now, this.rto));
  }

  /**
   * Opens cwnd for `acked` new bytes, counting bytes rather than ACKs (RFC 3465) and without its
   * per-ACK cap in slow start (as Linux does): a guest that takes offloaded segments ACKs each
   * ~64 KiB once, and growth by two MSS per ACK would leave cwnd far below its window for seconds.
   * Congestion avoidance adds one MSS per cwnd of bytes acknowledged (one per round trip).
   */
  private growWindow(acked: number, mss: number): void {
    if (this.cwnd < this.ssthresh) {
      const step = Math.min(acked, this.ssthresh - this.cwnd);
      this.cwnd += step;
      acked -= step;
    }
    // Whatever slow start did not take counts towards congestion avoidance.
    this.bytesAckedInAvoidance += acked;
    while (this.bytesAckedInAvoidance >= this.cwnd) {
      this.bytesAckedInAvoidance -= this.cwnd;
      this.cwnd += mss;
    }
    if (this.cwnd > MAX_CWND) this.cwnd = MAX_CWND;
  }

  /** NewReno (no SACK): three duplicate ACKs start fast retransmit; more inflate the window. */
  private onDupAck(now: Instant): void {
    this.dupAcks++;
    const mss = this.cfg.mss;
    if (this.state === 'recovery') {
      this.cwnd += mss;
      return;
    }
    if (this.dupAcks < 3 || this.state === 'loss') return;
    this.startReduction();
    this.note('loss');
    this.recoveryPoint = this.sndMax;
    this.retransmitHead(now);
    this.cwnd = this.ssthresh + 3 * mss;
  }

  private retransmitHead(now: Instant): void {
    if (this.board.length === 0) return;
    const head = this.board.at(0);
    this.board.markLost(head);
    const p = this.board.nextLost(this.cfg.mss);
    if (p) this.resend(p, now);
  }

  /** A DSACK: [l, r) arrived twice (a loss probe's copy is expected to). */
  private onDsack([l, r]: [SeqNum, SeqNum], now: Instant): void {
    if (this.probe.isProbeCopy(l, r)) return;
    if (this.undo.dsack(l, r, this.recoveryPoint)) this.undoReduction();
    this.rack.onDsack(l, r, now, this.sndUna, this.sndMax);
  }

  /** Runs RACK; enters recovery if it found a loss. */
  private detectLoss(now: Instant): void {
    const board = this.board;
    const pendingBefore = board.pendingBytes;
    const suspects = board.sackedBytes > 0 || board.retransBytes > 0 || board.lostBytes > 0;
    this.timers.clear('reorder');
    if (suspects) {
      const wait = this.rack.detectLoss(board, now, this.rack.reoWnd(reducing(this.state), board.sackedPieces, this.srtt, this.reorderingCap()));
      if (wait > 0) this.timers.set('reorder', after(now, wait));
    }
    const newlyLost = board.pendingBytes - pendingBefore;
    if (newlyLost > 0) {
      this.lossFraction.onLost(newlyLost);
      if (!reducing(this.state)) this.enterRecovery();
    }
    if (this.timers.armed('reorder')) this.probe.disarm();
  }

  /**
   * The most measured reordering RACK may wait out: SRTT + 4·RTTVAR, the RTO without its 200 ms
   * floor. A DSACK's time overstates how late an original came when a retransmission was lost or a
   * report went missing; capped by the floored RTO, one such DSACK made RACK wait out every later
   * loss until the timeout.
   */
  private reorderingCap(): number {
    return this.srtt === undefined ? this.rto : this.srtt + 4 * this.rttvar;
  }

  private enterRecovery(): void {
    this.startReduction();
    this.note('loss');
    this.recoveryPoint = this.sndMax;
    // RFC 6675 §5 (4.2–4.3): the window drops to ssthresh, but the first lost piece goes at once.
    this.cwnd = Math.max(this.ssthresh, this.pipe() + this.cfg.mss);
  }

  /** Starts a congestion reduction: remembers what to undo to (./reduction-undo.ts), then lowers ssthresh. */
  private startReduction(): void {
    this.undo.begin(this.cwnd, this.ssthresh, this.sndUna, this.sndMax, this.cfg.sackPermitted && !this.rack.reorderingSeen);
    this.ssthresh = this.reducedSsthresh();
    this.bytesAckedInAvoidance = 0; // counted towards the old cwnd, not the lowered one
    this.rttSeq = undefined;
  }

  /**
   * The window after a loss: cut by half the share of recent rounds' bytes that were lost
   * (./loss-fraction.ts: all of it at first, so the first losses halve it as in RFC 5681), and never
   * below the initial window. RFC 5681's floor of two segments is for a shared path where loss means
   * a full queue; weft's is one point-to-point virtual link to one guest, into which a new connection
   * may send the initial window unasked (RFC 6928). With Reno's fixed half, a link that loses 5% of
   * its frames held weft's sending to a third of a guest kernel's (BBR, which does not read loss as
   * congestion, is the default of many hosts).
   */
  private reducedSsthresh(): number {
    return Math.max(Math.floor(Math.min(this.flight, this.cwnd) * (1 - this.lossFraction.cut())), this.initialWindow);
  }

  /** The reduction was for nothing: restore the window and forget losses not yet resent. */
  private undoReduction(): void {
    const u = this.undo.take();
    if (!u) return;
    this.cwnd = Math.max(this.cwnd, u.cwnd);
    this.ssthresh = Math.max(this.ssthresh, u.ssthresh);
    this.board.unmarkPending();
    if (reducing(this.state)) this.rack.onRecoveryEnd();
    this.note('undone');
    this.dupAcks = 0;
    this.rack.onSpurious();
    this.spuriousUndone++;
  }

  // ── sending ──────────────────────────────────────────────────────────────

  /**
   * Sends whatever the windows allow: lost pieces first (lowest first), then new data, then FIN.
   * `holdTail`: more data is about to be written, so a last piece shorter than a full segment
   * waits for it (the next output() without the flag sends it).
   */
  output(now: Instant, holdTail = false): void {
    if (this.failed) return;
    const mss = this.cfg.mss;
    let sent = false;
    for (;;) {
      const room = this.cwnd - this.pipe();
      const lost = room > 0 ? this.board.nextLost(mss) : undefined;
      if (lost) {
        this.resend(lost, now);
        sent = true;
        continue;
      }
      const avail = this.unsent;
      const wndRoom = seqDiff(seqAdd(this.sndUna, this.sndWnd), this.sndMax);
      let len = Math.min(avail, this.maxSegment, wndRoom, room);
      if (len > 0) {
        // Silly-window avoidance (RFC 9293 §3.8.6.2.1): full segments, or everything that is
        // left, or at least half the largest window the guest has offered.
        if (len < mss && len < avail && len < this.maxSndWnd / 2) break;
        if (holdTail && len === avail && len < this.maxSegment && !this.finQueued) break;
        // Offloaded segments cost the receiver per segment, not per byte: while its window is what
        // limits us and data is in flight (its ACK will open the window further), hold a piece
        // shorter than a full segment and than a third of the largest window (as Linux's TSO
        // deferral does) instead of chasing each small window update with a small segment.
        if (
          this.maxSegment > mss &&
          len === wndRoom &&
          this.flight > 0 &&
          this.state !== 'recovery' &&
          len < avail &&
          len < this.maxSegment &&
          len < this.maxSndWnd / 3
        )
          break;
        if (len > mss && len < avail) len -= len % mss;
        this.sendNew(len, this.finQueued && len === avail, now);
        sent = true;
        continue;
      }
      if (avail <= 0 && this.finQueued && !this.finSent) {
        this.sendNew(0, true, now);
        sent = true;
      }
      break;
    }
    // Unsent data and nothing in flight to bring an ACK: probe (zero window) or override SWS.
    if (this.unsent > 0 && this.flight === 0 && !sent) {
      if (!this.timers.armed('persist')) {
        this.persistInterval = Math.max(this.rto, this.cfg.minRtoMs);
        this.timers.set('persist', after(now, this.persistInterval));
      }
    } else if (sent) {
      this.timers.clear('persist');
      this.armProbe(now);
    }
  }

  private sendNew(len: number, fin: boolean, now: Instant): void {
    const seq = this.sndMax;
    if (this.rttSeq === undefined && len > 0) {
      this.rttSeq = seqAdd(seq, len);
      this.rttStart = now;
    }
    this.board.append(seq, len, fin, now, this.xmitOrder++);
    this.out.sendSegment(seq, len, fin);
    this.sndMax = seqAdd(seq, len + (fin ? 1 : 0));
    if (!this.timers.armed('retransmit')) this.timers.set('retransmit', after(now, this.rto));
  }

  private resend(p: SentPiece, now: Instant, probe = false): void {
    const len = seqDiff(p.end, p.start) - (p.fin ? 1 : 0);
    this.board.resent(p, now, this.xmitOrder++);
    this.segmentsRetransmitted++;
    this.rttSeq = undefined;
    if (!probe) this.undo.onRetransmit(seqDiff(p.end, p.start), now);
    this.out.sendSegment(p.start, len, p.fin);
    if (!this.timers.armed('retransmit')) this.timers.set('retransmit', after(now, this.rto));
  }

  /**
   * Arms the loss probe (RFC 8985 §7.2) when nothing else will bring an ACK in time. Unlike the
   * RFC, also in recovery (not right after a timeout): there, a lost retransmission or lost ACKs
   * with little in flight would otherwise wait for the RTO, which is most of the time on a lossy
   * link with a short round trip.
   */
  private armProbe(now: Instant): void {
    this.probe.disarm();
    if (!this.cfg.sackPermitted || this.srtt === undefined || this.retransmits > 0) return;
    if (this.timers.armed('reorder') || this.flight === 0) return;
    const single = !reducing(this.state) && this.flight <= this.cfg.mss + 1;
    this.probe.arm(now, this.srtt, single);
  }

  /**
   * The probe: the highest piece not SACKed, sent again (at most one MSS). The RFC prefers new data
   * when the window allows; a copy of old data is used instead because a receiver answers a
   * duplicate at once (Linux with a DSACK, and it then leaves delayed-ACK mode for a while), where
   * new in-order data may sit behind its delayed-ACK timer — tens of round trips on a local link.
   */
  private sendLossProbe(now: Instant): void {
    this.probe.disarm();
    const p = this.board.lastUnsacked(this.cfg.mss);
    if (!p) return;
    this.resend(p, now, true);
    this.probe.onSent(p.start, p.end, this.sndMax);
    this.timers.set('retransmit', after(now, this.rto));
    this.armProbe(now);
  }

  // ── timers ───────────────────────────────────────────────────────────────

  /** Runs the sender's timers that are due: the RTO before RACK's before the loss probe; persist besides. */
  onTimer(now: Instant): void {
    const timers = this.timers;
    if (timers.due('retransmit', now)) this.onRetransmitTimeout(now);
    else if (timers.due('reorder', now)) {
      timers.clear('reorder');
      this.detectLoss(now);
      this.output(now);
      this.armProbe(now);
    } else if (timers.due('loss-probe', now)) this.sendLossProbe(now);
    if (timers.due('persist', now)) {
      if (this.sndWnd === 0) {
        this.out.sendProbe();
        this.persistInterval = Math.min(this.persistInterval * 2, MAX_PERSIST_MS);
        timers.set('persist', after(now, this.persistInterval));
      } else {
        // A small window that SWS avoidance refused to fill: send what fits now.
        timers.clear('persist');
        const len = Math.min(this.unsent, this.sndWnd - this.flight, this.cfg.mss);
        if (len > 0) this.sendNew(len, false, now);
      }
    }
  }

  private onRetransmitTimeout(now: Instant): void {
    this.retransmits++;
    this.timeouts++;
    if (this.retransmits > this.cfg.maxRetransmits) {
      this.failed = true;
      this.timers.clear('retransmit');
      return;
    }
    // RFC 5681 (4): ssthresh drops once per loss episode, not on every backed-off timeout.
    if (this.retransmits === 1) this.startReduction();
    this.cwnd = this.cfg.mss;
    this.note('timeout');
    this.recoveryPoint = this.sndMax;
    this.dupAcks = 0;
    const pendingBefore = this.board.pendingBytes;
    this.board.markAllLost();
    this.lossFraction.onLost(this.board.pendingBytes - pendingBefore);
    this.timers.clear('reorder');
    this.probe.reset();
    this.rto = Math.min(this.rto * 2, this.cfg.maxRtoMs);
    this.timers.set('retransmit', after(now, this.rto));
    const before = this.segmentsRetransmitted;
    this.output(now);
    if (this.segmentsRetransmitted === before && this.flight > 0) {
      // Nothing could be sent: a probe keeps the conversation alive.
      this.out.sendProbe();
    }
  }

  private sampleRtt(r: number): void {
    if (!(r >= 0) || r > 600_000) return;
    if (this.srtt === undefined) {
      this.srtt = r;
      this.rttvar = r / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(this.cfg.maxRtoMs, Math.max(this.cfg.minRtoMs, this.srtt + Math.max(1, 4 * this.rttvar)));
  }
}
