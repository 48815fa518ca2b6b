// The authoritative test server checked with dig, then weft's DnsServer in front of it — the
// UpstreamDnsForwarder over the direct upstream, and DNS over TCP through openLocalDnsTcp — on real
// sockets on 127.0.0.1, queried with dig.
import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomFillSync } from 'node:crypto';
import { DnsServer, weftLocalRecords } from '../../core/services/dns-server';
import { openLocalDnsTcp } from '../../core/services/dns-tcp-stream';
import { UpstreamDnsForwarder } from '../../core/services/dns-upstream-forwarder';
import { parseIpv4 } from '../../core/wire/address';
import { DirectUpstream } from '../../node-host/direct-upstream';
import { DNS_TEST_BIG_TXT_STRINGS, DNS_TEST_RECORDS, DNS_TEST_ZONE, startDnsTestServer, type DnsTestServer } from '../support/dns-test-server';

const Z = DNS_TEST_ZONE;

function findDig(): Promise<string | undefined> {
  return new Promise((resolve) => execFile('dig', ['-v'], (err) => resolve(err ? 'dig is not installed (Debian package dnsutils)' : undefined)));
}
const digMissing = await findDig();
if (digMissing) console.warn(`skipping DNS tests against dig: ${digMissing}`);

function dig(port: number, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile('dig', ['@127.0.0.1', '-p', String(port), '+tries=1', '+time=8', ...args], { timeout: 20_000 }, (err, stdout) => {
      if (err && !stdout) reject(err);
      else resolve(stdout);
    });
  });
}

const short = async (port: number, name: string, type: string): Promise<string[]> =>
  (await dig(port, ['+short', name, type])).split('\n').filter((l) => l !== '');

const status = (out: string): string | undefined => /status: (\w+)/.exec(out)?.[1];

/** dig +short output for every record of `name` and `type` in the test zone. */
function expected(name: string, type: string): string[] {
  return DNS_TEST_RECORDS.filter((r) => r.name === name && r.type === type).map((r) => r.text);
}

const CASES: [string, string][] = [
  [`www.${Z}`, 'A'],
  [`www.${Z}`, 'AAAA'],
  [`alias.${Z}`, 'CNAME'],
  [Z, 'MX'],
  [Z, 'TXT'],
  [`_sip._tcp.${Z}`, 'SRV'],
  [`10.2.0.192.in-addr.arpa`, 'PTR'],
  [Z, 'SOA'],
  [Z, 'NS'],
  [Z, 'CAA'],
  [`svc.${Z}`, 'HTTPS'],
  [`svc.${Z}`, 'SVCB'],
];

/** Checks the answers every server under test must give for the test zone. */
function zoneChecks(port: () => number) {
  for (const [name, type] of CASES) {
    it(`${type} ${name}`, async () => {
      expect(await short(port(), name, type)).toEqual(expected(name, type));
    });
  }

  it('follows a CNAME for A', async () => {
    expect(await short(port(), `alias.${Z}`, 'A')).toEqual([`www.${Z}.`, '192.0.2.10']);
  });

  it('answers AAAA for a name with only an A record with NOERROR and no answers', async () => {
    const out = await dig(port(), [`a-only.${Z}`, 'AAAA']);
    expect(status(out)).toBe('NOERROR');
    expect(out).toMatch(/ANSWER: 0,/);
    expect(await short(port(), `a-only.${Z}`, 'A')).toEqual(['192.0.2.11']);
  });

  it('answers NXDOMAIN for a missing name', async () => {
    expect(status(await dig(port(), [`missing.${Z}`, 'A']))).toBe('NXDOMAIN');
  });

  it('gives the 4 KB TXT record over TCP after a truncated UDP answer', async () => {
    const out = await dig(port(), [`big-txt.${Z}`, 'TXT']);
    expect(out).toContain('Truncated, retrying in TCP mode');
    expect(status(out)).toBe('NOERROR');
    for (const s of DNS_TEST_BIG_TXT_STRINGS) expect(out).toContain(s);
  });
}

describe.skipIf(digMissing)('the DNS test server, queried with dig', () => {
  let server: DnsTestServer;
  beforeAll(async () => {
    server = await startDnsTestServer();
  });
  afterAll(() => server.close());

  zoneChecks(() => server.port);

  it('refuses names outside its zones', async () => {
    expect(status(await dig(server.port, ['example.com', 'A']))).toBe('REFUSED');
  });
});

/** weft's DNS server on real sockets: UDP and TCP on one port of 127.0.0.1. */
async function startFront(dns: DnsServer): Promise<{ port: number; close(): Promise<void> }> {
  const udp = dgram.createSocket('udp4');
  udp.bind(0, '127.0.0.1');
  await once(udp, 'listening');
  const port = udp.address().port;
  udp.on('message', (msg, rinfo) => {
    dns.query(msg, 'udp', Date.now(), (reply) => udp.send(reply, rinfo.port, rinfo.address));
  });
  const timer = setInterval(() => dns.poll(Date.now()), 50);
  const sockets = new Set<net.Socket>();
  const tcp = net.createServer({ allowHalfOpen: true }, (socket) => {
    sockets.add(socket);
    const stream = openLocalDnsTcp(
      dns,
      {
        onConnect: () => {},
        onData: (d) => socket.write(d),
        onEnd: () => socket.end(),
        onDrain: () => socket.resume(),
        onClose: (e) => {
          if (e) socket.destroy();
        },
      },
      Date.now,
      queueMicrotask,
    );
    socket.on('data', (d: Buffer) => {
      if (!stream.write(d)) socket.pause();
    });
    socket.on('end', () => stream.end());
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      stream.destroy();
    });
  });
  tcp.listen(port, '127.0.0.1');
  await once(tcp, 'listening');
  return {
    port,
    async close() {
      clearInterval(timer);
      for (const s of sockets) s.destroy();
      await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
    },
  };
}

describe.skipIf(digMissing)('weft DnsServer forwarding to the test server, queried with dig', () => {
  let zone: DnsTestServer;
  let front: { port: number; close(): Promise<void> };
  let dns: DnsServer;
  let upstream: DirectUpstream;

  beforeAll(async () => {
    zone = await startDnsTestServer();
    // The direct upstream reaches 127.0.0.1 only as "the gateway": name the resolver's address so.
    const loopback = parseIpv4('127.0.0.1');
    upstream = new DirectUpstream({ gateway: loopback, allowHostLoopback: true });
    const forwarder = new UpstreamDnsForwarder({ upstream, resolvers: [{ ip: loopback, port: zone.port }] });
    dns = new DnsServer({
      localRecords: weftLocalRecords(parseIpv4('10.0.2.2'), [['myapp.test', parseIpv4('10.0.2.50')]]),
      forwarder,
      random: (out) => randomFillSync(out),
      timeoutMs: 2000,
    });
    front = await startFront(dns);
  });
  afterAll(async () => {
    // A beforeAll that timed out leaves these unset: say nothing more than its own error.
    await front?.close();
    await zone?.close();
  });

  zoneChecks(() => front.port);

  it('answers local names itself', async () => {
    expect(await short(front.port, 'gateway.weft.internal', 'A')).toEqual(['10.0.2.2']);
    expect(await short(front.port, 'HOST.weft.internal', 'A')).toEqual(['10.0.2.2']);
    expect(await short(front.port, 'myapp.test', 'A')).toEqual(['10.0.2.50']);
    const aaaa = await dig(front.port, ['gateway.weft.internal', 'AAAA']);
    expect(status(aaaa)).toBe('NOERROR');
    expect(aaaa).toMatch(/ANSWER: 0,/);
    expect(status(await dig(front.port, ['nothing.weft.internal', 'A']))).toBe('NXDOMAIN');
  });

  it('answers local names over TCP', async () => {
    expect((await dig(front.port, ['+tcp', '+short', 'gateway.weft.internal', 'A'])).trim()).toBe('10.0.2.2');
  });

  it('answers repeated queries from the cache and asks again once the TTL is over', async () => {
    const before = zone.counts.udp;
    expect(await short(front.port, `short-ttl.${Z}`, 'A')).toEqual(['192.0.2.13']);
    expect(await short(front.port, `short-ttl.${Z}`, 'A')).toEqual(['192.0.2.13']);
    expect(zone.counts.udp - before).toBe(1);
    await new Promise((r) => setTimeout(r, 2100));
    expect(await short(front.port, `short-ttl.${Z}`, 'A')).toEqual(['192.0.2.13']);
    expect(zone.counts.udp - before).toBe(2);
    expect(dns.counters().answeredFromCache).toBeGreaterThan(0);
  });

  it('caches NXDOMAIN', async () => {
    const before = zone.counts.udp;
    for (let i = 0; i < 3; i++) expect(status(await dig(front.port, [`gone.${Z}`, 'A']))).toBe('NXDOMAIN');
    expect(zone.counts.udp - before).toBe(1);
  });

  it('answers SERVFAIL when the resolver is silent', async () => {
    zone.mute = true;
    try {
      const started = Date.now();
      const out = await dig(front.port, [`silent.${Z}`, 'A']);
      expect(status(out)).toBe('SERVFAIL');
      expect(Date.now() - started).toBeLessThan(5000);
    } finally {
      zone.mute = false;
    }
  });

  it('leaves no TCP connection to the resolver behind', async () => {
    await new Promise((r) => setTimeout(r, 100));
    // UDP pool flows stay open for reuse; every TCP query's connection is gone.
    expect(upstream.openSockets).toBeLessThanOrEqual(4);
  });
});

describe('node-host DNS configuration', () => {
  it('reads IPv4 nameservers and the search list from resolv.conf text', async () => {
    const { parseResolvConf } = await import('../../node-host/dns-config');
    const conf = parseResolvConf(
      '# comment\nnameserver 10.0.0.1\nnameserver ::1\nnameserver fe80::1%eth0\nsearch a.example b.example.\noptions ndots:2\nnameserver 1.1.1.1 ; trailing\n',
    );
    expect(conf.servers).toEqual([
      { ip: parseIpv4('10.0.0.1'), port: 53 },
      { ip: parseIpv4('1.1.1.1'), port: 53 },
    ]);
    expect(conf.skipped).toEqual(['::1', 'fe80::1%eth0']);
    expect(conf.search).toEqual(['a.example', 'b.example']);
  });

  it('logs an error and returns no servers when resolv.conf is missing or has none', async () => {
    const { readResolvConf } = await import('../../node-host/dns-config');
    const events: [string, Record<string, unknown> | undefined][] = [];
    const log = (e: string, f?: Record<string, unknown>) => void events.push([e, f]);
    expect(readResolvConf(log, '/nonexistent/resolv.conf').servers).toEqual([]);
    expect(events[0][0]).toBe('dns-no-resolver');
    expect(String(events[0][1]?.message)).toContain('--dns-server');
  });

  it('parses --dns-server and --dns-record values', async () => {
    const { parseDnsServerFlag, parseDnsRecordFlag, dnsResolvers } = await import('../../node-host/dns-config');
    expect(parseDnsServerFlag('9.9.9.9')).toEqual({ ip: parseIpv4('9.9.9.9'), port: 53 });
    expect(parseDnsServerFlag('127.0.0.1:5353')).toEqual({ ip: parseIpv4('127.0.0.1'), port: 5353 });
    for (const bad of ['', 'dns.google', '1.2.3.4:0', '1.2.3.4:70000', '::1', '1.2.3:53']) {
      expect(() => parseDnsServerFlag(bad), bad).toThrow(/--dns-server/);
    }
    expect(parseDnsRecordFlag('MyApp.Test.=10.0.2.2')).toEqual({ name: 'myapp.test', ip: parseIpv4('10.0.2.2') });
    expect(parseDnsRecordFlag('_svc.x=1.2.3.4').name).toBe('_svc.x');
    for (const bad of ['noequals', 'a=b', '=1.2.3.4', 'a..b=1.2.3.4', '-a.b=1.2.3.4', `${'x'.repeat(64)}.test=1.2.3.4`, 'a b=1.2.3.4']) {
      expect(() => parseDnsRecordFlag(bad), bad).toThrow(/--dns-record/);
    }
    expect(dnsResolvers(['8.8.8.8:53'], () => {})).toEqual([{ ip: parseIpv4('8.8.8.8'), port: 53 }]);
  });
});
