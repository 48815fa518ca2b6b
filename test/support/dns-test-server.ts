// A small authoritative DNS server for tests, on 127.0.0.1 (UDP and TCP on the same kernel-chosen
// port). It serves a fixed zone with every record type weft must pass through — A, AAAA, CNAME, MX,
// TXT (one of 4 KB, which needs TCP), SRV, PTR, SOA, NS, CAA, HTTPS, SVCB — a name with only an A
// record, NXDOMAIN and NODATA with the SOA (for negative caching), REFUSED outside its zones, and TC
// when a UDP answer exceeds the requester's size. It shares no code with core/wire/dns.ts on purpose:
// each checks the other.

import dgram from 'node:dgram';
import net from 'node:net';
import { once } from 'node:events';

export const DNS_TEST_ZONE = 'weft-test.example';
export const DNS_TEST_REVERSE_ZONE = '2.0.192.in-addr.arpa';
/** SOA MINIMUM of both zones: the negative-caching TTL (the SOA's own TTL is larger). */
export const DNS_TEST_NEGATIVE_TTL = 30;
export const DNS_TEST_TTL = 300;

const Z = DNS_TEST_ZONE;
const T = { A: 1, NS: 2, CNAME: 5, SOA: 6, PTR: 12, MX: 15, TXT: 16, AAAA: 28, SRV: 33, OPT: 41, SVCB: 64, HTTPS: 65, ANY: 255, CAA: 257 } as const;

export interface DnsTestRecord {
  name: string;
  type: keyof typeof T;
  ttl: number;
  rdata: Uint8Array;
  /** What `dig +short` prints for it. */
  text: string;
}

// ---- encoding (uncompressed, independent of core) ---------------------------------------------

function name(n: string): number[] {
  const out: number[] = [];
  for (const label of n
    .replace(/\.$/, '')
    .split('.')
    .filter((l) => l !== '')) {
    out.push(label.length, ...Buffer.from(label, 'latin1'));
  }
  out.push(0);
  return out;
}
const u16 = (v: number): number[] => [(v >> 8) & 0xff, v & 0xff];
const u32 = (v: number): number[] => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const str = (s: string): number[] => [s.length, ...Buffer.from(s, 'latin1')];

/** 4 KB of TXT: 16 character-strings of 255 printable bytes. */
export const DNS_TEST_BIG_TXT_STRINGS: string[] = Array.from({ length: 16 }, (_, i) =>
  Array.from({ length: 255 }, (_, j) => String.fromCharCode(0x61 + ((i * 7 + j) % 26))).join(''),
);

function rec(n: string, type: keyof typeof T, rdata: number[], text: string, ttl = DNS_TEST_TTL): DnsTestRecord {
  return { name: n, type, ttl, rdata: Uint8Array.from(rdata), text };
}

const SOA_FIELDS = [2024010101, 3600, 600, 86400, DNS_TEST_NEGATIVE_TTL];
function soa(zone: string): DnsTestRecord {
  return rec(
    zone,
    'SOA',
    [...name(`ns1.${Z}`), ...name(`hostmaster.${Z}`), ...SOA_FIELDS.flatMap(u32)],
    `ns1.${Z}. hostmaster.${Z}. ${SOA_FIELDS.join(' ')}`,
    3600,
  );
}

export const DNS_TEST_RECORDS: DnsTestRecord[] = [
  soa(Z),
  rec(Z, 'NS', name(`ns1.${Z}`), `ns1.${Z}.`),
  rec(Z, 'MX', [...u16(10), ...name(`mail.${Z}`)], `10 mail.${Z}.`),
  rec(Z, 'TXT', str('v=spf1 -all'), '"v=spf1 -all"'),
  rec(Z, 'CAA', [0, ...str('issue'), ...Buffer.from('letsencrypt.org')], '0 issue "letsencrypt.org"'),
  rec(`ns1.${Z}`, 'A', [127, 0, 0, 1], '127.0.0.1'),
  rec(`mail.${Z}`, 'A', [192, 0, 2, 25], '192.0.2.25'),
  rec(`www.${Z}`, 'A', [192, 0, 2, 10], '192.0.2.10'),
  rec(`www.${Z}`, 'AAAA', [0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 0x10], '2001:db8::10'),
  rec(`a-only.${Z}`, 'A', [192, 0, 2, 11], '192.0.2.11'),
  rec(`short-ttl.${Z}`, 'A', [192, 0, 2, 13], '192.0.2.13', 2),
  rec(`alias.${Z}`, 'CNAME', name(`www.${Z}`), `www.${Z}.`),
  rec(`_sip._tcp.${Z}`, 'SRV', [...u16(10), ...u16(60), ...u16(5060), ...name(`sip.${Z}`)], `10 60 5060 sip.${Z}.`),
  rec(`sip.${Z}`, 'A', [192, 0, 2, 12], '192.0.2.12'),
  // HTTPS 1 . alpn=h2,h3 — SvcParam key 1 (alpn): a list of length-prefixed protocol ids.
  rec(`svc.${Z}`, 'HTTPS', [...u16(1), 0, ...u16(1), ...u16(6), ...str('h2'), ...str('h3')], '1 . alpn="h2,h3"'),
  // SVCB 1 svc.weft-test.example. port=8443 — SvcParam key 3 (port).
  rec(`svc.${Z}`, 'SVCB', [...u16(1), ...name(`svc.${Z}`), ...u16(3), ...u16(2), ...u16(8443)], `1 svc.${Z}. port=8443`),
  rec(`big-txt.${Z}`, 'TXT', DNS_TEST_BIG_TXT_STRINGS.flatMap(str), DNS_TEST_BIG_TXT_STRINGS.map((s) => `"${s}"`).join(' ')),
  soa(DNS_TEST_REVERSE_ZONE),
  rec(DNS_TEST_REVERSE_ZONE, 'NS', name(`ns1.${Z}`), `ns1.${Z}.`),
  rec(`10.${DNS_TEST_REVERSE_ZONE}`, 'PTR', name(`www.${Z}`), `www.${Z}.`),
];

const ZONES = [Z, DNS_TEST_REVERSE_ZONE];

// ---- the server -------------------------------------------------------------------------------

export interface DnsTestQuery {
  name: string;
  type: number;
  transport: 'udp' | 'tcp';
}

export interface DnsTestServer {
  host: string;
  /** The same port for UDP and TCP. */
  port: number;
  /** While true, queries are read and counted but never answered (a resolver that went silent). */
  mute: boolean;
  /** Every query answered or muted, latest last (bounded to 10 000). */
  queries: DnsTestQuery[];
  counts: { udp: number; tcp: number };
  close(): Promise<void>;
}

interface Question {
  name: string;
  nameWire: Uint8Array;
  type: number;
  class: number;
}

interface ParsedQuery {
  id: number;
  flags: number;
  question?: Question;
  ednsSize?: number;
  error?: number;
}

function parseQuery(b: Uint8Array): ParsedQuery | undefined {
  if (b.length < 12) return undefined;
  const id = (b[0] << 8) | b[1];
  const flags = (b[2] << 8) | b[3];
  if (flags & 0x8000) return undefined;
  const qd = (b[4] << 8) | b[5];
  const ar = (b[10] << 8) | b[11];
  if (qd !== 1) return { id, flags, error: 1 };
  let off = 12;
  const labels: string[] = [];
  const start = off;
  for (;;) {
    if (off >= b.length) return { id, flags, error: 1 };
    const len = b[off];
    if (len === 0) break;
    if (len > 63 || off + 1 + len > b.length) return { id, flags, error: 1 };
    labels.push(Buffer.from(b.subarray(off + 1, off + 1 + len)).toString('latin1'));
    off += 1 + len;
  }
  const nameWire = b.slice(start, off + 1);
  off++;
  if (off + 4 > b.length) return { id, flags, error: 1 };
  const question = { name: labels.join('.'), nameWire, type: (b[off] << 8) | b[off + 1], class: (b[off + 2] << 8) | b[off + 3] };
  off += 4;
  let ednsSize: number | undefined;
  // Additional section: only OPT (root name) is understood; anything else ends the scan.
  for (let i = 0; i < ar && off + 11 <= b.length; i++) {
    if (b[off] !== 0) break;
    const type = (b[off + 1] << 8) | b[off + 2];
    if (type === T.OPT) ednsSize = Math.max(512, (b[off + 3] << 8) | b[off + 4]);
    off += 11 + ((b[off + 9] << 8) | b[off + 10]);
  }
  const out: ParsedQuery = { id, flags, question };
  if (ednsSize !== undefined) out.ednsSize = ednsSize;
  return out;
}

function lower(s: string): string {
  return s.toLowerCase();
}

function zoneOf(n: string): string | undefined {
  return ZONES.find((z) => n === z || n.endsWith(`.${z}`));
}

function rrBytes(r: DnsTestRecord): number[] {
  return [...name(r.name), ...u16(T[r.type]), ...u16(1), ...u32(r.ttl), ...u16(r.rdata.length), ...r.rdata];
}

/** Builds the answer to one query: { message, truncated form } (without TCP framing). */
function answer(q: ParsedQuery): { full: Uint8Array; short: Uint8Array } {
  const rd = q.flags & 0x0100;
  const header = (rcode: number, counts: number[], tc = false): number[] => [
    ...u16(q.id),
    ...u16(0x8000 | 0x0400 | rd | (tc ? 0x0200 : 0) | rcode),
    ...counts.flatMap(u16),
  ];
  const opt = q.ednsSize !== undefined ? [0, ...u16(T.OPT), ...u16(1232), ...u32(0), ...u16(0)] : [];
  const ar = opt.length ? 1 : 0;
  if (q.error !== undefined || !q.question) {
    const m = Uint8Array.from(header(q.error ?? 1, [0, 0, 0, 0]));
    return { full: m, short: m };
  }
  const qs = q.question;
  const qbytes = [...qs.nameWire, ...u16(qs.type), ...u16(qs.class)];
  const build = (rcode: number, answers: DnsTestRecord[], authority: DnsTestRecord[]) => ({
    full: Uint8Array.from([
      ...header(rcode, [1, answers.length, authority.length, ar]),
      ...qbytes,
      ...answers.flatMap(rrBytes),
      ...authority.flatMap(rrBytes),
      ...opt,
    ]),
    short: Uint8Array.from([...header(rcode, [1, 0, 0, ar], true), ...qbytes, ...opt]),
  });
  const qname = lower(qs.name);
  const zone = zoneOf(qname);
  if (!zone || (qs.class !== 1 && qs.class !== 255)) return build(5, [], []); // REFUSED
  const soaRecord = DNS_TEST_RECORDS.find((r) => r.type === 'SOA' && r.name === zone)!;
  const answers: DnsTestRecord[] = [];
  let current = qname;
  for (let hops = 0; hops < 8; hops++) {
    const atName = DNS_TEST_RECORDS.filter((r) => lower(r.name) === current);
    const matching = atName.filter((r) => T[r.type] === qs.type || qs.type === T.ANY);
    if (matching.length > 0) {
      answers.push(...matching);
      break;
    }
    const cname = atName.find((r) => r.type === 'CNAME');
    if (!cname) break;
    answers.push(cname);
    current = lower(cname.text.replace(/\.$/, ''));
  }
  if (answers.length > 0) return build(0, answers, []);
  const exists = DNS_TEST_RECORDS.some((r) => lower(r.name) === qname || lower(r.name).endsWith(`.${qname}`));
  // NODATA or NXDOMAIN, with the SOA at min(SOA TTL, MINIMUM) as RFC 2308 §3 says.
  const negSoa = { ...soaRecord, ttl: Math.min(soaRecord.ttl, DNS_TEST_NEGATIVE_TTL) };
  return build(exists ? 0 : 3, [], [negSoa]);
}

/** Starts the server on `host` (default 127.0.0.1), UDP and TCP on one free port. */
export async function startDnsTestServer(host = '127.0.0.1'): Promise<DnsTestServer> {
  for (let attempt = 0; ; attempt++) {
    const udp = dgram.createSocket('udp4');
    udp.bind(0, host);
    await once(udp, 'listening');
    const port = udp.address().port;
    const tcp = net.createServer({ allowHalfOpen: true });
    try {
      tcp.listen(port, host);
      await once(tcp, 'listening');
    } catch (e) {
      udp.close();
      if (attempt < 20) continue;
      throw e;
    }
    return serve(udp, tcp, host, port);
  }
}

function serve(udp: dgram.Socket, tcp: net.Server, host: string, port: number): DnsTestServer {
  const sockets = new Set<net.Socket>();
  const server: DnsTestServer = {
    host,
    port,
    mute: false,
    queries: [],
    counts: { udp: 0, tcp: 0 },
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
    },
  };
  const note = (q: ParsedQuery, transport: 'udp' | 'tcp'): void => {
    server.counts[transport]++;
    if (q.question) server.queries.push({ name: q.question.name, type: q.question.type, transport });
    if (server.queries.length > 10_000) server.queries.splice(0, server.queries.length - 10_000);
  };

  udp.on('message', (msg, rinfo) => {
    const q = parseQuery(msg);
    if (!q) return;
    note(q, 'udp');
    if (server.mute) return;
    const { full, short } = answer(q);
    const limit = q.ednsSize ?? 512;
    udp.send(full.length > limit ? short : full, rinfo.port, rinfo.address);
  });
  udp.on('error', () => {});

  tcp.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    socket.on('end', () => socket.end());
    let buf = Buffer.alloc(0);
    socket.on('data', (data: Buffer) => {
      buf = Buffer.concat([buf, data]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + msg.length);
        const q = parseQuery(msg);
        if (!q) continue;
        note(q, 'tcp');
        if (server.mute) continue;
        const { full } = answer(q);
        const out = Buffer.alloc(2 + full.length);
        out.writeUInt16BE(full.length, 0);
        out.set(full, 2);
        socket.write(out);
      }
    });
  });
  return server;
}
