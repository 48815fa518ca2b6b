import { readIpv4, readMac, writeIpv4, writeMac, type Ipv4Address, type MacAddress } from './address';
import { ETHERTYPE_IPV4 } from './ethernet';
import type { Parsed } from './parse-result';

export const ARP_REQUEST = 1;
export const ARP_REPLY = 2;
export const ARP_PACKET_LENGTH = 28;

/** An ARP packet for IPv4 over Ethernet (RFC 826); other hardware/protocol pairs are dropped. */
export interface ArpPacket {
  operation: number;
  senderMac: MacAddress;
  senderIp: Ipv4Address;
  targetMac: MacAddress;
  targetIp: Ipv4Address;
}

export function parseArp(buf: Uint8Array): Parsed<ArpPacket> {
  if (buf.length < ARP_PACKET_LENGTH) return 'arp-truncated';
  const htype = (buf[0] << 8) | buf[1];
  const ptype = (buf[2] << 8) | buf[3];
  if (htype !== 1 || ptype !== ETHERTYPE_IPV4 || buf[4] !== 6 || buf[5] !== 4) return 'arp-unsupported-type';
  const operation = (buf[6] << 8) | buf[7];
  if (operation !== ARP_REQUEST && operation !== ARP_REPLY) return 'arp-bad-operation';
  return {
    operation,
    senderMac: readMac(buf, 8),
    senderIp: readIpv4(buf, 14),
    targetMac: readMac(buf, 18),
    targetIp: readIpv4(buf, 24),
  };
}

export function emitArp(p: ArpPacket, out: Uint8Array, off: number): number {
  out[off] = 0;
  out[off + 1] = 1;
  out[off + 2] = ETHERTYPE_IPV4 >>> 8;
  out[off + 3] = ETHERTYPE_IPV4 & 0xff;
  out[off + 4] = 6;
  out[off + 5] = 4;
  out[off + 6] = 0;
  out[off + 7] = p.operation;
  writeMac(out, off + 8, p.senderMac);
  writeIpv4(out, off + 14, p.senderIp);
  writeMac(out, off + 18, p.targetMac);
  writeIpv4(out, off + 24, p.targetIp);
  return ARP_PACKET_LENGTH;
}
