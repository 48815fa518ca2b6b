// Soak: a real Linux guest (a network namespace on a TAP) opens and closes thousands of TCP
// connections and UDP flows through `weft vm --upstream direct --allow-host-loopback` against the
// host's test servers, while this process samples weft's open fds (/proc/PID/fd), RSS
// (/proc/PID/status) and V8 heap. It passes when, after the traffic and a drain period, the fd
// count is back to what weft had before any traffic, RSS, heap and ArrayBuffer memory are within
// 10% (plus a small absolute slack) of the baseline taken after a warm-up, and every flow weft
// opened was closed by the flow's own end or timeout (none left for SIGTERM to sweep up).
//
//   npm run soak [-- --seconds N] [--warmup N] [--sample N] [--tcp-rate N] [--udp-rate N]
//                    [--drain N] [--drain-before-baseline 0|1] [--weft-log FILE] [--heap-snapshot DIR]
//
// Defaults: 600 s of traffic after a 60 s warm-up, 150 TCP connections/s (plus a curl loop) and 8 UDP
// flows/s, samples every 5 s; exit code 0 when every check passes, 1 when one fails.
// test/integration/soak-short.test.ts runs the same with 60 s in CI. --weft-log keeps weft's log
// (every flow close), --heap-snapshot writes a V8 heap snapshot of weft at the end, and
// WEFT_SOAK_BUNDLE=path/to/weft.js runs another build of weft (to compare a fix with main).
//
// How each figure is read, and why:
// - fds and RSS from /proc, from outside weft.
// - heap: weft has no stats output and logs counters only at SIGTERM, so weft's node runs with
//   `--expose-gc --import <probe>`: a 15-line preload (written to a temp dir, not part of weft) that
//   every few seconds runs a full GC and prints process.memoryUsage() as a JSON line on weft's
//   stderr ({"event":"soak-probe",…}). Post-GC heapUsed is the live heap, and arrayBuffers the
//   packet and socket buffers outside it: what a leak grows. Both are compared after the drain
//   with the baseline taken once the warm-up's TCP connections (or all its flows) have closed.
// - RSS is compared with the warm-up's peak: the allocator keeps freed pages, so RSS tracks the
//   high-water mark of the load, and only a leak pushes it past what the same load reached before.
// - flows: `--log-flows` makes weft log one line per closed flow, with a reason. The guest counts
//   the connections and UDP flows it made; the table has drained when weft has logged a close for
//   each of them. At SIGTERM weft closes what is left with reason "shutdown", and logs
//   counters.tcpConnectionsOpened: a drained table has no "shutdown" closes and as many TCP closes
//   as connections opened. (counters.tcpConnections and udpFlows in the "stopped" line are read
//   after weft's own shutdown has emptied the tables, so they are always empty and prove nothing.)
// - UDP flows close after weft's idle timeout (60 s), so the drain period is up to 75 s.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readdirSync, readFileSync, statSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describeExec, describeFds, missingCommands, openFdCount, pythonExecutable } from '../harness/guest-tools';
import { Netns, requireRoot, TAP_LAUNCHER, UDHCPC_SCRIPT } from '../harness/netns';
import { weftBundle } from '../harness/weft-bundle';
import {
  closedTcpPort,
  startHttpTestServer,
  startTcpEchoServer,
  startUdpEchoServer,
  type TestServer,
} from '../support/test-servers';

export interface SoakOptions {
  /** Traffic after the warm-up, in seconds. */
  seconds: number;
  warmupSeconds: number;
  /** How often fds, RSS and heap are sampled. */
  sampleMs: number;
  /** New TCP connections per second from the python client (plus a curl loop at ~4/s). */
  tcpRate: number;
  /** New UDP flows (each from its own source port) per second. */
  udpRate: number;
  /** How long flows may take to drain after the traffic stops (UDP idle timeout is 60 s). */
  drainMs: number;
  /**
   * Wait for every warm-up flow to close before the baseline (up to drainMs: a minute, for UDP), so
   * baseline and end are both taken with an empty flow table. Off: wait only for TCP (TIME_WAIT is
   * 30 s), and the baseline includes the warm-up's UDP flows (udpRate × warm-up seconds).
   */
  drainBeforeBaseline: boolean;
  /** Allowed growth over the baseline: relative, and absolute slack in bytes. */
  rssGrowth: number;
  rssSlackBytes: number;
  heapGrowth: number;
  heapSlackBytes: number;
  /** The same for ArrayBuffer memory (packet and socket buffers live there, outside the heap). */
  buffersGrowth: number;
  buffersSlackBytes: number;
  /** If set, every line weft logs is appended to this file (flow closes included). */
  weftLogFile?: string;
  /** If set, weft writes a V8 heap snapshot into this directory at the end (before SIGTERM). */
  heapSnapshotDir?: string;
  /** Progress lines (phases, samples as they are taken); the final table is in the report. */
  log: (line: string) => void;
}

export const DEFAULT_SOAK: SoakOptions = {
  seconds: 600,
  warmupSeconds: 60,
  sampleMs: 5_000,
  tcpRate: 150,
  udpRate: 8,
  drainMs: 75_000,
  drainBeforeBaseline: true,
  rssGrowth: 0.1,
  rssSlackBytes: 8 << 20,
  heapGrowth: 0.1,
  heapSlackBytes: 1 << 20,
  buffersGrowth: 0.1,
  buffersSlackBytes: 2 << 20,
  log: () => {},
};

export interface Sample {
  /** Seconds since weft was ready. */
  t: number;
  phase: string;
  fds: number;
  rss: number;
  /** From the last probe line (post-GC), or NaN before the first. */
  heapUsed: number;
  heapTotal: number;
  /** ArrayBuffer backing stores (outside the V8 heap, inside RSS), from the same probe line. */
  arrayBuffers: number;
  /** Flow closes weft has logged so far. */
  tcpClosed: number;
  udpClosed: number;
  /** Connections / flows the guest has made so far (all phases). */
  guestTcp: number;
  guestUdp: number;
}

export interface GuestCounts {
  tcpAttempts: number;
  tcpOk: number;
  tcpRefused: number;
  tcpErrors: number;
  udpFlows: number;
  udpOk: number;
  udpErrors: number;
  bytes: number;
  curlOk: number;
  curlFailed: number;
  errors: string[];
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface SoakReport {
  options: Omit<SoakOptions, 'log'>;
  samples: Sample[];
  /** Before any traffic (the fd reference: nothing open but weft's own). */
  idle: Sample;
  /** After the warm-up, once its TCP connections have closed (the RSS and heap reference). */
  baseline: Sample;
  /** After the soak traffic and the drain. */
  end: Sample;
  guest: { warmup: GuestCounts; soak: GuestCounts };
  weft: {
    tcpClosed: number;
    udpClosed: number;
    closeReasons: Record<string, number>;
    closedByShutdown: number;
    tcpConnectionsOpened: number | undefined;
    exitCode: number | null;
    warnings: string[];
  };
  /** Milliseconds from the end of traffic until every flow had closed, if it did within drainMs. */
  drainedAfterMs: number | undefined;
  checks: Check[];
  ok: boolean;
}

/** Why the soak cannot run here, or undefined. */
export function soakUnavailable(): string | undefined {
  const root = requireRoot('soak');
  if (!root.ok) return root.reason;
  const missing = missingCommands(['curl', 'bash', 'busybox', 'ip']);
  if (missing.length > 0) return `missing ${missing.join(', ')} (apt-get install ${missing.join(' ')})`;
  return undefined;
}

// ---- programs -----------------------------------------------------------------------------------

/** Preloaded into weft's node (`--expose-gc --import`): prints post-GC memory figures on stderr. */
const PROBE_MJS = `
const every = Number(process.env.WEFT_SOAK_PROBE_MS) || 5000;
const probe = () => {
  if (typeof globalThis.gc === 'function') globalThis.gc();
  const m = process.memoryUsage();
  process.stderr.write(JSON.stringify({
    event: 'soak-probe', rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal,
    external: m.external, arrayBuffers: m.arrayBuffers, gc: typeof globalThis.gc === 'function',
  }) + '\\n');
};
setInterval(probe, every).unref();
setTimeout(probe, 200).unref();
`;

/**
 * The guest's client: `soak_client.py HOST ECHO HTTP CLOSED UDP SECONDS TCP_RATE UDP_RATE FIRST_UDP_PORT`. Opens
 * TCP connections at TCP_RATE/s in a rotation of behaviours (echo with the guest's FIN first, HTTP
 * with the server's FIN first, an abort by RST, a refused port; every 50th echo moves 1 MiB), and
 * UDP flows at UDP_RATE/s, each from a new socket (a new source port): two datagrams, both echoed.
 * Prints a JSON progress line each second and a final one.
 */
const PY_SOAK_CLIENT = String.raw`
import asyncio, json, os, random, socket, struct, sys, time

host = sys.argv[1]
echo_port, http_port, closed_port, udp_port = (int(x) for x in sys.argv[2:6])
seconds, tcp_rate, udp_rate = float(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
# UDP flows bind their own source ports, counting up from here (10000…31999, below the ephemeral
# range), so no two flows share one: with kernel-chosen ports a reused port within weft's idle
# timeout would continue the old flow, and weft would see fewer flows than the guest made.
udp_first_port = int(sys.argv[9])
MAX_INFLIGHT = 200
TIMEOUT = 120  # generous: on a loaded 2-core machine a 1 MiB echo among hundreds of connections can take 30 s
rng = random.Random(7)
blob = os.urandom(1 << 20)
c = {'tcpAttempts': 0, 'tcpOk': 0, 'tcpRefused': 0, 'tcpErrors': 0,
     'udpFlows': 0, 'udpOk': 0, 'udpErrors': 0, 'bytes': 0}
errors = []

def fail(kind, what):
    c[kind] += 1
    if len(errors) < 20:
        errors.append(what)

async def echo(n, size):
    reader, writer = await asyncio.open_connection(host, echo_port)
    off = (n * 7919) % (len(blob) - size) if size < len(blob) else 0
    data = blob[off:off + size]
    writer.write(data)
    writer.write_eof()
    got = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        got += chunk
    writer.close()
    await writer.wait_closed()
    if bytes(got) != data:
        raise ValueError('echo mismatch: sent %d, got %d' % (len(data), len(got)))
    c['bytes'] += 2 * size

async def http():
    reader, writer = await asyncio.open_connection(host, http_port)
    writer.write(b'GET /hello HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n')
    body = await reader.read()  # the server closes first
    writer.close()
    await writer.wait_closed()
    if not body.startswith(b'HTTP/1.1 200') or b'hello from the weft test server\n' not in body:
        raise ValueError('bad HTTP reply: %r' % body[:80])

async def abort(size):
    reader, writer = await asyncio.open_connection(host, echo_port)
    writer.write(blob[:size])
    await reader.readexactly(min(size, 1000))
    sock = writer.get_extra_info('socket')
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    writer.transport.abort()  # close() with linger 0: RST

async def refused():
    try:
        _, writer = await asyncio.open_connection(host, closed_port)
    except ConnectionRefusedError:
        c['tcpRefused'] += 1
        return
    writer.close()
    raise ValueError('connected to a closed port')

async def one_tcp(n):
    c['tcpAttempts'] += 1
    kind = n % 10
    try:
        if kind < 5:
            size = (1 << 20) if n % 50 == 0 else rng.randrange(1, 65536)
            await asyncio.wait_for(echo(n, size), TIMEOUT)
        elif kind < 8:
            await asyncio.wait_for(http(), TIMEOUT)
        elif kind == 8:
            await asyncio.wait_for(abort(rng.randrange(1, 16384)), TIMEOUT)
        else:
            await asyncio.wait_for(refused(), TIMEOUT)
            return
        c['tcpOk'] += 1
    except Exception as e:
        fail('tcpErrors', 'tcp %d (kind %d): %r' % (n, kind, e))

async def one_udp(n):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.bind(('0.0.0.0', 10000 + (udp_first_port - 10000 + n) % 22000))  # n: one per pacing tick
        s.connect((host, udp_port))
        c['udpFlows'] += 1
        sent = [blob[n % 1000:n % 1000 + rng.randrange(1, 1400)] for _ in range(2)]
        for d in sent:
            await loop.sock_sendall(s, d)
        got = []
        deadline = loop.time() + 3
        while len(got) < len(sent):
            got.append(await asyncio.wait_for(loop.sock_recv(s, 65535), max(0.01, deadline - loop.time())))
        if sorted(got) != sorted(sent):
            raise ValueError('udp echo mismatch')
        c['udpOk'] += 1
    except Exception as e:
        fail('udpErrors', 'udp %d: %r' % (n, e))
    finally:
        s.close()

async def pace(rate, make, tasks):
    if rate <= 0:
        return
    start = time.monotonic()
    n = 0
    while True:
        due = start + n / rate
        now = time.monotonic()
        if now - start >= seconds:
            return
        if due > now:
            await asyncio.sleep(due - now)
            continue
        if len(tasks) < MAX_INFLIGHT:
            t = asyncio.ensure_future(make(n))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        n += 1

async def progress(done):
    start = time.monotonic()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 1)
        except asyncio.TimeoutError:
            pass
        print(json.dumps(dict(c, t=round(time.monotonic() - start, 1))), flush=True)

async def main():
    tasks = set()
    done = asyncio.Event()
    reporter = asyncio.ensure_future(progress(done))
    await asyncio.gather(pace(tcp_rate, one_tcp, tasks), pace(udp_rate, one_udp, tasks))
    if tasks:
        await asyncio.wait(list(tasks), timeout=TIMEOUT + 10)
    done.set()
    await reporter
    print(json.dumps(dict(c, final=True, errors=errors)), flush=True)

asyncio.run(main())
`;

// ---- weft with the probe ------------------------------------------------------------------------

interface ProbeLine { rss: number; heapUsed: number; heapTotal: number; arrayBuffers: number; gc: boolean }

/** weft's stderr, counted as it streams (a long soak logs far too many flow lines to keep). */
class WeftLog {
  tcpClosed = 0;
  udpClosed = 0;
  closedByShutdown = 0;
  readonly closeReasons: Record<string, number> = {};
  probe: ProbeLine | undefined;
  probes = 0;
  ready = false;
  stopped: Record<string, unknown> | undefined;
  readonly warnings: string[] = [];
  /** Recent lines that are not flow closes or probes, for failure messages. */
  readonly tail: string[] = [];
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private partial = '';
  private readonly listeners = new Set<() => void>();

  constructor(readonly child: ChildProcess, copyTo?: string) {
    const copy = copyTo ? createWriteStream(copyTo) : undefined;
    if (copy) child.once('exit', () => copy.end());
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      copy?.write(s);
      const lines = (this.partial + s).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) this.line(line);
      this.notify();
    });
    child.stdout!.resume();
    child.once('exit', (code, signal) => {
      this.exit = { code, signal };
      this.notify();
    });
  }

  private line(line: string): void {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.keep(line);
      return;
    }
    switch (e.event) {
      case 'flow-close': {
        if (e.protocol === 'tcp') this.tcpClosed++;
        else this.udpClosed++;
        const reason = `${String(e.protocol)} ${String(e.reason ?? '(none)')}`;
        this.closeReasons[reason] = (this.closeReasons[reason] ?? 0) + 1;
        if (e.reason === 'shutdown') this.closedByShutdown++;
        return;
      }
      case 'soak-probe':
        this.probe = e as unknown as ProbeLine;
        this.probes++;
        return;
      case 'ready':
        this.ready = true;
        break;
      case 'stopped':
        this.stopped = e;
        break;
      case 'warning':
      case 'error':
        this.warnings.push(line);
        break;
    }
    this.keep(line);
  }

  private keep(line: string): void {
    this.tail.push(line);
    if (this.tail.length > 40) this.tail.shift();
  }

  private notify(): void {
    for (const f of [...this.listeners]) f();
  }

  /** Resolves once `cond()` holds (checked on every log line and at exit), or rejects after `timeoutMs`. */
  until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (cond()) {
          done();
          resolve();
        } else if (this.exit) {
          done();
          reject(new Error(`weft exited (${JSON.stringify(this.exit)}) while waiting for ${what}:\n${this.tail.join('\n')}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeoutMs} ms:\n${this.tail.join('\n')}`));
      }, timeoutMs);
      const poll = setInterval(check, 250); // conditions on other state than log lines
      const done = () => {
        clearTimeout(timer);
        clearInterval(poll);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }
}

function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The guest kernel's count of retransmitted SYNs (TcpExt TCPSynRetrans in /proc/net/netstat). */
async function guestSynRetransmits(ns: Netns): Promise<number> {
  const r = await ns.exec(['cat', '/proc/net/netstat']);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('TcpExt:'));
  if (r.code !== 0 || lines.length < 2) throw new Error(`cannot read the guest's /proc/net/netstat: ${describeExec(r)}`);
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  const i = names.indexOf('TCPSynRetrans');
  return i < 0 ? 0 : Number(values[i]);
}

// ---- guest programs ------------------------------------------------------------------------------

interface GuestRun {
  latest: GuestCounts;
  done: Promise<GuestCounts>;
}

const emptyCounts = (): GuestCounts => ({
  tcpAttempts: 0, tcpOk: 0, tcpRefused: 0, tcpErrors: 0, udpFlows: 0, udpOk: 0, udpErrors: 0, bytes: 0,
  curlOk: 0, curlFailed: 0, errors: [],
});

/** Runs the python client and a curl loop in the guest for `seconds`; `latest` follows their progress. */
function startGuestTraffic(ns: Netns, client: string, ports: number[], seconds: number, opts: SoakOptions, httpPort: number, firstUdpPort: number): GuestRun {
  const run: GuestRun = { latest: emptyCounts(), done: Promise.resolve(emptyCounts()) };
  const py = ns.track(spawn('ip', [
    'netns', 'exec', ns.name, pythonExecutable(), client, '10.0.2.2', ...ports.map(String),
    String(seconds), String(opts.tcpRate), String(opts.udpRate), String(firstUdpPort),
  ], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const curlScript = [
    `end=$((SECONDS + ${Math.ceil(seconds)})); ok=0; failed=0`,
    `while [ $SECONDS -lt $end ]; do`,
    `  if curl -sS -o /dev/null --fail --max-time 10 http://10.0.2.2:${httpPort}/hello; then ok=$((ok+1)); else failed=$((failed+1)); fi`,
    `  sleep 0.25`,
    `done`,
    `echo "$ok $failed"`,
  ].join('\n');
  const curl = ns.track(spawn('ip', ['netns', 'exec', ns.name, 'bash', '-c', curlScript], { stdio: ['ignore', 'pipe', 'pipe'] }));

  let pyOut = '';
  let pyErr = '';
  let final: Record<string, unknown> | undefined;
  py.stdout!.setEncoding('utf8').on('data', (s: string) => {
    pyOut += s;
    const lines = pyOut.split('\n');
    pyOut = lines.pop() ?? '';
    for (const l of lines) {
      if (!l.trim()) continue;
      const p = JSON.parse(l) as Record<string, unknown>;
      Object.assign(run.latest, Object.fromEntries(Object.entries(p).filter(([k]) => k in run.latest && k !== 'errors')));
      if (p.final) final = p;
    }
  });
  py.stderr!.setEncoding('utf8').on('data', (s: string) => (pyErr += s));
  let curlOut = '';
  let curlErr = '';
  curl.stdout!.setEncoding('utf8').on('data', (s: string) => (curlOut += s));
  curl.stderr!.setEncoding('utf8').on('data', (s: string) => (curlErr = (curlErr + s).slice(-2000)));

  const exited = (p: ChildProcess) => new Promise<number | null>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) resolve(p.exitCode);
    else p.once('exit', (code) => resolve(code));
  });
  run.done = (async () => {
    const [pyCode, curlCode] = await Promise.all([exited(py), exited(curl)]);
    if (pyCode !== 0 || !final) throw new Error(`guest client failed (exit ${pyCode}):\n${pyErr.slice(-3000)}`);
    const m = /^(\d+) (\d+)$/m.exec(curlOut);
    if (curlCode !== 0 || !m) throw new Error(`guest curl loop failed (exit ${curlCode}): ${curlOut} ${curlErr}`);
    const counts = { ...run.latest, errors: (final.errors as string[]) ?? [], curlOk: Number(m[1]), curlFailed: Number(m[2]) };
    if (counts.curlFailed > 0) counts.errors.push(`curl: ${curlErr.trim().split('\n').slice(-3).join(' | ')}`);
    run.latest = counts;
    return counts;
  })();
  return run;
}

// ---- the soak ------------------------------------------------------------------------------------

export async function runSoak(partial: Partial<SoakOptions> = {}): Promise<SoakReport> {
  const opts: SoakOptions = { ...DEFAULT_SOAK, ...partial };
  const { log } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'weft-soak-'));
  const servers: TestServer[] = [];
  let ns: Netns | undefined;
  try {
    const probe = join(dir, 'probe.mjs');
    writeFileSync(probe, PROBE_MJS);
    const client = join(dir, 'soak_client.py');
    writeFileSync(client, PY_SOAK_CLIENT);
    const http = await startHttpTestServer();
    const echo = await startTcpEchoServer();
    const udp = await startUdpEchoServer();
    servers.push(http, echo, udp);
    const closed = await closedTcpPort();
    const ports = [echo.port, http.port, closed, udp.port];

    ns = Netns.create('soak');
    const child = ns.track(spawn(pythonExecutable(), [
      TAP_LAUNCHER, '--netns', ns.name, '--tap', 'tap0', '--',
      process.execPath, '--expose-gc', '--import', pathToFileURL(probe).href,
      ...(opts.heapSnapshotDir ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${opts.heapSnapshotDir}`] : []),
      process.env.WEFT_SOAK_BUNDLE || weftBundle(), 'vm', '--tap-fd', '3', '--upstream', 'direct', '--allow-host-loopback', '--log-flows',
    ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WEFT_SOAK_PROBE_MS: String(opts.sampleMs) } }));
    const weft = new WeftLog(child, opts.weftLogFile);
    await weft.until(() => weft.ready, 'ready line from weft', 15_000);
    const pid = child.pid!;
    await ns.bringUpTap('tap0');
    const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
    if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
    await weft.until(() => weft.probe !== undefined, 'memory probe line (is --import working?)', 15_000);
    if (!weft.probe!.gc) throw new Error('the probe has no gc(): --expose-gc did not reach weft');
    const t0 = performance.now();

    const samples: Sample[] = [];
    let phase = 'idle';
    let guestTcp = 0;
    let guestUdp = 0;
    let current: GuestRun | undefined;
    const guestTotals = () => ({
      tcp: guestTcp + (current ? current.latest.tcpAttempts + current.latest.curlOk + current.latest.curlFailed : 0),
      udp: guestUdp + (current ? current.latest.udpFlows : 0),
    });
    const sample = (label = phase): Sample => {
      const g = guestTotals();
      const s: Sample = {
        t: (performance.now() - t0) / 1000,
        phase: label,
        fds: openFdCount(pid),
        rss: rssOf(pid),
        heapUsed: weft.probe?.heapUsed ?? NaN,
        heapTotal: weft.probe?.heapTotal ?? NaN,
        arrayBuffers: weft.probe?.arrayBuffers ?? NaN,
        tcpClosed: weft.tcpClosed,
        udpClosed: weft.udpClosed,
        guestTcp: g.tcp,
        guestUdp: g.udp,
      };
      samples.push(s);
      log(formatSample(s));
      return s;
    };
    /** A sample right after a fresh probe line (a GC'd heap figure from now, not from seconds ago). */
    const freshSample = async (label: string): Promise<Sample> => {
      const n = weft.probes;
      await weft.until(() => weft.probes > n, 'a fresh memory probe', opts.sampleMs + 5_000);
      return sample(label);
    };
    const sampler = setInterval(() => {
      try {
        sample();
      } catch {
        // weft gone; the phase that waits on it reports why
      }
    }, opts.sampleMs);

    let warmup: GuestCounts;
    let soak: GuestCounts;
    let drainedAfterMs: number | undefined;
    let synRetransStart = 0;
    let idle: Sample;
    let baseline: Sample;
    let end: Sample;
    try {
      log(formatSampleHeader());
      idle = await freshSample('idle');
      synRetransStart = await guestSynRetransmits(ns);

      // Warm-up: the same traffic, so the JIT, the heap and every code path are at their working size.
      phase = 'warmup';
      log(`warm-up: ${opts.warmupSeconds} s of traffic`);
      current = startGuestTraffic(ns, client, ports, opts.warmupSeconds, opts, http.port, 10000);
      warmup = await current.done;
      guestTcp += warmup.tcpAttempts + warmup.curlOk + warmup.curlFailed;
      guestUdp += warmup.udpFlows;
      current = undefined;
      phase = 'settle';
      if (opts.drainBeforeBaseline) {
        log(`settle: up to ${opts.drainMs / 1000} s for the warm-up's flows to close`);
        await weft.until(() => weft.tcpClosed >= guestTcp && weft.udpClosed >= guestUdp, 'every warm-up flow to close', opts.drainMs);
      } else {
        // TCP closes at once or after TIME_WAIT (30 s); the warm-up's UDP flows stay open.
        log('settle: up to 40 s for the warm-up\'s TCP connections to close');
        await weft.until(() => weft.tcpClosed >= guestTcp, 'every warm-up TCP connection to close', 40_000);
      }
      baseline = await freshSample('baseline');

      phase = 'soak';
      log(`soak: ${opts.seconds} s of traffic (${opts.tcpRate} TCP connections/s + a curl loop, ${opts.udpRate} UDP flows/s)`);
      current = startGuestTraffic(ns, client, ports, opts.seconds, opts, http.port, 21000);
      soak = await current.done;
      guestTcp += soak.tcpAttempts + soak.curlOk + soak.curlFailed;
      guestUdp += soak.udpFlows;
      current = undefined;

      phase = 'drain';
      const drainStart = performance.now();
      log(`drain: up to ${opts.drainMs / 1000} s for every flow to close and the fd count to return to ${idle.fds}`);
      // SIGTERM later tells whether weft had more flows than these: they close with reason "shutdown".
      const drained = () => weft.tcpClosed >= guestTcp && weft.udpClosed >= guestUdp;
      try {
        await weft.until(drained, 'every flow to close', opts.drainMs);
        drainedAfterMs = performance.now() - drainStart;
      } catch {
        drainedAfterMs = undefined;
      }
      // The upstream sockets close a moment after the flow-close line.
      const fdDeadline = performance.now() + 5_000;
      while (openFdCount(pid) > idle.fds && performance.now() < fdDeadline) await sleep(100);
      end = await freshSample('end');
    } finally {
      clearInterval(sampler);
    }

    const fdsAtEnd = end.fds > idle.fds ? describeFds(pid) : [];
    const synRetransmits = (await guestSynRetransmits(ns)) - synRetransStart;
    if (opts.heapSnapshotDir) {
      const before = new Set(readdirSync(opts.heapSnapshotDir));
      child.kill('SIGUSR2');
      const deadline = performance.now() + 60_000;
      let written: string | undefined;
      while (!written && performance.now() < deadline) {
        await sleep(500);
        const fresh = readdirSync(opts.heapSnapshotDir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
        // Written when its size stops changing.
        if (fresh.length > 0) {
          const file = join(opts.heapSnapshotDir, fresh[0]);
          const size = statSync(file).size;
          await sleep(1000);
          if (statSync(file).size === size && size > 0) written = file;
        }
      }
      log(written ? `heap snapshot: ${written}` : 'heap snapshot: none written within 60 s');
    }
    // Stop weft: flows still open now are closed with reason "shutdown".
    child.kill('SIGTERM');
    await weft.until(() => weft.exit !== undefined, 'weft to exit after SIGTERM', 10_000);
    const counters = weft.stopped?.counters as { tcpConnectionsOpened?: number } | undefined;

    const checks: Check[] = [];
    const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
    const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
    const allErrors = [...warmup.errors, ...soak.errors];
    check('guest traffic had no errors', warmup.tcpErrors + soak.tcpErrors + warmup.udpErrors + soak.udpErrors + warmup.curlFailed + soak.curlFailed === 0,
      `tcp errors ${warmup.tcpErrors + soak.tcpErrors}, udp errors ${warmup.udpErrors + soak.udpErrors}, curl failures ${warmup.curlFailed + soak.curlFailed}${allErrors.length ? `: ${allErrors.slice(0, 10).join('; ')}` : ''}`);
    check(`every flow closed within ${opts.drainMs / 1000} s of the end of traffic`, drainedAfterMs !== undefined,
      `weft logged ${weft.tcpClosed} TCP closes for the guest's ${guestTcp} connections and ${weft.udpClosed} UDP closes for its ${guestUdp} flows${drainedAfterMs !== undefined ? `, drained after ${(drainedAfterMs / 1000).toFixed(1)} s` : ''}`);
    check('no flow was left for SIGTERM to close', weft.closedByShutdown === 0, `${weft.closedByShutdown} flows closed with reason "shutdown"`);
    // A SYN the guest sends again after weft already refused the first (the RST still on its way)
    // opens a second flow: legitimate, and only possible when the guest retransmitted a SYN.
    const opened = counters?.tcpConnectionsOpened;
    check('weft opened the TCP connections the guest made (plus at most its SYN retransmissions), and closed each',
      opened !== undefined && opened >= guestTcp && opened <= guestTcp + synRetransmits && weft.tcpClosed === opened,
      `tcpConnectionsOpened ${opened}, TCP flow closes ${weft.tcpClosed}, guest connections ${guestTcp}, guest SYN retransmissions ${synRetransmits}`);
    const fdLimit = Math.floor(idle.fds * 1.1);
    check('fd count back to the idle count (within 10%)', end.fds <= fdLimit,
      `idle ${idle.fds}, baseline ${baseline.fds}, end ${end.fds} (limit ${fdLimit})${fdsAtEnd.length ? `:\n${fdsAtEnd.join('\n')}` : ''}`);
    // RSS does not come down when the load does (the allocator keeps freed pages), so its baseline
    // is the most the warmed-up process held under this load: the warm-up's peak (or the settled
    // baseline, if higher). A leak pushes the soak's RSS past that; a steady process stays below.
    const rssBaseline = Math.max(baseline.rss, ...samples.filter((s) => s.phase === 'warmup').map((s) => s.rss));
    const rssLimit = rssBaseline * (1 + opts.rssGrowth) + opts.rssSlackBytes;
    check(`RSS within ${opts.rssGrowth * 100}% + ${mib(opts.rssSlackBytes)} of the warm-up's peak`, end.rss <= rssLimit,
      `warm-up peak ${mib(rssBaseline)} (settled baseline ${mib(baseline.rss)}), end ${mib(end.rss)}, limit ${mib(rssLimit)}, ` +
      `soak peak ${mib(Math.max(...samples.filter((s) => s.phase === 'soak').map((s) => s.rss)))}`);
    const heapLimit = baseline.heapUsed * (1 + opts.heapGrowth) + opts.heapSlackBytes;
    check(`heap (after GC) within ${opts.heapGrowth * 100}% + ${mib(opts.heapSlackBytes)} of the baseline`, end.heapUsed <= heapLimit,
      `baseline ${mib(baseline.heapUsed)}, end ${mib(end.heapUsed)}, limit ${mib(heapLimit)}, peak ${mib(Math.max(...samples.map((s) => s.heapUsed).filter((x) => !Number.isNaN(x))))}`);
    const bufLimit = baseline.arrayBuffers * (1 + opts.buffersGrowth) + opts.buffersSlackBytes;
    check(`ArrayBuffer memory (after GC) within ${opts.buffersGrowth * 100}% + ${mib(opts.buffersSlackBytes)} of the baseline`, end.arrayBuffers <= bufLimit,
      `idle ${mib(idle.arrayBuffers)}, baseline ${mib(baseline.arrayBuffers)}, end ${mib(end.arrayBuffers)}, limit ${mib(bufLimit)}, peak ${mib(Math.max(...samples.map((s) => s.arrayBuffers).filter((x) => !Number.isNaN(x))))}`);
    check('weft exited 0 on SIGTERM without warnings or errors', weft.exit?.code === 0 && weft.warnings.length === 0,
      `exit ${JSON.stringify(weft.exit)}${weft.warnings.length ? `; ${weft.warnings.slice(0, 5).join(' | ')}` : ''}`);

    const { log: _log, ...shown } = opts;
    return {
      options: shown,
      samples,
      idle,
      baseline,
      end,
      guest: { warmup, soak },
      weft: {
        tcpClosed: weft.tcpClosed,
        udpClosed: weft.udpClosed,
        closeReasons: weft.closeReasons,
        closedByShutdown: weft.closedByShutdown,
        tcpConnectionsOpened: counters?.tcpConnectionsOpened,
        exitCode: weft.exit?.code ?? null,
        warnings: weft.warnings,
      },
      drainedAfterMs,
      checks,
      ok: checks.every((c) => c.ok),
    };
  } finally {
    await ns?.cleanup();
    await Promise.all(servers.map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- output --------------------------------------------------------------------------------------

const COLUMNS = ['t (s)', 'phase', 'fds', 'RSS MiB', 'heap MiB', 'buffers MiB', 'TCP open/closed', 'UDP open/closed'] as const;
const WIDTHS = [7, 8, 5, 8, 9, 11, 16, 16];

export function formatSampleHeader(): string {
  return COLUMNS.map((c, i) => (i === 1 ? c.padEnd(WIDTHS[i]) : c.padStart(WIDTHS[i]))).join('  ');
}

export function formatSample(s: Sample): string {
  const cells = [
    s.t.toFixed(0),
    s.phase,
    String(s.fds),
    (s.rss / 2 ** 20).toFixed(1),
    Number.isNaN(s.heapUsed) ? '-' : (s.heapUsed / 2 ** 20).toFixed(2),
    Number.isNaN(s.arrayBuffers) ? '-' : (s.arrayBuffers / 2 ** 20).toFixed(2),
    `${s.guestTcp}/${s.tcpClosed}`,
    `${s.guestUdp}/${s.udpClosed}`,
  ];
  return cells.map((c, i) => (i === 1 ? c.padEnd(WIDTHS[i]) : c.padStart(WIDTHS[i]))).join('  ');
}

/** The samples (at most `maxRows`, evenly spaced, always with idle, baseline and end), then the checks. */
export function formatReport(r: SoakReport, maxRows = 40): string {
  const keep = new Set<Sample>([r.idle, r.baseline, r.end]);
  const step = Math.max(1, Math.ceil(r.samples.length / maxRows));
  r.samples.forEach((s, i) => {
    if (i % step === 0) keep.add(s);
  });
  const rows = r.samples.filter((s) => keep.has(s));
  const g = r.guest;
  const sum = (k: keyof Omit<GuestCounts, 'errors'>) => g.warmup[k] + g.soak[k];
  const lines = [
    `soak: ${r.options.warmupSeconds} s warm-up + ${r.options.seconds} s traffic, then up to ${r.options.drainMs / 1000} s drain; weft vm --upstream direct --allow-host-loopback`,
    `("TCP open" / "UDP open" = connections / flows the guest has made so far; "closed" = flow-close lines from weft)`,
    formatSampleHeader(),
    ...rows.map(formatSample),
    '',
    `guest: ${sum('tcpAttempts')} python TCP connections (${sum('tcpOk')} ok, ${sum('tcpRefused')} refused as intended, ${sum('tcpErrors')} errors), ` +
      `${sum('curlOk')} curl fetches (${sum('curlFailed')} failed), ${sum('udpFlows')} UDP flows (${sum('udpOk')} echoed, ${sum('udpErrors')} errors), ` +
      `${(sum('bytes') / 1e6).toFixed(0)} MB echoed`,
    `weft: ${r.weft.tcpClosed} TCP and ${r.weft.udpClosed} UDP flow closes; reasons ${JSON.stringify(r.weft.closeReasons)}; ` +
      `tcpConnectionsOpened ${r.weft.tcpConnectionsOpened}; drained ${r.drainedAfterMs === undefined ? 'NOT within the drain period' : `${(r.drainedAfterMs / 1000).toFixed(1)} s after the traffic`}`,
    '',
    ...r.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`),
  ];
  return lines.join('\n');
}

// ---- CLI -----------------------------------------------------------------------------------------

function parseArgs(argv: string[]): Partial<SoakOptions> {
  const out: Partial<SoakOptions> = {};
  const numbers: Record<string, (v: number) => void> = {
    '--seconds': (v) => (out.seconds = v),
    '--warmup': (v) => (out.warmupSeconds = v),
    '--sample': (v) => (out.sampleMs = v * 1000),
    '--tcp-rate': (v) => (out.tcpRate = v),
    '--udp-rate': (v) => (out.udpRate = v),
    '--drain': (v) => (out.drainMs = v * 1000),
    '--drain-before-baseline': (v) => (out.drainBeforeBaseline = v !== 0),
  };
  const strings: Record<string, (v: string) => void> = {
    '--heap-snapshot': (v) => (out.heapSnapshotDir = v),
    '--weft-log': (v) => (out.weftLogFile = v),
  };
  const usage = () =>
    `usage: npm run soak [-- ${Object.keys(numbers).map((f) => `${f} N`).join(' ')} --heap-snapshot DIR --weft-log FILE]\n` +
    `defaults: --seconds ${DEFAULT_SOAK.seconds} --warmup ${DEFAULT_SOAK.warmupSeconds} --sample ${DEFAULT_SOAK.sampleMs / 1000} ` +
    `--tcp-rate ${DEFAULT_SOAK.tcpRate} --udp-rate ${DEFAULT_SOAK.udpRate} --drain ${DEFAULT_SOAK.drainMs / 1000} --drain-before-baseline 1`;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      console.log(usage());
      process.exit(0);
    }
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
    if (flag in strings && value !== undefined && value !== '') {
      strings[flag](value);
    } else if (flag in numbers && value !== undefined && /^\d+(\.\d+)?$/.test(value)) {
      numbers[flag](Number(value));
    } else {
      console.error(`soak: bad argument ${JSON.stringify(arg)}${value === undefined ? ' (no value)' : ''}\n${usage()}`);
      process.exit(2);
    }
  }
  return out;
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const why = soakUnavailable();
  if (why) {
    console.log(`soak skipped: ${why}`);
    process.exit(0);
  }
  const report = await runSoak({ ...opts, log: (line) => console.log(line) });
  console.log(`\n${formatReport(report)}`);
  process.exit(report.ok ? 0 : 1);
}

const invokedDirectly = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.stack ?? e.message : e);
    process.exit(1);
  });
}
