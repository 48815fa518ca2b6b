import { readMac, writeMac, type MacAddress } from './address';
import type { Parsed } from './parse-result';

export const ETHERTYPE_IPV4 = 0x0800;
export const ETHERTYPE_ARP = 0x0806;
export const ETHERTYPE_IPV6 = 0x86dd;
export const ETHERTYPE_VLAN = 0x8100;
export const ETHERNET_HEADER_LENGTH = 14;

export interface EthernetFrame {
  dst: MacAddress;
  src: MacAddress;
  ethertype: number;
  /** View into the frame after the header (may include trailing padding up to 60 bytes). */
  payload: Uint8Array;
}

export function parseEthernet(frame: Uint8Array): Parsed<EthernetFrame> {
  if (frame.length < ETHERNET_HEADER_LENGTH) return 'eth-truncated';
  const ethertype = (frame[12] << 8) | frame[13];
  // Values ≤ 1500 are 802.3 lengths (LLC frames such as STP), not Ethernet II types.
  if (ethertype < 0x0600) return 'eth-not-ethernet-ii';
  return {
    dst: readMac(frame, 0),
    src: readMac(frame, 6),
    ethertype,
    payload: frame.subarray(ETHERNET_HEADER_LENGTH),
  };
}

export function emitEthernetHeader(out: Uint8Array, off: number, dst: MacAddress, src: MacAddress, ethertype: number): number {
  writeMac(out, off, dst);
  writeMac(out, off + 6, src);
  out[off + 12] = ethertype >>> 8;
  out[off + 13] = ethertype & 0xff;
  return ETHERNET_HEADER_LENGTH;
}
