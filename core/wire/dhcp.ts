// DHCP/BOOTP codec (RFC 2131, options RFC 2132). The parser walks the options area, then the `file`
// and `sname` fields when option 52 overloads them, and joins repeated options (RFC 3396). The
// emitter builds a BOOTREPLY from a plain value; the server decides which fields to fill.

import { IPV4_ANY, readIpv4, readMac, writeIpv4, writeMac, type Ipv4Address, type MacAddress } from './address';
import type { DropReason, Parsed } from './parse-result';
import { readU32, writeU32 } from './bytes';

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
export const DHCP_SERVER_PORT = 67;
export const DHCP_CLIENT_PORT = 68;
export const DHCP_MAGIC_COOKIE = 0x63825363;
/** The BROADCAST bit of `flags` (RFC 2131 §2). */
export const DHCP_FLAG_BROADCAST = 0x8000;
/** BOOTP's minimum message (RFC 1542 §3.3); some old clients drop anything shorter. */
export const BOOTP_MIN_LENGTH = 300;

export const DhcpMessageType = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

export const DhcpOption = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  DNS_SERVERS: 6,
  HOSTNAME: 12,
  DOMAIN_NAME: 15,
  INTERFACE_MTU: 26,
  BROADCAST_ADDRESS: 28,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_REQUEST_LIST: 55,
  MESSAGE: 56,
  MAX_MESSAGE_SIZE: 57,
  RENEWAL_TIME: 58,
  REBINDING_TIME: 59,
  CLIENT_ID: 61,
  DOMAIN_SEARCH: 119,
  END: 255,
} as const;

// Fixed BOOTP layout (RFC 2131 §2, figure 1).
const OFF_CHADDR = 28;
const OFF_SNAME = 44;
const OFF_FILE = 108;
const OFF_COOKIE = 236;
const OFF_OPTIONS = 240;
const SNAME_LENGTH = 64;
const FILE_LENGTH = 128;

export interface DhcpMessage {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: Ipv4Address;
  yiaddr: Ipv4Address;
  siaddr: Ipv4Address;
  giaddr: Ipv4Address;
  /** The client's Ethernet address, or null unless htype = 1 and hlen = 6. */
  chaddr: MacAddress | null;
  /** The whole 16-byte chaddr field (a view). */
  chaddrRaw: Uint8Array;
  /** Raw sname and file fields (views); they hold options instead when `overload` says so. */
  sname: Uint8Array;
  file: Uint8Array;
  /** Every option by code, repeated instances joined. Views where an option occurs once. */
  options: Map<number, Uint8Array>;
  messageType?: number;
  requestedIp?: Ipv4Address;
  serverId?: Ipv4Address;
  clientId?: Uint8Array;
  parameterRequestList?: Uint8Array;
  /** Option 12 read as Latin-1 with trailing NULs removed; not validated as a DNS name. */
  hostname?: string;
  maxMessageSize?: number;
  /** Option 52: 1 = file, 2 = sname, 3 = both carry options. */
  overload?: number;
}

/** Parses a DHCP message (a UDP payload). Never throws. */
export function parseDhcp(udpPayload: Uint8Array): Parsed<DhcpMessage> {
  const b = udpPayload;
  if (b.length < OFF_OPTIONS) return 'dhcp-truncated';
  if (readU32(b, OFF_COOKIE) !== DHCP_MAGIC_COOKIE) return 'dhcp-bad-cookie';

  // Collect each option's pieces first, so instances split across fields join in RFC 3396 order:
  // options area, then file, then sname.
  const pieces = new Map<number, Uint8Array[]>();
  const err = walkOptions(b, OFF_OPTIONS, b.length, pieces);
  if (err) return err;
  let overload: number | undefined;
  const ov = pieces.get(DhcpOption.OVERLOAD);
  if (ov) {
    if (ov.length !== 1 || ov[0].length !== 1) return 'dhcp-option-bad-length';
    overload = ov[0][0];
    if (overload & 1) {
      const e = walkOptions(b, OFF_FILE, OFF_FILE + FILE_LENGTH, pieces);
      if (e) return e;
    }
    if (overload & 2) {
      const e = walkOptions(b, OFF_SNAME, OFF_SNAME + SNAME_LENGTH, pieces);
      if (e) return e;
    }
  }
  const options = new Map<number, Uint8Array>();
  for (const [code, parts] of pieces) options.set(code, parts.length === 1 ? parts[0] : concat(parts));

  const htype = b[1];
  const hlen = b[2];
  const msg: DhcpMessage = {
    op: b[0],
    htype,
    hlen,
    hops: b[3],
    xid: readU32(b, 4),
    secs: (b[8] << 8) | b[9],
    flags: (b[10] << 8) | b[11],
    ciaddr: readIpv4(b, 12),
    yiaddr: readIpv4(b, 16),
    siaddr: readIpv4(b, 20),
    giaddr: readIpv4(b, 24),
    chaddr: htype === 1 && hlen === 6 ? readMac(b, OFF_CHADDR) : null,
    chaddrRaw: b.subarray(OFF_CHADDR, OFF_SNAME),
    sname: b.subarray(OFF_SNAME, OFF_FILE),
    file: b.subarray(OFF_FILE, OFF_COOKIE),
    options,
    overload,
  };
  return readTypedOptions(msg) ?? msg;
}

function walkOptions(b: Uint8Array, start: number, end: number, into: Map<number, Uint8Array[]>): DropReason | undefined {
  let i = start;
  while (i < end) {
    const code = b[i];
    if (code === DhcpOption.END) return undefined;
    if (code === DhcpOption.PAD) {
      i++;
      continue;
    }
    if (i + 1 >= end) return 'dhcp-option-overrun';
    const len = b[i + 1];
    if (i + 2 + len > end) return 'dhcp-option-overrun';
    // Option 52 inside file/sname would loop the walk; RFC 2131 allows it only in the options area.
    if (code !== DhcpOption.OVERLOAD || start === OFF_OPTIONS) {
      const list = into.get(code);
      const value = b.subarray(i + 2, i + 2 + len);
      if (list) list.push(value);
      else into.set(code, [value]);
    }
    i += 2 + len;
  }
  return undefined; // a missing END is tolerated: several clients omit it when the area is full
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// Fills the typed fields; a known option with an impossible length is a drop, since acting on half
// of it (a 3-byte address) would be a guess.
function readTypedOptions(msg: DhcpMessage): DropReason | undefined {
  const o = msg.options;
  const type = o.get(DhcpOption.MESSAGE_TYPE);
  if (type) {
    if (type.length !== 1) return 'dhcp-option-bad-length';
    msg.messageType = type[0];
  }
  for (const [code, field] of [
    [DhcpOption.REQUESTED_IP, 'requestedIp'],
    [DhcpOption.SERVER_ID, 'serverId'],
  ] as const) {
    const v = o.get(code);
    if (v) {
      if (v.length !== 4) return 'dhcp-option-bad-length';
      msg[field] = readIpv4(v, 0);
    }
  }
  const id = o.get(DhcpOption.CLIENT_ID);
  if (id) {
    if (id.length < 2) return 'dhcp-option-bad-length';
    msg.clientId = id;
  }
  const prl = o.get(DhcpOption.PARAMETER_REQUEST_LIST);
  if (prl) msg.parameterRequestList = prl;
  const host = o.get(DhcpOption.HOSTNAME);
  if (host) {
    let end = host.length;
    while (end > 0 && host[end - 1] === 0) end--;
    if (end > 0) msg.hostname = String.fromCharCode(...host.subarray(0, end));
  }
  const mms = o.get(DhcpOption.MAX_MESSAGE_SIZE);
  if (mms) {
    if (mms.length !== 2) return 'dhcp-option-bad-length';
    msg.maxMessageSize = (mms[0] << 8) | mms[1];
  }
  return undefined;
}

/** A BOOTREPLY to build. Options left undefined are not sent. */
export interface DhcpReplyRepr {
  messageType: number;
  xid: number;
  flags: number;
  ciaddr?: Ipv4Address;
  yiaddr?: Ipv4Address;
  siaddr?: Ipv4Address;
  giaddr?: Ipv4Address;
  chaddr: MacAddress;
  serverId: Ipv4Address;
  /** Lease time; T1 and T2 are derived from it (RFC 2131 §4.4.5: 0.5 and 0.875). */
  leaseTimeSeconds?: number;
  /** A mask (prefixMask()), not an address, though it is written like one. */
  subnetMask?: number;
  router?: Ipv4Address;
  dnsServers?: Ipv4Address[];
  domainName?: string;
  searchDomains?: string[];
  mtu?: number;
  broadcastAddress?: Ipv4Address;
  /** Option 56, e.g. why a NAK was sent. ASCII. */
  message?: string;
}

/**
 * Builds a BOOTREPLY, padded to the BOOTP minimum of 300 bytes. Throws RangeError on a domain name
 * that cannot be encoded: those come from configuration, never from a guest.
 */
export function emitDhcp(msg: DhcpReplyRepr): Uint8Array {
  const opts: Array<[number, Uint8Array]> = [[DhcpOption.MESSAGE_TYPE, Uint8Array.of(msg.messageType)]];
  opts.push([DhcpOption.SERVER_ID, ipBytes([msg.serverId])]);
  if (msg.leaseTimeSeconds !== undefined) {
    const lease = msg.leaseTimeSeconds;
    opts.push([DhcpOption.LEASE_TIME, u32Bytes(lease)]);
    opts.push([DhcpOption.RENEWAL_TIME, u32Bytes(Math.floor(lease * 0.5))]);
    opts.push([DhcpOption.REBINDING_TIME, u32Bytes(Math.floor(lease * 0.875))]);
  }
  if (msg.subnetMask !== undefined) opts.push([DhcpOption.SUBNET_MASK, u32Bytes(msg.subnetMask)]);
  if (msg.router !== undefined) opts.push([DhcpOption.ROUTER, ipBytes([msg.router])]);
  if (msg.dnsServers?.length) opts.push([DhcpOption.DNS_SERVERS, ipBytes(msg.dnsServers)]);
  if (msg.domainName) opts.push([DhcpOption.DOMAIN_NAME, asciiBytes(msg.domainName)]);
  if (msg.searchDomains?.length) opts.push([DhcpOption.DOMAIN_SEARCH, encodeDomainSearch(msg.searchDomains)]);
  if (msg.mtu !== undefined) opts.push([DhcpOption.INTERFACE_MTU, Uint8Array.of(msg.mtu >>> 8, msg.mtu & 0xff)]);
  if (msg.broadcastAddress !== undefined) opts.push([DhcpOption.BROADCAST_ADDRESS, ipBytes([msg.broadcastAddress])]);
  if (msg.message) opts.push([DhcpOption.MESSAGE, asciiBytes(msg.message)]);

  let optLength = 1; // END
  for (const [, v] of opts) optLength += v.length + 2 * Math.max(1, Math.ceil(v.length / 255));
  const out = new Uint8Array(Math.max(BOOTP_MIN_LENGTH, OFF_OPTIONS + optLength));
  out[0] = BOOTREPLY;
  out[1] = 1; // Ethernet
  out[2] = 6;
  writeU32(out, 4, msg.xid);
  out[10] = (msg.flags >>> 8) & 0xff;
  out[11] = msg.flags & 0xff;
  writeIpv4(out, 12, msg.ciaddr ?? IPV4_ANY);
  writeIpv4(out, 16, msg.yiaddr ?? IPV4_ANY);
  writeIpv4(out, 20, msg.siaddr ?? IPV4_ANY);
  writeIpv4(out, 24, msg.giaddr ?? IPV4_ANY);
  writeMac(out, OFF_CHADDR, msg.chaddr);
  writeU32(out, OFF_COOKIE, DHCP_MAGIC_COOKIE);
  let i = OFF_OPTIONS;
  for (const [code, value] of opts) {
    // RFC 3396: a value longer than 255 bytes goes out as consecutive instances of the option.
    let o = 0;
    do {
      const n = Math.min(255, value.length - o);
      out[i] = code;
      out[i + 1] = n;
      out.set(value.subarray(o, o + n), i + 2);
      i += 2 + n;
      o += n;
    } while (o < value.length);
  }
  out[i] = DhcpOption.END;
  return out;
}

function ipBytes(ips: Ipv4Address[]): Uint8Array {
  const out = new Uint8Array(4 * ips.length);
  ips.forEach((ip, k) => {
    writeIpv4(out, 4 * k, ip);
  });
  return out;
}

function u32Bytes(v: number): Uint8Array {
  const out = new Uint8Array(4);
  writeU32(out, 0, Math.min(v, 0xffff_ffff) >>> 0);
  return out;
}

function asciiBytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let k = 0; k < text.length; k++) {
    const c = text.charCodeAt(k);
    if (c > 0x7e || c < 0x20) throw new RangeError(`DHCP text must be printable ASCII: ${JSON.stringify(text)}`);
    out[k] = c;
  }
  return out;
}

/**
 * Encodes a domain search list (option 119, RFC 3397) as uncompressed DNS names. Throws RangeError
 * on an empty label, a label over 63 bytes or a name over 255 bytes.
 */
export function encodeDomainSearch(names: string[]): Uint8Array {
  const parts: number[] = [];
  for (const name of names) {
    const labels = name.replace(/\.$/, '').split('.');
    let nameLength = 1;
    for (const label of labels) {
      const bytes = asciiBytes(label);
      if (bytes.length < 1 || bytes.length > 63) throw new RangeError(`bad DNS label in search domain ${JSON.stringify(name)}`);
      nameLength += bytes.length + 1;
      parts.push(bytes.length, ...bytes);
    }
    if (nameLength > 255) throw new RangeError(`search domain too long: ${JSON.stringify(name)}`);
    parts.push(0);
  }
  return Uint8Array.from(parts);
}
