import { readIpv4, writeIpv4, type Ipv4Address } from './address';
import { internetChecksum } from './checksum';
import type { Parsed } from './parse-result';

export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPV4_HEADER_LENGTH = 20;

const FLAG_DF = 0x4000;
const FLAG_MF = 0x2000;

export interface Ipv4Packet {
  /** Header length in bytes (20…60); options are skipped, never interpreted. */
  headerLength: number;
  tos: number;
  /** Total length from the header; the frame may carry Ethernet padding beyond it. */
  totalLength: number;
  id: number;
  dontFragment: boolean;
  moreFragments: boolean;
  /** Fragment offset in bytes. */
  fragmentOffset: number;
  ttl: number;
  protocol: number;
  src: Ipv4Address;
  dst: Ipv4Address;
  /** View of the header bytes (needed to quote the packet in ICMP errors). */
  header: Uint8Array;
  /** View of the payload, trimmed to totalLength. */
  payload: Uint8Array;
}

export function parseIpv4Packet(buf: Uint8Array): Parsed<Ipv4Packet> {
  if (buf.length < IPV4_HEADER_LENGTH) return 'ipv4-truncated';
  const version = buf[0] >>> 4;
  if (version !== 4) return 'ipv4-bad-version';
  const headerLength = (buf[0] & 0x0f) * 4;
  if (headerLength < IPV4_HEADER_LENGTH) return 'ipv4-bad-header-length';
  if (headerLength > buf.length) return 'ipv4-truncated';
  const totalLength = (buf[2] << 8) | buf[3];
  if (totalLength < headerLength) return 'ipv4-bad-total-length';
  if (totalLength > buf.length) return 'ipv4-truncated';
  if (internetChecksum(buf, 0, headerLength) !== 0) return 'ipv4-bad-checksum';
  const flagsFrag = (buf[6] << 8) | buf[7];
  return {
    headerLength,
    tos: buf[1],
    totalLength,
    id: (buf[4] << 8) | buf[5],
    dontFragment: (flagsFrag & FLAG_DF) !== 0,
    moreFragments: (flagsFrag & FLAG_MF) !== 0,
    fragmentOffset: (flagsFrag & 0x1fff) * 8,
    ttl: buf[8],
    protocol: buf[9],
    src: readIpv4(buf, 12),
    dst: readIpv4(buf, 16),
    header: buf.subarray(0, headerLength),
    payload: buf.subarray(headerLength, totalLength),
  };
}

export interface Ipv4HeaderRepr {
  src: Ipv4Address;
  dst: Ipv4Address;
  protocol: number;
  /** Payload bytes that follow this header (in this packet or fragment). */
  payloadLength: number;
  id: number;
  ttl?: number;
  tos?: number;
  dontFragment?: boolean;
  moreFragments?: boolean;
  fragmentOffset?: number;
}

/** Writes a 20-byte header (no options) with its checksum; returns 20. */
export function emitIpv4Header(h: Ipv4HeaderRepr, out: Uint8Array, off: number): number {
  const total = IPV4_HEADER_LENGTH + h.payloadLength;
  const flagsFrag = (h.dontFragment ? FLAG_DF : 0) | (h.moreFragments ? FLAG_MF : 0) | ((h.fragmentOffset ?? 0) >>> 3);
  out[off] = 0x45;
  out[off + 1] = h.tos ?? 0;
  out[off + 2] = total >>> 8;
  out[off + 3] = total & 0xff;
  out[off + 4] = (h.id >>> 8) & 0xff;
  out[off + 5] = h.id & 0xff;
  out[off + 6] = flagsFrag >>> 8;
  out[off + 7] = flagsFrag & 0xff;
  out[off + 8] = h.ttl ?? 64;
  out[off + 9] = h.protocol;
  out[off + 10] = 0;
  out[off + 11] = 0;
  writeIpv4(out, off + 12, h.src);
  writeIpv4(out, off + 16, h.dst);
  const sum = internetChecksum(out, off, IPV4_HEADER_LENGTH);
  out[off + 10] = sum >>> 8;
  out[off + 11] = sum & 0xff;
  return IPV4_HEADER_LENGTH;
}
