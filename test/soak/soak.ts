// Soak: real Linux guests (network namespaces on TAPs) open and close thousands of TCP connections
// and UDP flows through both of weft's paths at once, against the host's test servers:
//
//   guest ns "direct" ─ tap ─ weft vm --upstream direct ─────────────────────────────┐
//   guest ns "wisp"   ─ tap ─ weft vm --upstream wisp://127.0.0.1:P/wisp/ ─ weft relay ┴─ 127.0.0.1 servers
//
// while this process samples every weft process (both vms and the relay): open fds
// (/proc/PID/fd), RSS (/proc/PID/status) and V8 heap (soak-process.ts). It passes when, after the
// traffic and a drain period, each process's fd count is back to what it had before any traffic,
// its RSS, heap and ArrayBuffer memory are within 10% (plus a small absolute slack) of its baseline
// taken after a warm-up, every flow each vm opened was closed by the flow's own end or timeout (none
// left for SIGTERM to sweep up), and the relay's stream table is empty (its /metrics open-stream
// gauge at 0, one stream-close line per stream it opened).
//
//   npm run soak [-- --seconds N] [--warmup N] [--sample N] [--tcp-rate N] [--udp-rate N]
//                    [--drain N] [--drain-before-baseline 0|1] [--paths direct,wisp]
//                    [--log-dir DIR] [--heap-snapshot DIR]
//
// Defaults: 600 s of traffic after a 60 s warm-up; on each path 50 TCP connections/s (plus a curl
// loop) and 8 UDP flows/s; samples every 5 s; exit code 0 when every check passes, 1 when one fails.
// (Both paths at 75/s saturate a 2-core machine shared with other work: SYN-ACKs then take over a
// second, the guests retransmit their SYNs and the clients fall behind their schedule; at 50/s each
// the guests get every connection on time.)
// test/integration/soak-short.test.ts runs the same with 60 s in CI. --paths runs one path only;
// --log-dir keeps each process's log (every flow and stream close), --heap-snapshot writes a V8 heap
// snapshot of each process at the end, and WEFT_SOAK_BUNDLE=path/to/weft.js runs another build of
// weft (to compare a fix with main).
//
// How each figure is read, and why:
// - fds and RSS from /proc, from outside; heap and buffers from the probe (soak-process.ts), compared
//   after the drain with the baseline taken once the warm-up's TCP connections (or all its flows)
//   have closed.
// - RSS is compared with the warm-up's peak: the allocator keeps freed pages, so RSS tracks the
//   high-water mark of the load, and only a leak pushes it past what the same load reached before.
// - vm flows: `--log-flows` makes weft log one line per closed flow, with a reason. The guest counts
//   the connections and UDP flows it made; the table has drained when weft has logged a close for
//   each of them. At SIGTERM weft closes what is left with reason "shutdown", and logs
//   counters.tcpConnectionsOpened: a drained table has no "shutdown" closes and as many TCP closes
//   as connections opened. (counters.tcpConnections and udpFlows in the "stopped" line are read
//   after weft's own shutdown has emptied the tables, so they are always empty and prove nothing.)
// - relay streams: /metrics (weft_relay_open_streams, weft_relay_streams_total) and its
//   stream-close lines; each flow of the wisp vm is one stream, so the counts must match its flows.
// - UDP flows close after weft's idle timeout (60 s), so the drain period is up to 75 s.

import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describeExec, describeFds, missingCommands, openFdCount, pythonExecutable } from '../harness/guest-tools';
import { Netns, requireRoot, TAP_LAUNCHER, UDHCPC_SCRIPT } from '../harness/netns';
import { fetchRelayMetrics, relayOpenStreams, relayStreamsTotal, type RelayMetrics } from '../harness/relay-metrics';
import { weftBundle } from '../harness/weft-bundle';
import { closedTcpPort, startHttpTestServer, startTcpEchoServer, startUdpEchoServer, type TestServer } from '../support/test-servers';
import {
  addCounts,
  emptyCounts,
  guestSynRetransmits,
  startGuestTraffic,
  tcpConnections,
  writeSoakClient,
  type GuestCounts,
  type GuestRun,
  type SoakTargets,
} from './soak-guest';
import { ProbedWeft, probedNodeArgs, spawnProbed, writeProbe, type ProcessSample } from './soak-process';

export type { GuestCounts } from './soak-guest';
export type { ProcessSample } from './soak-process';

export type SoakPath = 'direct' | 'wisp';

export interface SoakOptions {
  /** Traffic after the warm-up, in seconds. */
  seconds: number;
  warmupSeconds: number;
  /** How often fds, RSS and heap are sampled. */
  sampleMs: number;
  /** Which paths carry traffic (at the same time); wisp adds a weft relay. */
  paths: SoakPath[];
  /** New TCP connections per second from each path's python client (plus a curl loop at ~4/s). */
  tcpRate: number;
  /** New UDP flows (each from its own source port) per second on each path. */
  udpRate: number;
  /** How long flows may take to drain after the traffic stops (UDP idle timeout is 60 s). */
  drainMs: number;
  /**
   * Wait for every warm-up flow to close before the baseline (up to drainMs: a minute, for UDP), so
   * baseline and end are both taken with empty flow tables. Off: wait only for TCP (TIME_WAIT is
   * 30 s), and the baseline includes the warm-up's UDP flows (udpRate × warm-up seconds per path).
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
  /** If set, every line each weft process logs goes to DIR/<process>.log (flow closes included). */
  logDir?: string;
  /** If set, each weft process writes a V8 heap snapshot into this directory at the end (before SIGTERM). */
  heapSnapshotDir?: string;
  /** Progress lines (phases, samples as they are taken); the final tables are in the report. */
  log: (line: string) => void;
}

export const DEFAULT_SOAK: SoakOptions = {
  seconds: 600,
  warmupSeconds: 60,
  sampleMs: 5_000,
  paths: ['direct', 'wisp'],
  tcpRate: 50,
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

/** One process in one sample: its memory and fds, and the flows (vm) or streams (relay) opened and closed so far. */
export interface ProcessFigures extends ProcessSample {
  /** vm: connections / flows its guest has made; relay: streams it has opened (from /metrics, as of the last poll). */
  tcpOpened: number;
  udpOpened: number;
  /** Close lines logged so far (flow-close from a vm, stream-close from the relay). */
  tcpClosed: number;
  udpClosed: number;
}

export interface Sample {
  /** Seconds since every process was ready. */
  t: number;
  phase: string;
  /** By process name: vm-direct, vm-wisp, relay. */
  procs: Record<string, ProcessFigures>;
}

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export interface PathReport {
  path: SoakPath;
  guest: { warmup: GuestCounts; soak: GuestCounts };
  /** Connections (python and curl) and UDP flows the guest made, warm-up included. */
  guestTcp: number;
  guestUdp: number;
  synRetransmits: number;
  vm: ProcessReport & { tcpConnectionsOpened: number | undefined; drops: Record<string, number> };
}

export interface ProcessReport {
  name: string;
  tcpClosed: number;
  udpClosed: number;
  closeReasons: Record<string, number>;
  closedByShutdown: number;
  exitCode: number | null;
  warnings: string[];
}

export interface RelayReport extends ProcessReport {
  streamsTotal: { tcp: number; udp: number };
  /** UDP datagrams from destinations dropped while the WebSocket was congested, and on how many streams. */
  udpDrops: { streams: number; datagrams: number };
  openAtEnd: { tcp: number; udp: number };
  bytes: { upload: number; download: number };
}

export interface SoakReport {
  options: Omit<SoakOptions, 'log'>;
  samples: Sample[];
  /** Before any traffic (the fd reference: nothing open but each process's own). */
  idle: Sample;
  /** After the warm-up, once its TCP connections have closed (the RSS and heap reference). */
  baseline: Sample;
  /** After the soak traffic and the drain. */
  end: Sample;
  paths: PathReport[];
  relay: RelayReport | undefined;
  /** Milliseconds from the end of traffic until every flow and stream had closed, if they did within drainMs. */
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

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 250 ms until it holds (true) or `timeoutMs` passes (false). */
async function pollUntil(cond: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await cond()) return true;
    if (performance.now() >= deadline) return false;
    await sleep(250);
  }
}

// ---- the soak ------------------------------------------------------------------------------------

/** One guest namespace and the weft vm it talks to. */
interface PathState {
  path: SoakPath;
  ns: Netns;
  vm: ProbedWeft;
  current: GuestRun | undefined;
  warmup: GuestCounts;
  soak: GuestCounts;
  /** Finished runs only; totals() adds the current one. */
  doneTcp: number;
  doneUdp: number;
  synRetransStart: number;
}

const totals = (p: PathState) => ({
  tcp: p.doneTcp + (p.current ? tcpConnections(p.current.latest) : 0),
  udp: p.doneUdp + (p.current ? p.current.latest.udpFlows : 0),
});

export async function runSoak(partial: Partial<SoakOptions> = {}): Promise<SoakReport> {
  const opts: SoakOptions = { ...DEFAULT_SOAK, ...partial };
  if (opts.paths.length === 0) throw new Error('soak: no paths to drive');
  const { log } = opts;
  const dir = mkdtempSync(join(tmpdir(), 'weft-soak-'));
  const servers: TestServer[] = [];
  const namespaces: Netns[] = [];
  const bundle = process.env.WEFT_SOAK_BUNDLE || weftBundle();
  const logFile = (name: string) => (opts.logDir ? join(opts.logDir, `${name}.log`) : undefined);
  try {
    const probe = writeProbe(dir);
    const client = writeSoakClient(dir);
    const http = await startHttpTestServer();
    const echo = await startTcpEchoServer();
    const udp = await startUdpEchoServer();
    servers.push(http, echo, udp);
    const targets: SoakTargets = { echoPort: echo.port, httpPort: http.port, closedPort: await closedTcpPort(), udpPort: udp.port };

    // The relay first (the wisp vm connects at once), tracked by the wisp guest's namespace so that
    // its cleanup (also on SIGINT) stops it.
    let relay: ProbedWeft | undefined;
    let relayPort = 0;
    if (opts.paths.includes('wisp')) {
      const ns = Netns.create('soak-wisp');
      namespaces.push(ns);
      relay = new ProbedWeft(
        'relay',
        ns.track(
          spawnProbed(
            bundle,
            ['relay', '--listen', '127.0.0.1:0', '--allow-loopback', '--rate', '0', '--max-streams-per-client', '8192'],
            probe,
            opts.sampleMs,
            opts.heapSnapshotDir,
          ),
        ),
        logFile('relay'),
      );
      await relay.until(() => relay!.ready !== undefined, 'ready line from weft relay', 15_000);
      relayPort = relay.ready!.port as number;
    }

    const paths: PathState[] = [];
    for (const path of opts.paths) {
      const ns = path === 'wisp' ? namespaces[0] : Netns.create(`soak-${path}`);
      if (path !== 'wisp') namespaces.push(ns);
      const upstream = path === 'wisp' ? `wisp://127.0.0.1:${relayPort}/wisp/` : 'direct';
      const child = ns.track(
        spawn(
          pythonExecutable(),
          [
            TAP_LAUNCHER,
            '--netns',
            ns.name,
            '--tap',
            'tap0',
            '--',
            process.execPath,
            ...probedNodeArgs(probe, opts.heapSnapshotDir),
            bundle,
            'vm',
            '--tap-fd',
            '3',
            '--upstream',
            upstream,
            '--allow-host-loopback',
            '--log-flows',
          ],
          { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WEFT_SOAK_PROBE_MS: String(opts.sampleMs) } },
        ),
      );
      const vm = new ProbedWeft(`vm-${path}`, child, logFile(`vm-${path}`));
      await vm.until(() => vm.ready !== undefined, `ready line from weft vm (${path})`, 15_000);
      await ns.bringUpTap('tap0');
      const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
      if (dhcp.code !== 0) throw new Error(`udhcpc failed (${path}): ${describeExec(dhcp)}`);
      if (path === 'wisp') await vm.until(() => (vm.eventCounts['wisp-ready'] ?? 0) > 0, 'weft vm connected to the relay', 15_000);
      paths.push({ path, ns, vm, current: undefined, warmup: emptyCounts(), soak: emptyCounts(), doneTcp: 0, doneUdp: 0, synRetransStart: 0 });
    }
    const procs: ProbedWeft[] = [...paths.map((p) => p.vm), ...(relay ? [relay] : [])];
    for (const p of procs) {
      await p.until(() => p.probe !== undefined, `memory probe line from ${p.name} (is --import working?)`, 15_000);
      if (!p.probe!.gc) throw new Error(`the probe in ${p.name} has no gc(): --expose-gc did not reach it`);
    }
    const t0 = performance.now();

    let relayMetrics: RelayMetrics = relay ? await fetchRelayMetrics(relayPort) : new Map();
    const relayOpen = () => relayOpenStreams(relayMetrics);
    const relayTotal = () => relayStreamsTotal(relayMetrics);
    const refreshRelay = async () => {
      if (relay && !relay.exit) relayMetrics = await fetchRelayMetrics(relayPort);
    };

    const samples: Sample[] = [];
    let phase = 'idle';
    const sample = (label = phase): Sample => {
      const s: Sample = { t: (performance.now() - t0) / 1000, phase: label, procs: {} };
      for (const p of paths) {
        const g = totals(p);
        s.procs[p.vm.name] = { ...p.vm.sample(), tcpOpened: g.tcp, udpOpened: g.udp, tcpClosed: p.vm.closed.tcp, udpClosed: p.vm.closed.udp };
      }
      if (relay) {
        const total = relayTotal();
        s.procs.relay = { ...relay.sample(), tcpOpened: total.tcp, udpOpened: total.udp, tcpClosed: relay.closed.tcp, udpClosed: relay.closed.udp };
      }
      samples.push(s);
      log(formatProgress(s));
      return s;
    };
    /** A sample right after a fresh probe line from every process (GC'd heap figures from now). */
    const freshSample = async (label: string): Promise<Sample> => {
      const seen = procs.map((p) => p.probes);
      await Promise.all(procs.map((p, i) => p.until(() => p.probes > seen[i], 'a fresh memory probe', opts.sampleMs + 5_000)));
      await refreshRelay();
      return sample(label);
    };
    let sampling = false;
    const sampler = setInterval(() => {
      if (sampling) return;
      sampling = true;
      refreshRelay()
        .then(() => sample())
        .catch(() => {
          // a process gone; the phase that waits on it reports why
        })
        .finally(() => (sampling = false));
    }, opts.sampleMs);

    /** Runs the client on every path at once; adds the counts to each path's totals. */
    const traffic = async (seconds: number, firstUdpPort: number, into: 'warmup' | 'soak') => {
      for (const p of paths) p.current = startGuestTraffic(p.ns, client, targets, { seconds, tcpRate: opts.tcpRate, udpRate: opts.udpRate, firstUdpPort });
      const results = await Promise.allSettled(paths.map((p) => p.current!.done));
      for (const [i, p] of paths.entries()) {
        const r = results[i];
        if (r.status === 'rejected') throw r.reason;
        p[into] = r.value;
        p.doneTcp += tcpConnections(r.value);
        p.doneUdp += r.value.udpFlows;
        p.current = undefined;
      }
    };
    const vmsDrained = (udpToo: boolean) => paths.every((p) => p.vm.closed.tcp >= p.doneTcp && (!udpToo || p.vm.closed.udp >= p.doneUdp));
    const relayDrained = async (udpToo: boolean) => {
      if (!relay) return true;
      await refreshRelay();
      const open = relayOpen();
      const total = relayTotal();
      return open.tcp === 0 && relay.closed.tcp >= total.tcp && (!udpToo || (open.udp === 0 && relay.closed.udp >= total.udp));
    };
    const failIfExited = () => {
      const gone = procs.find((p) => p.exit);
      if (gone) throw new Error(`${gone.name} exited (${JSON.stringify(gone.exit)}):\n${gone.tail.join('\n')}`);
    };

    let drainedAfterMs: number | undefined;
    let idle: Sample;
    let baseline: Sample;
    let end: Sample;
    const beforeShutdown: Record<string, Record<string, number>> = {};
    try {
      log(`processes: ${procs.map((p) => `${p.name} pid ${p.pid}`).join(', ')}${relay ? `; relay on 127.0.0.1:${relayPort}` : ''}`);
      idle = await freshSample('idle');
      for (const p of paths) p.synRetransStart = await guestSynRetransmits(p.ns);

      // Warm-up: the same traffic, so the JIT, the heap and every code path are at their working size.
      phase = 'warmup';
      log(`warm-up: ${opts.warmupSeconds} s of traffic on ${opts.paths.join(' and ')}`);
      await traffic(opts.warmupSeconds, 10000, 'warmup');
      phase = 'settle';
      const settleMs = opts.drainBeforeBaseline ? opts.drainMs : 40_000;
      // Without a full drain: TCP closes at once or after TIME_WAIT (30 s); the warm-up's UDP flows stay open.
      log(`settle: up to ${settleMs / 1000} s for the warm-up's ${opts.drainBeforeBaseline ? 'flows' : 'TCP connections'} to close`);
      if (
        !(await pollUntil(async () => {
          failIfExited();
          return vmsDrained(opts.drainBeforeBaseline) && (await relayDrained(opts.drainBeforeBaseline));
        }, settleMs))
      ) {
        throw new Error(`the warm-up's flows did not close within ${settleMs / 1000} s: ${formatProgress(sample('settle'))}`);
      }
      baseline = await freshSample('baseline');

      phase = 'soak';
      log(`soak: ${opts.seconds} s of traffic (per path ${opts.tcpRate} TCP connections/s + a curl loop, ${opts.udpRate} UDP flows/s)`);
      await traffic(opts.seconds, 21000, 'soak');

      phase = 'drain';
      const drainStart = performance.now();
      log(`drain: up to ${opts.drainMs / 1000} s for every flow and stream to close and the fd counts to return to idle`);
      // SIGTERM later tells whether a vm had more flows than these: they close with reason "shutdown".
      if (
        await pollUntil(async () => {
          failIfExited();
          return vmsDrained(true) && (await relayDrained(true));
        }, opts.drainMs)
      ) {
        drainedAfterMs = performance.now() - drainStart;
      }
      // Sockets close a moment after the close line.
      await pollUntil(() => procs.every((p) => openFdCount(p.pid) <= idle.procs[p.name].fds), 5_000);
      end = await freshSample('end');
      for (const p of procs) beforeShutdown[p.name] = { ...p.eventCounts };
    } finally {
      clearInterval(sampler);
    }

    const fdsAtEnd = Object.fromEntries(procs.map((p) => [p.name, end.procs[p.name].fds > idle.procs[p.name].fds ? describeFds(p.pid) : []]));
    const synRetransmits = new Map<SoakPath, number>();
    for (const p of paths) synRetransmits.set(p.path, (await guestSynRetransmits(p.ns)) - p.synRetransStart);
    if (opts.heapSnapshotDir) for (const p of procs) log(`heap snapshot of ${p.name}: ${await heapSnapshot(p, opts.heapSnapshotDir)}`);
    await refreshRelay();
    const relayAtEnd = { open: relayOpen(), total: relayTotal(), metrics: relayMetrics };

    // Stop the vms, then the relay: flows still open in a vm now close with reason "shutdown".
    for (const p of paths) p.vm.kill('SIGTERM');
    await Promise.all(paths.map((p) => p.vm.until(() => p.vm.exit !== undefined, `${p.vm.name} to exit after SIGTERM`, 10_000)));
    if (relay) {
      relay.kill('SIGTERM');
      await relay.until(() => relay.exit !== undefined, 'weft relay to exit after SIGTERM', 10_000);
    }

    const checks: Check[] = [];
    const check = (name: string, ok: boolean, detail: string) => checks.push({ name, ok, detail });
    const pathReports: PathReport[] = [];
    for (const p of paths) {
      const { vm, warmup, soak } = p;
      const tag = `[${vm.name}]`;
      const guestTcp = p.doneTcp;
      const guestUdp = p.doneUdp;
      const syn = synRetransmits.get(p.path)!;
      const errors = [...warmup.errors, ...soak.errors];
      const sum = addCounts(warmup, soak);
      // The relay drops datagrams from a UDP destination while its WebSocket is congested (UDP cannot
      // be paused; the 1 MiB echoes can back it up), and says so in the stream's close line: an echo
      // lost that way is the relay working as designed, so each stream with drops excuses one UDP error.
      const excused = p.path === 'wisp' && relay ? Math.min(sum.udpErrors, relay.udpDrops.streams) : 0;
      check(
        `${tag} guest traffic had no errors${p.path === 'wisp' ? ' (UDP echoes only where the relay dropped datagrams under congestion)' : ''}`,
        sum.tcpErrors + sum.udpErrors - excused + sum.curlFailed === 0,
        `tcp errors ${sum.tcpErrors}, udp errors ${sum.udpErrors}${p.path === 'wisp' && relay ? ` (relay: ${relay.udpDrops.datagrams} datagrams dropped on ${relay.udpDrops.streams} streams)` : ''}, ` +
          `curl failures ${sum.curlFailed}${errors.length ? `: ${errors.slice(0, 10).join('; ')}` : ''}`,
      );
      check(
        `${tag} every flow closed within ${opts.drainMs / 1000} s of the end of traffic`,
        vm.closed.tcp >= guestTcp && vm.closed.udp >= guestUdp && drainedAfterMs !== undefined,
        `weft logged ${vm.closed.tcp} TCP closes for the guest's ${guestTcp} connections and ${vm.closed.udp} UDP closes for its ${guestUdp} flows` +
          `${drainedAfterMs !== undefined ? `, everything drained after ${(drainedAfterMs / 1000).toFixed(1)} s` : ''}`,
      );
      check(`${tag} no flow was left for SIGTERM to close`, vm.closedByShutdown === 0, `${vm.closedByShutdown} flows closed with reason "shutdown"`);
      // A SYN the guest sends again after weft already refused the first (the RST still on its way)
      // opens a second flow: legitimate, and only possible when the guest retransmitted a SYN.
      const counters = vm.stopped?.counters as { tcpConnectionsOpened?: number; drops?: Record<string, number> } | undefined;
      const opened = counters?.tcpConnectionsOpened;
      check(
        `${tag} weft opened the TCP connections the guest made (plus at most its SYN retransmissions), and closed each`,
        opened !== undefined && opened >= guestTcp && opened <= guestTcp + syn && vm.closed.tcp === opened,
        `tcpConnectionsOpened ${opened}, TCP flow closes ${vm.closed.tcp}, guest connections ${guestTcp}, guest SYN retransmissions ${syn}`,
      );
      if (p.path === 'wisp') {
        check(
          `${tag} weft stayed connected to the relay`,
          (beforeShutdown[vm.name]['wisp-disconnected'] ?? 0) === 0,
          `${beforeShutdown[vm.name]['wisp-disconnected'] ?? 0} wisp-disconnected lines before shutdown`,
        );
      }
      processChecks(check, opts, vm, samples, idle, baseline, end, fdsAtEnd[vm.name]);
      pathReports.push({
        path: p.path,
        guest: { warmup, soak },
        guestTcp,
        guestUdp,
        synRetransmits: syn,
        vm: { ...processReport(vm), tcpConnectionsOpened: opened, drops: counters?.drops ?? {} },
      });
    }

    let relayReport: RelayReport | undefined;
    if (relay) {
      const { open, total, metrics } = relayAtEnd;
      const wisp = paths.find((p) => p.path === 'wisp')!.vm;
      const wispOpened = pathReports.find((r) => r.path === 'wisp')!.vm.tcpConnectionsOpened;
      check(
        '[relay] every stream closed within the drain period (open-stream gauge 0, a stream-close line per stream)',
        open.tcp === 0 && open.udp === 0 && relay.closed.tcp === total.tcp && relay.closed.udp === total.udp,
        `open now ${JSON.stringify(open)}, streams opened ${JSON.stringify(total)}, stream-close lines ${JSON.stringify(relay.closed)}`,
      );
      check(
        '[relay] one stream per flow of weft vm --upstream wisp',
        total.tcp === wispOpened && total.udp === wisp.closed.udp,
        `streams ${JSON.stringify(total)}; the vm's TCP connections opened ${wispOpened}, UDP flows closed ${wisp.closed.udp}`,
      );
      check(
        '[relay] the vm stayed connected (no client-close before shutdown)',
        (beforeShutdown.relay['client-close'] ?? 0) === 0,
        `${beforeShutdown.relay['client-close'] ?? 0} client-close lines before shutdown`,
      );
      processChecks(check, opts, relay, samples, idle, baseline, end, fdsAtEnd.relay);
      relayReport = {
        ...processReport(relay),
        streamsTotal: total,
        udpDrops: { ...relay.udpDrops },
        openAtEnd: open,
        bytes: {
          upload: metrics.get('weft_relay_bytes_total{direction="upload"}') ?? 0,
          download: metrics.get('weft_relay_bytes_total{direction="download"}') ?? 0,
        },
      };
    }

    const { log: _log, ...shown } = opts;
    return {
      options: shown,
      samples,
      idle,
      baseline,
      end,
      paths: pathReports,
      relay: relayReport,
      drainedAfterMs,
      checks,
      ok: checks.every((c) => c.ok),
    };
  } finally {
    for (const ns of namespaces.reverse()) await ns.cleanup();
    await Promise.all(servers.map((s) => s.close()));
    rmSync(dir, { recursive: true, force: true });
  }
}

function processReport(p: ProbedWeft): ProcessReport {
  return {
    name: p.name,
    tcpClosed: p.closed.tcp,
    udpClosed: p.closed.udp,
    closeReasons: p.closeReasons,
    closedByShutdown: p.closedByShutdown,
    exitCode: p.exit?.code ?? null,
    warnings: p.warnings,
  };
}

/** The checks every process gets: fds, RSS, heap, buffers, and a clean exit. */
function processChecks(
  check: (name: string, ok: boolean, detail: string) => void,
  opts: SoakOptions,
  p: ProbedWeft,
  samples: Sample[],
  idleSample: Sample,
  baselineSample: Sample,
  endSample: Sample,
  fdsAtEnd: string[],
): void {
  const tag = `[${p.name}]`;
  const mine = samples.map((s) => ({ phase: s.phase, ...s.procs[p.name] }));
  const idle = idleSample.procs[p.name];
  const baseline = baselineSample.procs[p.name];
  const end = endSample.procs[p.name];
  const mib = (n: number) => `${(n / 2 ** 20).toFixed(1)} MiB`;
  const peak = (xs: number[]) => Math.max(...xs.filter((x) => !Number.isNaN(x)));
  const fdLimit = Math.floor(idle.fds * 1.1);
  check(
    `${tag} fd count back to the idle count (within 10%)`,
    end.fds <= fdLimit,
    `idle ${idle.fds}, baseline ${baseline.fds}, end ${end.fds} (limit ${fdLimit})${fdsAtEnd.length ? `:\n${fdsAtEnd.join('\n')}` : ''}`,
  );
  // RSS does not come down when the load does (the allocator keeps freed pages), so its baseline
  // is the most the warmed-up process held under this load: the warm-up's peak (or the settled
  // baseline, if higher). A leak pushes the soak's RSS past that; a steady process stays below.
  const rssBaseline = Math.max(baseline.rss, ...mine.filter((s) => s.phase === 'warmup').map((s) => s.rss));
  const rssLimit = rssBaseline * (1 + opts.rssGrowth) + opts.rssSlackBytes;
  check(
    `${tag} RSS within ${opts.rssGrowth * 100}% + ${mib(opts.rssSlackBytes)} of the warm-up's peak`,
    end.rss <= rssLimit,
    `warm-up peak ${mib(rssBaseline)} (settled baseline ${mib(baseline.rss)}), end ${mib(end.rss)}, limit ${mib(rssLimit)}, ` +
      `soak peak ${mib(peak(mine.filter((s) => s.phase === 'soak').map((s) => s.rss)))}`,
  );
  const heapLimit = baseline.heapUsed * (1 + opts.heapGrowth) + opts.heapSlackBytes;
  check(
    `${tag} heap (after GC) within ${opts.heapGrowth * 100}% + ${mib(opts.heapSlackBytes)} of the baseline`,
    end.heapUsed <= heapLimit,
    `baseline ${mib(baseline.heapUsed)}, end ${mib(end.heapUsed)}, limit ${mib(heapLimit)}, peak ${mib(peak(mine.map((s) => s.heapUsed)))}`,
  );
  const bufLimit = baseline.arrayBuffers * (1 + opts.buffersGrowth) + opts.buffersSlackBytes;
  check(
    `${tag} ArrayBuffer memory (after GC) within ${opts.buffersGrowth * 100}% + ${mib(opts.buffersSlackBytes)} of the baseline`,
    end.arrayBuffers <= bufLimit,
    `idle ${mib(idle.arrayBuffers)}, baseline ${mib(baseline.arrayBuffers)}, end ${mib(end.arrayBuffers)}, limit ${mib(bufLimit)}, peak ${mib(peak(mine.map((s) => s.arrayBuffers)))}`,
  );
  check(
    `${tag} exited 0 on SIGTERM without warnings or errors`,
    p.exit?.code === 0 && p.warnings.length === 0,
    `exit ${JSON.stringify(p.exit)}${p.warnings.length ? `; ${p.warnings.slice(0, 5).join(' | ')}` : ''}`,
  );
}

/** SIGUSR2 (node's --heapsnapshot-signal) and wait until the file stops growing. */
async function heapSnapshot(p: ProbedWeft, dir: string): Promise<string> {
  const before = new Set(readdirSync(dir));
  p.kill('SIGUSR2');
  const deadline = performance.now() + 60_000;
  while (performance.now() < deadline) {
    await sleep(500);
    const fresh = readdirSync(dir).filter((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
    if (fresh.length > 0) {
      const file = join(dir, fresh[0]);
      const size = statSync(file).size;
      await sleep(1000);
      if (statSync(file).size === size && size > 0) return file;
    }
  }
  return 'none written within 60 s';
}

// ---- output --------------------------------------------------------------------------------------

const COLUMNS = ['t (s)', 'phase', 'fds', 'RSS MiB', 'heap MiB', 'buffers MiB', 'TCP opened/closed', 'UDP opened/closed'] as const;
const WIDTHS = [7, 8, 5, 8, 9, 11, 17, 17];

function formatRow(cells: string[]): string {
  return cells.map((c, i) => (i === 1 ? c.padEnd(WIDTHS[i]) : c.padStart(WIDTHS[i]))).join('  ');
}

export function formatSampleHeader(): string {
  return formatRow([...COLUMNS]);
}

/** One process's figures in one sample, as a table row. */
export function formatSample(s: Sample, name: string): string {
  const p = s.procs[name];
  return formatRow([
    s.t.toFixed(0),
    s.phase,
    String(p.fds),
    (p.rss / 2 ** 20).toFixed(1),
    Number.isNaN(p.heapUsed) ? '-' : (p.heapUsed / 2 ** 20).toFixed(2),
    Number.isNaN(p.arrayBuffers) ? '-' : (p.arrayBuffers / 2 ** 20).toFixed(2),
    `${p.tcpOpened}/${p.tcpClosed}`,
    `${p.udpOpened}/${p.udpClosed}`,
  ]);
}

/** One line per sample for progress: every process's fds, RSS, heap, buffers and flows. */
export function formatProgress(s: Sample): string {
  const parts = Object.entries(s.procs).map(
    ([name, p]) =>
      `${name} ${p.fds} fds ${(p.rss / 2 ** 20).toFixed(0)}/${(p.heapUsed / 2 ** 20).toFixed(1)}/${(p.arrayBuffers / 2 ** 20).toFixed(1)} MiB ` +
      `tcp ${p.tcpOpened}/${p.tcpClosed} udp ${p.udpOpened}/${p.udpClosed}`,
  );
  return `${s.t.toFixed(0).padStart(5)} s ${s.phase.padEnd(8)} ${parts.join(' | ')}`;
}

/** Per process: the samples (at most `maxRows`, evenly spaced, always with idle, baseline and end); then the checks. */
export function formatReport(r: SoakReport, maxRows = 30): string {
  const keep = new Set<Sample>([r.idle, r.baseline, r.end]);
  const step = Math.max(1, Math.ceil(r.samples.length / maxRows));
  r.samples.forEach((s, i) => {
    if (i % step === 0) keep.add(s);
  });
  const rows = r.samples.filter((s) => keep.has(s));
  const o = r.options;
  const lines = [
    `soak: ${o.warmupSeconds} s warm-up + ${o.seconds} s traffic, then up to ${o.drainMs / 1000} s drain; paths ${o.paths.join(' + ')} at once, ` +
      `each ${o.tcpRate} TCP connections/s + a curl loop and ${o.udpRate} UDP flows/s`,
    `(vm: "opened" = connections / flows its guest has made so far, "closed" = flow-close lines; relay: streams opened per /metrics, stream-close lines)`,
  ];
  for (const name of Object.keys(r.end.procs)) {
    lines.push(
      '',
      `${name}${name.startsWith('vm-') ? ` (weft vm --upstream ${name.slice(3)})` : ' (weft relay)'}`,
      formatSampleHeader(),
      ...rows.map((s) => formatSample(s, name)),
    );
  }
  lines.push('');
  for (const p of r.paths) {
    const g = addCounts(p.guest.warmup, p.guest.soak);
    lines.push(
      `${p.path} guest: ${g.tcpAttempts} python TCP connections (${g.tcpOk} ok, ${g.tcpRefused} refused as intended, ${g.tcpErrors} errors), ` +
        `${g.curlOk} curl fetches (${g.curlFailed} failed), ${g.udpFlows} UDP flows (${g.udpOk} echoed, ${g.udpErrors} errors), ${(g.bytes / 1e6).toFixed(0)} MB echoed`,
      `  vm-${p.path}: ${p.vm.tcpClosed} TCP and ${p.vm.udpClosed} UDP flow closes; reasons ${JSON.stringify(p.vm.closeReasons)}; tcpConnectionsOpened ${p.vm.tcpConnectionsOpened}; drops ${JSON.stringify(p.vm.drops)}`,
    );
  }
  if (r.relay) {
    lines.push(
      `relay: streams ${JSON.stringify(r.relay.streamsTotal)}, open at the end ${JSON.stringify(r.relay.openAtEnd)}, ` +
        `${(r.relay.bytes.upload / 1e6).toFixed(0)} MB up / ${(r.relay.bytes.download / 1e6).toFixed(0)} MB down; close reasons ${JSON.stringify(r.relay.closeReasons)}; ` +
        `UDP datagrams dropped under congestion ${r.relay.udpDrops.datagrams} (on ${r.relay.udpDrops.streams} streams)`,
    );
  }
  lines.push(`drained ${r.drainedAfterMs === undefined ? 'NOT within the drain period' : `${(r.drainedAfterMs / 1000).toFixed(1)} s after the traffic`}`, '');
  lines.push(...r.checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.name}: ${c.detail}`));
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
  const strings: Record<string, (v: string) => boolean> = {
    '--heap-snapshot': (v) => {
      out.heapSnapshotDir = v;
      return true;
    },
    '--log-dir': (v) => {
      out.logDir = v;
      return true;
    },
    '--paths': (v) => {
      const paths = v.split(',');
      if (!paths.every((p): p is SoakPath => p === 'direct' || p === 'wisp')) return false;
      out.paths = [...new Set(paths)];
      return true;
    },
  };
  const usage = () =>
    `usage: npm run soak [-- ${Object.keys(numbers)
      .map((f) => `${f} N`)
      .join(' ')} --paths direct,wisp --heap-snapshot DIR --log-dir DIR]\n` +
    `defaults: --seconds ${DEFAULT_SOAK.seconds} --warmup ${DEFAULT_SOAK.warmupSeconds} --sample ${DEFAULT_SOAK.sampleMs / 1000} ` +
    `--tcp-rate ${DEFAULT_SOAK.tcpRate} --udp-rate ${DEFAULT_SOAK.udpRate} --drain ${DEFAULT_SOAK.drainMs / 1000} --drain-before-baseline 1 ` +
    `--paths ${DEFAULT_SOAK.paths.join(',')} (rates are per path)`;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '-h' || arg === '--help') {
      console.log(usage());
      process.exit(0);
    }
    const eq = arg.indexOf('=');
    const flag = eq < 0 ? arg : arg.slice(0, eq);
    const value = eq < 0 ? argv[++i] : arg.slice(eq + 1);
    let ok = false;
    if (flag in strings && value !== undefined && value !== '') ok = strings[flag](value);
    else if (flag in numbers && value !== undefined && /^\d+(\.\d+)?$/.test(value)) {
      numbers[flag](Number(value));
      ok = true;
    }
    if (!ok) {
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
    console.error(e instanceof Error ? (e.stack ?? e.message) : e);
    process.exit(1);
  });
}
