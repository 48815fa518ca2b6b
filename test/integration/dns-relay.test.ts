// The guest's resolver when weft's upstream is a Wisp relay: queries go to the relay's own resolver
// (weft relay --dns-server, reached as resolver.weft.internal:53) even though the relay's policy
// refuses loopback — and nothing else on loopback is reachable that way.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec, missingCommands } from '../harness/guest-tools';
import { Netns, requireRoot, UDHCPC_SCRIPT } from '../harness/netns';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';
import { DNS_TEST_ZONE, startDnsTestServer, type DnsTestServer } from '../support/dns-test-server';

const TITLE = 'guest DNS through weft vm --upstream wisp:// and the relay resolver';
const root = requireRoot(TITLE);
const missing = root.ok ? missingCommands(['dig', 'busybox']) : [];
if (missing.length) console.warn(`[skip] ${TITLE}: missing ${missing.join(', ')}`);

describe.skipIf(!root.ok || missing.length > 0)(TITLE, () => {
  let ns: Netns | undefined;
  let relay: WeftProcess | undefined;
  let zone: DnsTestServer;

  beforeAll(async () => {
    zone = await startDnsTestServer();
    // Safe default policy: loopback refused; only the resolver is reachable there.
    relay = spawnWeft(['relay', '--listen', '127.0.0.1:0', '--dns-server', `127.0.0.1:${zone.port}`]);
    const ready = await relay.waitForEvent('ready');
    ns = Netns.create('dnsrelay');
    await ns.spawnWeftOnTap(['--upstream', String(ready.wisp), '--allow-host-loopback']);
    const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
    if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
  }, 60_000);

  afterAll(async () => {
    await ns?.cleanup();
    relay?.kill('SIGTERM');
    await relay?.waitForExit(6_000).catch(() => relay?.kill('SIGKILL'));
    await zone?.close();
  });

  it('resolves a name of the test zone over UDP and over TCP through the relay', async () => {
    const udp = await ns!.exec(['dig', '@10.0.2.3', '+time=5', '+tries=1', '+short', `www.${DNS_TEST_ZONE}`, 'A']);
    expect(udp.stdout.trim(), describeExec(udp)).toBe('192.0.2.10');
    const tcp = await ns!.exec(['dig', '@10.0.2.3', '+tcp', '+time=5', '+tries=1', '+short', `mail.${DNS_TEST_ZONE}`, 'A']);
    expect(tcp.stdout.trim(), describeExec(tcp)).toBe('192.0.2.25');
    expect(zone.counts.udp + zone.counts.tcp).toBeGreaterThanOrEqual(2);
  });

  it('still refuses the same loopback server by its address (the resolver exception is DNS only)', async () => {
    // 10.0.2.2 maps to the relay host's 127.0.0.1, which the relay's policy refuses.
    const r = await ns!.exec(['busybox', 'nc', '-w', '3', '10.0.2.2', String(zone.port)], 10_000);
    expect(r.code).not.toBe(0);
  });
});
