// One LAN for two real guests (the one-LAN issue, first step): two network namespaces, each with a
// TAP handed to one `weft vm --tap-fd 3 --tap-fd 4`. weft switches between them (a learning
// switch, weft as router): each gets its own lease, they ping each other and move 16 MiB over TCP
// port to port with the sha256 checked, resolve each other's DHCP hostnames, and both still reach
// this host through weft's router.

import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec, leaseWithHostname } from '../harness/guest-tools';
import { Netns, requireRoot } from '../harness/netns';
import type { WeftProcess } from '../harness/weft-process';
import { startHttpTestServer, expectedSha256, type TestServer } from '../support/test-servers';

const TITLE = 'weft vm with two links: two real guests on one LAN';
const root = requireRoot(TITLE);

describe.skipIf(!root.ok)(TITLE, () => {
  let a: Netns | undefined;
  let b: Netns | undefined;
  let weft: WeftProcess | undefined;
  let http: TestServer | undefined;
  let ipA = '';
  let ipB = '';

  beforeAll(async () => {
    a = Netns.create('lana');
    b = Netns.create('lanb');
    http = await startHttpTestServer();
    weft = await a.spawnWeftOnTap(['--allow-host-loopback'], 'tap0', { alsoOn: [b] });
    ipA = await leaseWithHostname(a, 'guest-a');
    ipB = await leaseWithHostname(b, 'guest-b');
  }, 90_000);

  afterAll(async () => {
    await a?.cleanup();
    await b?.cleanup();
    await http?.close();
  });

  it('leases each guest its own address, and names the LAN in the ready line', () => {
    expect(ipA).toMatch(/^10\.0\.2\./);
    expect(ipB).toMatch(/^10\.0\.2\./);
    expect(ipA).not.toBe(ipB);
    expect(weft!.events.find((e) => e.event === 'ready')?.link).toBe('lan');
    expect(weft!.events.filter((e) => e.event === 'lease').map((e) => e.ip)).toEqual(expect.arrayContaining([ipA, ipB]));
  });

  it('the guests ping each other', async () => {
    const ab = await a!.exec(['ping', '-c', '3', '-W', '2', ipB], 15_000);
    expect(ab.code, describeExec(ab)).toBe(0);
    const ba = await b!.exec(['ping', '-c', '3', '-W', '2', ipA], 15_000);
    expect(ba.code, describeExec(ba)).toBe(0);
  });

  it('the guests find each other by their DHCP hostnames (<hostname>.weft.internal)', async () => {
    const r = await a!.exec(['busybox', 'nslookup', 'guest-b.weft.internal', '10.0.2.3'], 15_000);
    expect(r.stdout, describeExec(r)).toContain(ipB);
    // (Asked of weft's DNS directly: a namespace shares this host's /etc/resolv.conf.)
    const back = await b!.exec(['busybox', 'nslookup', 'guest-a.weft.internal', '10.0.2.3'], 15_000);
    expect(back.stdout, describeExec(back)).toContain(ipA);
  });

  it('moves 16 MiB over TCP from one guest to the other, sha256 intact', async () => {
    const src = `/dev/shm/weft-lan-${process.pid}-a.bin`;
    const dst = `/dev/shm/weft-lan-${process.pid}-b.bin`;
    try {
      const made = await a!.exec(['sh', '-c', `head -c 16777216 /dev/urandom > ${src} && sha256sum ${src}`]);
      expect(made.code, describeExec(made)).toBe(0);
      const receiver = b!.track(
        spawn('ip', ['netns', 'exec', b!.name, 'socat', '-u', 'TCP-LISTEN:9000,reuseaddr', `OPEN:${dst},creat,trunc`], { stdio: 'ignore' }),
      );
      const exited = new Promise<number | null>((r) => receiver.once('exit', (code) => r(code)));
      for (let i = 0; i < 50 && (await b!.exec(['sh', '-c', 'ss -ltn | grep -q ":9000 "'])).code !== 0; i++) await new Promise((r) => setTimeout(r, 100));
      const sent = await a!.exec(['socat', '-u', `FILE:${src}`, `TCP:${ipB}:9000`], 60_000);
      expect(sent.code, describeExec(sent)).toBe(0);
      expect(await exited).toBe(0);
      const got = await b!.exec(['sha256sum', dst]);
      expect(got.stdout.split(' ')[0]).toBe(made.stdout.split(' ')[0]);
    } finally {
      await a!.exec(['rm', '-f', src, dst]);
    }
  }, 90_000);

  it('both guests still reach this host through weft', async () => {
    for (const ns of [a!, b!]) {
      const r = await ns.exec(['sh', '-c', `curl -sS --fail --max-time 20 http://10.0.2.2:${http!.port}/bytes/100000 | sha256sum`], 30_000);
      expect(r.stdout.split(' ')[0], describeExec(r)).toBe(expectedSha256(100000));
    }
  }, 60_000);
});
