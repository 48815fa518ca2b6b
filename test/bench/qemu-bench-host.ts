// The host's side of the QEMU suite (qemu-bench.ts): the user-mode stacks it compares, each a
// process of its own (weft vm on a stream or dgram link, passt) or nothing (QEMU's -netdev user),
// and the HTTP server and TCP sink on 127.0.0.1 the guest transfers with.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { cleanupOnExit, type QemuLink } from '../harness/qemu-guest';
import { weftBundle } from '../harness/weft-bundle';
import { spawnWeft, spawnWrappedWeft, type WeftProcess } from '../harness/weft-process';
import { freeUdpPorts } from '../support/test-servers';

const MIB = 1 << 20;
export type PeerName = 'weft stream' | 'weft dgram' | 'user' | 'passt';

/**
 * Each stack's best link MTU, the most it carries: a frame must fit one UDP datagram on a dgram
 * link (65493), -netdev user has no MTU setting (1500), and passt hands out 65520 unless told.
 */
export const BEST_MTU: Readonly<Record<PeerName, number>> = { 'weft stream': 65520, 'weft dgram': 65493, user: 1500, passt: 65520 };

/**
 * WEFT_QEMU_BENCH_MTU: `best` (the default) runs each stack at its BEST_MTU, as a user would set it
 * up for speed; a number runs every stack at that MTU, leaving out those that cannot carry it.
 */
export function mtuSetting(value = process.env.WEFT_QEMU_BENCH_MTU ?? 'best'): number | 'best' {
  if (value === 'best') return 'best';
  const mtu = Number(value);
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > BEST_MTU['weft stream']) {
    throw new Error(`WEFT_QEMU_BENCH_MTU must be "best" or a whole number from 576 to ${BEST_MTU['weft stream']}, not "${value}"`);
  }
  return mtu;
}

/** The MTU a stack runs at in this bench, or why it cannot run at the MTU asked for. */
export function mtuOf(peer: PeerName): { mtu: number } | { skip: string } {
  const setting = mtuSetting();
  if (setting === 'best') return { mtu: BEST_MTU[peer] };
  if (setting > BEST_MTU[peer]) {
    const why = peer === 'user' ? 'it has no MTU setting (1500)' : `it carries at most MTU ${BEST_MTU[peer]}`;
    return { skip: `${LABELS[peer]}: ${why}, and this run is at MTU ${setting}` };
  }
  return { mtu: peer === 'user' ? BEST_MTU.user : setting };
}

/** The MTU `peer` runs at; throws for a stack that cannot (mtuOf says why). */
export function runMtu(peer: PeerName): number {
  const m = mtuOf(peer);
  if ('skip' in m) throw new Error(m.skip);
  return m.mtu;
}

/** passt drops to this user when started as root; its socket folder must be writable by it. */
const NOBODY = 65534;

/** Why passt cannot run here, or undefined. */
export function passtMissing(): string | undefined {
  return spawnSync('sh', ['-c', 'command -v passt']).status === 0 ? undefined : 'passt is not installed (apt-get install passt)';
}

// ---- the host's servers ---------------------------------------------------------------------------

/** What the servers note when a transfer starts or ends: CPU and system calls of the processes under test. */
export interface CpuSample {
  /** The stack's own process (NaN when it runs inside QEMU). */
  stack: number;
  /** Its read(v) and write(v) system calls so far. */
  stackSyscalls: { reads: number; writes: number };
  qemu: number;
  /** CLOCK_MONOTONIC in µs, the clock of V8's profiles. */
  atUs: number;
}

export type HostEvent =
  | { kind: 'download-start'; cpu: CpuSample }
  | { kind: 'upload-start'; cpu: CpuSample }
  | { kind: 'upload-end'; cpu: CpuSample; bytes: number; firstToLastMs: number };

/** Events in arrival order; a boot takes them one by one, in the order its script runs the transfers. */
export class EventQueue {
  private readonly items: HostEvent[] = [];
  private waiters: Array<(e: HostEvent) => void> = [];

  push(e: HostEvent): void {
    const w = this.waiters.shift();
    if (w) w(e);
    else this.items.push(e);
  }

  next(): Promise<HostEvent> {
    const e = this.items.shift();
    return e ? Promise.resolve(e) : new Promise((resolveEvent) => this.waiters.push(resolveEvent));
  }
}

export interface HostServers {
  httpPort: number;
  sinkPort: number;
  /** Where the servers report and how they sample CPU: set per boot. */
  attach(queue: EventQueue, sample: () => CpuSample): void;
  close(): Promise<void>;
}

/**
 * `GET /bytes/N` answers N bytes (1 MiB of random bytes, repeated; nothing on the way compresses);
 * the sink counts what a connection sends and closes at its end of stream.
 */
export async function startHostServers(): Promise<HostServers> {
  const block = randomBytes(MIB);
  let queue = new EventQueue();
  let sample: () => CpuSample = () => ({ stack: NaN, stackSyscalls: { reads: NaN, writes: NaN }, qemu: NaN, atUs: 0 });
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  const web = http.createServer((req, res) => {
    const m = /^\/bytes\/(\d{1,15})$/.exec(req.url ?? '');
    if (req.method !== 'GET' || !m) {
      res.writeHead(404).end();
      return;
    }
    queue.push({ kind: 'download-start', cpu: sample() });
    let left = Number(m[1]);
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(left) });
    const pump = () => {
      while (left > 0 && !res.destroyed) {
        const piece = left >= block.length ? block : block.subarray(0, left);
        left -= piece.length;
        if (!res.write(piece)) return;
      }
      if (left === 0) res.end();
    };
    res.on('drain', pump);
    pump();
  });
  web.on('connection', track);

  const sink = net.createServer({ allowHalfOpen: true }, (s) => {
    // The boot's own queue: a connection of a boot that failed may end during the next one.
    const q = queue;
    q.push({ kind: 'upload-start', cpu: sample() });
    let bytes = 0;
    let first = 0;
    let last = 0;
    s.on('data', (d: Buffer) => {
      last = performance.now();
      if (bytes === 0) first = last;
      bytes += d.length;
    });
    // Only a FIN back: passt 0.0~git20230309 drops what the host sends after the guest's FIN (the
    // guest's nc then never ends), so the byte count is checked here, not echoed to the guest.
    s.on('end', () => {
      q.push({ kind: 'upload-end', cpu: sample(), bytes, firstToLastMs: last - first });
      s.end();
    });
    s.on('error', () => s.destroy());
  });
  sink.on('connection', track);

  const listen = async (server: net.Server) => {
    await new Promise<void>((resolveListen) => server.listen(0, '127.0.0.1', resolveListen));
    return (server.address() as net.AddressInfo).port;
  };
  const httpPort = await listen(web);
  const sinkPort = await listen(sink);
  return {
    httpPort,
    sinkPort,
    attach(q, s) {
      queue = q;
      sample = s;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await Promise.all([web, sink].map((server) => new Promise<void>((r) => server.close(() => r()))));
    },
  };
}

// ---- the stacks -----------------------------------------------------------------------------------

export interface Peer {
  name: PeerName;
  label: string;
  link: QemuLink;
  /** The stack's own process, or undefined when it runs inside QEMU. */
  pid: number | undefined;
  /** Why the stack cannot serve another boot (its process exited), or undefined. */
  broken(): string | undefined;
  stop(): Promise<void>;
}

export const LABELS: Record<PeerName, string> = {
  'weft stream': 'weft vm --qemu (stream)',
  'weft dgram': 'weft vm --dgram',
  user: 'QEMU -netdev user',
  passt: 'passt (-netdev stream)',
};

async function stopWeft(weft: WeftProcess): Promise<void> {
  weft.kill('SIGTERM');
  await weft.waitForExit(10_000).catch(() => weft.kill('SIGKILL'));
}

/** `weft vm` on a fresh link in `dir`, with node flags (the profiler) when given. */
/**
 * WEFT_BENCH_PCAP=PREFIX: each stack (weft and passt, both have --pcap) captures its guest link to
 * PREFIX-NAME.pcap, the last boot's overwriting the one before — to compare how the stacks pace
 * their segments against the guest's window, not for timing (a capture costs both CPU).
 */
function benchPcap(name: string): string[] {
  const prefix = process.env.WEFT_BENCH_PCAP;
  return prefix ? ['--pcap', `${prefix}-${name}.pcap`] : [];
}

export async function startWeft(kind: 'stream' | 'dgram', dir: string, nodeFlags: string[] = []): Promise<Peer & { weft: WeftProcess }> {
  const name: PeerName = kind === 'stream' ? 'weft stream' : 'weft dgram';
  let link: QemuLink;
  let linkArgs: string[];
  if (kind === 'stream') {
    link = { kind, path: join(dir, `weft-${process.pid}.sock`) };
    linkArgs = ['--qemu', `unix:${link.path}`];
  } else {
    const [weftPort, qemuPort] = await freeUdpPorts(2);
    link = { kind, weftPort, qemuPort };
    linkArgs = ['--dgram', `${weftPort}:${qemuPort}`];
  }
  const args = ['vm', ...linkArgs, '--allow-host-loopback', '--mtu', String(runMtu(name)), ...benchPcap(`weft-${kind}`)];
  const weft = nodeFlags.length === 0 ? spawnWeft(args) : spawnWrappedWeft(process.execPath, ['--expose-gc', ...nodeFlags, weftBundle(), ...args]);
  const unregister = cleanupOnExit(() => weft.kill('SIGKILL'));
  try {
    await weft.waitForEvent('ready', () => true, 30_000);
  } catch (e) {
    weft.kill('SIGKILL');
    unregister();
    throw e;
  }
  return {
    name,
    label: LABELS[name],
    link,
    weft,
    pid: weft.pid,
    broken: () => (weft.exit ? `weft exited (${JSON.stringify(weft.exit)}): ${weft.stderr.slice(-1500)}` : undefined),
    async stop() {
      await stopWeft(weft);
      unregister();
    },
  };
}

/**
 * passt on a unix socket in a folder of its own: IPv4 only, the guest leases 10.0.2.15/24 with router 10.0.2.2
 * (passt's defaults would copy this host's address and gateway), and the gateway address maps to the
 * host's loopback (passt's default; --no-map-gw turns it off). The MTU is the bench's (mtuOf).
 */
export async function startPasst(): Promise<Peer> {
  // As root, passt switches to nobody before it binds the socket: a folder of its own, that it owns.
  const sockDir = mkdtempSync(join(tmpdir(), 'weft-qemu-bench-passt-'));
  const removeDir = () => rmSync(sockDir, { recursive: true, force: true });
  if (process.getuid?.() === 0) chownSync(sockDir, NOBODY, NOBODY);
  const path = join(sockDir, 'passt.sock');
  const child: ChildProcess = spawn(
    'passt',
    [
      '--foreground',
      '--quiet',
      '--ipv4-only',
      '--socket',
      path,
      '--mtu',
      String(runMtu('passt')),
      '--address',
      '10.0.2.15',
      '--netmask',
      '24',
      '--gateway',
      '10.0.2.2',
      ...benchPcap('passt'),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const exited = () => child.exitCode !== null || child.signalCode !== null;
  const kill = (signal: NodeJS.Signals) => {
    if (child.pid !== undefined && !exited()) {
      try {
        process.kill(child.pid, signal);
      } catch {
        // already gone
      }
    }
  };
  const unregister = cleanupOnExit(() => {
    kill('SIGKILL');
    removeDir();
  });
  const why = () =>
    `passt exited (${child.exitCode ?? child.signalCode}): ${stderr
      .replace(/Failed to send \d+ bytes to syslog\n?/g, '')
      .trim()
      .slice(-1500)}`;
  for (let i = 0; !existsSync(path); i++) {
    if (exited() || i >= 100) {
      kill('SIGKILL');
      removeDir();
      unregister();
      throw new Error(exited() ? why() : `passt made no socket at ${path} within 10 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    name: 'passt',
    label: LABELS.passt,
    link: { kind: 'stream', path },
    pid: child.pid,
    broken: () => (exited() ? why() : undefined),
    async stop() {
      kill('SIGTERM');
      for (let i = 0; i < 50 && !exited(); i++) await new Promise((r) => setTimeout(r, 100));
      kill('SIGKILL');
      removeDir();
      unregister();
    },
  };
}

export function userPeer(): Peer {
  return { name: 'user', label: LABELS.user, link: { kind: 'user' }, pid: undefined, broken: () => undefined, stop: async () => {} };
}
