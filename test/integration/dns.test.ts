// The guest's resolver at 10.0.2.3 with a real Linux guest (a network namespace on a TAP) and real
// resolvers: dig (glibc-style tools) and busybox nslookup (musl-style) against an authoritative test
// zone that this test serves on 127.0.0.1, forwarded by `weft vm --dns-server`.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec, missingCommands } from '../harness/guest-tools';
import { Netns, requireRoot, UDHCPC_SCRIPT } from '../harness/netns';
import { DNS_TEST_BIG_TXT_STRINGS, DNS_TEST_RECORDS, DNS_TEST_ZONE, startDnsTestServer, type DnsTestServer } from '../support/dns-test-server';

const TITLE = 'guest DNS through weft (10.0.2.3)';
const root = requireRoot(TITLE);
const missing = root.ok ? missingCommands(['dig', 'busybox', 'python3']) : [];
if (missing.length) console.warn(`[skip] ${TITLE}: missing ${missing.join(', ')} (apt-get install dnsutils busybox-static python3)`);

/** A UDP load generator for the guest: QPS queries/s for SECONDS, counts answers by ID. */
const LOAD_SCRIPT = `
import socket, struct, sys, time, random
server, qps, seconds, names = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(',')
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.setblocking(False)
def query(i):
    qid = i & 0xffff
    name = names[i % len(names)]
    q = struct.pack('>HHHHHH', qid, 0x0100, 1, 0, 0, 0)
    for label in name.split('.'):
        q += bytes([len(label)]) + label.encode()
    return q + b'\\0' + struct.pack('>HH', 1, 1)
total = int(qps * seconds)
answered = set()
start = time.monotonic()
sent = 0
while sent < total or time.monotonic() - start < seconds + 5:
    now = time.monotonic()
    due = min(total, int((now - start) * qps))
    while sent < due:
        s.sendto(query(sent), (server, 53))
        sent += 1
    try:
        while True:
            data = s.recv(4096)
            answered.add(struct.unpack('>H', data[:2])[0])
    except BlockingIOError:
        pass
    if sent >= total and len(answered) >= min(total, 65536):
        break
    time.sleep(0.001)
print(sent, len(answered))
`;

describe.skipIf(!root.ok || missing.length > 0)(TITLE, () => {
  let ns: Netns | undefined;
  let zone: DnsTestServer;
  let dir: string;

  const dig = (args: string[], timeoutMs = 15_000) => ns!.exec(['dig', '@10.0.2.3', '+time=3', '+tries=1', ...args], timeoutMs);

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-dns-'));
    zone = await startDnsTestServer();
    ns = Netns.create('dns');
    await ns.spawnWeftOnTap([
      '--dns-server',
      `127.0.0.1:${zone.port}`,
      '--dns-record',
      'myapp.test=10.0.2.77',
      '--dns-search',
      `${DNS_TEST_ZONE},weft.internal`,
    ]);
    const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
    if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
    expect(dhcp.stdout).toContain('lease dns=10.0.2.3');
    expect(dhcp.stdout).toMatch(/lease search=.*weft-test\.example/);
  }, 90_000);

  afterAll(async () => {
    await ns?.cleanup();
    await zone?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const simple = DNS_TEST_RECORDS.filter((r) => r.type !== 'SOA' && !r.name.startsWith('big-txt'));
  it.each(simple.map((r) => [r.type, r.name, r] as const))('answers %s %s as the zone has it', async (_type, _name, r) => {
    const res = await dig(['+short', r.name, r.type]);
    expect(res.code, describeExec(res)).toBe(0);
    expect(res.stdout.trim().split('\n')).toContain(r.text);
  });

  it('answers SOA with EDNS intact', async () => {
    const res = await dig([DNS_TEST_ZONE, 'SOA', '+edns=0']);
    expect(res.stdout).toMatch(/status: NOERROR/);
    expect(res.stdout).toMatch(/OPT PSEUDOSECTION/);
    expect(res.stdout).toMatch(/IN\s+SOA\s+ns1\.weft-test\.example\./);
  });

  it('answers a 4 KB TXT through the TC bit and a TCP retry', async () => {
    const tcpBefore = zone.counts.tcp;
    const res = await dig(['+short', `big-txt.${DNS_TEST_ZONE}`, 'TXT', '+bufsize=1232']);
    expect(res.code, describeExec(res)).toBe(0);
    const got = [...res.stdout.matchAll(/"([^"]*)"/g)].map((m) => m[1]);
    expect(got).toEqual(DNS_TEST_BIG_TXT_STRINGS);
    expect(zone.counts.tcp).toBeGreaterThan(tcpBefore);
  });

  it('keeps NXDOMAIN and NODATA apart (a name with only an A record answers AAAA with NOERROR, no answers)', async () => {
    const nodata = await dig([`a-only.${DNS_TEST_ZONE}`, 'AAAA']);
    expect(nodata.stdout).toMatch(/status: NOERROR/);
    expect(nodata.stdout).toMatch(/ANSWER: 0/);
    const nx = await dig([`missing.${DNS_TEST_ZONE}`, 'A']);
    expect(nx.stdout).toMatch(/status: NXDOMAIN/);
  });

  it('preserves the query ID and answers local names itself', async () => {
    for (const [name, ip] of [
      ['gateway.weft.internal', '10.0.2.2'],
      ['host.weft.internal', '10.0.2.2'],
      ['myapp.test', '10.0.2.77'],
    ]) {
      const res = await dig(['+short', name, 'A']);
      expect(res.stdout.trim(), name).toBe(ip);
    }
    const nx = await dig(['nothing.weft.internal', 'A']);
    expect(nx.stdout).toMatch(/status: NXDOMAIN/);
    const udpBefore = zone.counts.udp + zone.counts.tcp;
    await dig(['+short', 'gateway.weft.internal']);
    expect(zone.counts.udp + zone.counts.tcp).toBe(udpBefore); // never forwarded
  });

  it('answers busybox nslookup (musl-style: A and AAAA at once) for a name with only an A record', async () => {
    const res = await ns!.exec(['busybox', 'nslookup', `a-only.${DNS_TEST_ZONE}`, '10.0.2.3'], 20_000);
    expect(res.code, describeExec(res)).toBe(0);
    expect(res.stdout).toContain('192.0.2.11');
    expect(res.stdout + res.stderr).not.toMatch(/NXDOMAIN|can't resolve/);
  });

  it('answers over TCP when the guest asks over TCP', async () => {
    const res = await dig(['+tcp', '+short', `www.${DNS_TEST_ZONE}`, 'A']);
    expect(res.stdout.trim()).toBe('192.0.2.10');
  });

  it('answers SERVFAIL within 5 s when the resolver is silent, never nothing', async () => {
    zone.mute = true;
    try {
      const started = Date.now();
      const res = await ns!.exec(['dig', '@10.0.2.3', '+time=8', '+tries=1', `unique-${Date.now()}.${DNS_TEST_ZONE}`, 'A'], 20_000);
      expect(res.stdout).toMatch(/status: SERVFAIL/);
      expect(Date.now() - started).toBeLessThan(7_000);
    } finally {
      zone.mute = false;
    }
  }, 30_000);

  it('answers 1,000 queries/s for 10 s with no loss', async () => {
    const script = join(dir, 'dns-load.py');
    writeFileSync(script, LOAD_SCRIPT);
    const names = ['www', 'mail', 'a-only', 'sip', 'ns1'].map((n) => `${n}.${DNS_TEST_ZONE}`).join(',');
    const res = await ns!.exec(['python3', script, '10.0.2.3', '1000', '10', names], 60_000);
    expect(res.code, describeExec(res)).toBe(0);
    const [sent, answered] = res.stdout.trim().split(/\s+/).map(Number);
    expect(sent).toBe(10_000);
    expect(answered).toBe(10_000);
  }, 60_000);
});
