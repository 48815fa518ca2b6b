import { describe, expect, it } from 'vitest';
import { parseIpv4 } from '../../core/wire/address';
import {
  DNS_FLAG_AA,
  DNS_FLAG_RD,
  DnsClass,
  DnsRcode,
  DnsType,
  aRdata,
  ageDnsTtls,
  dnsNameKey,
  dnsTtlRecords,
  emitDnsQuery,
  emitDnsResponse,
  encodeDnsName,
  parseDnsHeader,
  parseDnsMessage,
  readDnsName,
  readSoaMinimum,
  requesterUdpLimit,
  setDnsId,
  truncateDnsResponse,
  type DnsMessage,
} from '../../core/wire/dns';
import { isDrop } from '../../core/wire/parse-result';

const u16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const u32 = (v: number) => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];
const name = (n: string) => [...encodeDnsName(n)];
const header = (id: number, flags: number, qd: number, an: number, ns: number, ar: number) => [
  ...u16(id),
  ...u16(flags),
  ...u16(qd),
  ...u16(an),
  ...u16(ns),
  ...u16(ar),
];
const rr = (nameBytes: number[], type: number, ttl: number, rdata: number[], klass = 1) => [
  ...nameBytes,
  ...u16(type),
  ...u16(klass),
  ...u32(ttl),
  ...u16(rdata.length),
  ...rdata,
];
const OPT = (size = 1232, ttl = 0, rdata: number[] = []) => rr([0], DnsType.OPT, ttl, rdata, size);

function parsed(bytes: number[] | Uint8Array): DnsMessage {
  const m = parseDnsMessage(Uint8Array.from(bytes));
  if (isDrop(m)) throw new Error(`unexpected drop: ${m}`);
  return m;
}

function dropOf(bytes: number[] | Uint8Array): string {
  const m = parseDnsMessage(Uint8Array.from(bytes));
  if (!isDrop(m)) throw new Error('expected a drop');
  return m;
}

/** www.example.com A, answered with a CNAME (pointer to the question) and an A for the target. */
function sampleResponse(): number[] {
  const q = name('www.example.com');
  // CNAME target "cdn" + pointer to "example.com" (offset 12 + 4 = 16).
  const cname = [3, ...Buffer.from('cdn'), 0xc0, 16];
  const answerStart = 12 + q.length + 4;
  const cnameRdataOffset = answerStart + 2 + 10; // name pointer (2) + fixed fields (10)
  return [
    ...header(0x1234, 0x8180, 1, 2, 0, 1),
    ...q,
    ...u16(DnsType.A),
    ...u16(1),
    ...rr([0xc0, 12], DnsType.CNAME, 300, cname),
    ...rr([0xc0, cnameRdataOffset], DnsType.A, 60, [192, 0, 2, 1]),
    ...OPT(1232, 0x8000),
  ];
}

describe('DNS codec: parsing', () => {
  it('reads the header fields', () => {
    const h = parseDnsHeader(Uint8Array.from(header(0xbeef, 0x8180 | 0x0400 | 0x0010 | 3, 1, 2, 3, 4)));
    if (isDrop(h)) throw new Error(h);
    expect(h).toMatchObject({
      id: 0xbeef,
      qr: true,
      opcode: 0,
      aa: true,
      tc: false,
      rd: true,
      ra: true,
      cd: true,
      rcode: 3,
      qdcount: 1,
      ancount: 2,
      nscount: 3,
      arcount: 4,
    });
    expect(parseDnsHeader(new Uint8Array(11))).toBe('dns-truncated-header');
  });

  it('round-trips a query with EDNS', () => {
    const q = emitDnsQuery({ id: 7, nameWire: encodeDnsName('Example.COM'), type: DnsType.AAAA, edns: { udpPayloadSize: 4096, dnssecOk: true } });
    const m = parsed(q);
    expect(m.header).toMatchObject({ id: 7, qr: false, rd: true, qdcount: 1, arcount: 1 });
    expect(m.questions).toHaveLength(1);
    expect(m.questions[0]).toMatchObject({ name: 'Example.COM', type: DnsType.AAAA, class: DnsClass.IN, offset: 12 });
    expect([...m.questions[0].nameWire]).toEqual(name('Example.COM'));
    expect(m.edns).toMatchObject({ udpPayloadSize: 4096, dnssecOk: true, version: 0, extendedRcode: 0 });
    expect(m.additional).toHaveLength(0);
    expect(requesterUdpLimit(m)).toBe(4096);
    expect(dnsNameKey(m.questions[0].name)).toBe('example.com');
  });

  it('follows compression pointers in records and rdata', () => {
    const bytes = Uint8Array.from(sampleResponse());
    const m = parsed(bytes);
    expect(m.answers.map((r) => [r.name, r.type, r.ttl])).toEqual([
      ['www.example.com', DnsType.CNAME, 300],
      ['cdn.example.com', DnsType.A, 60],
    ]);
    const target = readDnsName(bytes, m.answers[0].rdataOffset);
    expect(target).toEqual({ name: 'cdn.example.com', end: m.answers[0].rdataOffset + m.answers[0].rdata.length });
    expect([...m.answers[1].rdata]).toEqual([192, 0, 2, 1]);
    expect(m.edns?.dnssecOk).toBe(true);
  });

  it('escapes dots, backslashes and unprintable bytes inside labels', () => {
    const weird = [3, 0x61, 0x2e, 0x62, 2, 0x5c, 0x00, 3, 0x63, 0x20, 0xff, 0];
    const m = parsed([...header(1, 0, 1, 0, 0, 0), ...weird, ...u16(1), ...u16(1)]);
    expect(m.questions[0].name).toBe('a\\.b.\\\\\\000.c\\032\\255');
    expect([...m.questions[0].nameWire]).toEqual(weird);
  });

  it('accepts a 255-byte name and refuses a 256-byte one', () => {
    const labels = (lens: number[]) => [...lens.flatMap((l) => [l, ...new Array(l).fill(0x61)]), 0];
    const ok = labels([63, 63, 63, 61]);
    expect(ok.length).toBe(255);
    expect(parsed([...header(1, 0, 1, 0, 0, 0), ...ok, ...u16(1), ...u16(1)]).questions[0].nameWire.length).toBe(255);
    const long = labels([63, 63, 63, 62]);
    expect(dropOf([...header(1, 0, 1, 0, 0, 0), ...long, ...u16(1), ...u16(1)])).toBe('dns-name-too-long');
  });

  it('refuses names made longer than 255 bytes through pointers', () => {
    // A 193-byte name, then a record whose name is 82 bytes of labels + a pointer to it (275).
    const first = [...[63, 63, 63].flatMap((l) => [l, ...new Array(l).fill(0x62)]), 0];
    const pre = [...header(1, 0x8000, 1, 1, 0, 0), ...first, ...u16(1), ...u16(1)];
    const second = [...[40, 40].flatMap((l) => [l, ...new Array(l).fill(0x63)]), 0xc0, 12];
    expect(dropOf([...pre, ...rr(second, DnsType.A, 1, [1, 2, 3, 4])])).toBe('dns-name-too-long');
  });

  it('refuses labels over 63 (the 0x40 and 0x80 length types)', () => {
    for (const len of [64, 0x80 | 5]) {
      expect(dropOf([...header(1, 0, 1, 0, 0, 0), len, ...new Array(len & 0x3f || 64).fill(0x61), 0, ...u16(1), ...u16(1)])).toBe('dns-name-label-too-long');
    }
  });

  it('refuses pointers that do not point backwards, so loops are impossible', () => {
    // A pointer to itself.
    expect(dropOf([...header(1, 0, 1, 0, 0, 0), 0xc0, 12, ...u16(1), ...u16(1)])).toBe('dns-name-pointer-forward');
    // A pointer forward.
    expect(dropOf([...header(1, 0, 1, 0, 0, 0), 0xc0, 20, ...u16(1), ...u16(1), 0, 0, 0, 0])).toBe('dns-name-pointer-forward');
    // Two names pointing at each other: the second points back to the first, which points forward.
    const loop = [...header(1, 0x8000, 1, 1, 0, 0), 1, 0x61, 0xc0, 22, ...u16(1), ...u16(1), ...rr([1, 0x62, 0xc0, 12], 1, 1, [1, 2, 3, 4])];
    expect(dropOf(loop)).toBe('dns-name-pointer-forward');
    // A label run that reaches its own pointer again: label at 12 then pointer back to 12.
    const self = [...header(1, 0, 1, 0, 0, 0), 1, 0x61, 0xc0, 12, ...u16(1), ...u16(1)];
    expect(dropOf(self)).toBe('dns-name-pointer-forward');
  });

  it('refuses truncation at every length, never throwing', () => {
    const full = sampleResponse();
    expect(isDrop(parseDnsMessage(Uint8Array.from(full)))).toBe(false);
    for (let n = 0; n < full.length; n++) expect(isDrop(parseDnsMessage(Uint8Array.from(full.slice(0, n))))).toBe(true);
    expect(dropOf([...full, 0])).toBe('dns-trailing-data');
  });

  it('checks the OPT pseudo-record', () => {
    const q = [...name('a.example'), ...u16(1), ...u16(1)];
    expect(dropOf([...header(1, 0, 1, 1, 0, 0), ...q, ...OPT()])).toBe('dns-opt-misplaced');
    expect(dropOf([...header(1, 0, 1, 0, 0, 2), ...q, ...OPT(), ...OPT()])).toBe('dns-opt-duplicate');
    expect(dropOf([...header(1, 0, 1, 0, 0, 1), ...q, ...rr(name('x'), DnsType.OPT, 0, [], 1232)])).toBe('dns-opt-bad-name');
    expect(dropOf([...header(1, 0, 1, 0, 0, 1), ...q, ...OPT(1232, 0, [0, 10, 0, 5, 1])])).toBe('dns-opt-option-overrun');
    const withCookie = parsed([...header(1, 0, 1, 0, 0, 1), ...q, ...OPT(1232, (1 << 24) | (2 << 16), [0, 10, 0, 2, 9, 9])]);
    expect(withCookie.edns).toMatchObject({ extendedRcode: 1, version: 2, dnssecOk: false });
    expect([...withCookie.edns!.options]).toEqual([0, 10, 0, 2, 9, 9]);
    expect(withCookie.rcode).toBe(16);
  });

  it('reads the SOA minimum for negative caching', () => {
    const soaRdata = [...name('ns1.example'), 0xc0, 12, ...u32(1), ...u32(2), ...u32(3), ...u32(4), ...u32(77)];
    const bytes = Uint8Array.from([...header(1, 0x8183, 1, 0, 1, 0), ...name('example'), ...u16(1), ...u16(1), ...rr([0xc0, 12], DnsType.SOA, 600, soaRdata)]);
    const m = parsed(bytes);
    expect(m.rcode).toBe(DnsRcode.NXDOMAIN);
    expect(readSoaMinimum(bytes, m.authority[0])).toBe(77);
    const short = Uint8Array.from([
      ...header(1, 0x8183, 1, 0, 1, 0),
      ...name('example'),
      ...u16(1),
      ...u16(1),
      ...rr([0xc0, 12], DnsType.SOA, 600, soaRdata.slice(0, -1)),
    ]);
    expect(readSoaMinimum(short, parsed(short).authority[0])).toBe('dns-soa-bad-length');
  });
});

describe('DNS codec: emitting and rewriting', () => {
  it('builds an answer whose records point at the question', () => {
    const out = emitDnsResponse({
      id: 0x4242,
      flags: DNS_FLAG_AA | DNS_FLAG_RD,
      rcode: DnsRcode.NOERROR,
      question: { nameWire: encodeDnsName('gateway.weft.internal'), type: DnsType.A, class: DnsClass.IN },
      answers: [{ type: DnsType.A, class: DnsClass.IN, ttl: 60, rdata: aRdata(parseIpv4('10.0.2.2')) }],
      edns: { udpPayloadSize: 1232, dnssecOk: true },
    });
    const m = parsed(out);
    expect(m.header).toMatchObject({ id: 0x4242, qr: true, aa: true, rd: true, rcode: 0, ancount: 1, arcount: 1 });
    expect(m.answers[0]).toMatchObject({ name: 'gateway.weft.internal', type: DnsType.A, ttl: 60 });
    expect([...m.answers[0].rdata]).toEqual([10, 0, 2, 2]);
    expect(m.edns).toMatchObject({ udpPayloadSize: 1232, dnssecOk: true });
  });

  it('puts extended rcodes into the OPT record', () => {
    const out = emitDnsResponse({
      id: 1,
      flags: 0,
      rcode: DnsRcode.BADVERS,
      question: { nameWire: encodeDnsName('x'), type: 1, class: 1 },
      edns: { udpPayloadSize: 1232, dnssecOk: false },
    });
    const m = parsed(out);
    expect(m.header.rcode).toBe(0);
    expect(m.rcode).toBe(DnsRcode.BADVERS);
  });

  it('builds a header-only FORMERR', () => {
    const m = parsed(emitDnsResponse({ id: 9, flags: DNS_FLAG_RD, rcode: DnsRcode.FORMERR }));
    expect(m.header).toMatchObject({ id: 9, qr: true, rcode: 1, qdcount: 0, ancount: 0, arcount: 0 });
  });

  it('rewrites IDs and ages TTLs, leaving OPT alone', () => {
    const bytes = Uint8Array.from(sampleResponse());
    const m = parsed(bytes);
    const copy = bytes.slice();
    setDnsId(copy, 0xabcd);
    ageDnsTtls(copy, dnsTtlRecords(m), 100);
    const aged = parsed(copy);
    expect(aged.header.id).toBe(0xabcd);
    expect(aged.answers.map((r) => r.ttl)).toEqual([200, 0]);
    expect(aged.edns?.dnssecOk).toBe(true);
    expect(dnsTtlRecords(m)).toHaveLength(2);
  });

  it('truncates for UDP: TC set, question kept, records dropped, OPT for EDNS requesters', () => {
    const bytes = Uint8Array.from(sampleResponse());
    const m = parsed(bytes);
    const t = parsed(truncateDnsResponse(bytes, m, { udpPayloadSize: 1232, dnssecOk: true }));
    expect(t.header).toMatchObject({ id: 0x1234, tc: true, qr: true, rd: true, ra: true, qdcount: 1, ancount: 0, nscount: 0, arcount: 1 });
    expect(t.questions[0]).toMatchObject({ name: 'www.example.com', type: DnsType.A });
    expect(t.edns?.dnssecOk).toBe(true);
    const plain = parsed(truncateDnsResponse(bytes, m));
    expect(plain.edns).toBeUndefined();
    expect(plain.header.tc).toBe(true);
  });

  it('refuses to encode bad names', () => {
    expect(() => encodeDnsName('a..b')).toThrow(RangeError);
    expect(() => encodeDnsName('x'.repeat(64))).toThrow(RangeError);
    expect(() => encodeDnsName(Array(130).fill('ab').join('.'))).toThrow(RangeError);
    expect([...encodeDnsName('.')]).toEqual([0]);
    expect([...encodeDnsName('a.b.')]).toEqual([1, 0x61, 1, 0x62, 0]);
  });
});

describe('DNS codec: hostile input', () => {
  it('never throws on 100 000 random and mutated messages', () => {
    let x = 0x1234567;
    const rand = () => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x;
    };
    const seeds = [sampleResponse(), [...emitDnsQuery({ id: 1, nameWire: encodeDnsName('a.b.c'), type: 1, edns: { udpPayloadSize: 1232, dnssecOk: false } })]];
    let parsedOk = 0;
    for (let i = 0; i < 100_000; i++) {
      let b: Uint8Array;
      if (i % 4 === 0) {
        b = new Uint8Array(rand() % 80);
        for (let j = 0; j < b.length; j++) b[j] = rand() & 0xff;
        if (b.length > 5) b[5] = 1; // QDCOUNT 1 often, so parsing gets past the header
      } else {
        b = Uint8Array.from(seeds[i % 2]);
        for (let k = 1 + (rand() % 4); k > 0; k--) b[rand() % b.length] = rand() & 0xff;
        if (rand() % 3 === 0) b = b.subarray(0, rand() % b.length);
      }
      const m = parseDnsMessage(b);
      if (!isDrop(m)) {
        parsedOk++;
        for (const r of [...m.answers, ...m.authority, ...m.additional]) {
          expect(r.rdataOffset + r.rdata.length).toBeLessThanOrEqual(b.length);
          if (r.type === DnsType.SOA) readSoaMinimum(b, r);
          readDnsName(b, r.rdataOffset);
        }
        truncateDnsResponse(b, m);
      }
    }
    expect(parsedOk).toBeGreaterThan(1000);
  });
});
