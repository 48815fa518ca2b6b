import { beforeEach, describe, expect, it } from 'vitest';
import { DnsServer, weftLocalRecords, type DnsForwarder, type DnsTransport } from '../../core/services/dns-server';
import { openLocalDnsTcp } from '../../core/services/dns-tcp-stream';
import { UpstreamDnsForwarder } from '../../core/services/dns-upstream-forwarder';
import { UpstreamError, type TcpStreamHandlers } from '../../core/upstream';
import { parseIpv4 } from '../../core/wire/address';
import { DnsRcode, DnsType, emitDnsQuery, encodeDnsName, parseDnsMessage, readDnsName, type DnsMessage } from '../../core/wire/dns';
import { isDrop } from '../../core/wire/parse-result';
import { FakeUpstream } from '../support/fake-upstream';

// ---- helpers ----------------------------------------------------------------------------------

const u16 = (v: number) => [(v >> 8) & 0xff, v & 0xff];
const u32 = (v: number) => [(v >>> 24) & 0xff, (v >>> 16) & 0xff, (v >>> 8) & 0xff, v & 0xff];

interface QueryOpts {
  id?: number;
  type?: number;
  edns?: number;
  dnssecOk?: boolean;
  rd?: boolean;
}

function query(name: string, o: QueryOpts = {}): Uint8Array {
  return emitDnsQuery({
    id: o.id ?? 0x1111,
    nameWire: encodeDnsName(name),
    type: o.type ?? DnsType.A,
    rd: o.rd,
    edns: o.edns === undefined ? undefined : { udpPayloadSize: o.edns, dnssecOk: o.dnssecOk ?? false },
  });
}

function parse(b: Uint8Array): DnsMessage {
  const m = parseDnsMessage(b);
  if (isDrop(m)) throw new Error(`reply does not parse: ${m}`);
  return m;
}

interface Rr {
  type: number;
  ttl: number;
  rdata: number[];
}

/** An upstream answer to `q` (its ID and question copied), built byte by byte. */
function answerTo(
  q: Uint8Array,
  o: { rcode?: number; answers?: Rr[]; soa?: { ttl: number; minimum: number }; tc?: boolean; id?: number; opt?: boolean } = {},
): Uint8Array {
  const m = parse(q);
  const question = m.questions[0];
  const rr = (r: Rr) => [0xc0, 12, ...u16(r.type), ...u16(1), ...u32(r.ttl), ...u16(r.rdata.length), ...r.rdata];
  const answers = (o.answers ?? []).map(rr);
  const soaRdata = [...encodeDnsName('ns.example'), ...encodeDnsName('admin.example'), ...u32(1), ...u32(2), ...u32(3), ...u32(4), ...u32(o.soa?.minimum ?? 0)];
  const authority = o.soa ? [rr({ type: DnsType.SOA, ttl: o.soa.ttl, rdata: soaRdata })] : [];
  const opt = (o.opt ?? m.edns !== undefined) ? [0, ...u16(DnsType.OPT), ...u16(1232), ...u32(m.edns?.dnssecOk ? 0x8000 : 0), ...u16(0)] : [];
  const flags = 0x8000 | (m.header.flags & 0x0100) | 0x0080 | (o.tc ? 0x0200 : 0) | (o.rcode ?? 0);
  return Uint8Array.from([
    ...u16(o.id ?? m.header.id),
    ...u16(flags),
    ...u16(1),
    ...u16(answers.length),
    ...u16(authority.length),
    ...u16(opt.length ? 1 : 0),
    ...question.nameWire,
    ...u16(question.type),
    ...u16(question.class),
    ...answers.flat(),
    ...authority.flat(),
    ...opt,
  ]);
}

const A = (ip: string, ttl = 300): Rr => ({
  type: DnsType.A,
  ttl,
  rdata: [
    ...parseIpv4(ip)
      .toString(16)
      .padStart(8, '0')
      .match(/../g)!
      .map((h) => parseInt(h, 16)),
  ],
});

interface Forward {
  query: Uint8Array;
  transport: DnsTransport;
  done: (reply: Uint8Array | undefined) => void;
  cancelled: boolean;
}

class FakeForwarder implements DnsForwarder {
  forwards: Forward[] = [];
  forward(q: Uint8Array, transport: DnsTransport, done: (reply: Uint8Array | undefined) => void) {
    const f: Forward = { query: q.slice(), transport, done, cancelled: false };
    this.forwards.push(f);
    return { cancel: () => void (f.cancelled = true) };
  }
  /** Answers the latest forward (or `f`) with answerTo(its query, o). */
  answer(o: Parameters<typeof answerTo>[1] = {}, f = this.forwards[this.forwards.length - 1]): void {
    f.done(answerTo(f.query, o));
  }
}

let counter = 0;
function randomSource(): (out: Uint8Array) => void {
  return (out) => {
    for (let i = 0; i < out.length; i++) out[i] = (counter = (counter * 1103515245 + 12345) >>> 0) >>> 24;
  };
}

function makeServer(extra: Partial<ConstructorParameters<typeof DnsServer>[0]> = {}) {
  const forwarder = new FakeForwarder();
  const drops: string[] = [];
  const server = new DnsServer({
    localRecords: weftLocalRecords(parseIpv4('10.0.2.2'), [['MyApp.Test', parseIpv4('10.0.2.99')]]),
    forwarder,
    random: randomSource(),
    onDrop: (r) => drops.push(r),
    ...extra,
  });
  return { server, forwarder, drops };
}

/** Sends one query and returns every reply it got (synchronously, so far). */
function ask(server: DnsServer, q: Uint8Array, now = 0, transport: DnsTransport = 'udp'): Uint8Array[] {
  const replies: Uint8Array[] = [];
  server.query(q, transport, now, (r) => replies.push(r));
  return replies;
}

function one(server: DnsServer, q: Uint8Array, now = 0, transport: DnsTransport = 'udp'): DnsMessage {
  const replies = ask(server, q, now, transport);
  expect(replies).toHaveLength(1);
  return parse(replies[0]);
}

// ---- local names ------------------------------------------------------------------------------

describe('DnsServer: guest names (one LAN)', () => {
  it("answers <hostname>.weft.internal with the guest's lease and its PTR; a later lease takes the name, a guest's old name goes", () => {
    const { server } = makeServer();
    expect(server.setGuestName('Guest-A', parseIpv4('10.0.2.15'))).toBe('guest-a.weft.internal');
    expect([...one(server, query('guest-a.weft.internal')).answers[0].rdata]).toEqual([10, 0, 2, 15]);
    const ptr = one(server, query('15.2.0.10.in-addr.arpa', { type: DnsType.PTR }));
    expect(readDnsName(ptr.answers[0].rdata, 0)).toMatchObject({ name: 'guest-a.weft.internal' });
    // Another guest now calls itself guest-a: the name follows the newer lease.
    server.setGuestName('guest-a', parseIpv4('10.0.2.16'));
    expect([...one(server, query('guest-a.weft.internal')).answers[0].rdata]).toEqual([10, 0, 2, 16]);
    // That guest renames itself: its old name is gone.
    server.setGuestName('guest-b', parseIpv4('10.0.2.16'));
    expect(one(server, query('guest-a.weft.internal')).rcode).toBe(DnsRcode.NXDOMAIN);
    expect([...one(server, query('guest-b.weft.internal')).answers[0].rdata]).toEqual([10, 0, 2, 16]);
  });

  it('takes no name that is not one DNS label, and never a configured record', () => {
    const { server } = makeServer();
    for (const bad of ['', 'a.b', 'bad_name', '-x', 'x'.repeat(64), 'gäst']) expect(server.setGuestName(bad, parseIpv4('10.0.2.15'))).toBeUndefined();
    expect(server.setGuestName('gateway', parseIpv4('10.0.2.15'))).toBeUndefined();
    expect([...one(server, query('gateway.weft.internal')).answers[0].rdata]).toEqual([10, 0, 2, 2]);
  });
});

describe('DnsServer: local names', () => {
  it('answers A for a local name, case-insensitively, echoing ID and spelling', () => {
    const { server, forwarder } = makeServer();
    const m = one(server, query('GateWay.Weft.Internal', { id: 0xbeef }));
    expect(m.header).toMatchObject({ id: 0xbeef, qr: true, aa: true, rd: true, ra: true, rcode: 0, ancount: 1 });
    expect(m.questions[0].name).toBe('GateWay.Weft.Internal');
    expect(m.answers[0]).toMatchObject({ type: DnsType.A, ttl: 60 });
    expect([...m.answers[0].rdata]).toEqual([10, 0, 2, 2]);
    expect([...one(server, query('host.weft.internal')).answers[0].rdata]).toEqual([10, 0, 2, 2]);
    expect([...one(server, query('myapp.test.')).answers[0].rdata]).toEqual([10, 0, 2, 99]);
    expect(forwarder.forwards).toHaveLength(0);
    expect(server.counters().answeredLocal).toBe(3);
  });

  it('answers AAAA and other types for a local name with NOERROR and no records (NODATA)', () => {
    const { server } = makeServer();
    for (const type of [DnsType.AAAA, DnsType.MX, DnsType.TXT, DnsType.HTTPS]) {
      const m = one(server, query('gateway.weft.internal', { type }));
      expect(m.rcode).toBe(DnsRcode.NOERROR);
      expect(m.answers).toHaveLength(0);
      expect(m.authority).toHaveLength(0);
    }
  });

  it('answers NXDOMAIN under the local domain and NODATA for the domain itself', () => {
    const { server, forwarder } = makeServer();
    expect(one(server, query('nope.weft.internal')).rcode).toBe(DnsRcode.NXDOMAIN);
    expect(one(server, query('a.gateway.weft.internal', { type: DnsType.AAAA })).rcode).toBe(DnsRcode.NXDOMAIN);
    const apex = one(server, query('weft.internal'));
    expect(apex.rcode).toBe(DnsRcode.NOERROR);
    expect(apex.answers).toHaveLength(0);
    // A user record outside the local domain does not make its parent local.
    ask(server, query('other.test'));
    expect(forwarder.forwards).toHaveLength(1);
  });

  it('answers PTR for local addresses', () => {
    const { server } = makeServer();
    const m = one(server, query('99.2.0.10.in-addr.arpa', { type: DnsType.PTR }));
    expect(m.answers).toHaveLength(1);
    const target = readDnsName(makeReplyBytes(server, query('99.2.0.10.in-addr.arpa', { type: DnsType.PTR })), m.answers[0].rdataOffset);
    expect(target).toMatchObject({ name: 'myapp.test' });
  });

  it('returns OPT only to requesters that sent one, echoing DO', () => {
    const { server } = makeServer();
    expect(one(server, query('gateway.weft.internal')).edns).toBeUndefined();
    expect(one(server, query('gateway.weft.internal', { edns: 4096, dnssecOk: true })).edns).toMatchObject({ udpPayloadSize: 1232, dnssecOk: true });
  });

  it('copies RD from the query', () => {
    const { server } = makeServer();
    expect(one(server, query('gateway.weft.internal', { rd: false })).header.rd).toBe(false);
  });
});

function makeReplyBytes(server: DnsServer, q: Uint8Array): Uint8Array {
  const r = ask(server, q);
  return r[0];
}

// ---- hostile queries --------------------------------------------------------------------------

describe('DnsServer: hostile and malformed queries', () => {
  const header = (id: number, flags: number, qd: number, an = 0, ns = 0, ar = 0) => [...u16(id), ...u16(flags), ...u16(qd), ...u16(an), ...u16(ns), ...u16(ar)];
  const q = [...encodeDnsName('a.example'), ...u16(1), ...u16(1)];

  function expectFormerr(bytes: number[] | Uint8Array, id: number) {
    const { server, forwarder, drops } = makeServer();
    const m = one(server, Uint8Array.from(bytes));
    expect(m.header).toMatchObject({ id, qr: true, rcode: DnsRcode.FORMERR });
    expect(server.counters()).toMatchObject({ queries: 1, formerr: 1, forwarded: 0 });
    expect(forwarder.forwards).toHaveLength(0);
    expect(drops).toHaveLength(1);
    return drops[0];
  }

  it('drops and counts messages too short for a header', () => {
    const { server, drops } = makeServer();
    for (let n = 0; n < 12; n++) expect(ask(server, new Uint8Array(n))).toHaveLength(0);
    expect(server.counters()).toMatchObject({ queries: 12, dropped: 12, formerr: 0 });
    expect(new Set(drops)).toEqual(new Set(['dns-truncated-header']));
  });

  it('answers FORMERR to every truncation of a query past the header', () => {
    const full = query('www.example.com', { edns: 1232, id: 0x7777 });
    for (let n = 12; n < full.length; n++) expectFormerr(full.subarray(0, n), 0x7777);
  });

  it('answers FORMERR to compression-pointer loops', () => {
    expect(expectFormerr([...header(5, 0x0100, 1), 0xc0, 12, ...u16(1), ...u16(1)], 5)).toBe('dns-name-pointer-forward');
    expect(expectFormerr([...header(6, 0x0100, 1), 1, 0x61, 0xc0, 12, ...u16(1), ...u16(1)], 6)).toBe('dns-name-pointer-forward');
  });

  it('answers FORMERR to labels over 63 and names over 255', () => {
    expect(expectFormerr([...header(7, 0, 1), 64, ...new Array(64).fill(0x61), 0, ...u16(1), ...u16(1)], 7)).toBe('dns-name-label-too-long');
    const long = [...[63, 63, 63, 63].flatMap((l) => [l, ...new Array(l).fill(0x61)]), 0];
    expect(expectFormerr([...header(8, 0, 1), ...long, ...u16(1), ...u16(1)], 8)).toBe('dns-name-too-long');
  });

  it('answers FORMERR to QDCOUNT 0 and QDCOUNT 50', () => {
    expect(expectFormerr(header(9, 0x0100, 0), 9)).toBe('dns-qdcount-not-one');
    const fifty = [...header(10, 0x0100, 50), ...Array.from({ length: 50 }, () => q).flat()];
    expect(expectFormerr(fifty, 10)).toBe('dns-qdcount-not-one');
    // QDCOUNT 50 with only one question present: truncated.
    expect(expectFormerr([...header(11, 0x0100, 50), ...q], 11)).toBe('dns-name-truncated');
  });

  it('drops responses sent as queries, so two servers cannot ping-pong', () => {
    const { server, drops } = makeServer();
    expect(ask(server, Uint8Array.from([...header(1, 0x8000, 1), ...q]))).toHaveLength(0);
    expect(drops).toEqual(['dns-query-is-response']);
    expect(server.counters().dropped).toBe(1);
  });

  it('answers NOTIMP to other opcodes, BADVERS to EDNS versions > 0, REFUSED to zone transfers', () => {
    const { server } = makeServer();
    expect(one(server, Uint8Array.from([...header(3, 2 << 11, 1), ...q])).header).toMatchObject({ id: 3, rcode: DnsRcode.NOTIMP, opcode: 2 });
    const v1 = emitDnsQuery({ id: 4, nameWire: encodeDnsName('a.example'), type: 1, edns: { udpPayloadSize: 1232, dnssecOk: false, version: 1 } });
    const bad = one(server, v1);
    expect(bad.rcode).toBe(DnsRcode.BADVERS);
    expect(bad.edns?.version).toBe(0);
    expect(one(server, query('example.com', { type: DnsType.AXFR })).rcode).toBe(DnsRcode.REFUSED);
    expect(server.counters()).toMatchObject({ notimp: 1, formerr: 1, refused: 1, forwarded: 0 });
  });

  it('never throws on 100 000 random and mutated messages, and answers each accepted one exactly once', () => {
    let x = 0x9e3779b9;
    const rand = () => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return x;
    };
    const forwarder: DnsForwarder = {
      forward(qb, _t, done) {
        const r = rand() % 4;
        if (r === 0) done(undefined);
        else if (r === 1)
          done(qb); // garbage reply (a query)
        else if (r === 2) {
          const reply = answerToSafe(qb);
          if (reply) for (let k = rand() % 3; k > 0; k--) reply[rand() % reply.length] = rand() & 0xff;
          done(reply);
        }
        // r === 3: never answers; poll() must SERVFAIL it
      },
    };
    const server = new DnsServer({ localRecords: weftLocalRecords(parseIpv4('10.0.2.2')), forwarder, random: randomSource(), cacheEntries: 64 });
    const seeds = [
      query('www.example.com', { edns: 1232 }),
      query('gateway.weft.internal'),
      query('x.weft.internal', { type: DnsType.AAAA }),
      query('example.org', { type: DnsType.TXT }),
    ];
    let accepted = 0;
    let replies = 0;
    for (let i = 0; i < 100_000; i++) {
      let b: Uint8Array;
      if (i % 5 === 0) {
        b = new Uint8Array(rand() % 64);
        for (let j = 0; j < b.length; j++) b[j] = rand() & 0xff;
      } else {
        b = seeds[i % seeds.length].slice();
        for (let k = rand() % 4; k > 0; k--) b[rand() % b.length] = rand() & 0xff;
        if (rand() % 4 === 0) b = b.subarray(0, rand() % (b.length + 1));
      }
      let got = 0;
      const ok = server.query(b, rand() % 2 ? 'udp' : 'tcp', i, () => {
        got++;
        replies++;
      });
      if (ok) accepted++;
      expect(got).toBeLessThanOrEqual(1);
      if (i % 1000 === 999) server.poll(i);
    }
    server.poll(1e12);
    expect(replies).toBe(accepted);
    const c = server.counters();
    expect(c.queries).toBe(100_000);
    expect(c.queries - c.dropped).toBe(accepted);
    expect(c.pending).toBe(0);
    expect(c.cacheEntries).toBeLessThanOrEqual(64);
  }, 60_000);
});

function answerToSafe(q: Uint8Array): Uint8Array | undefined {
  try {
    return answerTo(q, { answers: [A('192.0.2.1', 30)] });
  } catch {
    return undefined;
  }
}

// ---- forwarding and caching -------------------------------------------------------------------

describe('DnsServer: forwarding', () => {
  it('forwards with a fresh random ID and maps the answer back to the guest ID', () => {
    const { server, forwarder } = makeServer();
    const replies = ask(server, query('www.example.com', { id: 0x1234 }));
    expect(replies).toHaveLength(0);
    expect(forwarder.forwards).toHaveLength(1);
    const f = forwarder.forwards[0];
    expect(f.transport).toBe('udp');
    const sent = parse(f.query);
    expect(sent.header.id).not.toBe(0x1234);
    expect(sent.questions[0].name).toBe('www.example.com');
    f.done(answerTo(f.query, { answers: [A('192.0.2.7')] }));
    expect(replies).toHaveLength(1);
    const m = parse(replies[0]);
    expect(m.header.id).toBe(0x1234);
    expect([...m.answers[0].rdata]).toEqual([192, 0, 2, 7]);
    expect(server.counters()).toMatchObject({ forwarded: 1, answeredForwarded: 1 });
  });

  it('joins identical queries in flight, each answered with its own ID and spelling', () => {
    const { server, forwarder } = makeServer();
    const a = ask(server, query('www.example.com', { id: 1 }));
    const b = ask(server, query('WWW.Example.com', { id: 2 }));
    const c = ask(server, query('www.example.com', { id: 3 }), 0, 'tcp');
    expect(forwarder.forwards.map((f) => f.transport)).toEqual(['udp', 'tcp']);
    forwarder.answer({ answers: [A('192.0.2.7')] }, forwarder.forwards[0]);
    expect(parse(a[0]).header.id).toBe(1);
    expect(parse(b[0]).header.id).toBe(2);
    expect(parse(b[0]).questions[0].name).toBe('WWW.Example.com');
    expect(parse(b[0]).answers[0].name).toBe('WWW.Example.com');
    expect(c).toHaveLength(0);
    expect(server.counters().deduplicated).toBe(1);
  });

  it('passes every record type through untouched, with EDNS', () => {
    const { server, forwarder } = makeServer();
    const types = [
      DnsType.A,
      DnsType.AAAA,
      DnsType.CNAME,
      DnsType.MX,
      DnsType.TXT,
      DnsType.SRV,
      DnsType.PTR,
      DnsType.SOA,
      DnsType.NS,
      DnsType.CAA,
      DnsType.HTTPS,
      DnsType.SVCB,
    ];
    for (const type of types) {
      const replies = ask(server, query('t.example', { type, edns: 1232, dnssecOk: true, id: type }));
      const rdata = [type & 0xff, 1, 2, 3, 4, 5];
      const upstream = answerTo(forwarder.forwards[forwarder.forwards.length - 1].query, { answers: [{ type, ttl: 100, rdata }] });
      forwarder.forwards[forwarder.forwards.length - 1].done(upstream);
      const m = parse(replies[0]);
      expect(m.answers[0].type).toBe(type);
      expect([...m.answers[0].rdata]).toEqual(rdata);
      expect(m.edns?.dnssecOk).toBe(true);
      // Byte for byte the upstream's answer but for the ID.
      expect([...replies[0].subarray(2)]).toEqual([...upstream.subarray(2)]);
    }
  });

  it('answers SERVFAIL when the forwarder fails, has no answer in time, or answers nonsense', () => {
    const { server, forwarder } = makeServer();
    const failed = ask(server, query('a.example', { id: 1 }), 0);
    forwarder.forwards[0].done(undefined);
    expect(parse(failed[0]).header).toMatchObject({ id: 1, rcode: DnsRcode.SERVFAIL });

    const slow = ask(server, query('b.example', { id: 2 }), 1000);
    expect(server.nextDeadline()).toBe(6000);
    server.poll(5999);
    expect(slow).toHaveLength(0);
    server.poll(6000);
    expect(parse(slow[0]).header).toMatchObject({ id: 2, rcode: DnsRcode.SERVFAIL });
    expect(parse(slow[0]).questions[0].name).toBe('b.example');
    expect(forwarder.forwards[1].cancelled).toBe(true);
    forwarder.answer({ answers: [A('192.0.2.1')] }, forwarder.forwards[1]); // too late: ignored
    expect(slow).toHaveLength(1);
    expect(server.nextDeadline()).toBeUndefined();

    const wrongId = ask(server, query('c.example', { id: 3 }), 7000);
    forwarder.answer({ id: 0xdead ^ parse(forwarder.forwards[2].query).header.id, answers: [A('192.0.2.1')] }, forwarder.forwards[2]);
    expect(parse(wrongId[0]).rcode).toBe(DnsRcode.SERVFAIL);

    const wrongQuestion = ask(server, query('d.example', { id: 4 }), 7000);
    const other = answerTo(query('e.example', { id: parse(forwarder.forwards[3].query).header.id }), { answers: [A('192.0.2.1')] });
    forwarder.forwards[3].done(other);
    expect(parse(wrongQuestion[0]).rcode).toBe(DnsRcode.SERVFAIL);

    expect(server.counters().servfail).toBe(4);
    expect(server.counters().pending).toBe(0);
  });

  it('answers SERVFAIL without a forwarder', () => {
    const server = new DnsServer({ localRecords: new Map(), random: randomSource() });
    expect(one(server, query('example.com')).rcode).toBe(DnsRcode.SERVFAIL);
  });

  it('bounds the queries in flight', () => {
    const { server, forwarder } = makeServer({ maxPending: 2 });
    ask(server, query('a.example'));
    ask(server, query('b.example'));
    expect(one(server, query('c.example')).rcode).toBe(DnsRcode.SERVFAIL);
    expect(forwarder.forwards).toHaveLength(2);
  });
});

describe('DnsServer: cache', () => {
  let env: ReturnType<typeof makeServer>;
  beforeEach(() => {
    env = makeServer();
  });

  it('answers from the cache until the TTL runs out, counting the TTL down', () => {
    const { server, forwarder } = env;
    ask(server, query('www.example.com'), 0);
    forwarder.answer({ answers: [A('192.0.2.7', 300), A('192.0.2.8', 120)] });
    const m = one(server, query('www.example.com', { id: 0x4321 }), 10_500);
    expect(m.header.id).toBe(0x4321);
    expect(m.answers.map((r) => r.ttl)).toEqual([290, 110]);
    expect(server.counters()).toMatchObject({ answeredFromCache: 1, forwarded: 1 });
    expect(one(server, query('www.example.com'), 119_999).answers.map((r) => r.ttl)).toEqual([181, 1]);
    expect(ask(server, query('www.example.com'), 120_000)).toHaveLength(0); // expired: forwarded again
    expect(forwarder.forwards).toHaveLength(2);
  });

  it('keys the cache by type, class, EDNS and the DO bit', () => {
    const { server, forwarder } = env;
    ask(server, query('www.example.com'));
    forwarder.answer({ answers: [A('192.0.2.7')] });
    ask(server, query('www.example.com', { type: DnsType.AAAA }));
    ask(server, query('www.example.com', { edns: 1232 }));
    ask(server, query('www.example.com', { edns: 1232, dnssecOk: true }));
    expect(forwarder.forwards).toHaveLength(4);
    expect(one(server, query('WWW.EXAMPLE.COM')).answers).toHaveLength(1);
  });

  it('caches NXDOMAIN and NODATA for the SOA minimum (RFC 2308), and not without an SOA', () => {
    const { server, forwarder } = env;
    ask(server, query('nx.example'), 0);
    forwarder.answer({ rcode: DnsRcode.NXDOMAIN, soa: { ttl: 3600, minimum: 30 } });
    const cached = one(server, query('nx.example'), 29_000);
    expect(cached.rcode).toBe(DnsRcode.NXDOMAIN);
    expect(cached.authority[0].ttl).toBe(3600 - 29);
    expect(ask(server, query('nx.example'), 30_000)).toHaveLength(0);
    expect(forwarder.forwards).toHaveLength(2);

    // Time only moves forward (the server stores answers as of the latest `now` it saw).
    ask(server, query('nodata.example', { type: DnsType.AAAA }), 100_000);
    forwarder.answer({ soa: { ttl: 20, minimum: 600 } });
    expect(one(server, query('nodata.example', { type: DnsType.AAAA }), 119_000).answers).toHaveLength(0);
    expect(ask(server, query('nodata.example', { type: DnsType.AAAA }), 120_000)).toHaveLength(0);

    ask(server, query('nosoa.example'), 200_000);
    forwarder.answer({ rcode: DnsRcode.NXDOMAIN });
    expect(ask(server, query('nosoa.example'), 200_001)).toHaveLength(0);

    ask(server, query('fail.example'), 200_000);
    forwarder.answer({ rcode: DnsRcode.SERVFAIL });
    expect(ask(server, query('fail.example'), 200_001)).toHaveLength(0);
  });

  it('evicts the least recently used entry when full', () => {
    const { server, forwarder } = makeServer({ cacheEntries: 2 });
    for (const n of ['a', 'b']) {
      ask(server, query(`${n}.example`));
      forwarder.answer({ answers: [A('192.0.2.1')] });
    }
    one(server, query('a.example'), 1); // a is now the most recent
    ask(server, query('c.example'));
    forwarder.answer({ answers: [A('192.0.2.1')] });
    expect(server.counters().cacheEntries).toBe(2);
    expect(ask(server, query('a.example'), 2)).toHaveLength(1);
    expect(ask(server, query('b.example'), 2)).toHaveLength(0); // evicted
  });

  it('does not cache answers with TTL 0', () => {
    const { server, forwarder } = env;
    ask(server, query('zero.example'));
    forwarder.answer({ answers: [A('192.0.2.1', 0)] });
    expect(ask(server, query('zero.example'), 1)).toHaveLength(0);
  });
});

describe('DnsServer: truncation', () => {
  const bigTxt: Rr = {
    type: DnsType.TXT,
    ttl: 300,
    rdata: Array.from({ length: 16 }, () => [255, ...new Array(255).fill(0x78)]).flat(),
  };

  it('sets TC on a 4 KB TXT answer over UDP, and gives it whole over TCP', () => {
    const { server, forwarder } = makeServer();
    const udp = ask(server, query('big.example', { type: DnsType.TXT, edns: 1232, id: 5 }), 0, 'udp');
    forwarder.answer({ answers: [bigTxt] });
    expect(udp).toHaveLength(1);
    const t = parse(udp[0]);
    expect(t.header).toMatchObject({ id: 5, tc: true, ancount: 0 });
    expect(t.questions[0]).toMatchObject({ name: 'big.example', type: DnsType.TXT });
    expect(t.edns).toBeDefined();
    expect(udp[0].length).toBeLessThanOrEqual(1232);
    // The guest retries over TCP: the whole answer (here from the cache).
    const full = one(server, query('big.example', { type: DnsType.TXT, edns: 1232, id: 6 }), 1, 'tcp');
    expect(full.header.tc).toBe(false);
    expect(full.answers[0].rdata.length).toBe(4096);
    expect(server.counters().truncated).toBe(1);
  });

  it('forwards over TCP when the upstream UDP answer was itself truncated', () => {
    const { server, forwarder } = makeServer();
    const udp = ask(server, query('big.example', { type: DnsType.TXT, edns: 1232 }), 0, 'udp');
    forwarder.answer({ tc: true });
    expect(parse(udp[0]).header.tc).toBe(true);
    const tcp = ask(server, query('big.example', { type: DnsType.TXT, edns: 1232 }), 1, 'tcp');
    expect(forwarder.forwards[1].transport).toBe('tcp');
    forwarder.answer({ answers: [bigTxt] });
    expect(parse(tcp[0]).answers[0].rdata.length).toBe(4096);
  });

  it('limits requesters without EDNS to 512 bytes and honours larger EDNS sizes', () => {
    const { server, forwarder } = makeServer();
    const many = Array.from({ length: 40 }, (_, i) => A(`192.0.2.${i + 1}`)); // 40 × 16 bytes + question
    const plain = ask(server, query('many.example'), 0);
    forwarder.answer({ answers: many });
    expect(parse(plain[0]).header.tc).toBe(true);
    expect(parse(plain[0]).edns).toBeUndefined();
    const edns = ask(server, query('many.example', { edns: 4096 }), 0);
    forwarder.answer({ answers: many });
    expect(parse(edns[0]).header.tc).toBe(false);
    expect(parse(edns[0]).answers).toHaveLength(40);
    // From the cache too.
    expect(one(server, query('many.example'), 1).header.tc).toBe(true);
    expect(one(server, query('many.example', { edns: 1232 }), 1).answers).toHaveLength(40);
  });
});

// ---- DNS over TCP for guests ------------------------------------------------------------------

describe('openLocalDnsTcp', () => {
  function setup() {
    const { server, forwarder } = makeServer();
    const tasks: (() => void)[] = [];
    const events: string[] = [];
    const data: Uint8Array[] = [];
    const handlers: TcpStreamHandlers = {
      onConnect: () => events.push('connect'),
      onData: (d) => {
        events.push('data');
        data.push(d);
      },
      onEnd: () => events.push('end'),
      onDrain: () => events.push('drain'),
      onClose: (e) => events.push(e ? `close:${e.kind}` : 'close'),
    };
    const stream = openLocalDnsTcp(
      server,
      handlers,
      () => 0,
      (fn) => tasks.push(fn),
    );
    const run = () => {
      while (tasks.length) tasks.shift()!();
    };
    const frame = (m: Uint8Array) => Uint8Array.from([...u16(m.length), ...m]);
    const replies = () => {
      const all = Uint8Array.from(data.flatMap((d) => [...d]));
      const out: DnsMessage[] = [];
      for (let p = 0; p < all.length; ) {
        const len = (all[p] << 8) | all[p + 1];
        out.push(parse(all.subarray(p + 2, p + 2 + len)));
        p += 2 + len;
      }
      return out;
    };
    return { server, forwarder, stream, events, run, frame, replies };
  }

  it('connects through the scheduler, answers pipelined queries split across writes, then ends', () => {
    const { stream, events, run, frame, replies } = setup();
    expect(events).toEqual([]);
    run();
    expect(events).toEqual(['connect']);
    const both = Uint8Array.from([...frame(query('gateway.weft.internal', { id: 1 })), ...frame(query('host.weft.internal', { id: 2 }))]);
    stream.write(both.subarray(0, 5));
    stream.write(both.subarray(5, 40));
    stream.write(both.subarray(40));
    expect(events).toEqual(['connect']); // nothing delivered from inside write()
    run();
    expect(replies().map((m) => m.header.id)).toEqual([1, 2]);
    stream.end();
    run();
    expect(events.slice(-2)).toEqual(['end', 'close']);
  });

  it('waits for forwarded answers after the guest ends, and holds data while paused', () => {
    const { stream, forwarder, events, run, frame, replies } = setup();
    run();
    stream.write(frame(query('www.example.com', { id: 9 })));
    stream.end();
    run();
    expect(events).toEqual(['connect']);
    expect(forwarder.forwards[0].transport).toBe('tcp');
    stream.pause();
    forwarder.answer({ answers: [A('192.0.2.7')] });
    run();
    expect(events).toEqual(['connect']);
    stream.resume();
    run();
    expect(replies().map((m) => m.header.id)).toEqual([9]);
    expect(events).toEqual(['connect', 'data', 'end', 'close']);
  });

  it('skips messages the server drops and stays silent after destroy()', () => {
    const { stream, forwarder, events, run, frame } = setup();
    run();
    stream.write(frame(new Uint8Array(3))); // too short for a header: dropped, no reply owed
    stream.write(frame(query('www.example.com')));
    run();
    stream.destroy();
    forwarder.answer({ answers: [A('192.0.2.7')] });
    stream.end();
    run();
    expect(events).toEqual(['connect']);
  });

  it('applies back-pressure past 32 queries in flight and drains when answers come', () => {
    const { stream, forwarder, events, run, frame } = setup();
    run();
    const results: boolean[] = [];
    for (let i = 0; i < 34; i++) results.push(stream.write(frame(query(`n${i}.example`))));
    expect(results.indexOf(false)).toBe(31); // the 32nd query fills the window
    expect(forwarder.forwards).toHaveLength(32); // the last two wait in the input buffer
    for (const f of forwarder.forwards.slice(0, 10)) forwarder.answer({ answers: [A('192.0.2.1')] }, f);
    run();
    expect(events).toContain('drain');
    expect(forwarder.forwards).toHaveLength(34);
  });
});

// ---- forwarding through an Upstream -----------------------------------------------------------

describe('UpstreamDnsForwarder', () => {
  const resolver1 = { ip: parseIpv4('192.0.2.53'), port: 53 };
  const resolver2 = { ip: parseIpv4('198.51.100.53'), port: 5353 };

  it('sends UDP queries over a small pool of flows and matches replies by ID and source', () => {
    const upstream = new FakeUpstream();
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1], poolSize: 2 });
    const got: (Uint8Array | undefined)[][] = [[], [], []];
    for (let i = 0; i < 3; i++) fwd.forward(query(`q${i}.example`, { id: 100 + i }), 'udp', (r) => got[i].push(r));
    expect(upstream.udp).toHaveLength(2);
    expect(upstream.udp[0].dst).toEqual(resolver1);
    const flowOf = (id: number) => upstream.udp.find((f) => f.sent.some((s) => ((s[0] << 8) | s[1]) === id))!;
    const reply1 = answerTo(query('q1.example', { id: 101 }));
    flowOf(101).handlers.onDatagram(reply1, resolver2); // wrong source: ignored
    flowOf(101).handlers.onDatagram(answerTo(query('zz.example', { id: 999 })), resolver1); // unknown ID: ignored
    expect(got[1]).toHaveLength(0);
    flowOf(101).handlers.onDatagram(reply1, resolver1);
    expect(got[1]).toEqual([reply1]);
    flowOf(101).handlers.onDatagram(reply1, resolver1); // duplicate: ignored
    expect(got[1]).toHaveLength(1);
  });

  it('retries on the next resolver when a flow fails, and fails when none is left', () => {
    const upstream = new FakeUpstream();
    const errors: string[] = [];
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1, resolver2], onResolverError: (r, why) => errors.push(`${r.port}:${why}`) });
    const got: (Uint8Array | undefined)[] = [];
    fwd.forward(query('a.example', { id: 1 }), 'udp', (r) => got.push(r));
    upstream.udp[0].handlers.onError(new UpstreamError('refused', 'port unreachable'));
    expect(upstream.udp[0].closed).toBe(true);
    expect(upstream.udp[1].dst).toEqual(resolver2);
    expect(upstream.udp[1].sent).toHaveLength(1);
    upstream.udp[1].handlers.onError(new UpstreamError('refused', 'port unreachable'));
    expect(got).toEqual([undefined]);
    expect(errors).toEqual(['53:refused', '5353:refused']);
  });

  it('moves to the next resolver after a timeout (cancel) and closes idle flows of the old one', () => {
    const upstream = new FakeUpstream();
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1, resolver2] });
    const h = fwd.forward(query('a.example', { id: 1 }), 'udp', () => {});
    h.cancel();
    expect(upstream.udp[0].closed).toBe(true);
    fwd.forward(query('b.example', { id: 2 }), 'udp', () => {});
    expect(upstream.udp[1].dst).toEqual(resolver2);
    expect(fwd.openFlows).toBe(1);
  });

  it('retires a flow after queriesPerFlow queries, closing it once answered', () => {
    const upstream = new FakeUpstream();
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1], poolSize: 1, queriesPerFlow: 2 });
    fwd.forward(query('a.example', { id: 1 }), 'udp', () => {});
    fwd.forward(query('b.example', { id: 2 }), 'udp', () => {});
    fwd.forward(query('c.example', { id: 3 }), 'udp', () => {});
    expect(upstream.udp).toHaveLength(2);
    upstream.udp[0].handlers.onDatagram(answerTo(query('a.example', { id: 1 })), resolver1);
    expect(upstream.udp[0].closed).toBe(false);
    upstream.udp[0].handlers.onDatagram(answerTo(query('b.example', { id: 2 })), resolver1);
    expect(upstream.udp[0].closed).toBe(true);
  });

  it('forwards over TCP with 2-byte length framing', () => {
    const upstream = new FakeUpstream();
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1] });
    const got: (Uint8Array | undefined)[] = [];
    const q = query('big.example', { id: 77, type: DnsType.TXT });
    fwd.forward(q, 'tcp', (r) => got.push(r));
    const s = upstream.tcp[0];
    expect(s.dst).toEqual(resolver1);
    expect(s.written).toHaveLength(0);
    s.connect();
    expect([...s.written[0]]).toEqual([...u16(q.length), ...q]);
    const reply = answerTo(q, { answers: [{ type: DnsType.TXT, ttl: 1, rdata: [3, 0x61, 0x62, 0x63] }] });
    const framed = Uint8Array.from([...u16(reply.length), ...reply]);
    s.send(framed.subarray(0, 1));
    s.send(framed.subarray(1, 10));
    expect(got).toHaveLength(0);
    s.send(framed.subarray(10));
    expect(got).toEqual([reply]);
    expect(s.destroyed).toBe(true);
    expect(fwd.openFlows).toBe(0);
  });

  it('fails a TCP query when the connection closes early', () => {
    const upstream = new FakeUpstream();
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1] });
    const got: (Uint8Array | undefined)[] = [];
    fwd.forward(query('a.example'), 'tcp', (r) => got.push(r));
    upstream.tcp[0].fail('refused');
    fwd.forward(query('b.example'), 'tcp', (r) => got.push(r));
    upstream.tcp[1].connect();
    upstream.tcp[1].finish();
    expect(got).toEqual([undefined, undefined]);
    expect(fwd.openFlows).toBe(0);
  });

  it('joins the DnsServer: SERVFAIL on timeout cancels the upstream query', () => {
    const upstream = new FakeUpstream();
    const fwd = new UpstreamDnsForwarder({ upstream, resolvers: [resolver1] });
    const server = new DnsServer({ localRecords: new Map(), forwarder: fwd, random: randomSource() });
    const replies = ask(server, query('a.example', { id: 42 }), 0);
    const sent = upstream.udp[0].sent[0];
    server.poll(5000);
    expect(parse(replies[0]).rcode).toBe(DnsRcode.SERVFAIL);
    upstream.udp[0].handlers.onDatagram(answerTo(sent), resolver1); // late: nobody waits for it
    expect(replies).toHaveLength(1);
    const ok = ask(server, query('b.example', { id: 43 }), 6000);
    const flow = upstream.udp[upstream.udp.length - 1];
    flow.handlers.onDatagram(answerTo(flow.sent[flow.sent.length - 1], { answers: [A('192.0.2.9')] }), resolver1);
    expect(parse(ok[0]).header).toMatchObject({ id: 43, rcode: 0 });
  });
});
