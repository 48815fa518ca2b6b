// The checks every link must pass with a real Linux guest (a network namespace): DHCP, ping,
// fragmented ping, ARP, a clean SIGTERM, a pcap tshark can read (and weft-capture.ts's check
// passes on), and nothing left behind.
// Each transport's test file supplies how to connect weft to the namespace's TAP.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { netnsExists, Netns, requireRoot, run, UDHCPC_SCRIPT } from './netns';
import { assertCleanCapture, WeftCapture } from './weft-capture';
import type { WeftProcess } from './weft-process';

export interface GuestLink {
  weft: WeftProcess;
  /** Stops whatever else carries frames (e.g. the dgram bridge) after weft has exited. */
  stopCarrier?: () => Promise<void>;
}

/** Starts `weft vm <link> ...weftArgs` joined to a TAP named tap0 in `ns`, which it brings up. */
export type LinkStarter = (ns: Netns, weftArgs: string[]) => Promise<GuestLink>;

function parseLease(stdout: string): Record<string, string> {
  const lease: Record<string, string> = {};
  for (const m of stdout.matchAll(/^lease (\w+)=(.*)$/gm)) lease[m[1]] = m[2];
  return lease;
}

const PCAP_FIELDS = [
  'frame.number',
  'dhcp.option.dhcp',
  'icmp.type',
  'ip.src',
  'ip.dst',
  'ip.fragment.count',
  'ip.reassembled.length',
  'arp.opcode',
  'arp.src.proto_ipv4',
] as const;
type PcapRecord = Record<(typeof PCAP_FIELDS)[number], string>;

/** Dissects `pcap` once with tshark (IPv4 reassembly on, its default) into one record per frame. */
async function readPcap(pcap: string): Promise<PcapRecord[]> {
  const r = await run('tshark', ['-r', pcap, '-T', 'fields', ...PCAP_FIELDS.flatMap((f) => ['-e', f])]);
  if (r.code !== 0) throw new Error(`tshark -r ${pcap} failed (${r.code}): ${r.stderr}`);
  return r.stdout
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const cols = line.split('\t');
      return Object.fromEntries(PCAP_FIELDS.map((f, i) => [f, cols[i] ?? ''])) as PcapRecord;
    });
}

export function describeGuestOverLink(title: string, label: string, start: LinkStarter): void {
  const root = requireRoot(title);
  describe.skipIf(!root.ok)(title, () => {
    let ns: Netns | undefined;
    let link: GuestLink;
    let dir: string;
    let pcap: string;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), `weft-${label}-`));
      pcap = join(dir, 'weft.pcap');
      ns = Netns.create(label);
      link = await start(ns, ['--pcap', pcap]);
      // A TAP link's weft has it already (Netns.spawnWeftOnTap); checked in the pcap test below.
      link.weft.capture ??= WeftCapture.ofFile(pcap);
    });

    afterAll(async () => {
      await ns?.cleanup();
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('leases 10.0.2.15 with router 10.0.2.2 and DNS 10.0.2.3 to busybox udhcpc', async () => {
      const r = await ns!.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
      expect(r.code, `udhcpc failed:\n${r.stdout}\n${r.stderr}`).toBe(0);
      const lease = parseLease(r.stdout);
      expect(lease).toMatchObject({
        event: 'bound',
        ip: '10.0.2.15',
        subnet: '255.255.255.0',
        router: '10.0.2.2',
        dns: '10.0.2.3',
        domain: 'weft.internal',
        mtu: '1500',
      });
      expect(Number(lease.lease)).toBeGreaterThan(0);

      const mac = await ns!.macOf('tap0');
      const event = await link.weft.waitForEvent('lease', (e) => e.ip === '10.0.2.15');
      expect(event.mac).toBe(mac);
      const addr = await ns!.exec(['ip', '-o', '-4', 'addr', 'show', 'dev', 'tap0']);
      expect(addr.stdout).toContain('inet 10.0.2.15/24');
    });

    it('answers ping for the gateway and the DNS address', async () => {
      for (const ip of ['10.0.2.2', '10.0.2.3']) {
        const r = await ns!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', ip]);
        expect(r.code, `ping ${ip}:\n${r.stdout}${r.stderr}`).toBe(0);
        expect(r.stdout).toContain('3 received');
      }
    });

    it('answers a 3000-byte ping, fragmented both ways', async () => {
      const r = await ns!.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', '-s', '3000', '10.0.2.2']);
      expect(r.code, `ping -s 3000:\n${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout).toContain('2 received');
      expect(r.stdout).toMatch(/3008 bytes from 10\.0\.2\.2/);
    });

    it('answers arping from the guest', async () => {
      const r = await ns!.exec(['arping', '-c', '2', '-w', '5', '-I', 'tap0', '10.0.2.2']);
      expect(r.code, `arping:\n${r.stdout}${r.stderr}`).toBe(0);
      expect(r.stdout.toLowerCase()).toContain('reply from 10.0.2.2 [52:55:0a:00:02:02]');
      expect(r.stdout).toContain('Received 2 response');
    });

    it('exits with code 0 within 2 s of SIGTERM and logs its final counters', async () => {
      link.weft.kill('SIGTERM');
      const exit = await link.weft.waitForExit(5_000);
      expect(exit.code, link.weft.stderr).toBe(0);
      expect(exit.elapsedMs).toBeLessThan(2_000);
      const stopped = link.weft.events.find((e) => e.event === 'stopped');
      expect(stopped, link.weft.stderr).toBeDefined();
      const counters = stopped!.counters as { framesIn: number; framesOut: number; datagramsReassembled: number };
      // At least: DHCP 2, echo 6, fragments 6, arping 2 — each way.
      expect(counters.framesIn).toBeGreaterThanOrEqual(16);
      expect(counters.framesOut).toBeGreaterThanOrEqual(16);
      expect(counters.datagramsReassembled).toBeGreaterThanOrEqual(2);
      // A forced exit would mean a socket or fd was left open.
      expect(link.weft.events.filter((e) => e.event === 'warning' || e.event === 'error')).toEqual([]);
    });

    it('wrote a pcap that shows the DHCP exchange and the (reassembled) pings', async () => {
      const frames = await readPcap(pcap);
      const count = (match: (f: PcapRecord) => boolean) => frames.filter(match).length;
      for (const type of ['1', '2', '3', '5']) {
        expect(
          count((f) => f['dhcp.option.dhcp'] === type),
          `DHCP message type ${type}`,
        ).toBeGreaterThanOrEqual(1);
      }
      for (const ip of ['10.0.2.2', '10.0.2.3']) {
        expect(
          count((f) => f['icmp.type'] === '8' && f['ip.dst'] === ip),
          `echo requests to ${ip}`,
        ).toBeGreaterThanOrEqual(3);
        expect(
          count((f) => f['icmp.type'] === '0' && f['ip.src'] === ip),
          `echo replies from ${ip}`,
        ).toBeGreaterThanOrEqual(3);
      }
      // tshark shows a reassembled datagram on its last fragment, with the fragment count.
      const big = (f: PcapRecord) => f['ip.fragment.count'] === '3' && f['ip.reassembled.length'] === '3008';
      expect(
        count((f) => f['icmp.type'] === '8' && big(f)),
        'reassembled echo requests',
      ).toBeGreaterThanOrEqual(2);
      expect(
        count((f) => f['icmp.type'] === '0' && big(f)),
        'reassembled echo replies',
      ).toBeGreaterThanOrEqual(2);
      expect(count((f) => f['arp.opcode'] === '2' && f['arp.src.proto_ipv4'] === '10.0.2.2')).toBeGreaterThanOrEqual(2);
    });

    it('wrote a pcap that reads whole and shows nothing past a FIN from weft', async () => {
      const scan = await assertCleanCapture(link.weft);
      expect(scan.frames, 'at least the DHCP exchange').toBeGreaterThanOrEqual(4);
    });

    it('leaves no TAP and no namespace behind', async () => {
      await link.stopCarrier?.();
      // The TAP is not persistent: it exists only while an fd holds it open.
      expect(await ns!.linkExists('tap0')).toBe(false);
      const name = ns!.name;
      await ns!.cleanup();
      expect(netnsExists(name)).toBe(false);
    });
  });
}
