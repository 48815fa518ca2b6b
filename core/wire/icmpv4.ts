import { internetChecksum } from './checksum';
import type { Parsed } from './parse-result';

export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_TIME_EXCEEDED = 11;
export const ICMP_HEADER_LENGTH = 8;

/** Codes for destination unreachable (RFC 792, RFC 1812). */
export const ICMP_UNREACH_NET = 0;
export const ICMP_UNREACH_HOST = 1;
export const ICMP_UNREACH_PORT = 3;
export const ICMP_UNREACH_NEEDFRAG = 4;
/** Communication administratively prohibited (RFC 1812): a policy refused the destination. */
export const ICMP_UNREACH_ADMIN = 13;

export interface IcmpMessage {
  type: number;
  code: number;
  /** The 4 bytes after the checksum: id+sequence for echo, next-hop MTU for needfrag, else unused. */
  restOfHeader: number;
  /** View of the data after the 8-byte header. */
  data: Uint8Array;
}

export function parseIcmp(buf: Uint8Array): Parsed<IcmpMessage> {
  if (buf.length < ICMP_HEADER_LENGTH) return 'icmp-truncated';
  if (internetChecksum(buf) !== 0) return 'icmp-bad-checksum';
  return {
    type: buf[0],
    code: buf[1],
    restOfHeader: ((buf[4] << 24) | (buf[5] << 16) | (buf[6] << 8) | buf[7]) >>> 0,
    data: buf.subarray(ICMP_HEADER_LENGTH),
  };
}

export function icmpLength(m: Pick<IcmpMessage, 'data'>): number {
  return ICMP_HEADER_LENGTH + m.data.length;
}

export function emitIcmp(m: IcmpMessage, out: Uint8Array, off: number): number {
  const len = icmpLength(m);
  out[off] = m.type;
  out[off + 1] = m.code;
  out[off + 2] = 0;
  out[off + 3] = 0;
  out[off + 4] = m.restOfHeader >>> 24;
  out[off + 5] = (m.restOfHeader >>> 16) & 0xff;
  out[off + 6] = (m.restOfHeader >>> 8) & 0xff;
  out[off + 7] = m.restOfHeader & 0xff;
  out.set(m.data, off + ICMP_HEADER_LENGTH);
  const sum = internetChecksum(out, off, len);
  out[off + 2] = sum >>> 8;
  out[off + 3] = sum & 0xff;
  return len;
}
