// A hostile guest on weft's LAN (the one-LAN issue's bounds): two network namespaces on one
// `weft vm --tap-fd 3 --tap-fd 4`, a victim and an attacker. The attacker, a real kernel with a raw
// AF_PACKET socket (test/harness/lan-attack.py) and its own addresses:
//
// - claims the victim's leased address (the address on its interface, gratuitous ARP, an ARP reply
//   to weft, pings sent from it) — weft keeps sending the victim's traffic to the victim (a
//   --forward into the victim reaches the victim's server, not the attacker's) and counts the
//   attempts (arp-lease-conflict, ipv4-lease-conflict); the switch passes such claims to weft
//   alone, never to the other guests (switch-lease-conflict);
// - claims weft's addresses, 10.0.2.2 and 10.0.2.3 (on its interface, gratuitous ARP, an ARP reply
//   unicast to the victim) — the switch drops those frames (switch-spoofed-router-ip), so the
//   victim's ARP cache keeps weft's MAC and it still reaches weft and this host;
// - floods the switch with thousands of random source MACs — the table stays bounded (weft's
//   stopped line: macsLearned, macsEvicted), and the victim keeps pinging and downloading, its
//   unicast not flooded to the attacker.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec, leaseWithHostname } from '../harness/guest-tools';
import { Netns, requireRoot } from '../harness/netns';
import { HARNESS_DIR } from '../harness/repo-root';
import type { WeftProcess } from '../harness/weft-process';
import { closedTcpPort, expectedSha256, startHttpTestServer, type TestServer } from '../support/test-servers';

const TITLE = 'a hostile guest on a weft LAN: spoofing and a MAC flood';
const root = requireRoot(TITLE);
const LAN_ATTACK = join(HARNESS_DIR, 'lan-attack.py');
const WEFT_MAC = '52:55:0a:00:02:02';
const SERVER_PORT = 8080;
const FLOOD_FRAMES = 20_000;
/** The switch's table (node-host/links/lan-switch.ts): at most this many MACs, whatever a guest sends. */
const MAX_MACS = 4096;
const DOWNLOAD_BYTES = 4 << 20;

/** A server on SERVER_PORT in `ns` that answers every connection with `word`. */
async function serveWord(ns: Netns, word: string): Promise<void> {
  ns.track(spawn('ip', ['netns', 'exec', ns.name, 'socat', `TCP-LISTEN:${SERVER_PORT},reuseaddr,fork,backlog=64`, `SYSTEM:echo ${word}`], { stdio: 'ignore' }));
  for (let i = 0; i < 50; i++) {
    if ((await ns.exec(['sh', '-c', `ss -ltn | grep -q ":${SERVER_PORT} "`])).code === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no server on ${SERVER_PORT} in ${ns.name}`);
}

/** What the server behind weft's --forward (127.0.0.1:port → the last leased guest) says. */
async function throughForward(port: number): Promise<string> {
  const { default: net } = await import('node:net');
  return new Promise((resolve, reject) => {
    let got = '';
    const s = net.connect({ host: '127.0.0.1', port });
    s.setEncoding('utf8');
    s.on('data', (d: string) => (got += d));
    s.on('end', () => resolve(got.trim()));
    s.on('error', reject);
    s.setTimeout(15_000, () => s.destroy(new Error('no answer through the forward within 15 s')));
  });
}

async function attack(ns: Netns, args: string[]): Promise<void> {
  const r = await ns.exec(['python3', LAN_ATTACK, '--iface', 'tap0', ...args], 60_000);
  if (r.code !== 0) throw new Error(`lan-attack.py ${args.join(' ')}: ${describeExec(r)}`);
}

describe.skipIf(!root.ok)(TITLE, () => {
  let victim: Netns | undefined;
  let attacker: Netns | undefined;
  let weft: WeftProcess | undefined;
  let http: TestServer | undefined;
  let forwardPort = 0;
  /** A forward that names its guest: the attacker, who leases first (10.0.2.15). */
  let toFirstPort = 0;
  let ipV = '';
  let ipX = '';
  let macV = '';
  let stopped: Record<string, unknown> | undefined;

  beforeAll(async () => {
    victim = Netns.create('lanv');
    attacker = Netns.create('lanx');
    http = await startHttpTestServer();
    forwardPort = await closedTcpPort();
    toFirstPort = await closedTcpPort();
    weft = await victim.spawnWeftOnTap(
      ['--allow-host-loopback', '--forward', `${forwardPort}:${SERVER_PORT}`, '--forward', `${toFirstPort}:10.0.2.15:${SERVER_PORT}`],
      'tap0',
      { alsoOn: [attacker] },
    );
    // The victim leases last: --forward goes to the most recent lease.
    ipX = await leaseWithHostname(attacker, 'attacker');
    ipV = await leaseWithHostname(victim, 'victim');
    macV = await victim.macOf('tap0');
    await serveWord(victim, 'victim');
    await serveWord(attacker, 'attacker');
  }, 90_000);

  afterAll(async () => {
    await victim?.cleanup();
    await attacker?.cleanup();
    await http?.close();
  });

  /** Stops weft once (SIGTERM) and returns its stopped line. */
  async function stopWeft(): Promise<Record<string, unknown>> {
    if (!stopped) {
      weft!.kill('SIGTERM');
      const exit = await weft!.waitForExit(5_000);
      expect(exit.code, weft!.stderr).toBe(0);
      stopped = weft!.events.find((e) => e.event === 'stopped');
    }
    return stopped!;
  }

  async function victimReachesWeftAndHost(): Promise<void> {
    const ping = await victim!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', '10.0.2.2'], 15_000);
    expect(ping.code, describeExec(ping)).toBe(0);
    const get = await victim!.exec(['sh', '-c', `curl -sS --fail --max-time 20 http://10.0.2.2:${http!.port}/bytes/${DOWNLOAD_BYTES} | sha256sum`], 30_000);
    expect(get.stdout.split(' ')[0], describeExec(get)).toBe(expectedSha256(DOWNLOAD_BYTES));
    // The victim's own view of the gateway is weft's MAC, not the attacker's.
    const neigh = await victim!.exec(['ip', 'neigh', 'show', '10.0.2.2', 'dev', 'tap0']);
    expect(neigh.stdout, describeExec(neigh)).toContain(WEFT_MAC);
  }

  it('before any attack: the forward reaches the victim, and both guests reach weft', async () => {
    expect(ipV).not.toBe(ipX);
    expect(await throughForward(forwardPort)).toBe('victim');
    // A forward that names a guest's address reaches that guest, not the one that leased last.
    expect(ipX).toBe('10.0.2.15');
    expect(await throughForward(toFirstPort)).toBe('attacker');
    await victimReachesWeftAndHost();
  }, 60_000);

  it("a guest claiming another's leased address: weft keeps sending that address's traffic to its holder", async () => {
    const x = attacker!;
    // The attacker knows weft's MAC first (asking from the victim's address would get no answer).
    const known = await x.exec(['ping', '-c', '1', '-W', '2', '-I', ipX, '10.0.2.2'], 10_000);
    expect(known.code, describeExec(known)).toBe(0);
    expect((await x.exec(['ip', 'addr', 'add', `${ipV}/32`, 'dev', 'tap0'])).code).toBe(0);
    await attack(x, ['arp', 'announce', ipV]);
    await attack(x, ['arp', 'reply', ipV, WEFT_MAC, '10.0.2.2']);
    // Packets from the victim's address, answered by nobody.
    const spoofedPing = await x.exec(['ping', '-c', '2', '-W', '1', '-I', ipV, '10.0.2.2'], 10_000);
    expect(spoofedPing.code, describeExec(spoofedPing)).not.toBe(0);
    expect(await throughForward(forwardPort)).toBe('victim');
    // The attacker's own address still works for it.
    const own = await x.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '-I', ipX, '10.0.2.2'], 10_000);
    expect(own.code, describeExec(own)).toBe(0);
    await x.exec(['ip', 'addr', 'del', `${ipV}/32`, 'dev', 'tap0']);
  }, 60_000);

  it("a guest claiming weft's addresses: the switch drops it, the victim still reaches weft and the host", async () => {
    const x = attacker!;
    for (const ip of ['10.0.2.2', '10.0.2.3']) {
      expect((await x.exec(['ip', 'addr', 'add', `${ip}/32`, 'dev', 'tap0'])).code).toBe(0);
      await attack(x, ['arp', 'announce', ip]);
      await attack(x, ['arp', 'reply', ip, macV, ipV]);
    }
    // iputils arping as well: unsolicited ARP, then ARP replies, from 10.0.2.2.
    const arping = await x.exec(['arping', '-U', '-c', '2', '-w', '3', '-I', 'tap0', '-s', '10.0.2.2', '10.0.2.2'], 10_000);
    const arpingReply = await x.exec(['arping', '-A', '-c', '2', '-w', '3', '-I', 'tap0', '-s', '10.0.2.2', '10.0.2.2'], 10_000);
    console.log(`arping -U: ${arping.code}, arping -A: ${arpingReply.code}`);
    await victimReachesWeftAndHost();
    const dns = await victim!.exec(['busybox', 'nslookup', 'victim.weft.internal', '10.0.2.3'], 15_000);
    expect(dns.stdout, describeExec(dns)).toContain(ipV);
    expect(await throughForward(forwardPort)).toBe('victim');
    for (const ip of ['10.0.2.2', '10.0.2.3']) await x.exec(['ip', 'addr', 'del', `${ip}/32`, 'dev', 'tap0']);
  }, 60_000);

  it('a MAC flood from one guest: the table stays bounded, the other guest is still served and its unicast stays its own', async () => {
    const flood = attack(attacker!, ['flood', String(FLOOD_FRAMES)]);
    // The victim pings and downloads while the flood runs, and after.
    const during = await victim!.exec(['ping', '-c', '5', '-i', '0.2', '-W', '2', '10.0.2.2'], 15_000);
    await flood;
    expect(during.code, describeExec(during)).toBe(0);
    await victimReachesWeftAndHost();
    const toAttacker = await victim!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', ipX], 15_000);
    expect(toAttacker.code, describeExec(toAttacker)).toBe(0);
    expect(await throughForward(forwardPort)).toBe('victim');

    const s = await stopWeft();
    const stats = s.linkStats as Record<string, number>;
    console.log(`switch after the flood: ${JSON.stringify(stats)}`);
    expect(stats.macsLearned).toBeLessThanOrEqual(MAX_MACS);
    // Most of the flood's MACs were pushed out again (some frames may be lost in the TAP's queue).
    expect(stats.macsEvicted).toBeGreaterThan(FLOOD_FRAMES / 2);
    // Port 1 is the attacker's: the victim's downloads (3 × 4 MiB) never went out there.
    expect(stats['port1-bytesOut']).toBeLessThan(DOWNLOAD_BYTES);
    expect(stats['port0-bytesOut']).toBeGreaterThan(3 * DOWNLOAD_BYTES);
  }, 90_000);

  it('every attempt was counted by its reason', async () => {
    const s = await stopWeft();
    const drops = (s.counters as { drops: Record<string, number> }).drops;
    const linkDrops = s.linkDrops as Record<string, number>;
    console.log(`stack drops: ${JSON.stringify(drops)}; link drops: ${JSON.stringify(linkDrops)}`);
    // The announcement and the reply for the victim's address, and the two pings sent from it.
    expect(drops['arp-lease-conflict']).toBeGreaterThanOrEqual(2);
    expect(drops['ipv4-lease-conflict']).toBeGreaterThanOrEqual(2);
    // The claims of 10.0.2.2 and 10.0.2.3 never left the switch (port 1: the attacker's).
    expect(linkDrops['port1-switch-spoofed-router-ip']).toBeGreaterThanOrEqual(4);
    expect(linkDrops['port0-switch-spoofed-router-ip'] ?? 0).toBe(0);
    // The announcement of the victim's address reached weft (counted above) but no other guest.
    expect(linkDrops['port1-switch-lease-conflict']).toBeGreaterThanOrEqual(1);
    expect(linkDrops['port0-switch-lease-conflict'] ?? 0).toBe(0);
  }, 30_000);
});
