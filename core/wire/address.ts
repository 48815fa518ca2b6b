// IPv4 addresses are u32 numbers and MAC addresses are 48-bit numbers: both compare with ===,
// key a Map without allocation, and fit exactly in a double. The brands cost nothing at run time;
// they keep a port, a length, a sequence number or a MAC from passing as an address (and back).
// Values are made only here: by the readers and parsers, by ipv4()/mac() for a literal, and by the
// few helpers below for the arithmetic an address needs (pool offsets, network and broadcast).

export type Ipv4Address = number & { readonly __brand: 'Ipv4Address' };
export type MacAddress = number & { readonly __brand: 'MacAddress' };

/** A u32 (a literal, or a number known to be an address) as an IPv4 address. */
export function ipv4(n: number): Ipv4Address {
  return (n >>> 0) as Ipv4Address;
}

/** A 48-bit number (a literal) as a MAC address. */
export function mac(n: number): MacAddress {
  if (!Number.isInteger(n) || n < 0 || n > 0xffff_ffff_ffff) throw new RangeError(`not a MAC address: ${n}`);
  return n as MacAddress;
}

export const BROADCAST_MAC = mac(0xffff_ffff_ffff);
export const ZERO_MAC = mac(0);
export const IPV4_BROADCAST = ipv4(0xffff_ffff);
export const IPV4_ANY = ipv4(0);

/** The address `n` after `ip` (modulo 2^32): a DHCP pool's k-th lease. */
export function ipv4Add(ip: Ipv4Address, n: number): Ipv4Address {
  return ((ip + n) >>> 0) as Ipv4Address;
}

/** How many addresses `ip` lies after `base` (negative when before). */
export function ipv4Diff(ip: Ipv4Address, base: Ipv4Address): number {
  return ip - base;
}

/** The network part of `ip` under `mask` (a prefixMask()). */
export function ipv4Network(ip: Ipv4Address, mask: number): Ipv4Address {
  return ((ip & mask) >>> 0) as Ipv4Address;
}

/** The directed broadcast address of the network `ip` is in. */
export function ipv4SubnetBroadcast(ip: Ipv4Address, mask: number): Ipv4Address {
  return ((ip | ~mask) >>> 0) as Ipv4Address;
}

export function readIpv4(buf: Uint8Array, off: number): Ipv4Address {
  return (((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0) as Ipv4Address;
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
  return ip as Ipv4Address;
}

export function formatIpv4(ip: Ipv4Address): string {
  return `${ip >>> 24}.${(ip >>> 16) & 0xff}.${(ip >>> 8) & 0xff}.${ip & 0xff}`;
}

/** Class D, 224.0.0.0/4. */
export function isMulticastIpv4(ip: Ipv4Address): boolean {
  return ip >>> 28 === 0xe;
}

/** Network mask for a prefix length, e.g. 24 → 0xffffff00. */
export function prefixMask(prefix: number): number {
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > 32) throw new RangeError(`bad prefix length: ${prefix}`);
  return prefix === 0 ? 0 : (0xffff_ffff << (32 - prefix)) >>> 0;
}

export function readMac(buf: Uint8Array, off: number): MacAddress {
  return (((buf[off] << 8) | buf[off + 1]) * 0x1_0000_0000 +
    (((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0)) as MacAddress;
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
  return parseInt(m.slice(1).join(''), 16) as MacAddress;
}

export function formatMac(mac: MacAddress): string {
  return mac
    .toString(16)
    .padStart(12, '0')
    .replace(/(..)(?!$)/g, '$1:');
}

/** Multicast/broadcast MACs have the I/G bit set in the first octet. */
export function isGroupMac(mac: MacAddress): boolean {
  return (Math.floor(mac / 0x100_0000_0000) & 1) === 1;
}
