// IPv4 addresses are u32 numbers and MAC addresses are 48-bit numbers: both compare with ===,
// key a Map without allocation, and fit exactly in a double.

export type Ipv4Address = number;
export type MacAddress = number;

export const BROADCAST_MAC: MacAddress = 0xffff_ffff_ffff;
export const ZERO_MAC: MacAddress = 0;
export const IPV4_BROADCAST: Ipv4Address = 0xffff_ffff;
export const IPV4_ANY: Ipv4Address = 0;

export function readIpv4(buf: Uint8Array, off: number): Ipv4Address {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

export function writeIpv4(buf: Uint8Array, off: number, ip: Ipv4Address): void {
  buf[off] = ip >>> 24;
  buf[off + 1] = (ip >>> 16) & 0xff;
  buf[off + 2] = (ip >>> 8) & 0xff;
  buf[off + 3] = ip & 0xff;
}

export function parseIpv4(text: string): Ipv4Address {
  const parts = text.split('.');
  if (parts.length !== 4) throw new RangeError(`not an IPv4 address: ${JSON.stringify(text)}`);
  let ip = 0;
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || Number(p) > 255) throw new RangeError(`not an IPv4 address: ${JSON.stringify(text)}`);
    ip = ip * 256 + Number(p);
  }
  return ip;
}

export function formatIpv4(ip: Ipv4Address): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

/** Network mask for a prefix length, e.g. 24 → 0xffffff00. */
export function prefixMask(prefix: number): number {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new RangeError(`bad prefix length: ${prefix}`);
  return prefix === 0 ? 0 : (0xffff_ffff << (32 - prefix)) >>> 0;
}

export function readMac(buf: Uint8Array, off: number): MacAddress {
  return (
    ((buf[off] << 8) | buf[off + 1]) * 0x1_0000_0000 +
    (((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0)
  );
}

export function writeMac(buf: Uint8Array, off: number, mac: MacAddress): void {
  const hi = Math.floor(mac / 0x1_0000_0000);
  const lo = mac >>> 0;
  buf[off] = hi >>> 8;
  buf[off + 1] = hi & 0xff;
  buf[off + 2] = lo >>> 24;
  buf[off + 3] = (lo >>> 16) & 0xff;
  buf[off + 4] = (lo >>> 8) & 0xff;
  buf[off + 5] = lo & 0xff;
}

export function parseMac(text: string): MacAddress {
  const m = /^([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})[:-]([0-9a-f]{2})$/i.exec(text);
  if (!m) throw new RangeError(`not a MAC address: ${JSON.stringify(text)}`);
  return parseInt(m.slice(1).join(''), 16);
}

export function formatMac(mac: MacAddress): string {
  return mac.toString(16).padStart(12, '0').replace(/(..)(?!$)/g, '$1:');
}

/** Multicast/broadcast MACs have the I/G bit set in the first octet. */
export function isGroupMac(mac: MacAddress): boolean {
  return (Math.floor(mac / 0x100_0000_0000) & 1) === 1;
}
