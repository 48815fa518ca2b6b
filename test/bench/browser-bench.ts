// `npm run bench -- browser`: the same v86 guest (image, memory, virtio-net card, MTU; restored from
// a saved state at its shell) downloads the same file through the same `weft relay`, (a) with weft's
// worker attached to the NIC, (b) with v86's own Wisp adapter (`net_device.relay_url = "wisp://…"`),
// in alternating rounds of one run; MB/s, the median ratio, and where the time went (the page's
// main thread, the guest's CPU, the weft worker). The two saved states differ in one thing: (a)'s
// was booted with weft attached, so its card offered the guest segmentation offload, which is what
// attachV86 does for any guest it sees boot; (b)'s card is as v86 makes it.
//
// Looking closer: WEFT_BENCH_PCAP=FILE.pcap keeps weft's capture of each download, and
// WEFT_BENCH_PROFILE=PREFIX writes a CPU profile of the page's main thread per weft download.
//
// v86's adapter opens a Wisp stream to the literal destination address the guest dialled, so the
// file must be served on an address the guest can route to: this machine's first non-loopback IPv4
// (a small TCP forwarder there leads to the test HTTP server on 127.0.0.1), allowed on the relay with
// `--allow ADDRESS/32`. Both runs use that address.

import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import type { Page } from 'playwright-core';
import { startHttpTestServer, type TestServer } from '../support/test-servers';
import {
  bootV86Snapshot,
  chromiumMissing,
  ensureGuestImage,
  launchChromium,
  serveStatic,
  v86ServeOptions,
  type ChromiumSession,
  type StaticServer,
  type V86Guest,
} from '../e2e/v86-harness';
import { attachWeft, startRelay, stopWeftCapture, webBundleDir, weftStats, WEB_MOUNT, type RelayHandle } from '../e2e/weft-page';
import type { V86AttachOptions } from '../../web/index';

export interface BrowserBenchRow {
  peer: 'weft worker' | 'v86 wisp adapter';
  bytes: number;
  seconds: number;
  mbPerSecond: number;
  /** Time the page's main thread spent in tasks (v86 itself, and v86's adapter when it is used). */
  mainThreadMs: number;
  /** Share of the guest's own CPU time that was not idle during the download (its /proc/stat). */
  guestBusy?: number;
  /** Share of the guest's CPU time spent in interrupts and softirqs (its receive path), during the download. */
  guestSoftirq?: number;
  /** Time the weft worker spent working (weft only). */
  workerBusyMs?: number;
  /** Frames weft sent to the guest during the download, and their mean size in bytes (weft only). */
  framesToGuest?: number;
  meanFrameBytes?: number;
  /** Frames per batch the adapter wrote into the card's buffers (one interrupt each; weft only). */
  framesPerBatch?: number;
  /** How frames crossed between page and worker (weft only). */
  framePath?: string;
}

export interface BrowserBenchResult {
  mtu: number;
  rounds: number;
  /** The median round of each (by MB/s). */
  weft: BrowserBenchRow;
  /** Missing when the run left v86's adapter out (BrowserBenchOptions.withV86 false). */
  v86?: BrowserBenchRow;
  /** weft's median MB/s ÷ v86's adapter's median MB/s. */
  ratio?: number;
}

export interface BrowserBenchOptions {
  /** Bytes to download (default 50 MiB). */
  bytes?: number;
  /** The MTU of the VM's virtio-net card (v86's `net_device.mtu`, which v86's adapter uses too) and of weft's network (default 1500). */
  mtu?: number;
  /** Serve the page cross-origin isolated, so weft's frames cross through its SharedArrayBuffer rings (default true). */
  crossOriginIsolated?: boolean;
  /** Rounds of each download (default 3); the medians are compared. */
  rounds?: number;
  /** Also run v86's own adapter (default true). */
  withV86?: boolean;
  /** Passed to attachV86 (e.g. { virtioDataValid: false } to measure what DATA_VALID saves). */
  attach?: V86AttachOptions;
  /** Write weft's capture of each download (up to 64 MiB of frames) to this pcap file, numbered per round (a-1.pcap, …). */
  capturePath?: string;
  log?: (line: string) => void;
}

/** The benchmark cannot run on this machine (no Chromium, no guest image, …): the message says why. */
export class BrowserBenchUnavailable extends Error {
  override name = 'BrowserBenchUnavailable';
}

/** Why the benchmark cannot run here, or undefined. */
export function browserBenchUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux';
  const chromium = chromiumMissing();
  if (chromium) return chromium;
  if (!hostAddress()) return 'this machine has no non-loopback IPv4 address for the guest to reach';
  return undefined;
}

/** The first non-internal IPv4 address of this machine (outside weft's 10.0.2.0/24). */
function hostAddress(): string | undefined {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.family === 'IPv4' && !a.internal && !a.address.startsWith('10.0.2.')) return a.address;
    }
  }
  return undefined;
}

/** A TCP forwarder on `host` (kernel-chosen port) to 127.0.0.1:`port`. */
async function forwarder(host: string, port: number): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  server.listen(0, host);
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Reads how long the page's main thread has spent in tasks so far (Chrome's TaskDuration metric). */
async function mainThreadClock(page: Page): Promise<{ read(): Promise<number>; close(): Promise<void> }> {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Performance.enable');
  return {
    async read() {
      const { metrics } = await cdp.send('Performance.getMetrics');
      return (metrics.find((m) => m.name === 'TaskDuration')?.value ?? 0) * 1000;
    },
    close: () => cdp.detach().catch(() => undefined),
  };
}

/** The guest's CPU time counters (/proc/stat's first line, in jiffies). */
interface GuestCpu {
  busy: number;
  softirq: number;
  total: number;
}

function parseCpuLine(line: string | undefined): GuestCpu | undefined {
  const m = /^cpu\s+([\d\s]+)$/m.exec(line ?? '');
  if (!m) return undefined;
  const f = m[1].trim().split(/\s+/).map(Number);
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3] - (f[4] ?? 0), softirq: (f[5] ?? 0) + (f[6] ?? 0), total };
}

async function download(
  guest: V86Guest,
  url: string,
  bytes: number,
  profilePath?: string,
): Promise<{ seconds: number; mainThreadMs: number; guestBusy?: number; guestSoftirq?: number }> {
  const main = await mainThreadClock(guest.page);
  const profiler = profilePath ? await guest.page.context().newCDPSession(guest.page) : undefined;
  if (profiler) {
    await profiler.send('Profiler.enable');
    await profiler.send('Profiler.setSamplingInterval', { interval: 200 });
    await profiler.send('Profiler.start');
  }
  try {
    const main0 = await main.read();
    const t0 = performance.now();
    // /proc/stat around the download: how busy the guest's (emulated) CPU was meanwhile.
    const r = await guest.run(
      `head -1 /proc/stat && wget -q -O /dev/null ${url} && head -1 /proc/stat`,
      Number(process.env.WEFT_BENCH_TIMEOUT_MS ?? 15 * 60_000),
    );
    const seconds = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`the guest's download of ${bytes} bytes failed (exit ${r.status}): ${r.output}`);
    const lines = r.output.split('\n').filter((l) => l.startsWith('cpu '));
    const [a, b] = [parseCpuLine(lines[0]), parseCpuLine(lines[1])];
    if (profiler && profilePath) writeFileSync(profilePath, JSON.stringify((await profiler.send('Profiler.stop')).profile));
    const cpu =
      a && b && b.total > a.total ? { guestBusy: (b.busy - a.busy) / (b.total - a.total), guestSoftirq: (b.softirq - a.softirq) / (b.total - a.total) } : {};
    return { seconds, mainThreadMs: (await main.read()) - main0, ...cpu };
  } finally {
    await main.close();
    await profiler?.detach().catch(() => undefined);
  }
}

/** The fields every peer's row has, from one download. */
function row(peer: BrowserBenchRow['peer'], bytes: number, run: Awaited<ReturnType<typeof download>>): BrowserBenchRow {
  return {
    peer,
    bytes,
    seconds: run.seconds,
    mbPerSecond: bytes / 1e6 / run.seconds,
    mainThreadMs: run.mainThreadMs,
    ...(run.guestBusy === undefined ? {} : { guestBusy: run.guestBusy }),
    ...(run.guestSoftirq === undefined ? {} : { guestSoftirq: run.guestSoftirq }),
  };
}

/** Leases an address with the guest's udhcpc (from weft's DHCP, or from v86's adapter's). */
async function lease(guest: V86Guest): Promise<string> {
  const from = guest.serial.length;
  const r = await guest.run('weft-dhcp', 60_000);
  if (r.status !== 0) throw new Error(`the guest got no DHCP lease: ${r.output}`);
  return (await guest.waitForLease(5_000, from)).ip;
}

/** The row with the median MB/s (the lower middle one for an even count). */
function median(rows: BrowserBenchRow[]): BrowserBenchRow {
  const sorted = [...rows].sort((a, b) => a.mbPerSecond - b.mbPerSecond);
  return sorted[(sorted.length - 1) >> 1];
}

/**
 * Runs both downloads of `bytes` (default 50 MiB) `rounds` times (default 3; the order of the two
 * alternates) and prints every round and the medians. Throws BrowserBenchUnavailable when the
 * benchmark cannot run here, and an Error when a download fails.
 */
export async function runBrowserBench(options: BrowserBenchOptions = {}): Promise<BrowserBenchResult> {
  const bytes = options.bytes ?? 50 * 1024 * 1024;
  const mtu = options.mtu ?? 1500;
  const rounds = Math.max(1, options.rounds ?? 3);
  const log = options.log ?? ((line: string) => console.log(line));
  const why = browserBenchUnavailable();
  if (why) throw new BrowserBenchUnavailable(why);
  const built = await ensureGuestImage();
  if ('skip' in built) throw new BrowserBenchUnavailable(`cannot build the guest image: ${built.skip}`);
  const image = built.image;
  const host = hostAddress() as string;
  // The saved state is per MTU (the card's MTU is part of the machine); 1500 is v86's default.
  const vm = { nic: 'virtio' as const, ...(mtu === 1500 ? {} : { mtu }) };

  let http: TestServer | undefined;
  let forward: TestServer | undefined;
  let relay: RelayHandle | undefined;
  let server: StaticServer | undefined;
  let session: ChromiumSession | undefined;
  try {
    http = await startHttpTestServer();
    forward = await forwarder(host, http.port);
    relay = await startRelay(['--allow', `${host}/32`]);
    server = await serveStatic(v86ServeOptions(image, { mounts: { [WEB_MOUNT]: webBundleDir() }, crossOriginIsolated: options.crossOriginIsolated ?? true }));
    session = await launchChromium();
    const url = `http://${host}:${forward.port}/bytes/${bytes}`;

    // (a) weft: the worker's stack on the NIC, its Wisp client to the relay. Its saved state was
    // booted with weft attached, so the card offered the guest segmentation offload.
    const runWeft = async (capturePath?: string): Promise<BrowserBenchRow> => {
      const a = await bootV86Snapshot(session!, server!, image, {
        ...vm,
        stateTag: 'weft',
        beforeRun: (g) =>
          attachWeft(g, {
            relayUrl: relay!.wisp,
            ...(mtu === 1500 ? {} : { mtu }),
            ...(options.attach ? { attach: options.attach } : {}),
            capture: capturePath !== undefined,
          }),
      });
      try {
        await lease(a.guest);
        const before = await weftStats(a.guest);
        const run = await download(
          a.guest,
          url,
          bytes,
          process.env.WEFT_BENCH_PROFILE ? `${process.env.WEFT_BENCH_PROFILE}-${weftRows.length + 1}.cpuprofile` : undefined,
        );
        const after = await weftStats(a.guest);
        if (capturePath) writeFileSync(capturePath, await stopWeftCapture(a.guest));
        const frames = after.stats.framesOut - before.stats.framesOut;
        return {
          ...row('weft worker', bytes, run),
          workerBusyMs: after.stats.workerBusyMs - before.stats.workerBusyMs,
          framesToGuest: frames,
          meanFrameBytes: frames > 0 ? (after.stats.bytesOut - before.stats.bytesOut) / frames : 0,
          framePath: after.stats.framePath,
          framesPerBatch: (after.attachmentDelivered - before.attachmentDelivered) / Math.max(1, after.attachmentBatches - before.attachmentBatches),
        };
      } finally {
        await a.guest.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
        await a.guest.close();
      }
    };
    // (b) v86's built-in Wisp adapter against the same relay, on the card as v86 makes it.
    const runV86 = async (): Promise<BrowserBenchRow> => {
      const b = await bootV86Snapshot(session!, server!, image, { ...vm, relayUrl: relay!.wisp.replace(/^ws:/, 'wisp:') });
      try {
        await lease(b.guest);
        return row('v86 wisp adapter', bytes, await download(b.guest, url, bytes));
      } finally {
        await b.guest.close();
      }
    };

    const withV86 = options.withV86 ?? true;
    const weftRows: BrowserBenchRow[] = [];
    const v86Rows: BrowserBenchRow[] = [];
    for (let i = 0; i < rounds; i++) {
      // Alternate which goes first, so neither always runs on a fresher (or more tired) browser.
      if (withV86 && i % 2 === 1) v86Rows.push(await runV86());
      weftRows.push(await runWeft(options.capturePath ? options.capturePath.replace(/(\.pcap)?$/, `-${i + 1}.pcap`) : undefined));
      if (withV86 && i % 2 === 0) v86Rows.push(await runV86());
    }
    const weft = median(weftRows);
    const v86 = v86Rows.length > 0 ? median(v86Rows) : undefined;

    const result: BrowserBenchResult = { mtu, rounds, weft, ...(v86 ? { v86, ratio: weft.mbPerSecond / v86.mbPerSecond } : {}) };
    const fmt = (n: number | undefined, d = 0) => (n === undefined ? '—' : n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d }));
    log(
      `\nbrowser — v86 guest (virtio-net, MTU ${mtu}, restored state) downloads ${fmt(bytes / 1048576)} MiB to /dev/null through weft relay${weft.framePath ? ` (weft frames page↔worker: ${weft.framePath})` : ''}; ${rounds} round${rounds > 1 ? 's' : ''}`,
    );
    log(
      `${'peer'.padEnd(22)} ${'seconds'.padStart(8)} ${'MB/s'.padStart(7)} ${'main thread ms'.padStart(15)} ${'guest CPU (irq)'.padStart(15)} ${'worker ms'.padStart(10)} ${'frames'.padStart(8)} ${'mean B'.padStart(7)} ${'per irq'.padStart(7)}`,
    );
    const line = (label: string, r: BrowserBenchRow) =>
      log(
        `${label.padEnd(22)} ${fmt(r.seconds, 1).padStart(8)} ${fmt(r.mbPerSecond, 2).padStart(7)} ${fmt(r.mainThreadMs).padStart(15)} ` +
          `${(r.guestBusy === undefined ? '—' : `${fmt(r.guestBusy * 100)}% (${fmt((r.guestSoftirq ?? 0) * 100)}%)`).padStart(15)} ${fmt(r.workerBusyMs).padStart(10)} ${fmt(r.framesToGuest).padStart(8)} ${fmt(r.meanFrameBytes).padStart(7)} ${fmt(r.framesPerBatch, 1).padStart(7)}`,
      );
    if (rounds > 1) {
      weftRows.forEach((r, i) => {
        line(`${r.peer} #${i + 1}`, r);
      });
      v86Rows.forEach((r, i) => {
        line(`${r.peer} #${i + 1}`, r);
      });
    }
    for (const r of v86 ? [weft, v86] : [weft]) line(rounds > 1 ? `${r.peer} median` : r.peer, r);
    if (result.ratio !== undefined) {
      const each = weftRows.map((w, i) => (v86Rows[i] ? w.mbPerSecond / v86Rows[i].mbPerSecond : NaN)).filter((x) => !Number.isNaN(x));
      log(
        `${'weft / v86 (medians)'.padEnd(22)} ${''.padStart(8)} ${fmt(result.ratio, 2).padStart(7)}${each.length > 1 ? `   per round: ${each.map((x) => fmt(x, 2)).join(', ')}` : ''}`,
      );
    }
    return result;
  } finally {
    await session?.close();
    await server?.close();
    await relay?.stop();
    await forward?.close();
    await http?.close();
  }
}
