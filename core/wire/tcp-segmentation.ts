// Software TCP segmentation (what a NIC does for TSO): one IPv4 TCP frame longer than the MTU, as
// the stack emits it with segmentation offload on, becomes frames that fit the MTU, each with
// complete checksums. Used where such a frame meets a link that cannot take it whole — a guest
// card that stopped accepting large segments while some were already on their way.

import { finishChecksum, pseudoHeaderSum, sumBytes } from './checksum';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV4 } from './ethernet';
import { IPPROTO_TCP } from './ipv4';
import { CWR, FIN, PSH } from './tcp';

/** Whether `frame` is an IPv4 TCP segment whose IP packet is longer than `mtu`. */
export function isOversizedTcpFrame(frame: Uint8Array, mtu: number): boolean {
  return frame.length > ETHERNET_HEADER_LENGTH + mtu && ((frame[12] << 8) | frame[13]) === ETHERTYPE_IPV4 && frame[ETHERNET_HEADER_LENGTH + 9] === IPPROTO_TCP;
}

/** What a virtio_net_hdr says of a TCP segment the receiver takes whole (GSO) — byte offsets in the frame. */
export interface TcpGsoFields {
  /** Ethernet, IP and TCP headers together (hdr_len). */
  headerLength: number;
  /** Payload per MTU-sized segment (gso_size). */
  segmentSize: number;
  /** Where the checksum sum starts (csum_start: the TCP header) and where it goes from there (csum_offset). */
  checksumStart: number;
  checksumOffset: number;
}

/** The GSO fields for an IPv4 TCP frame longer than `mtu`, or undefined when its headers do not allow them. */
export function tcpGsoFields(frame: Uint8Array, mtu: number): TcpGsoFields | undefined {
  const ihl = (frame[ETHERNET_HEADER_LENGTH] & 0x0f) * 4;
  const tcp = ETHERNET_HEADER_LENGTH + ihl;
  if (ihl < 20 || frame.length < tcp + 20) return undefined;
  const thl = (frame[tcp + 12] >> 4) * 4;
  return { headerLength: tcp + thl, segmentSize: mtu - ihl - thl, checksumStart: tcp, checksumOffset: 16 };
}

/**
 * Splits an IPv4 TCP frame into frames whose IP packets fit `mtu`. FIN and PSH stay on the last
 * piece, CWR on the first; IP identifiers count up from the original's. Returns the frame itself
 * (in a one-element array) when it already fits or is not a well-formed, unfragmented IPv4 TCP
 * segment — the receiver then judges it.
 */
export function splitTcpFrame(frame: Uint8Array, mtu: number): Uint8Array[] {
  const ip = ETHERNET_HEADER_LENGTH;
  if (!isOversizedTcpFrame(frame, mtu)) return [frame];
  const ihl = (frame[ip] & 0x0f) * 4;
  const totalLength = (frame[ip + 2] << 8) | frame[ip + 3];
  const fragmented = ((frame[ip + 6] & 0x3f) << 8) | frame[ip + 7]; // MF or a fragment offset
  const tcp = ip + ihl;
  if (ihl < 20 || fragmented !== 0 || totalLength > frame.length - ip || tcp + 20 > frame.length) return [frame];
  const thl = (frame[tcp + 12] >> 4) * 4;
  const payloadAt = tcp + thl;
  const payloadEnd = ip + totalLength;
  const mss = mtu - ihl - thl;
  if (thl < 20 || payloadAt > payloadEnd || mss <= 0) return [frame];

  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const seq = view.getUint32(tcp + 4);
  const id = view.getUint16(ip + 4);
  const flags = frame[tcp + 13];
  const src = view.getUint32(ip + 12);
  const dst = view.getUint32(ip + 16);
  const pieces: Uint8Array[] = [];
  for (let at = payloadAt, i = 0; at < payloadEnd; at += mss, i++) {
    const len = Math.min(mss, payloadEnd - at);
    const out = new Uint8Array(payloadAt + len);
    out.set(frame.subarray(0, payloadAt));
    out.set(frame.subarray(at, at + len), payloadAt);
    const o = new DataView(out.buffer);
    o.setUint16(ip + 2, ihl + thl + len);
    o.setUint16(ip + 4, (id + i) & 0xffff);
    o.setUint16(ip + 10, 0);
    o.setUint16(ip + 10, finishChecksum(sumBytes(out, ip, ihl)));
    o.setUint32(tcp + 4, (seq + (at - payloadAt)) >>> 0);
    const last = at + len >= payloadEnd;
    out[tcp + 13] = flags & ~(last ? 0 : FIN | PSH) & ~(i === 0 ? 0 : CWR);
    o.setUint16(tcp + 16, 0);
    o.setUint16(tcp + 16, finishChecksum(sumBytes(out, tcp, thl + len, pseudoHeaderSum(src, dst, IPPROTO_TCP, thl + len))));
    pieces.push(out);
  }
  return pieces;
}
