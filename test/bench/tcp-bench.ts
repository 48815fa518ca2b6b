// TCP throughput from a real Linux guest (a network namespace) to an iperf3 server on this host's
// loopback, through weft (`weft vm --tap-fd`) and through slirp4netns, side by side in one run.
// Absolute numbers on a shared 2-core machine are noisy; the ratio weft / slirp4netns is the figure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Netns, UDHCPC_SCRIPT } from '../harness/netns';

export interface TcpBenchRow {
  peer: string;
  mtu: number;
  uploadMbit: number;
  downloadMbit: number;
}

const SECONDS = Number(process.env.WEFT_BENCH_SECONDS ?? 5);

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function tcpBenchUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and TAP devices)';
  const missing = ['iperf3', 'slirp4netns', 'busybox', 'ip'].filter((c) => !have(c));
  if (missing.length > 0) return `missing ${missing.join(', ')} (apt-get install iperf3 slirp4netns busybox-static iproute2)`;
  return undefined;
}

async function iperf(ns: Netns, port: number, reverse: boolean): Promise<number> {
  const args = ['iperf3', '-c', '10.0.2.2', '-p', String(port), '-t', String(SECONDS), '-J', ...(reverse ? ['-R'] : [])];
  const r = await ns.exec(args, (SECONDS + 20) * 1000);
  if (r.code !== 0) throw new Error(`iperf3 in ${ns.name} failed: ${r.stderr || r.stdout.slice(0, 400)}`);
  const json = JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } };
  return json.end.sum_received.bits_per_second / 1e6;
}

async function measure(peer: string, mtu: number, port: number, setup: (ns: Netns) => Promise<void>): Promise<TcpBenchRow> {
  const ns = Netns.create(`bench-${peer}`);
  try {
    await setup(ns);
    // Warm up (slow start, JIT), then measure each direction.
    await iperf(ns, port, false).catch(() => 0);
    const uploadMbit = await iperf(ns, port, false);
    const downloadMbit = await iperf(ns, port, true);
    return { peer, mtu, uploadMbit, downloadMbit };
  } finally {
    await ns.cleanup();
  }
}

function startServer(port: number): ChildProcess {
  return spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
}

/** weft and slirp4netns at one MTU (1500, the default of both, or 65520, slirp4netns' fast setting). */
export async function runTcpBench(mtu: number): Promise<[TcpBenchRow, TcpBenchRow]> {
  const port = 25201 + (process.pid % 1000);
  const server = startServer(port);
  await new Promise((r) => setTimeout(r, 300));
  try {
    const weft = await measure('weft', mtu, port, async (ns) => {
      await ns.spawnWeftOnTap(['--allow-host-loopback', '--mtu', String(mtu)]);
      const r = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5']);
      if (r.code !== 0) throw new Error(`udhcpc failed: ${r.stderr}`);
    });
    const slirp = await measure('slirp4netns', mtu, port, async (ns) => {
      const child = ns.track(spawn('slirp4netns', ['--configure', `--mtu=${mtu}`, '--netns-type=path', `/var/run/netns/${ns.name}`, 'tap0'], { stdio: 'ignore' }));
      for (let i = 0; i < 50; i++) {
        if ((await ns.exec(['ip', '-4', 'addr', 'show', 'tap0'])).stdout.includes('10.0.2.100')) return;
        if (child.exitCode !== null) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('slirp4netns did not configure tap0');
    });
    return [weft, slirp];
  } finally {
    server.kill();
  }
}
