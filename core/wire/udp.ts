import { finishChecksum, pseudoHeaderSum, sumBytes } from './checksum';
import { IPPROTO_UDP } from './ipv4';
import type { Parsed } from './parse-result';

export const UDP_HEADER_LENGTH = 8;

export interface UdpDatagram {
  srcPort: number;
  dstPort: number;
  /** View of the payload, trimmed to the UDP length field. */
  payload: Uint8Array;
}

/**
 * Parses and verifies a UDP datagram carried between `src` and `dst`. A zero checksum means the
 * sender did not compute one (allowed over IPv4, RFC 768) and is accepted.
 */
/** `verifyChecksum` false: the link vouched for it (checksum offload by a local kernel). */
export function parseUdp(buf: Uint8Array, src: number, dst: number, verifyChecksum = true): Parsed<UdpDatagram> {
  if (buf.length < UDP_HEADER_LENGTH) return 'udp-truncated';
  const length = (buf[4] << 8) | buf[5];
  if (length < UDP_HEADER_LENGTH) return 'udp-bad-length';
  if (length > buf.length) return 'udp-truncated';
  const checksum = (buf[6] << 8) | buf[7];
  if (verifyChecksum && checksum !== 0 && finishChecksum(sumBytes(buf, 0, length, pseudoHeaderSum(src, dst, IPPROTO_UDP, length))) !== 0) {
    return 'udp-bad-checksum';
  }
  return {
    srcPort: (buf[0] << 8) | buf[1],
    dstPort: (buf[2] << 8) | buf[3],
    payload: buf.subarray(UDP_HEADER_LENGTH, length),
  };
}

/** Writes header + payload with a checksum; returns bytes written. */
export function emitUdp(d: UdpDatagram, src: number, dst: number, out: Uint8Array, off: number): number {
  const length = UDP_HEADER_LENGTH + d.payload.length;
  out[off] = d.srcPort >>> 8;
  out[off + 1] = d.srcPort & 0xff;
  out[off + 2] = d.dstPort >>> 8;
  out[off + 3] = d.dstPort & 0xff;
  out[off + 4] = length >>> 8;
  out[off + 5] = length & 0xff;
  out[off + 6] = 0;
  out[off + 7] = 0;
  out.set(d.payload, off + UDP_HEADER_LENGTH);
  let sum = finishChecksum(sumBytes(out, off, length, pseudoHeaderSum(src, dst, IPPROTO_UDP, length)));
  if (sum === 0) sum = 0xffff; // 0 would mean "no checksum"
  out[off + 6] = sum >>> 8;
  out[off + 7] = sum & 0xff;
  return length;
}
