// IP addresses as bytes, CIDR ranges, and the IPv4 forms hidden inside IPv6 addresses. The relay's
// policy compares resolved addresses against ranges; doing it on bytes (not strings) means every
// spelling of an address (::ffff:127.0.0.1, ::ffff:7f00:1, 0:0:0:0:0:ffff:7f00:0001) is the same.

import net from 'node:net';

export interface IpAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

export interface Cidr extends IpAddress {
  prefix: number;
}

function parseIpv4Bytes(text: string): Uint8Array | undefined {
  const parts = text.split('.');
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i]) || Number(parts[i]) > 255) return undefined;
    out[i] = Number(parts[i]);
  }
  return out;
}

function parseIpv6Bytes(text: string): Uint8Array | undefined {
  let s = text;
  const out = new Uint8Array(16);
  // An embedded dotted IPv4 tail (::ffff:1.2.3.4) stands for the last two groups.
  const lastColon = s.lastIndexOf(':');
  let tail: Uint8Array | undefined;
  if (s.slice(lastColon + 1).includes('.')) {
    tail = parseIpv4Bytes(s.slice(lastColon + 1));
    if (!tail) return undefined;
    s = `${s.slice(0, lastColon + 1)}0:0`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]);
  const rest = halves.length === 2 ? groups(halves[1]) : [];
  const fill = 8 - head.length - rest.length;
  if (halves.length === 1 ? head.length !== 8 : fill < 1) return undefined;
  const all = halves.length === 2 ? [...head, ...Array<string>(fill).fill('0'), ...rest] : head;
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(all[i])) return undefined;
    const v = parseInt(all[i], 16);
    out[2 * i] = v >>> 8;
    out[2 * i + 1] = v & 0xff;
  }
  if (tail) out.set(tail, 12);
  return out;
}

/** Parses an IPv4 or IPv6 literal (brackets and a %zone are accepted); undefined if it is not one. */
export function parseIp(text: string): IpAddress | undefined {
  let s = text.trim();
  if (s.startsWith('[') && s.endsWith(']')) s = s.slice(1, -1);
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  const kind = net.isIP(s);
  if (kind === 4) {
    const bytes = parseIpv4Bytes(s);
    return bytes && { family: 4, bytes };
  }
  if (kind === 6) {
    const bytes = parseIpv6Bytes(s);
    return bytes && { family: 6, bytes };
  }
  return undefined;
}

export function formatIp(a: IpAddress): string {
  if (a.family === 4) return a.bytes.join('.');
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((a.bytes[i] << 8) | a.bytes[i + 1]).toString(16));
  // net.SocketAddress would do this too, but it is not in Node 20's types everywhere: compress the
  // longest run of zero groups by hand.
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

/**
 * The IPv4 address an IPv6 address stands for, if any: IPv4-mapped (::ffff:a.b.c.d), the old
 * IPv4-compatible form (::a.b.c.d, but not :: or ::1), and the NAT64 prefix 64:ff9b::/96.
 * Policy checks the IPv4 rules on these, so ::ffff:127.0.0.1 is loopback like 127.0.0.1.
 */
export function embeddedIpv4(a: IpAddress): IpAddress | undefined {
  if (a.family !== 6) return undefined;
  const b = a.bytes;
  const v4 = () => ({ family: 4 as const, bytes: b.slice(12) });
  if (startsWith(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])) return v4();
  if (startsWith(b, [0x00, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0])) return v4();
  if (startsWith(b, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]) && (b[12] | b[13] | b[14]) !== 0) return v4();
  return undefined;
}

/** The address to check and to connect to: the embedded IPv4 address when there is one. */
export function canonicalIp(a: IpAddress): IpAddress {
  return embeddedIpv4(a) ?? a;
}

/** Parses `ADDR/PREFIX` or a bare address (a /32 or /128). */
export function parseCidr(text: string): Cidr | undefined {
  const slash = text.indexOf('/');
  const addr = parseIp(slash < 0 ? text : text.slice(0, slash));
  if (!addr) return undefined;
  const max = addr.family === 4 ? 32 : 128;
  const prefixText = slash < 0 ? String(max) : text.slice(slash + 1);
  if (!/^\d{1,3}$/.test(prefixText) || Number(prefixText) > max) return undefined;
  return { ...addr, prefix: Number(prefixText) };
}

export function cidrContains(c: Cidr, a: IpAddress): boolean {
  if (c.family !== a.family) return false;
  let bits = c.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((c.bytes[i] & mask) !== (a.bytes[i] & mask)) return false;
  }
  return true;
}

export function formatCidr(c: Cidr): string {
  return `${formatIp(c)}/${c.prefix}`;
}
