// weft's TCP sending against the Linux kernel's, on the same faulty link: a guest (a network
// namespace) behind the fault wire (test/harness/fault-wire.ts, netem's faults in user space, the
// same in both directions) whose other end is `weft vm --upstream direct --allow-host-loopback`,
// the set-up of the fault matrix (test/harness/faulty-link.ts). The guest downloads from the host's
// HTTP test server (weft is the TCP sender towards the guest) and uploads to it (the guest's kernel
// is the sender), both sha256-checked; the ratio of the two is the figure, since both cross the
// same wire, the same weft process and the same host server, and absolute MB/s on a shared 2-core
// machine move a lot.
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DirectionStats, FaultConfig, WireStats } from '../harness/fault-wire';
import { GATEWAY, guestDownload, guestUpload, startFaultyLink, type GuestTransfer } from '../harness/faulty-link';
import { missingCommands, shq } from '../harness/guest-tools';
import type { WeftProcess } from '../harness/weft-process';
import { deterministicBytes, startHttpTestServer } from '../support/test-servers';
import { median } from './sample-stats';

export interface FaultsCell {
  /** Short name, as WEFT_FAULTS_CELLS lists it. */
  name: string;
  label: string;
  config: FaultConfig;
}

export const FAULTS_CELLS: readonly FaultsCell[] = [
  { name: 'clean', label: 'clean', config: {} },
  { name: 'loss1', label: 'loss 1%', config: { loss: 0.01 } },
  { name: 'loss5', label: 'loss 5%', config: { loss: 0.05 } },
  { name: 'dup1', label: 'duplicate 1%', config: { duplicate: 0.01 } },
  { name: 'reorder', label: 'reorder 25% delay 10ms', config: { reorder: 0.25, delayMs: 10 } },
  { name: 'combined', label: 'combined', config: { loss: 0.05, duplicate: 0.01, reorder: 0.25, delayMs: 10 } },
];

/** MB/s (10^6 bytes) over the rounds that completed. */
export interface Spread {
  median: number;
  min: number;
  max: number;
  each: number[];
}

export interface FaultsBenchRow {
  cell: string;
  label: string;
  bytes: number;
  /** The guest downloads: weft sends. Undefined when no round completed. */
  weftToGuest?: Spread;
  /** The guest uploads: its kernel sends. */
  guestToWeft?: Spread;
  /** weftToGuest.median / guestToWeft.median. */
  ratio?: number;
  /** What the wire did over all of the cell's rounds. */
  wire: WireStats;
  /** The first transfer that failed (the cell's remaining rounds are skipped), if any. */
  failure?: string;
}

export interface FaultsBenchOptions {
  /** Bytes each way per transfer (default 32 MiB). */
  bytes?: number;
  /** Rounds per cell (default 3); each round runs both directions, first one, then the other. */
  rounds?: number;
  /** Short names of the cells to run (default: all, in FAULTS_CELLS order). */
  cells?: readonly string[];
  /** The fault wire's seed (default 1). */
  seed?: number;
  /** A transfer still running after this has failed: curl gives up and the row says so (default 180 s). */
  transferTimeoutMs?: number;
  log?: (line: string) => void;
}

/** Warm-up size: weft's JIT and both sides' first connection, before anything is measured. */
const WARM_UP_BYTES = 4 << 20;

/** Why the suite cannot run here, or undefined. */
export function faultsBenchUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces and TAP devices)';
  if (!existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  const missing = missingCommands(['curl', 'bash', 'sha256sum', 'busybox', 'ip', 'python3']);
  if (missing.length > 0) return `missing ${missing.join(', ')} (apt-get install curl coreutils busybox-static iproute2 python3)`;
  return undefined;
}

function spread(mbps: number[]): Spread | undefined {
  if (mbps.length === 0) return undefined;
  return { median: median(mbps), min: Math.min(...mbps), max: Math.max(...mbps), each: mbps };
}

/**
 * Runs every chosen cell on one link (one weft, one guest; the wire's faults change between
 * cells) and prints a line per transfer, then the table. Returns the rows.
 */
export async function runFaultsBench(o: FaultsBenchOptions = {}): Promise<FaultsBenchRow[]> {
  const bytes = o.bytes ?? 32 << 20;
  const rounds = o.rounds ?? 3;
  const seed = o.seed ?? 1;
  const timeoutMs = o.transferTimeoutMs ?? 180_000;
  const log = o.log ?? ((line: string) => console.log(line));
  for (const [name, v] of [
    ['bytes (WEFT_FAULTS_BYTES)', bytes],
    ['rounds (WEFT_BENCH_ROUNDS)', rounds],
  ] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`faults bench: ${name} must be a positive integer, got ${v}`);
  }
  const unknown = (o.cells ?? []).filter((name) => !FAULTS_CELLS.some((c) => c.name === name));
  if (unknown.length > 0) throw new Error(`unknown faults cell(s) ${unknown.join(', ')}; available: ${FAULTS_CELLS.map((c) => c.name).join(', ')}`);
  const cells = o.cells ? FAULTS_CELLS.filter((c) => o.cells!.includes(c.name)) : FAULTS_CELLS;

  const dir = mkdtempSync(join(tmpdir(), 'weft-faults-bench-'));
  const http = await startHttpTestServer();
  const server = `http://${GATEWAY}:${http.port}`;
  const link = await startFaultyLink({ dir, seed, weftArgs: ['--upstream', 'direct', '--allow-host-loopback', '--log-flows'] }).catch(async (e: unknown) => {
    await http.close();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  const rows: FaultsBenchRow[] = [];
  try {
    // The guest's kernel would otherwise start each connection with the ssthresh it cached from
    // the previous one to 10.0.2.2 (after a lossy cell, a small one); weft keeps no such memory.
    const sysctl = await link.guestNs.exec(['sysctl', '-qw', 'net.ipv4.tcp_no_metrics_save=1']);
    if (sysctl.code !== 0) throw new Error(`sysctl in the guest failed: ${sysctl.stderr}`);
    // The upload reads a file written before the clock starts, so no generator's start-up is timed.
    const files = new Map<number, string>();
    for (const n of new Set([bytes, Math.min(bytes, WARM_UP_BYTES)])) {
      files.set(n, join(dir, `upload-${n}.bin`));
      writeFileSync(files.get(n)!, deterministicBytes(n));
    }
    const transfer = (direction: 'down' | 'up', n: number): Promise<GuestTransfer> => {
      if (link.weft.exit)
        return Promise.resolve({ seconds: NaN, problem: `weft exited (${JSON.stringify(link.weft.exit)}): ${link.weft.stderr.slice(-2000)}` });
      return direction === 'down'
        ? guestDownload(link.guestNs, server, n, timeoutMs)
        : guestUpload(link.guestNs, server, n, `cat ${shq(files.get(n)!)}`, timeoutMs);
    };

    await link.wire.set({});
    for (const direction of ['down', 'up'] as const) {
      const warm = await transfer(direction, Math.min(bytes, WARM_UP_BYTES));
      if (warm.problem) throw new Error(`warm-up ${direction}load on a clean link failed: ${warm.problem}`);
    }

    for (const cell of cells) {
      await link.wire.set(cell.config);
      const mbps = { down: [] as number[], up: [] as number[] };
      let failure: string | undefined;
      roundLoop: for (let round = 1; round <= rounds; round++) {
        // Alternating which goes first spreads slow drift in the machine's load over both.
        const order = round % 2 === 1 ? (['down', 'up'] as const) : (['up', 'down'] as const);
        for (const direction of order) {
          const what = direction === 'down' ? 'weft→guest' : 'guest→weft';
          const t = await transfer(direction, bytes);
          if (t.problem) {
            failure = `round ${round} ${what}: ${t.problem}`;
            log(`  ${cell.label}, round ${round}: ${what} FAILED (${t.problem.split('\n')[0]}; details below the table)`);
            break roundLoop;
          }
          const rate = bytes / 1e6 / t.seconds;
          mbps[direction].push(rate);
          log(`  ${cell.label}, round ${round}: ${what} ${rate.toFixed(2)} MB/s${direction === 'down' ? await senderStats(link.weft, bytes) : ''}`);
        }
      }
      const weftToGuest = spread(mbps.down);
      const guestToWeft = spread(mbps.up);
      rows.push({
        cell: cell.name,
        label: cell.label,
        bytes,
        wire: await link.wire.stats(),
        ...(weftToGuest ? { weftToGuest } : {}),
        ...(guestToWeft ? { guestToWeft } : {}),
        ...(weftToGuest && guestToWeft ? { ratio: weftToGuest.median / guestToWeft.median } : {}),
        ...(failure ? { failure } : {}),
      });
    }
  } finally {
    await link.close();
    await http.close();
    rmSync(dir, { recursive: true, force: true });
  }
  log(formatFaultsTable(rows, { bytes, rounds, seed }));
  return rows;
}

function formatSpread(s: Spread | undefined): string {
  if (!s) return '—';
  return s.each.length > 1 ? `${s.median.toFixed(2)} (${s.min.toFixed(2)}–${s.max.toFixed(2)})` : s.median.toFixed(2);
}

// Write errors and socket drops are losses the wire did not choose: shown when they happen.
function formatDirection(d: DirectionStats): string {
  const extra = d.writeErrors > 0 ? `, ${d.writeErrors} write errors` : '';
  return `${d.frames} frames: ${d.lost} lost, ${d.duplicated} dup, ${d.delayed} delayed, ${d.reordered} reordered${extra}`;
}

/** The table, then what the wire did in each cell and which transfers failed. */
export function formatFaultsTable(rows: readonly FaultsBenchRow[], run: { bytes: number; rounds: number; seed: number }): string {
  const header = ['cell', 'weft→guest MB/s', 'guest→weft MB/s', 'ratio'];
  const cells = rows.map((r) => [
    r.failure ? `${r.label} (FAILED)` : r.label,
    formatSpread(r.weftToGuest),
    formatSpread(r.guestToWeft),
    r.ratio === undefined ? '—' : r.ratio.toFixed(2),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (c: string[]) => c.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ');
  const out = [
    `\nfaults — ${run.bytes / 1048576} MiB each way per transfer, ${run.rounds === 1 ? '1 round' : `median (min–max) of ${run.rounds} rounds`}; ` +
      "weft→guest: weft sends (guest downloads), guest→weft: the guest's Linux TCP sends (guest uploads); " +
      `ratio = weft→guest / guest→weft; fault wire seed ${run.seed}`,
    line(header),
    line(widths.map((w) => '-'.repeat(w))),
    ...cells.map(line),
    "\nwire counters per cell, over all its rounds (to guest: weft's data in downloads and its ACKs in uploads; to weft: the reverse):",
  ];
  const labelWidth = Math.max(...rows.map((r) => r.label.length));
  for (const r of rows) {
    const drops = r.wire.wireSocketDrops > 0 ? `; ${r.wire.wireSocketDrops} frames from weft dropped before the wire read them` : '';
    out.push(`${r.label.padEnd(labelWidth)}  to guest ${formatDirection(r.wire.toGuest)}; to weft ${formatDirection(r.wire.toWeft)}${drops}`);
  }
  const failed = rows.filter((r) => r.failure);
  if (failed.length > 0) out.push('\nfailures:', ...failed.map((r) => `${r.label}: ${r.failure}`));
  return out.join('\n');
}

/** How weft's sending went in the download just finished, from its flow log (weft closes it within a round trip or two). */
async function senderStats(weft: WeftProcess, bytes: number): Promise<string> {
  for (let i = 0; i < 20; i++) {
    const e = [...weft.events]
      .reverse()
      .find((x) => x.event === 'flow-close' && x.protocol === 'tcp' && typeof x.bytesToGuest === 'number' && x.bytesToGuest >= bytes);
    if (e && !reported.has(e)) {
      reported.add(e);
      return ` (weft resent ${String(e.retransmits)} segments; ${String(e.timeouts)} timeouts, ${String(e.lossProbes)} loss probes, ${String(e.spuriousUndone)} reductions undone)`;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return '';
}
const reported = new WeakSet<object>();
