// An active open (port forwarding: weft connects to the guest) until the guest answers: our SYN is
// out, nothing is negotiated yet, so there is no sender, receiver or segment writer — only the SYN
// and its retransmission timer, and the stream of the other side, whose bytes wait here. The guest's
// SYN-ACK makes a TcpConnection (./tcp-connection.ts) that takes this flow's place in the table and
// the stream's events from then on. RFC 9293 §3.10.7.3, for the one way weft opens connections (no
// simultaneous open).

import type { FlowEndpoint, TcpCloseReason, TcpStream, TcpStreamHandlers, UpstreamError } from '../upstream';
import { ACK, RST, SYN, type TcpSegment } from '../wire/tcp';
import { seqAdd, type SeqNum } from './seq';
import { MAX_SYN_RETRIES, TcpConnection, type TcpConnectionHost, type TcpFlow, type TcpSendStats } from './tcp-connection';
import { synOffer } from './tcp-negotiation';
import { UpstreamPipe } from './upstream-pipe';
import { after, type Instant } from '../clock';

const NOTHING_SENT: TcpSendStats = { retransmits: 0, timeouts: 0, lossProbes: 0, spuriousUndone: 0 };

export class TcpActiveOpen implements TcpFlow {
  state: 'syn-sent' | 'closed' = 'syn-sent';
  timerScheduledAt?: Instant;
  readonly openedAt: Instant;
  closeReason: TcpCloseReason | undefined;
  readonly bytesFromGuest = 0;
  readonly bytesToGuest = 0;
  readonly bufferedBytes = 0;
  readonly sendStats = NOTHING_SENT;
  readonly halfOpen = true;

  private readonly pipe = new UpstreamPipe();
  private upstreamEnded = false; // the other side sent its FIN already
  private synRetries = 0;
  /** When our SYN is sent again; the handshake's only timer. */
  private synDeadline: Instant | undefined;
  /** Where the stream's events go: here, then to the connection once the guest accepted. */
  private events: TcpStreamHandlers;

  /**
   * `local` is weft's side. `attach` gets the handlers for the other side's stream and returns it;
   * the stream is resumed once the guest accepts, or destroyed with the reason it did not
   * ('guest-refused', 'guest-unreachable').
   */
  constructor(
    private readonly host: TcpConnectionHost,
    readonly key: string,
    readonly guest: FlowEndpoint,
    readonly target: FlowEndpoint,
    private readonly iss: SeqNum,
    private readonly tsOffset: number,
    attach: (h: TcpStreamHandlers) => TcpStream,
  ) {
    this.openedAt = host.now();
    this.events = {
      onConnect: () => this.upstreamEvent(() => {}),
      onData: (data) =>
        this.upstreamEvent(() => {
          // The other side should wait for resume(); keep what came anyway, and hold it off.
          if (data.length > 0) this.pipe.holdEarly(data);
        }),
      onEnd: () =>
        this.upstreamEvent(() => {
          this.upstreamEnded = true;
        }),
      onDrain: () => this.upstreamEvent(() => this.pipe.drain()),
      onClose: (error) => this.upstreamEvent(() => this.onStreamClose(error)),
    };
    this.pipe.attach(
      attach({
        onConnect: () => this.events.onConnect(),
        onData: (data, more) => this.events.onData(data, more),
        onEnd: () => this.events.onEnd(),
        onDrain: () => this.events.onDrain(),
        onClose: (error) => this.events.onClose(error),
      }),
    );
    this.sendSyn();
  }

  onSegment(seg: TcpSegment): void {
    if (this.state === 'closed') return;
    const flags = seg.flags;
    if (flags & ACK && seg.ack !== seqAdd(this.iss, 1)) {
      if (!(flags & RST)) this.sendReset(seg.ack);
      return;
    }
    if (flags & RST) {
      if (flags & ACK) this.abort('guest-refused', false);
      return;
    }
    if (!(flags & SYN) || !(flags & ACK)) return;
    const held = { openedAt: this.openedAt, pipe: this.pipe, upstreamEnded: this.upstreamEnded };
    const conn = TcpConnection.active(this.host, this.key, this.guest, this.target, this.iss, this.tsOffset, seg, held);
    this.events = conn.streamHandlers();
    this.host.replaced(this, conn);
    conn.completeActiveOpen(seg);
  }

  onTimer(now: Instant): Instant | undefined {
    if (this.state === 'closed') return undefined;
    if (this.synDeadline !== undefined && now >= this.synDeadline) {
      if (++this.synRetries > MAX_SYN_RETRIES) {
        // ARP answered (or the SYNs would have ended sooner, see TcpFlowTable.guestUnreachable),
        // but nothing came back to any SYN: a guest that drops them, or is hung. For the other
        // side that is still "unreachable", as it always was.
        this.abort('guest-unreachable', false);
        return undefined;
      }
      this.sendSyn();
    }
    return this.synDeadline;
  }

  nextDeadline(): Instant | undefined {
    return this.state === 'closed' ? undefined : this.synDeadline;
  }

  /**
   * Ends the attempt; the other side's stream is destroyed with `reason`. The guest knows no
   * sequence number of ours yet, so it is never sent an RST.
   */
  abort(reason: TcpCloseReason, _tellGuest: boolean): void {
    if (this.state === 'closed') return;
    this.pipe.destroy(reason);
    this.finish(reason);
  }

  private upstreamEvent(fn: () => void): void {
    if (this.state === 'closed') return;
    fn();
    this.host.reschedule(this);
  }

  private onStreamClose(error?: UpstreamError): void {
    this.pipe.closed();
    this.abort(error ? `upstream-${error.kind}` : 'upstream-closed', true);
  }

  /** We offer every option; the connection keeps what the guest's SYN-ACK echoes. */
  private sendSyn(): void {
    const host = this.host;
    const cfg = host.config;
    const options = synOffer(cfg, host.linkMss, (host.now() + this.tsOffset) >>> 0);
    host.send(
      this,
      { srcPort: this.target.port, dstPort: this.guest.port, seq: this.iss, ack: 0, flags: SYN, window: Math.min(cfg.receiveBufferBytes, 0xffff), options },
      0,
    );
    const rto = cfg.initialRtoMs * 2 ** this.synRetries;
    this.synDeadline = after(host.now(), Math.min(rto, cfg.maxRtoMs));
    host.reschedule(this);
  }

  /** RST carries no options and no window. */
  private sendReset(seq: SeqNum): void {
    this.host.send(this, { srcPort: this.target.port, dstPort: this.guest.port, seq, ack: 0, flags: RST, window: 0 }, 0);
  }

  private finish(reason: TcpCloseReason): void {
    const prev = this.state;
    this.state = 'closed';
    this.host.stateChanged(this, prev);
    this.closeReason = reason;
    this.synDeadline = undefined;
    this.host.closed(this, reason);
  }
}
