// DNS over HTTPS as the worker uses it, against a real HTTP server speaking RFC 8484 (POST
// application/dns-message) that asks the authoritative test zone over UDP.
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer } from '../../core/services/dns-server';
import { parseDnsMessage, DnsType, emitDnsQuery, encodeDnsName } from '../../core/wire/dns';
import { isDrop } from '../../core/wire/parse-result';
import { DohForwarder } from '../../worker/doh-forwarder';
import { DNS_TEST_ZONE, startDnsTestServer, type DnsTestServer } from '../support/dns-test-server';
import { seededRandom } from '../support/frames';

describe('DNS over HTTPS forwarder', () => {
  let zone: DnsTestServer;
  let doh: http.Server;
  let url: string;
  let requests = 0;

  beforeAll(async () => {
    zone = await startDnsTestServer();
    doh = http.createServer((req, res) => {
      if (req.method !== 'POST' || req.headers['content-type'] !== 'application/dns-message') {
        res.writeHead(415).end();
        return;
      }
      requests++;
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      // Over TCP to the zone, as a DoH server would for big answers (no UDP truncation).
      req.on('end', () => {
        const query = Buffer.concat(chunks);
        const sock = net.connect(zone.port, '127.0.0.1', () => sock.write(Buffer.concat([Buffer.from([query.length >> 8, query.length & 0xff]), query])));
        let got = Buffer.alloc(0);
        sock.on('data', (d: Buffer) => {
          got = Buffer.concat([got, d]);
          if (got.length >= 2 && got.length >= 2 + got.readUInt16BE(0)) {
            sock.end();
            res.writeHead(200, { 'content-type': 'application/dns-message' }).end(got.subarray(2, 2 + got.readUInt16BE(0)));
          }
        });
      });
    });
    await new Promise<void>((r) => doh.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(doh.address() as AddressInfo).port}/dns-query`;
  });

  afterAll(async () => {
    await new Promise<void>((r) => doh.close(() => r()));
    await zone.close();
  });

  it('answers through the DNS server with the guest query ID kept, including a 4 KB TXT over TCP', async () => {
    const server = new DnsServer({ localRecords: new Map(), forwarder: new DohForwarder({ url }), random: seededRandom(3).fill });
    const ask = (name: string, type: number, transport: 'udp' | 'tcp', id: number) =>
      new Promise<Uint8Array>((resolve) => server.query(emitDnsQuery({ id, nameWire: encodeDnsName(name), type }), transport, Date.now(), resolve));
    const a = parseDnsMessage(await ask(`www.${DNS_TEST_ZONE}`, DnsType.A, 'udp', 0x4242));
    if (isDrop(a)) throw new Error(a);
    expect(a.header.id).toBe(0x4242);
    expect(a.answers.map((r) => Array.from(r.rdata))).toEqual([[192, 0, 2, 10]]);
    const big = parseDnsMessage(await ask(`big-txt.${DNS_TEST_ZONE}`, DnsType.TXT, 'tcp', 7));
    if (isDrop(big)) throw new Error(big);
    expect(big.answers[0].rdata.length).toBeGreaterThan(4000);
    expect(requests).toBe(2);
  });

  it('fails (SERVFAIL from the server) when the DoH endpoint does not answer properly', async () => {
    const server = new DnsServer({
      localRecords: new Map(),
      forwarder: new DohForwarder({
        url: url.replace('/dns-query', '/nope'),
        fetch: (u, init) => fetch(u, { ...init, headers: { 'content-type': 'text/plain' } }),
      }),
      random: seededRandom(4).fill,
    });
    const reply = await new Promise<Uint8Array>((resolve) =>
      server.query(emitDnsQuery({ id: 9, nameWire: encodeDnsName(`www.${DNS_TEST_ZONE}`), type: DnsType.A }), 'udp', Date.now(), resolve),
    );
    const m = parseDnsMessage(reply);
    if (isDrop(m)) throw new Error(m);
    expect(m.header.rcode).toBe(2); // SERVFAIL
  });
});
