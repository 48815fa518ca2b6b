// What the guest's SYN (or SYN-ACK) settles for one connection: the options both sides use — MSS
// (RFC 9293), SACK (RFC 2018), window scaling and timestamps (RFC 7323) — and the segment and buffer
// sizes of the two halves that follow from them. Pure: the connection builds its halves from this.

import type { TcpConfig } from '../config';
import { ETHERNET_HEADER_LENGTH } from '../wire/ethernet';
import { IPV4_HEADER_LENGTH } from '../wire/ipv4';
import { noTcpOptions, TCP_HEADER_MIN, TCP_OPTIONS_MAX, type TcpOptions, type TcpSegment } from '../wire/tcp';
import type { ReceiverConfig } from './tcp-receiver';
import type { SenderConfig } from './tcp-sender';

export interface TcpNegotiated {
  readonly sackOk: boolean;
  readonly tsOk: boolean;
  readonly scaling: boolean;
  /** Shift applied to the guest's window fields (0 without scaling). */
  readonly sndShift: number;
  /** Our window shift, announced in our SYN-ACK when scaling is on. */
  readonly rcvShift: number;
  /** The guest's timestamp on its SYN: the first TS.Recent (0 without one). */
  readonly tsRecent: number;
  readonly receiver: ReceiverConfig;
  readonly sender: SenderConfig;
}

/** IPv4's 65,535 bytes less the IP header and the largest TCP header. */
const MAX_OFFLOAD_PAYLOAD = 0xffff - IPV4_HEADER_LENGTH - TCP_HEADER_MIN - TCP_OPTIONS_MAX;

/**
 * The largest frame a data segment towards the guest makes: 64 KiB less the 12-byte virtio-net
 * header. A Linux virtio-net guest receives into 4 KiB buffers, so such a frame fills 16 of them;
 * one byte more takes a 17th, and that cost a TCG guest about a tenth of its download speed at MTU
 * 65520 (a frame 10 bytes shorter went 12% faster side by side). Only MTUs above 65510 are affected.
 */
export const MAX_DATA_FRAME = 65536 - 12;
/** Ethernet, IPv4 and TCP headers without options: what a data frame holds besides payload and options. */
const FRAME_HEADERS = ETHERNET_HEADER_LENGTH + IPV4_HEADER_LENGTH + TCP_HEADER_MIN;

/** The send buffer holds at least this many segments of the largest size, up to MAX_SEND_BUFFER. */
const MIN_SEGMENTS_BUFFERED = 16;
const MAX_SEND_BUFFER = 1024 * 1024;

/** The largest whole number of MSS-sized pieces one offloaded segment can carry. */
function offloadSegment(mss: number): number {
  return Math.max(mss, Math.floor(MAX_OFFLOAD_PAYLOAD / mss) * mss);
}

/** Our receive window shift when scaling is on: just enough to advertise the whole buffer. */
export function plannedShift(cfg: TcpConfig): number {
  let shift = 0;
  while (shift < 14 && cfg.receiveBufferBytes >> shift > 0xffff) shift++;
  return shift;
}

/** Options for our SYN in an active open: we offer everything; negotiate() keeps what the guest echoes. */
export function synOffer(cfg: TcpConfig, linkMss: number, tsValue: number): TcpOptions {
  const options = noTcpOptions();
  options.mss = linkMss;
  if (cfg.sack) options.sackPermitted = true;
  if (cfg.windowScaling) options.windowScale = plannedShift(cfg);
  if (cfg.timestamps) options.timestamp = { value: tsValue, echo: 0 };
  return options;
}

/**
 * Settles options from the guest's SYN or SYN-ACK. `linkMss` is our MSS towards the guest;
 * `segmentOffload` lets data segments carry up to ~64 KiB.
 */
export function negotiate(cfg: TcpConfig, linkMss: number, segmentOffload: boolean, syn: TcpSegment): TcpNegotiated {
  const o = syn.options;
  const sackOk = cfg.sack && o.sackPermitted === true;
  const tsOk = cfg.timestamps && o.timestamp !== undefined;
  const scaling = cfg.windowScaling && o.windowScale !== undefined;
  const sndShift = scaling ? Math.min(14, o.windowScale as number) : 0;
  const rcvShift = scaling ? plannedShift(cfg) : 0;
  const rcvBuffer = scaling ? cfg.receiveBufferBytes : Math.min(cfg.receiveBufferBytes, 0xffff);
  const optionBytes = tsOk ? 12 : 0;
  const guestMss = o.mss ?? 536; // RFC 9293 default when the SYN carries none
  const sendMss = Math.max(64, Math.min(guestMss, linkMss, MAX_DATA_FRAME - FRAME_HEADERS) - optionBytes);
  const maxSegment = segmentOffload ? offloadSegment(sendMss) : sendMss;
  // Room for at least MIN_SEGMENTS_BUFFERED segments: with 64 KiB segments (a 65520 MTU, or
  // offload) the configured 256 KiB would be 4 in flight, and ACK clocking stalls on each ACK.
  const sendBufferBytes = Math.max(cfg.sendBufferBytes, Math.min(MAX_SEND_BUFFER, MIN_SEGMENTS_BUFFERED * maxSegment));
  return {
    sackOk,
    tsOk,
    scaling,
    sndShift,
    rcvShift,
    tsRecent: o.timestamp ? o.timestamp.value : 0,
    receiver: {
      bufferBytes: rcvBuffer,
      windowShift: rcvShift,
      mss: linkMss - optionBytes,
      delayedAckMs: cfg.delayedAckMs,
    },
    sender: {
      mss: sendMss,
      maxSegment,
      initialRtoMs: cfg.initialRtoMs,
      minRtoMs: cfg.minRtoMs,
      maxRtoMs: cfg.maxRtoMs,
      sendBufferBytes,
      sendBufferMaxBytes: cfg.sendBufferMaxBytes,
      maxRetransmits: cfg.maxRetransmits,
      sackPermitted: sackOk,
    },
  };
}
