// The relay-load suite (issue #20, item 5): many concurrent WebSocket clients against
// `weft relay --workers 1` and `--workers 2`, in the same run with the same settings. Two parts:
//
//  1. Busy clients: C clients (default 2,000), each with 2 Wisp TCP streams to a loopback echo
//     server, each stream doing 64-byte request/response exchanges (send, wait for the echo, send
//     again) for T seconds after a warm-up. Reported: WebSockets held at the end, exchanges per
//     second, p50/p99 round trip, the relay's CPU seconds over the window (primary and workers,
//     /proc/PID/stat) and its RSS.
//  2. Idle clients: 10,000 WebSockets, each handshaken (Wisp v2 INFO exchange, the relay's
//     CONTINUE on stream 0) and holding no stream, kept a few seconds; the growth of the relay's
//     total RSS per client, as it is and after full GCs in every relay process. No stream because
//     `ulimit -n` here is 20,000 (hard): one worker holding 10,000 WebSockets and 10,000 destination
//     sockets would run out; what an idle stream adds is measured by the relay suite's part 2.
//
// Every client connects from its own source address in 127.1.0.0/16 (the relay routes workers and
// caps clients by client IP, as with real traffic). The relay (dist/weft.js), the echo server and
// the load generator (relay-load-generator.ts, raw Wisp over `ws`) are each a child process; all
// of them and the bench share this machine's cores, which caps what a second worker can add: on 2
// cores, with one worker the relay already takes one core and the generator and echo server most
// of the other, so a second worker finds no idle core (relay CPU s per request is what to compare).
// "other CPU s" shows what the rest of the machine took meanwhile (processes that ended during the
// window included): runs on a busy machine are not comparable.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { WatchedChild } from './watched-child';
import { createInterface } from 'node:readline';
import { REPO_ROOT, weftBundle } from '../harness/weft-bundle';
import { cpuSecondsOf } from './proc-stats';
import type { OpenCommand, OpenedEvent, ReportEvent } from './relay-load-generator';
import { median } from './sample-stats';

const env = process.env;
const ROUNDS = Math.max(1, Number(env.WEFT_BENCH_ROUNDS ?? 3));
const CLIENTS = Number(env.WEFT_RELAY_LOAD_CLIENTS ?? 2000);
const STREAMS_PER_CLIENT = 2;
const SECONDS = Number(env.WEFT_RELAY_LOAD_SECONDS ?? 10);
const WARMUP_MS = Number(env.WEFT_RELAY_LOAD_WARMUP_MS ?? 2000);
const IDLE_CLIENTS = Number(env.WEFT_RELAY_LOAD_IDLE ?? 10_000);
/** How long the idle clients are held before the RSS is read (and the GCs of GC_ON_SIGNAL begin). */
// Long enough for the relay's own idle GC, which runs 5–10 s after a burst of clients ends (idle-gc.ts).
const HOLD_MS = Number(env.WEFT_RELAY_LOAD_HOLD_MS ?? 12_000);
/** Rounds of the idle part: its figures vary little from round to round (the relay suite measures its idle part once). */
const IDLE_ROUNDS = Math.max(1, Number(env.WEFT_RELAY_LOAD_IDLE_ROUNDS ?? 1));
/** Generator processes; the clients are split between them. */
const GENERATORS = Math.max(1, Number(env.WEFT_RELAY_LOAD_GENERATORS ?? 1));
/** New WebSockets per second, and handshakes in progress at once, per generator. */
const OPEN_RATE = 4000;
const OPEN_IN_FLIGHT = 256;
const OPEN_TIMEOUT_MS = 20_000;
const WORKER_COUNTS = [1, 2];
const TARGET_RATIO = 1.7;
const TARGET_KIB_PER_CLIENT = 16;
/** At most this many clients: one source address each in 127.1.0.0/16. */
const MAX_CLIENTS = 0xfffe;
const RELAY_FLAGS = ['--allow-loopback', '--rate', '0', '--max-clients', '20000', '--max-clients-per-ip', '64', '--first-stream-timeout', '0'];
const DEBUG = env.WEFT_RELAY_LOAD_DEBUG === '1';
// Also: WEFT_RELAY_LOAD_WEFT=PATH runs another build of weft.js (a patched relay, say);
// WEFT_RELAY_LOAD_SNAPSHOT_DIR=DIR writes a heap snapshot of every relay process at each forced GC.

// ---- processes ------------------------------------------------------------------------------------

/** Every process this suite started (relay workers included, once seen): killed by PID at the end. */
const started = new Set<number>();

function killStarted(): void {
  for (const pid of started) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  started.clear();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** A child process of this suite: its PID is in `started` while it runs. */
class Child extends WatchedChild {
  constructor(name: string, proc: ChildProcess) {
    super(name, proc, started);
  }

  /** SIGTERM, then SIGKILL if it is still there after `graceMs`. */
  async stop(graceMs = 6000): Promise<void> {
    if (this.exited) return;
    const gone = new Promise<void>((r) => this.proc.once('exit', () => r()));
    this.proc.kill('SIGTERM');
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    await gone;
    clearTimeout(t);
  }
}

function rssKiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

/** This machine's CPU seconds by kind, all cores (/proc/stat: user nice system idle iowait irq softirq steal). */
function machineCpu(): number[] {
  try {
    return readFileSync('/proc/stat', 'utf8')
      .split('\n')[0]
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map((n) => Number(n) / 100);
  } catch {
    return [];
  }
}

/** CPU seconds this machine has spent busy: all but idle and iowait (irq and softirq included: loopback TCP is partly there). */
const machineBusySeconds = (f = machineCpu()) => f[0] + f[1] + f[2] + f[5] + f[6] + f[7];

/** CPU seconds of every process on the machine, by PID (for WEFT_RELAY_LOAD_DEBUG). */
function cpuOfAll(): Map<number, number> {
  const out = new Map<number, number>();
  for (const name of readdirSync('/proc')) if (/^\d+$/.test(name)) out.set(Number(name), cpuSecondsOf(Number(name)));
  return out;
}

/** The processes whose parent is `pid`: /proc/PID/task/PID/children when the kernel has it, else a scan of /proc. */
function childrenOf(pid: number): number[] {
  const file = `/proc/${pid}/task/${pid}/children`;
  if (existsSync(file)) return readFileSync(file, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(name));
    } catch {
      // exited while we looked
    }
  }
  return out;
}

// ---- the echo server --------------------------------------------------------------------------------

const ECHO_SERVER = `
import net from 'node:net';
const server = net.createServer((s) => {
  s.setNoDelay(true);
  s.on('data', (d) => s.write(d));
  s.on('error', () => {});
  s.on('end', () => s.end());
});
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => console.log('listening ' + server.address().port));
process.on('SIGTERM', () => process.exit(0));
`;

async function startEcho(dir: string): Promise<Child & { port?: number }> {
  const file = join(dir, 'echo-server.mjs');
  writeFileSync(file, ECHO_SERVER);
  const child = new Child('echo server', spawn(process.execPath, [file], { stdio: ['ignore', 'pipe', 'pipe'] }));
  const port = Number((await child.waitFor(/listening (\d+)/))[1]);
  return Object.assign(child, { port });
}

// ---- the relay --------------------------------------------------------------------------------------

/**
 * Loaded into every relay process (node --require; the primary forks its workers with the same
 * flags): SIGUSR2 runs full GCs, one every 500 ms, until V8 has given back the young generation
 * it grew in the burst of connections (new space at its 4 MiB starting size or less) or 6 s have
 * passed, and answers "relay-load-gc PID" on stderr — with the heap's figures under
 * WEFT_RELAY_LOAD_DEBUG=1 and a heap snapshot in WEFT_RELAY_LOAD_SNAPSHOT_DIR when set. Why
 * several: V8 shrinks the young generation only at a GC made when its allocation rate over the last
 * 5 s is low, and the rate is sampled at GCs; one gc() soon after the burst keeps up to 32 MiB a
 * process. The relay collects by itself only after a burst of 1,000+ streams, and idle clients open
 * none (the primary of --workers N never does): left alone, 10,000 idle clients on --workers 2 kept
 * both workers at 32 MiB of young generation for 60 s and more (the primary's own memory reducer
 * gave it back after ~55 s), so the "idle" column is what an operator sees for a minute or more.
 */
const GC_ON_SIGNAL = `
const v8 = require('node:v8');
const newSpaceKiB = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size >> 10;
process.on('SIGUSR2', () => {
  let rounds = 0;
  const step = () => {
    global.gc();
    rounds++;
    if (newSpaceKiB() > 4096 && rounds < 12) return void setTimeout(step, 500);
    // V8 unmaps the pages it gave up on a background thread: RSS falls some 100 ms later.
    setTimeout(report, 500);
  };
  const report = () => {
    if (process.env.WEFT_RELAY_LOAD_DEBUG === '1') {
      const m = process.memoryUsage();
      const k = (n) => n >> 10;
      const spaces = v8.getHeapSpaceStatistics().filter((s) => s.space_size > 0).map((s) => s.space_name.replace('_space', '') + ' ' + k(s.space_used_size) + '/' + k(s.space_size)).join(', ');
      process.stderr.write('relay-load-mem ' + process.pid + ' after ' + rounds + ' GCs: rss ' + k(m.rss) + ' heapUsed ' + k(m.heapUsed) + ' heapTotal ' + k(m.heapTotal) + ' external ' + k(m.external) + ' KiB; spaces used/size KiB: ' + spaces + '\\n');
    }
    if (process.env.WEFT_RELAY_LOAD_SNAPSHOT_DIR) v8.writeHeapSnapshot(require('node:path').join(process.env.WEFT_RELAY_LOAD_SNAPSHOT_DIR, 'relay-' + process.pid + '-' + Date.now() + '.heapsnapshot'));
    process.stderr.write('relay-load-gc ' + process.pid + '\\n');
  };
  step();
});
`;

interface Relay {
  child: Child;
  port: number;
  url: string;
  /** Primary and workers (one process with --workers 1). */
  pids: number[];
}

async function startRelay(workers: number, gcPreload: string): Promise<Relay> {
  const args = [
    '--expose-gc',
    '--require',
    gcPreload,
    env.WEFT_RELAY_LOAD_WEFT ?? weftBundle(),
    'relay',
    '--listen',
    '127.0.0.1:0',
    '--workers',
    String(workers),
    ...RELAY_FLAGS,
  ];
  const child = new Child(`weft relay --workers ${workers}`, spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
  const port = Number((await child.waitFor(/"event":"ready".*?"port":(\d+)/, 30_000))[1]);
  const pids = [child.pid, ...(workers > 1 ? childrenOf(child.pid) : [])];
  for (const pid of pids) started.add(pid);
  if (pids.length !== (workers > 1 ? workers + 1 : 1)) throw new Error(`weft relay --workers ${workers}: found processes ${pids.join(', ')}`);
  return { child, port, url: `ws://127.0.0.1:${port}/wisp/`, pids };
}

async function stopRelay(relay: Relay): Promise<void> {
  await relay.child.stop();
  // Workers exit on their own when their primary goes (its IPC channel closes); make sure.
  const deadline = performance.now() + 6000;
  while (relay.pids.some(alive) && performance.now() < deadline) await sleep(50);
  for (const pid of relay.pids) {
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    started.delete(pid);
  }
}

const relayCpu = (r: Relay) => r.pids.reduce((n, pid) => n + cpuSecondsOf(pid), 0);
const relayRss = (r: Relay) => r.pids.reduce((n, pid) => n + rssKiB(pid), 0);

/** Full GCs in every relay process at once (GC_ON_SIGNAL); resolves when each has answered. */
async function relayGc(r: Relay): Promise<void> {
  const waiting = new Set(r.pids);
  for (const pid of r.pids) process.kill(pid, 'SIGUSR2');
  while (waiting.size > 0) {
    const m = await r.child.waitFor(/relay-load-(gc|mem) (\d+)(.*)\n/, 60_000);
    if (m[1] === 'mem') console.log(`  ${m[0].trim()}`);
    else waiting.delete(Number(m[2]));
  }
}

/** WebSocket clients the relay counts (weft_relay_clients, summed over workers). */
function relayClients(r: Relay): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port: r.port, path: '/metrics', timeout: 10_000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve([...body.matchAll(/^weft_relay_clients(?:\{[^}]*\})? (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)));
      })
      .on('error', reject)
      .on('timeout', function (this: http.ClientRequest) {
        this.destroy(new Error('/metrics: no answer within 10 s'));
      });
  });
}

// ---- the load generator -----------------------------------------------------------------------------

/** Builds relay-load-generator.ts into dist/, beside weft.js, so `ws` resolves from node_modules. */
function buildGenerator(): string {
  const out = join(REPO_ROOT, 'dist', 'relay-load-generator.mjs');
  // node_modules/esbuild/bin/esbuild is the native binary itself once esbuild has installed.
  execFileSync(
    join(REPO_ROOT, 'node_modules/esbuild/bin/esbuild'),
    [
      join(REPO_ROOT, 'test/bench/relay-load-generator.ts'),
      '--bundle',
      '--platform=node',
      '--target=node20',
      '--format=esm',
      '--log-level=warning',
      '--external:ws',
      '--external:bufferutil',
      '--external:utf-8-validate',
      `--outfile=${out}`,
    ],
    { cwd: REPO_ROOT, stdio: 'inherit' },
  );
  return out;
}

type GeneratorEvent = OpenedEvent | ReportEvent | { ev: 'started' } | { ev: 'marked' } | { ev: 'closed' };

class Generator {
  private readonly answers: Array<(e: GeneratorEvent) => void> = [];

  constructor(readonly child: Child) {
    createInterface({ input: child.proc.stdout! }).on('line', (l) => {
      if (l.startsWith('{')) this.answers.shift()?.(JSON.parse(l) as GeneratorEvent);
    });
  }

  static start(file: string, index: number): Generator {
    return new Generator(new Child(`load generator ${index}`, spawn(process.execPath, [file], { stdio: ['pipe', 'pipe', 'pipe'] })));
  }

  private ask<E extends GeneratorEvent>(cmd: object, timeoutMs: number): Promise<E> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${this.child.name}: no answer to ${JSON.stringify(cmd).slice(0, 80)} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.answers.push((e) => {
        clearTimeout(timer);
        resolve(e as E);
      });
      this.child.proc.stdin!.write(`${JSON.stringify(cmd)}\n`);
    });
  }

  open(c: OpenCommand): Promise<OpenedEvent> {
    return this.ask({ cmd: 'open', ...c }, c.timeoutMs + (c.clients / Math.min(c.rate, 1e9)) * 1000 + 30_000);
  }

  start(): Promise<unknown> {
    return this.ask({ cmd: 'start' }, 10_000);
  }

  mark(): Promise<unknown> {
    return this.ask({ cmd: 'mark' }, 10_000);
  }

  report(): Promise<ReportEvent> {
    return this.ask({ cmd: 'report' }, 10_000);
  }

  async close(): Promise<void> {
    if (this.child.exited) return;
    await this.ask({ cmd: 'close' }, 15_000).catch(() => undefined);
    await this.child.stop(2000);
  }
}

/** Opens `clients` clients spread over the generators (consecutive source addresses each). */
async function openClients(gens: Generator[], base: Omit<OpenCommand, 'first' | 'clients'>, clients: number): Promise<OpenedEvent> {
  const per = Math.ceil(clients / gens.length);
  const results = await Promise.all(gens.map((g, i) => g.open({ ...base, first: i * per, clients: Math.max(0, Math.min(per, clients - i * per)) })));
  return {
    ev: 'opened',
    handshakes: results.reduce((n, r) => n + r.handshakes, 0),
    streams: results.reduce((n, r) => n + r.streams, 0),
    failed: results.reduce((n, r) => n + r.failed, 0),
    ms: Math.max(...results.map((r) => r.ms)),
    ...(results.find((r) => r.firstError) ? { firstError: results.find((r) => r.firstError)!.firstError } : {}),
  };
}

function percentile(reports: ReportEvent[], q: number): number {
  const counts = new Map<number, number>();
  for (const r of reports) for (const [b, n] of r.histogram) counts.set(b, (counts.get(b) ?? 0) + n);
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  if (total === 0) return NaN;
  let seen = 0;
  for (const b of [...counts.keys()].sort((x, y) => x - y)) {
    seen += counts.get(b)!;
    if (seen >= q * total) return (b + 0.5) * reports[0].bucketMs;
  }
  return NaN;
}

// ---- 1. busy clients --------------------------------------------------------------------------------

interface BusyResult {
  held: number;
  requestsPerSecond: number;
  p50: number;
  p99: number;
  relayCpu: number;
  rssMiB: number;
  /** CPU seconds of the generator(s) and the echo server over the same window. */
  othersCpu: number;
  /** CPU seconds of every other process on the machine over the window (not this suite's). */
  foreignCpu: number;
  errors: number;
  note?: string;
}

async function busyCell(workers: number, gcPreload: string, generatorFile: string, echo: Child & { port?: number }): Promise<BusyResult> {
  const relay = await startRelay(workers, gcPreload);
  const gens = Array.from({ length: GENERATORS }, (_, i) => Generator.start(generatorFile, i));
  try {
    const opened = await openClients(
      gens,
      { url: relay.url, streams: STREAMS_PER_CLIENT, echoPort: echo.port!, rate: OPEN_RATE, inFlight: OPEN_IN_FLIGHT, timeoutMs: OPEN_TIMEOUT_MS },
      CLIENTS,
    );
    if (DEBUG)
      console.log(
        `  workers ${workers}: ${opened.handshakes} clients, ${opened.streams} streams in ${(opened.ms / 1000).toFixed(1)} s${opened.firstError ? `; first error: ${opened.firstError}` : ''}`,
      );
    await Promise.all(gens.map((g) => g.start()));
    await sleep(WARMUP_MS);
    const othersCpu = () => [...gens.map((g) => g.child.pid), echo.pid].reduce((n, pid) => n + cpuSecondsOf(pid), 0);
    await Promise.all(gens.map((g) => g.mark()));
    const cpu0 = relayCpu(relay);
    const others0 = othersCpu();
    const all0 = DEBUG ? cpuOfAll() : new Map<number, number>();
    const stat0 = machineCpu();
    const machine0 = machineBusySeconds(stat0) - cpuSecondsOf(process.pid);
    await sleep(SECONDS * 1000);
    const reports = await Promise.all(gens.map((g) => g.report()));
    const cpu1 = relayCpu(relay);
    const others1 = othersCpu();
    const stat1 = machineCpu();
    const machine1 = machineBusySeconds(stat1) - cpuSecondsOf(process.pid);
    if (DEBUG) {
      const top = [...cpuOfAll()]
        .map(([pid, t]): [number, number] => [pid, t - (all0.get(pid) ?? 0)])
        .sort((a, b) => b[1] - a[1])
        .slice(0, 8);
      console.log(
        `  workers ${workers}: CPU s by process: ${top.map(([pid, t]) => `${pid}${relay.pids.includes(pid) ? ' (relay)' : ''} ${t.toFixed(1)}`).join(', ')}`,
      );
      console.log(
        `  workers ${workers}: machine CPU s ${['user', 'nice', 'system', 'idle', 'iowait', 'irq', 'softirq', 'steal'].map((k, i) => `${k} ${(stat1[i] - stat0[i]).toFixed(1)}`).join(', ')}`,
      );
    }
    const rss = relayRss(relay);
    const exchanges = reports.reduce((n, r) => n + r.exchanges, 0);
    const seconds = Math.max(...reports.map((r) => r.ms)) / 1000;
    const errors = reports.reduce((n, r) => n + r.errors, 0);
    const firstError = reports.find((r) => r.firstError)?.firstError;
    return {
      held: reports.reduce((n, r) => n + r.open, 0),
      requestsPerSecond: exchanges / seconds,
      p50: percentile(reports, 0.5),
      p99: percentile(reports, 0.99),
      relayCpu: cpu1 - cpu0,
      rssMiB: rss / 1024,
      othersCpu: others1 - others0,
      foreignCpu: Math.max(0, machine1 - machine0 - (cpu1 - cpu0) - (others1 - others0)),
      errors,
      ...(errors > 0 || opened.failed > 0
        ? { note: `workers ${workers}: ${opened.failed} clients failed to open, ${errors} errors; first: ${firstError ?? opened.firstError}` }
        : {}),
    };
  } finally {
    await Promise.all(gens.map((g) => g.close()));
    await stopRelay(relay);
  }
}

// ---- 2. idle clients --------------------------------------------------------------------------------

interface IdleResult {
  held: number;
  relayHeld: number;
  beforeMiB: number;
  idleMiB: number;
  gcMiB: number;
  perClient: number;
  perClientGc: number;
  openSeconds: number;
  note?: string;
}

async function idleCell(workers: number, gcPreload: string, generatorFile: string, echo: Child & { port?: number }): Promise<IdleResult> {
  const relay = await startRelay(workers, gcPreload);
  const gens = Array.from({ length: GENERATORS }, (_, i) => Generator.start(generatorFile, i));
  try {
    await sleep(300);
    await relayGc(relay);
    const before = relayRss(relay);
    const opened = await openClients(
      gens,
      { url: relay.url, streams: 0, echoPort: echo.port!, rate: OPEN_RATE, inFlight: OPEN_IN_FLIGHT, timeoutMs: OPEN_TIMEOUT_MS },
      IDLE_CLIENTS,
    );
    await sleep(HOLD_MS);
    const idle = relayRss(relay);
    await relayGc(relay);
    const gc = relayRss(relay);
    const reports = await Promise.all(gens.map((g) => g.report()));
    const held = reports.reduce((n, r) => n + r.open, 0);
    const relayHeld = await relayClients(relay);
    const firstError = reports.find((r) => r.firstError)?.firstError ?? opened.firstError;
    return {
      held,
      relayHeld,
      beforeMiB: before / 1024,
      idleMiB: idle / 1024,
      gcMiB: gc / 1024,
      perClient: (idle - before) / IDLE_CLIENTS,
      perClientGc: (gc - before) / IDLE_CLIENTS,
      openSeconds: opened.ms / 1000,
      ...(held < IDLE_CLIENTS || opened.failed > 0 ? { note: `workers ${workers}: ${opened.failed} clients failed to open; first error: ${firstError}` } : {}),
    };
  } finally {
    await Promise.all(gens.map((g) => g.close()));
    await stopRelay(relay);
  }
}

// ---- the suite ----------------------------------------------------------------------------------------

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

const num = (digits: number) => (x: number) => x.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
/** "median (min–max)" over the rounds, or the one value. */
function cell(xs: number[], fmt: (x: number) => string): string {
  if (xs.length === 1) return fmt(xs[0]);
  return `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;
}

function printTable(head: string[], rows: string[][], widths: number[]): void {
  const line = (cols: string[]) => cols.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('');
  console.log(line(head));
  for (const r of rows) console.log(line(r));
}

/** `npm run bench -- relay-load` (parts: WEFT_RELAY_LOAD_PARTS=busy,idle). */
export async function runRelayLoadBench(): Promise<void> {
  const parts = (env.WEFT_RELAY_LOAD_PARTS ?? 'busy,idle').split(',');
  const cores = availableParallelism();
  console.log(
    `\nrelay-load — weft relay --workers 1 vs --workers 2 (${RELAY_FLAGS.join(' ')}), every client from its own 127.1.x.y; ` +
      `load generator (${GENERATORS} process${GENERATORS > 1 ? 'es' : ''}, raw Wisp v2 over ws), echo server and relay share this machine's ${cores} core${cores > 1 ? 's' : ''} (os.availableParallelism()); load average ${loadavg()[0].toFixed(1)} at the start`,
  );
  if (CLIENTS > MAX_CLIENTS || IDLE_CLIENTS > MAX_CLIENTS)
    throw new Error(`relay-load: at most ${MAX_CLIENTS} clients (one source address each in 127.1.0.0/16)`);
  const t0 = performance.now();
  const dir = mkdtempSync(join(tmpdir(), 'weft-relay-load-'));
  const gcPreload = join(dir, 'gc-on-signal.cjs');
  writeFileSync(gcPreload, GC_ON_SIGNAL);
  // Whatever way the bench ends, nothing it started outlives it.
  process.once('exit', killStarted);
  let echo: (Child & { port?: number }) | undefined;
  try {
    const generatorFile = buildGenerator();
    echo = await startEcho(dir);
    if (parts.includes('busy')) {
      const busy = new Map<number, BusyResult[]>(WORKER_COUNTS.map((w) => [w, []]));
      const notes: string[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        // Order alternating by round, so neither setting always runs on a warmer machine.
        for (const w of r % 2 === 0 ? WORKER_COUNTS : [...WORKER_COUNTS].reverse()) {
          const res = await busyCell(w, gcPreload, generatorFile, echo);
          busy.get(w)!.push(res);
          if (res.note) notes.push(`round ${r + 1}, ${res.note}`);
        }
      }
      console.log(
        `\n1. busy clients — ${CLIENTS.toLocaleString('en-US')} WebSocket clients × ${STREAMS_PER_CLIENT} TCP streams to a loopback echo server, each stream doing 64-byte request/response exchanges one at a time; ` +
          `${SECONDS} s measured after ${WARMUP_MS / 1000} s of warm-up; median (range) of ${ROUNDS} round${ROUNDS > 1 ? 's' : ''}. ` +
          `Relay CPU s and RSS: primary and workers summed; "gen+echo CPU s": the generator and echo server over the same window; ` +
          `"other CPU s": every other process on the machine then (${cores} cores × ${SECONDS} s = ${cores * SECONDS} CPU s in all)`,
      );
      const rows = WORKER_COUNTS.map((w) => {
        const rs = busy.get(w)!;
        return [
          String(w),
          cell(
            rs.map((x) => x.held),
            num(0),
          ),
          cell(
            rs.map((x) => x.requestsPerSecond),
            num(0),
          ),
          cell(
            rs.map((x) => x.p50),
            num(1),
          ),
          cell(
            rs.map((x) => x.p99),
            num(1),
          ),
          cell(
            rs.map((x) => x.relayCpu),
            num(1),
          ),
          cell(
            rs.map((x) => (x.relayCpu / (x.requestsPerSecond * SECONDS)) * 1e6),
            num(0),
          ),
          cell(
            rs.map((x) => x.rssMiB),
            num(0),
          ),
          cell(
            rs.map((x) => x.othersCpu),
            num(1),
          ),
          cell(
            rs.map((x) => x.foreignCpu),
            num(1),
          ),
        ];
      });
      printTable(
        ['workers', 'held', 'requests/s', 'p50 ms', 'p99 ms', 'relay CPU s', 'CPU µs/req', 'RSS MiB', 'gen+echo CPU s', 'other CPU s'],
        rows,
        [8, 24, 27, 22, 24, 20, 17, 17, 20, 20],
      );
      const ratios = busy.get(2)!.map((x, i) => x.requestsPerSecond / busy.get(1)![i].requestsPerSecond);
      console.log(
        `requests/s, workers 2 / workers 1 (within each round): ${cell(ratios, num(2))}  target ≥ ${TARGET_RATIO} on a 2-core machine: ${median(ratios) >= TARGET_RATIO ? 'met' : 'NOT met'}`,
      );
      for (const n of notes) console.log(`  note: ${n}`);
    }
    if (parts.includes('idle')) {
      const idle = new Map<number, IdleResult[]>(WORKER_COUNTS.map((w) => [w, []]));
      const notes: string[] = [];
      for (let r = 0; r < IDLE_ROUNDS; r++) {
        for (const w of r % 2 === 0 ? WORKER_COUNTS : [...WORKER_COUNTS].reverse()) {
          const res = await idleCell(w, gcPreload, generatorFile, echo);
          idle.get(w)!.push(res);
          if (res.note) notes.push(`round ${r + 1}, ${res.note}`);
        }
      }
      console.log(
        `\n2. idle clients — ${IDLE_CLIENTS.toLocaleString('en-US')} WebSocket clients, each handshaken (Wisp v2) with no stream open, opened at ≤ ${(OPEN_RATE * GENERATORS).toLocaleString('en-US')}/s and held ${HOLD_MS / 1000} s; ` +
          `growth of the relay's total RSS (primary and workers) per client, then after a full GC in each relay process; median (range) of ${IDLE_ROUNDS} round${IDLE_ROUNDS > 1 ? 's' : ''} (WEFT_RELAY_LOAD_IDLE_ROUNDS)`,
      );
      const rows = WORKER_COUNTS.map((w) => {
        const rs = idle.get(w)!;
        return [
          String(w),
          `${Math.min(...rs.map((x) => x.held)).toLocaleString('en-US')} / ${Math.min(...rs.map((x) => x.relayHeld)).toLocaleString('en-US')}`,
          cell(
            rs.map((x) => x.beforeMiB),
            num(0),
          ),
          cell(
            rs.map((x) => x.idleMiB),
            num(0),
          ),
          cell(
            rs.map((x) => x.gcMiB),
            num(0),
          ),
          cell(
            rs.map((x) => x.perClient),
            num(1),
          ),
          cell(
            rs.map((x) => x.perClientGc),
            num(1),
          ),
          cell(
            rs.map((x) => x.openSeconds),
            num(1),
          ),
          median(rs.map((x) => x.perClientGc)) <= TARGET_KIB_PER_CLIENT && Math.min(...rs.map((x) => Math.min(x.held, x.relayHeld))) >= IDLE_CLIENTS
            ? 'met'
            : 'NOT met',
        ];
      });
      printTable(
        [
          'workers',
          'held (gen / relay)',
          'RSS MiB before',
          'idle',
          '+ GC',
          'KiB/client',
          '+ GC',
          'open all s',
          `target ≤ ${TARGET_KIB_PER_CLIENT} KiB, all held`,
        ],
        rows,
        [8, 21, 17, 17, 17, 20, 20, 17, 30],
      );
      for (const n of notes) console.log(`  note: ${n}`);
    }
  } finally {
    await echo?.stop(2000);
    killStarted();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`(relay-load suite: ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
}
