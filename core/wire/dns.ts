// DNS message codec (RFC 1035 §4, EDNS0 RFC 6891). The parser walks the whole message — header,
// questions, every resource record — and validates it: lengths before reads, names through
// compression pointers that must point strictly backwards (so a hostile message cannot loop), labels
// of at most 63 bytes, names of at most 255, one OPT record at most and only in the additional section.
// Records keep views of their rdata and the offset of their TTL, so a forwarded answer can be passed
// on untouched except for its ID and TTLs. The emitter builds the small answers weft makes itself.

import type { Ipv4Address } from './address';
import type { Parsed } from './parse-result';
import { readU16, readU32, writeU16, writeU32 } from './bytes';

export const DNS_PORT = 53;
export const DNS_HEADER_LENGTH = 12;
/** The UDP payload every requester can take (RFC 1035 §4.2.1). */
export const DNS_CLASSIC_UDP_SIZE = 512;
/** The EDNS payload size weft offers and caps its own answers at (DNS flag day 2020). */
export const DNS_EDNS_UDP_SIZE = 1232;
export const DNS_MAX_LABEL = 63;
/** Wire length of a name, length octets and the root label included (RFC 1035 §3.1). */
export const DNS_MAX_NAME = 255;
/** Compression pointers followed per name; each must go further back, so this only bounds work. */
const MAX_POINTER_HOPS = 64;

export const DnsType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  MX: 15,
  TXT: 16,
  AAAA: 28,
  SRV: 33,
  OPT: 41,
  DS: 43,
  RRSIG: 46,
  SVCB: 64,
  HTTPS: 65,
  IXFR: 251,
  AXFR: 252,
  ANY: 255,
  CAA: 257,
} as const;

export const DnsClass = { IN: 1, CH: 3, ANY: 255 } as const;

export const DnsOpcode = { QUERY: 0 } as const;

export const DnsRcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  /** Extended (needs OPT): the requester's EDNS version is not supported (RFC 6891 §6.1.3). */
  BADVERS: 16,
} as const;

// Header flag bits (the 16-bit word at offset 2).
export const DNS_FLAG_QR = 0x8000;
export const DNS_FLAG_AA = 0x0400;
export const DNS_FLAG_TC = 0x0200;
export const DNS_FLAG_RD = 0x0100;
export const DNS_FLAG_RA = 0x0080;
export const DNS_FLAG_AD = 0x0020;
export const DNS_FLAG_CD = 0x0010;

export interface DnsHeader {
  id: number;
  /** The raw flags word: QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode. */
  flags: number;
  qr: boolean;
  opcode: number;
  aa: boolean;
  tc: boolean;
  rd: boolean;
  ra: boolean;
  ad: boolean;
  cd: boolean;
  /** The 4-bit header rcode; extended rcodes add `edns.extendedRcode << 4`. */
  rcode: number;
  qdcount: number;
  ancount: number;
  nscount: number;
  arcount: number;
}

export interface DnsQuestion {
  /**
   * Presentation form without the trailing dot, case kept ('' is the root). Bytes other than
   * letters, digits and printable punctuation, and '.' or '\' inside a label, are escaped as \DDD or
   * \. so two different wire names never give the same text.
   */
  name: string;
  /** The name in uncompressed wire form, root label included (a new array). */
  nameWire: Uint8Array;
  /** Offset of the question in the message and its length there (the name may be compressed). */
  offset: number;
  length: number;
  type: number;
  class: number;
}

export type DnsSection = 'answer' | 'authority' | 'additional';

export interface DnsRecord {
  section: DnsSection;
  name: string;
  type: number;
  class: number;
  ttl: number;
  /** Where the TTL sits in the message (rewrite it in place to age a cached answer). */
  ttlOffset: number;
  /** A view into the message; names inside may be compressed against the whole message. */
  rdata: Uint8Array;
  rdataOffset: number;
}

export interface DnsEdns {
  udpPayloadSize: number;
  /** The upper 8 bits of the 12-bit rcode. */
  extendedRcode: number;
  version: number;
  dnssecOk: boolean;
  /** The options (code u16, length u16, data) as a view; already checked to fit exactly. */
  options: Uint8Array;
  /** Offset of the OPT record in the message. */
  offset: number;
}

export interface DnsMessage {
  header: DnsHeader;
  questions: DnsQuestion[];
  answers: DnsRecord[];
  authority: DnsRecord[];
  /** Additional records without the OPT pseudo-record, which is `edns`. */
  additional: DnsRecord[];
  edns?: DnsEdns;
  /** The full 12-bit rcode (header rcode plus the OPT's extended bits). */
  rcode: number;
}

/** Reads the 12-byte header. Never throws. */
export function parseDnsHeader(b: Uint8Array): Parsed<DnsHeader> {
  if (b.length < DNS_HEADER_LENGTH) return 'dns-truncated-header';
  const flags = (b[2] << 8) | b[3];
  return {
    id: (b[0] << 8) | b[1],
    flags,
    qr: (flags & DNS_FLAG_QR) !== 0,
    opcode: (flags >>> 11) & 0xf,
    aa: (flags & DNS_FLAG_AA) !== 0,
    tc: (flags & DNS_FLAG_TC) !== 0,
    rd: (flags & DNS_FLAG_RD) !== 0,
    ra: (flags & DNS_FLAG_RA) !== 0,
    ad: (flags & DNS_FLAG_AD) !== 0,
    cd: (flags & DNS_FLAG_CD) !== 0,
    rcode: flags & 0xf,
    qdcount: (b[4] << 8) | b[5],
    ancount: (b[6] << 8) | b[7],
    nscount: (b[8] << 8) | b[9],
    arcount: (b[10] << 8) | b[11],
  };
}

/** Parses and validates a whole DNS message (query or response). Never throws. */
export function parseDnsMessage(b: Uint8Array): Parsed<DnsMessage> {
  const header = parseDnsHeader(b);
  if (typeof header === 'string') return header;
  let off = DNS_HEADER_LENGTH;
  const questions: DnsQuestion[] = [];
  for (let i = 0; i < header.qdcount; i++) {
    const name = readName(b, off, true);
    if (typeof name === 'string') return name;
    if (name.end + 4 > b.length) return 'dns-question-truncated';
    questions.push({
      name: name.text,
      nameWire: name.wire!,
      offset: off,
      length: name.end + 4 - off,
      type: readU16(b, name.end),
      class: readU16(b, name.end + 2),
    });
    off = name.end + 4;
  }
  const answers: DnsRecord[] = [];
  const authority: DnsRecord[] = [];
  const additional: DnsRecord[] = [];
  let edns: DnsEdns | undefined;
  const sections: [DnsSection, number, DnsRecord[]][] = [
    ['answer', header.ancount, answers],
    ['authority', header.nscount, authority],
    ['additional', header.arcount, additional],
  ];
  for (const [section, count, into] of sections) {
    for (let i = 0; i < count; i++) {
      const start = off;
      const name = readName(b, off, false);
      if (typeof name === 'string') return name;
      off = name.end;
      if (off + 10 > b.length) return 'dns-record-truncated';
      const type = readU16(b, off);
      const klass = readU16(b, off + 2);
      const ttl = readU32(b, off + 4);
      const rdlength = readU16(b, off + 8);
      const rdataOffset = off + 10;
      if (rdataOffset + rdlength > b.length) return 'dns-rdata-truncated';
      off = rdataOffset + rdlength;
      if (type === DnsType.OPT) {
        if (section !== 'additional') return 'dns-opt-misplaced';
        if (edns) return 'dns-opt-duplicate';
        if (name.text !== '') return 'dns-opt-bad-name';
        const options = b.subarray(rdataOffset, off);
        for (let p = 0; p < options.length; ) {
          if (p + 4 > options.length) return 'dns-opt-option-overrun';
          p += 4 + readU16(options, p + 2);
          if (p > options.length) return 'dns-opt-option-overrun';
        }
        edns = {
          udpPayloadSize: klass,
          extendedRcode: ttl >>> 24,
          version: (ttl >>> 16) & 0xff,
          dnssecOk: (ttl & 0x8000) !== 0,
          options,
          offset: start,
        };
        continue;
      }
      into.push({ section, name: name.text, type, class: klass, ttl, ttlOffset: rdataOffset - 6, rdata: b.subarray(rdataOffset, off), rdataOffset });
    }
  }
  if (off !== b.length) return 'dns-trailing-data';
  const rcode = header.rcode | ((edns?.extendedRcode ?? 0) << 4);
  const msg: DnsMessage = { header, questions, answers, authority, additional, rcode };
  if (edns) msg.edns = edns;
  return msg;
}

interface NameRead {
  /** Offset just after the name where it starts (after its first pointer, if any). */
  end: number;
  text: string;
  wire?: Uint8Array;
}

/**
 * Reads a possibly compressed name at `off`. Each pointer must point before the start of the run of
 * labels it ends, so targets strictly decrease and a loop is impossible; hops are bounded as well.
 */
function readName(b: Uint8Array, off: number, wantWire: boolean): Parsed<NameRead> {
  let pos = off;
  let runStart = off;
  let end = -1;
  let hops = 0;
  let wireLength = 0;
  let text = '';
  const wire: number[] | undefined = wantWire ? [] : undefined;
  for (;;) {
    if (pos >= b.length) return 'dns-name-truncated';
    const len = b[pos];
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (pos + 1 >= b.length) return 'dns-name-truncated';
      const target = ((len & 0x3f) << 8) | b[pos + 1];
      if (target >= runStart) return 'dns-name-pointer-forward';
      if (++hops > MAX_POINTER_HOPS) return 'dns-name-too-many-pointers';
      if (end < 0) end = pos + 2;
      pos = runStart = target;
      continue;
    }
    // 0x40 (extended label, RFC 6891 deprecates it) and 0x80 (reserved): a length over 63.
    if (kind !== 0) return 'dns-name-label-too-long';
    wireLength += len + 1;
    if (wireLength > DNS_MAX_NAME) return 'dns-name-too-long';
    if (len === 0) {
      wire?.push(0);
      return { end: end < 0 ? pos + 1 : end, text, wire: wire && Uint8Array.from(wire) };
    }
    if (pos + 1 + len > b.length) return 'dns-name-truncated';
    if (text.length > 0) text += '.';
    wire?.push(len);
    for (let i = pos + 1; i <= pos + len; i++) {
      const c = b[i];
      wire?.push(c);
      if (c === 0x2e || c === 0x5c) text += `\\${String.fromCharCode(c)}`;
      else if (c <= 0x20 || c >= 0x7f) text += `\\${String(c).padStart(3, '0')}`;
      else text += String.fromCharCode(c);
    }
    pos += 1 + len;
  }
}

/** The name at `off` in a message (rdata names are compressed against the whole message). */
export function readDnsName(b: Uint8Array, off: number): Parsed<{ name: string; end: number }> {
  const r = readName(b, off, false);
  return typeof r === 'string' ? r : { name: r.text, end: r.end };
}

/** DNS compares names case-insensitively in ASCII only (RFC 4343): the key for maps and caches. */
export function dnsNameKey(name: string): string {
  return name.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * Encodes a name in presentation form (no escapes; a trailing dot is optional) as uncompressed wire
 * bytes. Throws RangeError on an empty label, a label over 63 bytes or a name over 255.
 */
export function encodeDnsName(name: string): Uint8Array {
  const text = name.endsWith('.') ? name.slice(0, -1) : name;
  if (text === '') return Uint8Array.of(0);
  const out: number[] = [];
  for (const label of text.split('.')) {
    if (label.length < 1 || label.length > DNS_MAX_LABEL) throw new RangeError(`bad DNS label in ${JSON.stringify(name)}`);
    out.push(label.length);
    for (let i = 0; i < label.length; i++) {
      const c = label.charCodeAt(i);
      if (c > 0x7f) throw new RangeError(`DNS name is not ASCII: ${JSON.stringify(name)}`);
      out.push(c);
    }
  }
  out.push(0);
  if (out.length > DNS_MAX_NAME) throw new RangeError(`DNS name too long: ${JSON.stringify(name)}`);
  return Uint8Array.from(out);
}

/** SOA rdata fields weft needs: the MINIMUM (negative-caching TTL, RFC 2308 §4). */
export function readSoaMinimum(message: Uint8Array, record: DnsRecord): Parsed<number> {
  if (record.type !== DnsType.SOA) return 'dns-not-soa';
  const rdataEnd = record.rdataOffset + record.rdata.length;
  const mname = readName(message, record.rdataOffset, false);
  if (typeof mname === 'string') return mname;
  if (mname.end > rdataEnd) return 'dns-soa-overrun';
  const rname = readName(message, mname.end, false);
  if (typeof rname === 'string') return rname;
  if (rname.end + 20 !== rdataEnd) return 'dns-soa-bad-length';
  return readU32(message, rname.end + 16);
}

/** The largest UDP answer the requester can take: 512, or its EDNS payload size (never less). */
export function requesterUdpLimit(msg: DnsMessage): number {
  return msg.edns ? Math.max(DNS_CLASSIC_UDP_SIZE, msg.edns.udpPayloadSize) : DNS_CLASSIC_UDP_SIZE;
}

export function readDnsId(b: Uint8Array): number {
  return (b[0] << 8) | b[1];
}

/** Rewrites the ID of a message in place. */
export function setDnsId(b: Uint8Array, id: number): void {
  b[0] = (id >>> 8) & 0xff;
  b[1] = id & 0xff;
}

/** Sets or clears header flag bits in place. */
export function setDnsFlag(b: Uint8Array, flag: number, on: boolean): void {
  const flags = (b[2] << 8) | b[3];
  const next = on ? flags | flag : flags & ~flag;
  b[2] = (next >>> 8) & 0xff;
  b[3] = next & 0xff;
}

/** Every record whose TTL ages in a cache: answer, authority and additional, the OPT pseudo-record excluded. */
export function dnsTtlRecords(msg: DnsMessage): DnsRecord[] {
  return [...msg.answers, ...msg.authority, ...msg.additional];
}

/**
 * Writes each record's TTL less `elapsedSeconds` (never below 0) into `b`, a copy of the message the
 * records were parsed from.
 */
export function ageDnsTtls(b: Uint8Array, records: readonly DnsRecord[], elapsedSeconds: number): void {
  for (const r of records) writeU32(b, r.ttlOffset, Math.max(0, r.ttl - elapsedSeconds));
}

export interface DnsEdnsRepr {
  udpPayloadSize: number;
  dnssecOk: boolean;
  /** Upper 8 bits of a 12-bit rcode (1 for BADVERS). */
  extendedRcode?: number;
}

export interface DnsAnswerRepr {
  /** Wire name; omitted = the question's name (a pointer to it). */
  nameWire?: Uint8Array;
  type: number;
  class: number;
  ttl: number;
  rdata: Uint8Array;
}

export interface DnsResponseRepr {
  id: number;
  opcode?: number;
  /** Header bits to set besides QR and the rcode (DNS_FLAG_AA | DNS_FLAG_RD | …). */
  flags: number;
  /** 0…4095; values over 15 need `edns` (their upper bits go into the OPT record). */
  rcode: number;
  /** The question to echo (wire name, type, class); omitted for a header-only FORMERR. */
  question?: { nameWire: Uint8Array; type: number; class: number };
  answers?: DnsAnswerRepr[];
  edns?: DnsEdnsRepr;
}

const OPT_RECORD_LENGTH = 11;

/** Builds a response message into a new buffer. Names in answers may point at the question's name. */
export function emitDnsResponse(r: DnsResponseRepr): Uint8Array {
  const answers = r.answers ?? [];
  if (answers.length > 0 && !r.question) throw new RangeError('DNS answers need a question to name them');
  let length = DNS_HEADER_LENGTH;
  if (r.question) length += r.question.nameWire.length + 4;
  for (const a of answers) length += (a.nameWire ? a.nameWire.length : 2) + 10 + a.rdata.length;
  if (r.edns) length += OPT_RECORD_LENGTH;
  const b = new Uint8Array(length);
  writeDnsHeader(b, {
    id: r.id,
    flags: DNS_FLAG_QR | ((r.opcode ?? 0) << 11) | (r.flags & 0x07f0) | (r.rcode & 0xf),
    qdcount: r.question ? 1 : 0,
    ancount: answers.length,
    nscount: 0,
    arcount: r.edns ? 1 : 0,
  });
  let off = DNS_HEADER_LENGTH;
  if (r.question) {
    b.set(r.question.nameWire, off);
    off += r.question.nameWire.length;
    writeU16(b, off, r.question.type);
    writeU16(b, off + 2, r.question.class);
    off += 4;
  }
  for (const a of answers) {
    if (a.nameWire) {
      b.set(a.nameWire, off);
      off += a.nameWire.length;
    } else {
      writeU16(b, off, 0xc000 | DNS_HEADER_LENGTH);
      off += 2;
    }
    writeU16(b, off, a.type);
    writeU16(b, off + 2, a.class);
    writeU32(b, off + 4, a.ttl);
    writeU16(b, off + 8, a.rdata.length);
    b.set(a.rdata, off + 10);
    off += 10 + a.rdata.length;
  }
  if (r.edns) writeOpt(b, off, r.edns, r.rcode >>> 4);
  return b;
}

export interface DnsQueryRepr {
  id: number;
  /** Uncompressed wire name (see encodeDnsName). */
  nameWire: Uint8Array;
  type: number;
  class?: number;
  /** Recursion desired (default true). */
  rd?: boolean;
  cd?: boolean;
  edns?: DnsEdnsRepr & { version?: number };
}

/** Builds a standard query (one question, optional OPT). */
export function emitDnsQuery(q: DnsQueryRepr): Uint8Array {
  const b = new Uint8Array(DNS_HEADER_LENGTH + q.nameWire.length + 4 + (q.edns ? OPT_RECORD_LENGTH : 0));
  writeDnsHeader(b, {
    id: q.id,
    flags: (q.rd === false ? 0 : DNS_FLAG_RD) | (q.cd ? DNS_FLAG_CD : 0),
    qdcount: 1,
    ancount: 0,
    nscount: 0,
    arcount: q.edns ? 1 : 0,
  });
  let off = DNS_HEADER_LENGTH;
  b.set(q.nameWire, off);
  off += q.nameWire.length;
  writeU16(b, off, q.type);
  writeU16(b, off + 2, q.class ?? DnsClass.IN);
  if (q.edns) {
    writeOpt(b, off + 4, q.edns, 0);
    b[off + 4 + 6] = q.edns.version ?? 0;
  }
  return b;
}

function writeDnsHeader(b: Uint8Array, h: { id: number; flags: number; qdcount: number; ancount: number; nscount: number; arcount: number }): void {
  writeU16(b, 0, h.id);
  writeU16(b, 2, h.flags);
  writeU16(b, 4, h.qdcount);
  writeU16(b, 6, h.ancount);
  writeU16(b, 8, h.nscount);
  writeU16(b, 10, h.arcount);
}

function writeOpt(b: Uint8Array, off: number, e: DnsEdnsRepr, extendedRcode: number): void {
  b[off] = 0; // root name
  writeU16(b, off + 1, DnsType.OPT);
  writeU16(b, off + 3, e.udpPayloadSize);
  writeU32(b, off + 5, (((e.extendedRcode ?? extendedRcode) & 0xff) << 24) | (e.dnssecOk ? 0x8000 : 0));
  writeU16(b, off + 9, 0);
}

/**
 * The truncated form of response `b` for a UDP requester that cannot take all of it: its header (ID
 * and flags read from `b`, which may have been rewritten since `msg` was parsed) with TC set, the
 * question, no records, and an OPT record if `edns` is given (RFC 6891 §7: a requester that sent OPT
 * gets one back). The requester retries over TCP. `question` overrides the one in `msg` (to echo the
 * requester's spelling of the name).
 */
export function truncateDnsResponse(
  b: Uint8Array,
  msg: DnsMessage,
  edns?: DnsEdnsRepr,
  question: { nameWire: Uint8Array; type: number; class: number } | undefined = msg.questions[0],
): Uint8Array {
  const qLength = question ? question.nameWire.length + 4 : 0;
  const out = new Uint8Array(DNS_HEADER_LENGTH + qLength + (edns ? OPT_RECORD_LENGTH : 0));
  writeDnsHeader(out, {
    id: readU16(b, 0),
    flags: readU16(b, 2) | DNS_FLAG_TC,
    qdcount: question ? 1 : 0,
    ancount: 0,
    nscount: 0,
    arcount: edns ? 1 : 0,
  });
  if (question) {
    out.set(question.nameWire, DNS_HEADER_LENGTH);
    writeU16(out, DNS_HEADER_LENGTH + question.nameWire.length, question.type);
    writeU16(out, DNS_HEADER_LENGTH + question.nameWire.length + 2, question.class);
  }
  if (edns) writeOpt(out, DNS_HEADER_LENGTH + qLength, edns, msg.rcode >>> 4);
  return out;
}

/** A record's rdata for an A answer. */
export function aRdata(ip: Ipv4Address): Uint8Array {
  return Uint8Array.of(ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff);
}
