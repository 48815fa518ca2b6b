// The relay suite (issue #4): weft relay side by side with the @mercuryworkshop/wisp-js server, in one
// run, with the same client — weft's Wisp client, the one `weft vm --upstream wisp://` uses — and the
// same source/sink server. Three parts:
//
//  1. Throughput: 1, 16 and 256 streams at once on one WebSocket, each direction, aggregate Gbit/s.
//     Download: the source sends to every stream without end and the client counts what arrives.
//     Upload: the client writes 64 KiB blocks as fast as each stream takes them and the sink counts
//     what arrives. Both are counted over a fixed window after a warm-up, so stream setup and the
//     slowest stream's tail do not blur the aggregate.
//  2. Idle streams: 10,000 TCP streams opened on one WebSocket and left idle; the growth of the
//     server process's RSS per stream (target ≤ 4 KiB), right after they settle and after a full GC.
//  3. The whole path: iperf3 from a Linux guest in a netns through `weft vm --upstream wisp://` and
//     `weft relay`, against `weft vm --upstream direct` (target ≥ 0.6x). Needs root.
//
// Every server runs in its own child process (RSS is theirs alone, and the client has its own event
// loop). Loopback throughput on a shared 2-core machine swings by 2–3x from second to second, so the
// servers take turns cell by cell (order alternating by round), and each ratio is taken within one
// round: the table shows the median and the range over the rounds.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { ipv4, parseIpv4 } from '../../core/wire/address';
import { WispUpstream } from '../../node-host/wisp-upstream';
import { connectWsTransport } from '../../node-host/ws-transport';
import { Netns, UDHCPC_SCRIPT } from '../harness/netns';
import { REPO_ROOT, weftBundle } from '../harness/weft-bundle';
import type { TcpStream } from '../../core/upstream';
import { WatchedChild } from './watched-child';
import { median } from './sample-stats';

export const RELAY_BENCH_ROUNDS = Math.max(1, Number(process.env.WEFT_RELAY_BENCH_ROUNDS ?? 3));
/** Measuring window per throughput cell, after the warm-up. */
const WINDOW_MS = Number(process.env.WEFT_RELAY_BENCH_WINDOW_MS ?? 2000);
const WARMUP_MS = 600;
const STREAM_COUNTS = [1, 16, 256];
const IDLE_STREAMS = Number(process.env.WEFT_RELAY_BENCH_IDLE ?? 10_000);
const IDLE_TARGET_KIB = 4;
const IDLE_SETTLE_MS = Number(process.env.WEFT_RELAY_BENCH_SETTLE_MS ?? 35_000);
const PATH_SECONDS = Number(process.env.WEFT_RELAY_BENCH_PATH_SECONDS ?? 4);
const PATH_ROUNDS = Math.max(1, Number(process.env.WEFT_RELAY_BENCH_PATH_ROUNDS ?? 2));
const PATH_TARGET = 0.6;
const GATEWAY = parseIpv4('10.0.2.2');
/** Only these throughput cells, e.g. `16:upload,256:download` (all when unset). */
const CELLS = process.env.WEFT_RELAY_BENCH_CELLS?.split(',');
/** Extra node flags for both server processes (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`). */
const SERVER_FLAGS = process.env.WEFT_RELAY_BENCH_SERVER_FLAGS?.split(' ').filter(Boolean) ?? [];
const BLOCK = Buffer.alloc(64 * 1024, 0x5a);

type Direction = 'download' | 'upload';

// ---- child processes ------------------------------------------------------------------------------

/**
 * The source/sink, in its own process. A connection that sends `GET\n` gets bytes without end; one
 * that sends `PUT\n` is read and counted; one that sends nothing is idle. Commands on stdin, one
 * answer line each: `count` → "BYTES MS" (bytes received by sinks, at this process's clock),
 * `conns` → open connections.
 */
const SOURCE_SINK = `
import net from 'node:net';
import { createInterface } from 'node:readline';
const block = Buffer.alloc(64 * 1024, 0x5a);
let received = 0;
let open = 0;
const server = net.createServer((s) => {
  open++;
  s.on('close', () => open--);
  s.on('error', () => {});
  s.on('end', () => s.destroy());
  s.once('data', (head) => {
    if (head[0] === 0x47) { // GET
      const pump = () => { while (!s.destroyed && s.write(block)); };
      s.on('drain', pump);
      pump();
      s.on('data', () => {});
    } else {
      received += head.length - 4;
      s.on('data', (d) => { received += d.length; });
    }
  });
});
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => console.log('listening ' + server.address().port));
createInterface({ input: process.stdin }).on('line', (l) => {
  if (l === 'count') console.log(received + ' ' + performance.now());
  else if (l === 'conns') console.log(String(open));
});
`;

/** Lets the bench ask a server process for a full GC (SIGUSR2), for the idle-stream RSS figures. */
const GC_ON_SIGNAL = `
process.on('SIGUSR2', () => {
  if (process.env.WEFT_RELAY_BENCH_DEBUG) {
    const spaces = require('node:v8').getHeapSpaceStatistics().map((s) => s.space_name.replace('_space', '') + ' ' + (s.space_size >> 10)).join(', ');
    process.stderr.write('before gc: rss ' + (process.memoryUsage().rss >> 10) + ' KiB; space sizes KiB: ' + spaces + '\\n');
  }
  global.gc?.(); global.gc?.();
  const m = process.memoryUsage();
  if (process.env.WEFT_RELAY_BENCH_DEBUG) process.stderr.write(JSON.stringify({ heapUsed: m.heapUsed >> 10, heapTotal: m.heapTotal >> 10, external: m.external >> 10, arrayBuffers: m.arrayBuffers >> 10, rss: m.rss >> 10 }) + '\\n');
  process.stderr.write('gc-done\\n');
});
`;

/** The wisp-js server, set up like weft relay --allow-loopback. */
function wispJsServer(): string {
  return `
import http from 'node:http';
import { server as wisp, logging } from ${JSON.stringify(join(REPO_ROOT, 'node_modules/@mercuryworkshop/wisp-js/src/entrypoints/server.mjs'))};
logging.set_level(logging.ERROR);
wisp.options.allow_loopback_ips = true;
wisp.options.allow_private_ips = true;
const s = http.createServer();
s.on('upgrade', (req, socket, head) => wisp.routeRequest(req, socket, head));
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
process.on('SIGTERM', () => process.exit(0));
`;
}

class Child extends WatchedChild {
  rssKiB(): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${this.proc.pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  }

  async gc(): Promise<void> {
    this.proc.kill('SIGUSR2');
    const m = await this.waitFor(/(before gc.*\n)?(\{"heapUsed.*\n)?gc-done\n/, 120_000);
    for (const line of [m[1], m[2]]) if (line) console.log(`  ${this.name}: ${line.trim()}`);
  }

  stop(): void {
    if (!this.exited) this.proc.kill('SIGTERM');
  }
}

/** The source/sink child with its stdin question-and-answer channel. */
class SourceSink {
  private readonly answers: Array<(line: string) => void> = [];

  private constructor(
    readonly child: Child,
    readonly port: number,
  ) {
    createInterface({ input: child.proc.stdout! }).on('line', (l) => {
      if (!l.startsWith('listening')) this.answers.shift()?.(l);
    });
  }

  static async start(dir: string, name = 'source-sink.mjs'): Promise<SourceSink> {
    const file = join(dir, name);
    writeFileSync(file, SOURCE_SINK);
    const child = new Child('source/sink', spawn(process.execPath, [file], { stdio: ['pipe', 'pipe', 'pipe'] }));
    const port = Number((await child.waitFor(/listening (\d+)/))[1]);
    return new SourceSink(child, port);
  }

  private ask(q: string): Promise<string> {
    return new Promise((resolve) => {
      this.answers.push(resolve);
      this.child.proc.stdin!.write(`${q}\n`);
    });
  }

  async count(): Promise<{ bytes: number; ms: number }> {
    const [bytes, ms] = (await this.ask('count')).split(' ').map(Number);
    return { bytes, ms };
  }

  async conns(): Promise<number> {
    return Number(await this.ask('conns'));
  }

  /** Waits until the sink holds `n` connections (more or fewer); false on timeout. */
  async waitConns(n: number, timeoutMs: number): Promise<boolean> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      if ((await this.conns()) === n) return true;
      await sleep(20);
    }
    return false;
  }
}

interface Server {
  name: string;
  child: Child;
  url: string;
}

async function startServer(which: 'weft' | 'wisp-js', dir: string, gcPreload?: string): Promise<Server> {
  const nodeFlags = [...SERVER_FLAGS, ...(gcPreload ? ['--expose-gc', '--require', gcPreload] : [])];
  if (which === 'weft') {
    const args = [
      ...nodeFlags,
      process.env.WEFT_RELAY_BENCH_WEFT ?? weftBundle(),
      'relay',
      '--listen',
      '127.0.0.1:0',
      '--allow-loopback',
      '--rate',
      '0',
      '--max-streams-per-client',
      String(Math.max(IDLE_STREAMS, 1024) + 16),
    ];
    const child = new Child('weft relay', spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    const port = (await child.waitFor(/"port":(\d+)/))[1];
    return { name: 'weft relay', child, url: `ws://127.0.0.1:${port}/wisp/` };
  }
  const file = join(dir, 'wisp-js-server.mjs');
  writeFileSync(file, wispJsServer());
  const child = new Child('wisp-js server', spawn(process.execPath, [...nodeFlags, file], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const port = (await child.waitFor(/listening (\d+)/))[1];
  return { name: 'wisp-js server', child, url: `ws://127.0.0.1:${port}/` };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function connectClient(url: string, maxStreams: number): Promise<WispUpstream> {
  const up = new WispUpstream({ url, connect: connectWsTransport, gateway: GATEWAY, allowHostLoopback: true, maxStreams });
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const check = () => {
      if (up.isReady) resolve(up);
      else if (performance.now() - started > 10_000) reject(new Error(`no Wisp handshake with ${url}`));
      else setTimeout(check, 5);
    };
    check();
  });
}

// ---- 1. throughput -------------------------------------------------------------------------------

/**
 * One cell: `n` streams in one direction for WARMUP_MS + WINDOW_MS; aggregate Gbit/s over the window.
 * The streams are closed afterwards and the sink is waited on until it holds no connection.
 */
async function throughput(up: WispUpstream, sink: SourceSink, n: number, dir: Direction): Promise<number> {
  let received = 0;
  let failure: string | undefined;
  const stops: Array<() => void> = [];
  const meta = { protocol: 'tcp' as const, guest: { ip: ipv4(1), port: 1 }, target: { ip: GATEWAY, port: sink.port } };
  for (let i = 0; i < n; i++) {
    let stream: TcpStream | undefined;
    let stopped = false;
    const push = () => {
      while (!stopped && stream!.write(BLOCK));
    };
    stream = up.openTcp({ ip: GATEWAY, port: sink.port }, meta, {
      onConnect: () => {
        stream!.write(Buffer.from(dir === 'download' ? 'GET\n' : 'PUT\n'));
        if (dir === 'upload') push();
      },
      onData: (d) => {
        received += d.length;
      },
      onEnd: () => {
        failure ??= 'the server ended a stream';
      },
      onDrain: () => push(),
      onClose: (e) => {
        stopped = true;
        failure ??= `a stream closed: ${e ? `${e.kind} ${e.message}` : 'clean close'}`;
      },
    });
    const s = stream;
    stops.push(() => {
      stopped = true;
      s.destroy();
    });
  }
  const count = async () => (dir === 'download' ? { bytes: received, ms: performance.now() } : sink.count());
  try {
    await sleep(WARMUP_MS);
    const a = await count();
    await sleep(WINDOW_MS);
    const b = await count();
    if (failure) throw new Error(failure);
    return ((b.bytes - a.bytes) * 8) / ((b.ms - a.ms) / 1000) / 1e9;
  } finally {
    for (const stop of stops) stop();
    const t = performance.now();
    if (process.env.WEFT_RELAY_BENCH_DEBUG) console.log(`  ${n} ${dir}: conns ${await sink.conns()}`);
    if (!(await sink.waitConns(0, 15_000))) console.log(`  (note: the sink still held connections 15 s after a ${n}-stream ${dir})`);
    if (process.env.WEFT_RELAY_BENCH_DEBUG) console.log(`  ${n} ${dir}: closed in ${(performance.now() - t).toFixed(0)} ms`);
  }
}

interface Cell {
  streams: number;
  dir: Direction;
  weft: number[];
  js: number[];
}

const f2 = (x: number) => x.toFixed(2);
const range = (xs: number[], fmt = f2) => (xs.length > 1 ? `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))}` : fmt(xs[0]));

async function throughputPart(dir: string, sink: SourceSink): Promise<void> {
  console.log(
    `\n1. throughput — aggregate Gbit/s over ${WINDOW_MS / 1000} s after ${WARMUP_MS} ms of warm-up, 64 KiB writes; median (range) of ${RELAY_BENCH_ROUNDS} rounds`,
  );
  const weft = await startServer('weft', dir);
  const js = await startServer('wisp-js', dir);
  const ups: WispUpstream[] = [];
  try {
    const servers = [
      { server: weft, up: await connectClient(weft.url, 4096), key: 'weft' as const },
      { server: js, up: await connectClient(js.url, 4096), key: 'js' as const },
    ];
    ups.push(...servers.map((s) => s.up));
    const cells: Cell[] = STREAM_COUNTS.flatMap((streams) =>
      (['download', 'upload'] as const).map((d) => ({ streams, dir: d, weft: [] as number[], js: [] as number[] })),
    ).filter((c) => !CELLS || CELLS.includes(`${c.streams}:${c.dir}`));
    // Warm-up (JIT, TCP buffers) on both servers.
    for (const s of servers) await throughput(s.up, sink, 4, 'download');
    for (let r = 0; r < RELAY_BENCH_ROUNDS; r++) {
      for (const cell of cells) {
        for (const s of r % 2 === 0 ? servers : [...servers].reverse()) {
          try {
            cell[s.key].push(await throughput(s.up, sink, cell.streams, cell.dir));
          } catch (e) {
            throw new Error(`${s.server.name}, ${cell.streams} streams ${cell.dir}: ${(e as Error).message}`);
          }
        }
      }
    }
    console.log(
      `${'streams'.padEnd(8)}${'direction'.padEnd(10)}${'weft relay'.padStart(19)}${'wisp-js server'.padStart(19)}${'weft / wisp-js'.padStart(19)}  target ≥ 1.0`,
    );
    for (const c of cells) {
      const ratios = c.weft.map((w, i) => w / c.js[i]);
      const cellText = (xs: number[]) => `${f2(median(xs))} (${range(xs)})`;
      const ok = median(ratios) >= 1.0 ? 'met' : 'NOT met';
      console.log(
        `${String(c.streams).padEnd(8)}${c.dir.padEnd(10)}${cellText(c.weft).padStart(19)}${cellText(c.js).padStart(19)}${cellText(ratios).padStart(19)}  ${ok}`,
      );
    }
  } finally {
    for (const up of ups) up.close();
    weft.child.stop();
    js.child.stop();
  }
}

// ---- 2. idle streams -----------------------------------------------------------------------------

interface IdleRun {
  server: Server;
  sink: SourceSink;
  up?: WispUpstream;
  streams: TcpStream[];
  closed: number;
  before: number;
  openMs: number;
}

/** Opens IDLE_STREAMS streams on one WebSocket to `server`, each to `sink`, and leaves them idle. */
async function openIdle(run: IdleRun): Promise<void> {
  const { server, sink } = run;
  const up = (run.up = await connectClient(server.url, IDLE_STREAMS + 16));
  await sleep(300);
  await server.child.gc();
  run.before = server.child.rssKiB();
  const meta = { protocol: 'tcp' as const, guest: { ip: ipv4(1), port: 1 }, target: { ip: GATEWAY, port: sink.port } };
  const handlers = { onConnect() {}, onData() {}, onEnd() {}, onDrain() {}, onClose: () => void run.closed++ };
  const started = performance.now();
  // In batches, so the sink's accept queue never overflows (SYN retries would only add waiting).
  for (let opened = 0; opened < IDLE_STREAMS; ) {
    const batch = Math.min(1000, IDLE_STREAMS - opened);
    for (let i = 0; i < batch; i++) run.streams.push(up.openTcp({ ip: GATEWAY, port: sink.port }, meta, handlers));
    opened += batch;
    if (!(await sink.waitConns(opened, 30_000)))
      throw new Error(`${server.name}: only ${await sink.conns()} of ${opened} streams connected (${run.closed} closed)`);
  }
  run.openMs = performance.now() - started;
}

async function idlePart(dir: string, sink: SourceSink): Promise<void> {
  console.log(
    `\n2. idle streams — ${IDLE_STREAMS.toLocaleString('en-US')} idle TCP streams on one WebSocket; growth of the server process's RSS per stream after ${IDLE_SETTLE_MS / 1000} s idle, then after one GC the bench forces (V8 gives back the young generation it grew while the streams opened only at a GC made while allocation is low: weft relay runs one itself ~5–10 s after a burst of 1,000+ new streams goes quiet, wisp-js waits for V8's own, ~30 s or later); the target is judged after the forced GC`,
  );
  const gcPreload = join(dir, 'gc-on-signal.cjs');
  writeFileSync(gcPreload, GC_ON_SIGNAL);
  // Each server has its own sink process (one process cannot hold 2 x 10,000 sockets under the usual
  // fd limit), and both sets of streams idle at once, so the settling wait is paid once.
  const sink2 = await SourceSink.start(dir, 'source-sink-2.mjs');
  const runs: IdleRun[] = [];
  try {
    runs.push({ server: await startServer('weft', dir, gcPreload), sink, streams: [], closed: 0, before: 0, openMs: 0 });
    runs.push({ server: await startServer('wisp-js', dir, gcPreload), sink: sink2, streams: [], closed: 0, before: 0, openMs: 0 });
    for (const run of runs) await openIdle(run);
    await sleep(IDLE_SETTLE_MS);
    console.log(
      `${'server'.padEnd(16)}${'RSS before'.padStart(12)}${'idle'.padStart(12)}${'+ GC'.padStart(12)}${'KiB/stream'.padStart(12)}${'+ GC'.padStart(10)}${'open all'.padStart(10)}  target ≤ ${IDLE_TARGET_KIB} KiB`,
    );
    for (const run of runs) {
      const settled = run.server.child.rssKiB();
      await run.server.child.gc();
      await sleep(200);
      const afterGc = run.server.child.rssKiB();
      if (run.closed > 0) throw new Error(`${run.server.name}: ${run.closed} idle streams were closed`);
      const per = (settled - run.before) / IDLE_STREAMS;
      const perGc = (afterGc - run.before) / IDLE_STREAMS;
      const mib = (k: number) => `${(k / 1024).toFixed(1)} MiB`;
      console.log(
        `${run.server.name.padEnd(16)}${mib(run.before).padStart(12)}${mib(settled).padStart(12)}${mib(afterGc).padStart(12)}${f2(per).padStart(12)}${f2(perGc).padStart(10)}${`${(run.openMs / 1000).toFixed(1)} s`.padStart(10)}  ${perGc <= IDLE_TARGET_KIB ? 'met' : 'NOT met'}`,
      );
    }
  } finally {
    for (const run of runs) {
      for (const s of run.streams) s.destroy();
      run.up?.close();
      run.server.child.stop();
    }
    await sink.waitConns(0, 15_000);
    sink2.child.stop();
  }
}

// ---- 3. the whole path ---------------------------------------------------------------------------

function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

export function wholePathUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and TAP devices)';
  const missing = ['iperf3', 'busybox', 'ip', 'python3'].filter((c) => !have(c));
  if (missing.length > 0) return `missing ${missing.join(', ')}`;
  return undefined;
}

/**
 * One iperf3 run, Gbit/s. iperf3 may answer with an error and no result (e.g. "the server is busy"
 * while it still winds down the previous test): such a run is repeated, up to three times.
 */
async function iperf(ns: Netns, port: number, reverse: boolean, seconds: number): Promise<number> {
  const args = ['iperf3', '-c', '10.0.2.2', '-p', String(port), '-t', String(seconds), '-J', ...(reverse ? ['-R'] : [])];
  let why = '';
  for (let attempt = 1; attempt <= 3; attempt++) {
    if (attempt > 1) await sleep(1000);
    const r = await ns.exec(args, (seconds + 20) * 1000);
    let json: { error?: string; end?: { sum_received?: { bits_per_second: number } } } | undefined;
    try {
      json = JSON.parse(r.stdout);
    } catch {
      json = undefined;
    }
    const bps = json?.end?.sum_received?.bits_per_second;
    if (r.code === 0 && typeof bps === 'number') {
      if (process.env.WEFT_RELAY_BENCH_DEBUG) console.log(`  ${ns.name} ${reverse ? 'download' : 'upload'} ${seconds} s: ${(bps / 1e9).toFixed(2)} Gbit/s`);
      return bps / 1e9;
    }
    why = r.timedOut ? `no result within ${seconds + 20} s` : (json?.error ?? (r.stderr || r.stdout.slice(0, 400)));
    console.log(`  (iperf3 ${reverse ? '-R ' : ''}in ${ns.name}, attempt ${attempt}: ${why})`);
  }
  throw new Error(`iperf3 ${reverse ? '-R ' : ''}in ${ns.name} failed: ${why}`);
}

async function guestRun(label: string, upstreamArgs: string[], port: number): Promise<{ upload: number; download: number }> {
  const ns = Netns.create(`rb-${label}`);
  try {
    await ns.spawnWeftOnTap(['--allow-host-loopback', ...upstreamArgs]);
    const r = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5']);
    if (r.code !== 0) throw new Error(`udhcpc failed: ${r.stderr}`);
    await iperf(ns, port, false, 1).catch(() => 0); // warm-up: slow start, JIT
    const upload = await iperf(ns, port, false, PATH_SECONDS);
    const download = await iperf(ns, port, true, PATH_SECONDS);
    return { upload, download };
  } finally {
    await ns.cleanup();
  }
}

async function wholePathPart(dir: string): Promise<void> {
  console.log(
    `\n3. whole path — iperf3 from a netns guest (MTU 1500) to host loopback through weft vm, Gbit/s over ${PATH_SECONDS} s; median (range) of ${PATH_ROUNDS} rounds`,
  );
  const why = wholePathUnavailable();
  if (why) {
    console.log(`skipped: ${why}`);
    return;
  }
  const port = 26201 + (process.pid % 1000);
  const iperfServer = spawn('iperf3', ['-s', '-B', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  const relay = await startServer('weft', dir);
  const rows = { direct: { upload: [] as number[], download: [] as number[] }, wisp: { upload: [] as number[], download: [] as number[] } };
  try {
    await sleep(300);
    const runs = [
      { key: 'direct' as const, args: ['--upstream', 'direct'] },
      { key: 'wisp' as const, args: ['--upstream', relay.url] },
    ];
    for (let r = 0; r < PATH_ROUNDS; r++) {
      for (const run of r % 2 === 0 ? runs : [...runs].reverse()) {
        const res = await guestRun(run.key, run.args, port);
        rows[run.key].upload.push(res.upload);
        rows[run.key].download.push(res.download);
      }
    }
  } finally {
    relay.child.stop();
    iperfServer.kill();
  }
  const cell = (xs: number[]) => `${f2(median(xs))} (${range(xs)})`;
  console.log(`${'upstream'.padEnd(26)}${'upload'.padStart(19)}${'download'.padStart(19)}`);
  console.log(`${'direct'.padEnd(26)}${cell(rows.direct.upload).padStart(19)}${cell(rows.direct.download).padStart(19)}`);
  console.log(`${'wisp + weft relay'.padEnd(26)}${cell(rows.wisp.upload).padStart(19)}${cell(rows.wisp.download).padStart(19)}`);
  const ru = rows.wisp.upload.map((w, i) => w / rows.direct.upload[i]);
  const rd = rows.wisp.download.map((w, i) => w / rows.direct.download[i]);
  const verdict = median(ru) >= PATH_TARGET && median(rd) >= PATH_TARGET ? 'met' : 'NOT met';
  console.log(`${'wisp / direct'.padEnd(26)}${cell(ru).padStart(19)}${cell(rd).padStart(19)}  target ≥ ${PATH_TARGET}: ${verdict}`);
}

// ---- the suite -------------------------------------------------------------------------------------

/** `npm run bench -- relay` (parts: WEFT_RELAY_BENCH_PARTS=throughput,idle,path). */
export async function runRelayBench(): Promise<void> {
  const parts = (process.env.WEFT_RELAY_BENCH_PARTS ?? 'throughput,idle,path').split(',');
  console.log(`\nrelay — weft relay vs the @mercuryworkshop/wisp-js server, same client (weft's Wisp client) and source/sink, all on loopback`);
  const started = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'weft-relay-bench-'));
  const sink = await SourceSink.start(dir);
  try {
    if (parts.includes('throughput')) await throughputPart(dir, sink);
    if (parts.includes('idle')) await idlePart(dir, sink);
    if (parts.includes('path')) await wholePathPart(dir);
  } finally {
    sink.child.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`(relay suite: ${((performance.now() - started) / 1000).toFixed(0)} s)`);
}
