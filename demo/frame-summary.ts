// One line per Ethernet frame for the packet log, in the spirit of tcpdump: who talks to whom, the
// protocol, and the one or two fields that say what the frame is for (TCP flags, a DHCP message type,
// a DNS question, the first line of an HTTP request or response). It also picks the A records out of
// DNS answers, so the flow table can show names next to addresses.
//
// The page reads frames it already has (they pass through a FramePort wrapper), so this parser only
// reads: every offset is checked against the length first, and anything it does not understand gets
// a generic line instead of an exception.

export interface FrameSummary {
  text: string;
  /** A records from a DNS response: [address, name]. */
  dnsAnswers?: Array<[string, string]>;
}

const TCP_FLAGS: Array<[number, string]> = [
  [0x02, 'S'],
  [0x10, '.'],
  [0x08, 'P'],
  [0x01, 'F'],
  [0x04, 'R'],
];
const DHCP_TYPES = ['', 'DISCOVER', 'OFFER', 'REQUEST', 'DECLINE', 'ACK', 'NAK', 'RELEASE', 'INFORM'];
const DNS_TYPES: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA', 33: 'SRV', 65: 'HTTPS' };
const ICMP_TYPES: Record<number, string> = { 0: 'echo reply', 3: 'unreachable', 8: 'echo request', 11: 'time exceeded' };

export function ip(b: Uint8Array, o: number): string {
  return `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;
}

export function mac(b: Uint8Array, o: number): string {
  let s = '';
  for (let i = 0; i < 6; i++) s += (i ? ':' : '') + b[o + i].toString(16).padStart(2, '0');
  return s;
}

export function u16(b: Uint8Array, o: number): number {
  return (b[o] << 8) | b[o + 1];
}

function u32(b: Uint8Array, o: number): number {
  return ((b[o] << 24) | (b[o + 1] << 16) | (b[o + 2] << 8) | b[o + 3]) >>> 0;
}

export function summarizeFrame(f: Uint8Array): FrameSummary {
  if (f.length < 14) return { text: `runt frame (${f.length} bytes)` };
  const type = u16(f, 12);
  if (type === 0x0806) return { text: arp(f) };
  if (type === 0x86dd) return { text: `IPv6 ${f.length} bytes (weft speaks IPv4 only)` };
  if (type !== 0x0800) return { text: `ethertype 0x${type.toString(16).padStart(4, '0')} ${mac(f, 6)} > ${mac(f, 0)}, ${f.length} bytes` };
  return ipv4(f, 14);
}

function arp(f: Uint8Array): string {
  if (f.length < 42) return 'ARP (truncated)';
  const op = u16(f, 20);
  if (op === 1) return `ARP who-has ${ip(f, 38)} tell ${ip(f, 28)}`;
  if (op === 2) return `ARP ${ip(f, 28)} is-at ${mac(f, 22)}`;
  return `ARP op ${op}`;
}

function ipv4(f: Uint8Array, o: number): FrameSummary {
  if (f.length < o + 20) return { text: 'IPv4 (truncated)' };
  const ihl = (f[o] & 0x0f) * 4;
  const total = Math.min(u16(f, o + 2), f.length - o);
  const proto = f[o + 9];
  const src = ip(f, o + 12);
  const dst = ip(f, o + 16);
  const frag = u16(f, o + 6);
  const offset = (frag & 0x1fff) * 8;
  if (offset > 0) return { text: `${src} > ${dst} IPv4 fragment offset ${offset}, ${total - ihl} bytes` };
  const p = o + ihl;
  const end = o + total;
  if (proto === 6) return { text: tcp(f, p, end, src, dst) };
  if (proto === 17) return udp(f, p, end, src, dst);
  if (proto === 1 && end >= p + 4) return { text: `${src} > ${dst} ICMP ${ICMP_TYPES[f[p]] ?? `type ${f[p]}`}${f[p] === 3 ? ` code ${f[p + 1]}` : ''}` };
  return { text: `${src} > ${dst} IP protocol ${proto}, ${total} bytes` };
}

function tcp(f: Uint8Array, p: number, end: number, src: string, dst: string): string {
  if (end < p + 20) return `${src} > ${dst} TCP (truncated)`;
  const sport = u16(f, p);
  const dport = u16(f, p + 2);
  const flagsByte = f[p + 13];
  const flags = TCP_FLAGS.filter(([bit]) => flagsByte & bit)
    .map(([, c]) => c)
    .join('');
  const data = p + (f[p + 12] >> 4) * 4;
  const len = Math.max(0, end - data);
  // Sequence numbers are left out: absolute ones say little at a glance (the pcap has them all).
  const line = `${src}:${sport} > ${dst}:${dport} TCP [${flags}] win ${u16(f, p + 14)} len ${len}`;
  const http = len > 0 ? httpLine(f, data, end) : undefined;
  return http ? `${line}  ${http}` : line;
}

/** The first line of an HTTP request or response starting in this segment, if there is one. */
function httpLine(f: Uint8Array, from: number, end: number): string | undefined {
  const head = String.fromCharCode(...f.subarray(from, Math.min(end, from + 100)));
  if (!/^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) \S|^HTTP\/1\.[01] \d{3}/.test(head)) return undefined;
  return head.split('\r\n')[0];
}

function udp(f: Uint8Array, p: number, end: number, src: string, dst: string): FrameSummary {
  if (end < p + 8) return { text: `${src} > ${dst} UDP (truncated)` };
  const sport = u16(f, p);
  const dport = u16(f, p + 2);
  const data = p + 8;
  const line = `${src}:${sport} > ${dst}:${dport} UDP len ${Math.max(0, end - data)}`;
  if (sport === 67 || sport === 68 || dport === 67 || dport === 68) return { text: `${line}  ${dhcp(f, data, end)}` };
  if (sport === 53 || dport === 53) {
    const dns = parseDns(f, data, end);
    return dns ? { text: `${line}  ${dns.text}`, dnsAnswers: dns.answers } : { text: `${line}  DNS (unparsed)` };
  }
  return { text: line };
}

function dhcp(f: Uint8Array, p: number, end: number): string {
  // Fixed BOOTP header (236 bytes), the magic cookie (4), then options.
  let o = p + 240;
  if (end < o || u32(f, p + 236) !== 0x63825363) return 'BOOTP';
  let kind = 'DHCP';
  while (o < end && f[o] !== 255) {
    if (f[o] === 0) {
      o++;
      continue;
    }
    if (o + 2 > end) break;
    if (f[o] === 53 && f[o + 1] >= 1 && o + 2 < end) kind = `DHCP ${DHCP_TYPES[f[o + 2]] ?? `type ${f[o + 2]}`}`;
    o += 2 + f[o + 1];
  }
  const yiaddr = ip(f, p + 16);
  return yiaddr === '0.0.0.0' ? kind : `${kind} ${yiaddr}`;
}

/** Reads a (possibly compressed) DNS name at `o`; returns it and the offset after it in place. */
function dnsName(f: Uint8Array, msg: number, end: number, o: number): { name: string; next: number } | undefined {
  const labels: string[] = [];
  let next = -1;
  for (let hops = 0; hops < 32; hops++) {
    if (o >= end) return undefined;
    const len = f[o];
    if (len === 0) return { name: labels.join('.') || '.', next: next < 0 ? o + 1 : next };
    if ((len & 0xc0) === 0xc0) {
      if (o + 1 >= end) return undefined;
      if (next < 0) next = o + 2;
      o = msg + (((len & 0x3f) << 8) | f[o + 1]);
      continue;
    }
    if (o + 1 + len > end) return undefined;
    labels.push(String.fromCharCode(...f.subarray(o + 1, o + 1 + len)));
    o += 1 + len;
  }
  return undefined;
}

function parseDns(f: Uint8Array, msg: number, end: number): { text: string; answers: Array<[string, string]> } | undefined {
  if (end < msg + 12) return undefined;
  const flags = u16(f, msg + 2);
  const qd = u16(f, msg + 4);
  const an = u16(f, msg + 6);
  let o = msg + 12;
  let question = '';
  for (let i = 0; i < qd; i++) {
    const n = dnsName(f, msg, end, o);
    if (!n || n.next + 4 > end) return undefined;
    if (i === 0) question = `${DNS_TYPES[u16(f, n.next)] ?? `type ${u16(f, n.next)}`}? ${n.name}`;
    o = n.next + 4;
  }
  const response = (flags & 0x8000) !== 0;
  if (!response) return { text: `DNS query ${question}`, answers: [] };
  const answers: Array<[string, string]> = [];
  const shown: string[] = [];
  for (let i = 0; i < an; i++) {
    const n = dnsName(f, msg, end, o);
    if (!n || n.next + 10 > end) break;
    const type = u16(f, n.next);
    const rdlen = u16(f, n.next + 8);
    const rdata = n.next + 10;
    if (rdata + rdlen > end) break;
    if (type === 1 && rdlen === 4) {
      answers.push([ip(f, rdata), n.name]);
      shown.push(ip(f, rdata));
    } else {
      shown.push(DNS_TYPES[type] ?? `type ${type}`);
    }
    o = rdata + rdlen;
  }
  const rcode = flags & 0x0f;
  const outcome = rcode === 0 ? (shown.length ? shown.join(' ') : 'no answer') : rcode === 3 ? 'NXDOMAIN' : `rcode ${rcode}`;
  return { text: `DNS answer ${question} → ${outcome}`, answers };
}
