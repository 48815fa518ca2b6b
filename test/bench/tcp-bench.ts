// TCP throughput from a real Linux guest (a network namespace) to an iperf3 server on this host's
// loopback, through weft (`weft vm --tap-fd`, plain and with `--tap-vnet-hdr` offloads), slirp4netns
// and pasta, side by side in one run. Absolute numbers on a shared 2-core machine are noisy; the
// ratios weft / peer are the figures. CPU seconds are those of the stack's own process (utime +
// stime from /proc), over both directions' measured runs.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { Netns, UDHCPC_SCRIPT } from '../harness/netns';
import { cpuSecondsOf } from './proc-stats';

export interface TcpBenchRow {
  peer: string;
  mtu: number;
  uploadMbit: number;
  downloadMbit: number;
  /** CPU seconds the stack process used during the measured upload and download. */
  cpuSeconds: number;
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

/** Sets up the guest's network in `ns` and returns the stack's process. */
type Setup = (ns: Netns) => Promise<ChildProcess>;

async function measure(peer: string, mtu: number, port: number, setup: Setup): Promise<TcpBenchRow> {
  const ns = Netns.create(`bench-${peer.replace(/[^a-z0-9]/g, '')}`);
  try {
    const stack = await setup(ns);
    // Warm up (slow start, JIT), then measure each direction.
    await iperf(ns, port, false).catch(() => 0);
    const cpuBefore = cpuSecondsOf(stack.pid);
    const uploadMbit = await iperf(ns, port, false);
    const downloadMbit = await iperf(ns, port, true);
    return { peer, mtu, uploadMbit, downloadMbit, cpuSeconds: cpuSecondsOf(stack.pid) - cpuBefore };
  } finally {
    await ns.cleanup();
  }
}

function startServer(port: number): ChildProcess {
  return spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
}

async function waitForAddress(ns: Netns, dev: string, address: string, child: ChildProcess, name: string): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await ns.exec(['ip', '-4', 'addr', 'show', dev])).stdout.includes(address)) return;
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} did not configure ${dev}`);
}

function weftSetup(mtu: number, vnetHdr: boolean): Setup {
  return async (ns) => {
    const weft = await ns.spawnWeftOnTap(['--allow-host-loopback', '--mtu', String(mtu)], 'tap0', { vnetHdr });
    const r = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5']);
    if (r.code !== 0) throw new Error(`udhcpc failed: ${r.stderr}`);
    return weft.child;
  };
}

function slirpSetup(mtu: number): Setup {
  return async (ns) => {
    const child = ns.track(
      spawn('slirp4netns', ['--configure', `--mtu=${mtu}`, '--netns-type=path', `/var/run/netns/${ns.name}`, 'tap0'], { stdio: 'ignore' }),
    );
    await waitForAddress(ns, 'tap0', '10.0.2.100', child, 'slirp4netns');
    return child;
  };
}

function pastaSetup(mtu: number): Setup {
  return async (ns) => {
    // The gateway address maps to the host's loopback (pasta's default --map-gw), as 10.0.2.2
    // does for weft --allow-host-loopback and slirp4netns. As root pasta would switch to nobody
    // and then fail to enter the namespace, hence --runas 0:0.
    const child = ns.track(
      spawn(
        'pasta',
        [
          '--config-net',
          '-4',
          '-a',
          '10.0.2.100',
          '-n',
          '24',
          '-g',
          '10.0.2.2',
          '-m',
          String(mtu),
          '-q',
          '-f',
          '--runas',
          '0:0',
          '--netns',
          `/var/run/netns/${ns.name}`,
          '--no-netns-quit',
        ],
        { stdio: 'ignore' },
      ),
    );
    await waitForAddress(ns, 'eth0', '10.0.2.100', child, 'pasta');
    return child;
  };
}

/** Every stack at one MTU: weft (plain TAP, then vnet_hdr offloads), slirp4netns, pasta when installed. */
export async function runTcpBench(mtu: number): Promise<TcpBenchRow[]> {
  const port = 25201 + (process.pid % 1000);
  const server = startServer(port);
  await new Promise((r) => setTimeout(r, 300));
  try {
    const rows = [
      await measure('weft', mtu, port, weftSetup(mtu, false)),
      // A vnet header costs 10 bytes of the 64 KiB libuv reads: MTU 65500 at most (vm-options.ts).
      await measure('weft vnet-hdr', mtu, port, weftSetup(Math.min(mtu, 65500), true)),
      await measure('slirp4netns', mtu, port, slirpSetup(mtu)),
    ];
    if (have('pasta')) rows.push(await measure('pasta', mtu, port, pastaSetup(mtu)));
    return rows;
  } finally {
    server.kill();
  }
}
