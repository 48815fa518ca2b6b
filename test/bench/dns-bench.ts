// DNS queries/s from a real guest (a network namespace), answered from cache and forwarded, through
// weft's resolver (10.0.2.3, `weft vm --dns-server`) and through dnsmasq used as a forwarder for a
// namespace in the same run, both forwarding to the same authoritative test zone. Load: dnsperf.
import { spawn, spawnSync } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Netns, UDHCPC_SCRIPT } from '../harness/netns';
import { DNS_TEST_ZONE, startDnsTestServer } from '../support/dns-test-server';

export interface DnsBenchRow {
  peer: string;
  cachedQps: number;
  forwardedQps: number;
}

const SECONDS = Number(process.env.WEFT_BENCH_SECONDS ?? 5);

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function dnsBenchUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and TAP devices)';
  const missing = ['dnsperf', 'dnsmasq', 'busybox', 'ip'].filter((c) => !have(c));
  if (missing.length > 0) return `missing ${missing.join(', ')} (apt-get install dnsperf dnsmasq-base busybox-static iproute2)`;
  return undefined;
}

async function dnsperf(ns: Netns, server: string, datafile: string): Promise<number> {
  const r = await ns.exec(['dnsperf', '-s', server, '-d', datafile, '-l', String(SECONDS), '-q', '200', '-t', '2'], (SECONDS + 30) * 1000);
  if (r.code !== 0) throw new Error(`dnsperf failed: ${r.stderr || r.stdout}`);
  const qps = /Queries per second:\s+([\d.]+)/.exec(r.stdout);
  const lost = /Queries lost:\s+(\d+)/.exec(r.stdout);
  if (!qps) throw new Error(`cannot read dnsperf output: ${r.stdout}`);
  if (lost && Number(lost[1]) > 0) console.log(`  (${lost[1]} queries lost against ${server})`);
  return Number(qps[1]);
}

export async function runDnsBench(): Promise<[DnsBenchRow, DnsBenchRow]> {
  const dir = mkdtempSync(join(tmpdir(), 'weft-dns-bench-'));
  const cached = join(dir, 'cached.txt');
  const unique = join(dir, 'unique.txt');
  writeFileSync(cached, `${['www', 'mail', 'a-only', 'sip', 'ns1'].map((n) => `${n}.${DNS_TEST_ZONE} A`).join('\n')}\n`);
  // Unique names: each is asked once, so each is forwarded (the zone answers NXDOMAIN).
  writeFileSync(unique, `${Array.from({ length: 400_000 }, (_, i) => `n${i}-${process.pid}.${DNS_TEST_ZONE} A`).join('\n')}\n`);
  const veth = `wdb${process.pid % 10000}`;
  const zone = await startDnsTestServer('0.0.0.0');
  try {
    // weft: the guest asks 10.0.2.3, weft forwards to the zone on host loopback.
    const weftNs = Netns.create('dnsbench-weft');
    let weft: DnsBenchRow;
    try {
      await weftNs.spawnWeftOnTap(['--dns-server', `127.0.0.1:${zone.port}`]);
      const dhcp = await weftNs.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5']);
      if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${dhcp.stderr}`);
      await dnsperf(weftNs, '10.0.2.3', cached); // warm-up (JIT, cache)
      weft = { peer: 'weft', cachedQps: await dnsperf(weftNs, '10.0.2.3', cached), forwardedQps: await dnsperf(weftNs, '10.0.2.3', unique) };
    } finally {
      await weftNs.cleanup();
    }
    // dnsmasq: a forwarder in the namespace, reaching the same zone over a veth pair.
    const ns = Netns.create('dnsbench-dnsmasq');
    let dnsmasq: DnsBenchRow;
    try {
      execFileSync('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth-b', 'netns', ns.name]);
      execFileSync('ip', ['addr', 'add', '10.99.0.1/24', 'dev', veth]);
      execFileSync('ip', ['link', 'set', veth, 'up']);
      await ns.exec(['ip', 'addr', 'add', '10.99.0.2/24', 'dev', 'eth-b']);
      await ns.exec(['ip', 'link', 'set', 'eth-b', 'up']);
      ns.track(
        spawn(
          'ip',
          [
            'netns',
            'exec',
            ns.name,
            'dnsmasq',
            '--keep-in-foreground',
            '--no-resolv',
            '--no-hosts',
            '--user=root',
            `--server=10.99.0.1#${zone.port}`,
            '--listen-address=127.0.0.1',
            '--bind-interfaces',
            '--cache-size=10000',
            '--dns-forward-max=1000',
          ],
          { stdio: 'ignore' },
        ),
      );
      await new Promise((r) => setTimeout(r, 500));
      await dnsperf(ns, '127.0.0.1', cached);
      dnsmasq = { peer: 'dnsmasq', cachedQps: await dnsperf(ns, '127.0.0.1', cached), forwardedQps: await dnsperf(ns, '127.0.0.1', unique) };
    } finally {
      await ns.cleanup();
      spawnSync('ip', ['link', 'del', veth], { stdio: 'ignore' });
    }
    return [weft, dnsmasq];
  } finally {
    await zone.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
