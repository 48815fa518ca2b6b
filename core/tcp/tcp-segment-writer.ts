// Builds the segments a synchronized connection sends to the guest: the ACK and window from the
// receiver, the options settled at the handshake (timestamps, SACK blocks), and the RFC 7323
// timestamp state they depend on (TS.Recent, Last.ACK.sent) — which is also what PAWS checks the
// guest's segments against.

import { ACK, noTcpOptions, SYN, type SegmentPayload, type TcpOptions, type TcpRepr, type TcpSegment } from '../wire/tcp';
import { seqLe, stampLt, type SeqNum } from './seq';
import type { TcpNegotiated } from './tcp-negotiation';
import type { TcpReceiver } from './tcp-receiver';
import type { Instant } from '../clock';

/** What the writer needs from its connection: the ports, the clock, and where the segments go. */
export interface TcpSegmentWriterHost {
  readonly srcPort: number;
  readonly dstPort: number;
  /** Our MSS towards the guest, announced in the SYN-ACK. */
  readonly linkMss: number;
  now(): Instant;
  send(repr: TcpRepr, payloadLength: number, payload?: SegmentPayload): void;
}

export class TcpSegmentWriter {
  private tsRecent: number;
  private lastAckSent: SeqNum;

  constructor(
    private readonly out: TcpSegmentWriterHost,
    private readonly negotiated: TcpNegotiated,
    /** Added to our clock in the timestamps we send, so they do not reveal it. */
    private readonly tsOffset: number,
    private readonly receiver: TcpReceiver,
    /** Bytes the receiver delivered that the upstream has not taken yet: they close the window. */
    private readonly heldBytes: () => number,
  ) {
    this.tsRecent = negotiated.tsRecent;
    this.lastAckSent = receiver.rcvNxt;
  }

  /** The guest's window field in bytes. */
  sendWindow(seg: TcpSegment): number {
    return seg.window << this.negotiated.sndShift;
  }

  /** PAWS (RFC 7323 §5.3): a segment whose timestamp is older than TS.Recent is a stale duplicate. */
  stale(seg: TcpSegment): boolean {
    const ts = seg.options.timestamp;
    return this.negotiated.tsOk && ts !== undefined && stampLt(ts.value, this.tsRecent);
  }

  /** Takes TS.Recent from an acceptable segment that covers the last ACK we sent. */
  noteTimestamp(seg: TcpSegment): void {
    const ts = seg.options.timestamp;
    if (this.negotiated.tsOk && ts && seqLe(seg.seq, this.lastAckSent)) this.tsRecent = ts.value;
  }

  /** When (on our clock) the segment this one acknowledges was sent, for an RTT sample. */
  echoedSendTime(seg: TcpSegment): number | undefined {
    const ts = seg.options.timestamp;
    return this.negotiated.tsOk && ts ? (ts.echo - this.tsOffset) >>> 0 : undefined;
  }

  synAck(iss: SeqNum): void {
    this.out.send(
      {
        srcPort: this.out.srcPort,
        dstPort: this.out.dstPort,
        seq: iss,
        ack: this.receiver.rcvNxt,
        flags: SYN | ACK,
        window: this.receiver.synWindow,
        options: this.options(true),
      },
      0,
    );
    this.receiver.ackSent();
    this.lastAckSent = this.receiver.rcvNxt;
  }

  /** A segment carrying the current ACK and window. */
  segment(seq: SeqNum, flags: number, len: number, payload?: SegmentPayload): void {
    this.out.send(
      {
        srcPort: this.out.srcPort,
        dstPort: this.out.dstPort,
        seq,
        ack: this.receiver.rcvNxt,
        flags,
        window: this.receiver.windowField(this.heldBytes()),
        options: this.options(false),
      },
      len,
      payload,
    );
    this.receiver.ackSent();
    this.lastAckSent = this.receiver.rcvNxt;
  }

  private options(syn: boolean): TcpOptions {
    const n = this.negotiated;
    const o = noTcpOptions();
    if (syn) {
      o.mss = this.out.linkMss;
      if (n.sackOk) o.sackPermitted = true;
      if (n.scaling) o.windowScale = n.rcvShift;
    }
    if (n.tsOk) o.timestamp = { value: (this.out.now() + this.tsOffset) >>> 0, echo: this.tsRecent };
    if (n.sackOk && !syn) {
      const blocks = this.receiver.sackBlocks(n.tsOk ? 3 : 4);
      if (blocks.length > 0) o.sack = blocks;
    }
    return o;
  }
}
