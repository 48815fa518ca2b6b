// `npm run bench -- browser`: the same v86 guest (virtio-net, restored from the same saved state)
// downloads the same file through the same `weft relay`, (a) with weft's worker attached to the NIC,
// (b) with v86's own Wisp adapter (`net_device.relay_url = "wisp://…"`), in one run; MB/s, the ratio,
// and the time the weft worker and the page's main thread spent working.
//
// v86's adapter opens a Wisp stream to the literal destination address the guest dialled, so the
// file must be served on an address the guest can route to: this machine's first non-loopback IPv4
// (a small TCP forwarder there leads to the test HTTP server on 127.0.0.1), allowed on the relay with
// `--allow ADDRESS/32`. Both runs use that address.

import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import type { Page } from 'playwright-core';
import { startHttpTestServer, type TestServer } from '../support/test-servers';
import {
  bootV86Snapshot, chromiumMissing, ensureGuestImage, launchChromium, serveStatic, v86ServeOptions,
  type ChromiumSession, type StaticServer, type V86Guest,
} from '../e2e/v86-harness';
import { attachWeft, startRelay, webBundleDir, weftStats, WEB_MOUNT, type RelayHandle } from '../e2e/weft-page';

export interface BrowserBenchRow {
  peer: 'weft worker' | 'v86 wisp adapter';
  bytes: number;
  seconds: number;
  mbPerSecond: number;
  /** Time the page's main thread spent in tasks (v86 itself, and v86's adapter when it is used). */
  mainThreadMs: number;
  /** Time the weft worker spent working (weft only). */
  workerBusyMs?: number;
}

export interface BrowserBenchResult {
  weft: BrowserBenchRow;
  v86: BrowserBenchRow;
  /** weft MB/s ÷ v86 adapter MB/s. */
  ratio: number;
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

async function download(guest: V86Guest, url: string, bytes: number): Promise<{ seconds: number; mainThreadMs: number }> {
  const main = await mainThreadClock(guest.page);
  try {
    const main0 = await main.read();
    const t0 = performance.now();
    const r = await guest.run(`wget -q -O /dev/null ${url}`, 15 * 60_000);
    const seconds = (performance.now() - t0) / 1000;
    if (r.status !== 0) throw new Error(`the guest's download of ${bytes} bytes failed (exit ${r.status}): ${r.output}`);
    return { seconds, mainThreadMs: (await main.read()) - main0 };
  } finally {
    await main.close();
  }
}

/** Leases an address with the guest's udhcpc (from weft's DHCP, or from v86's adapter's). */
async function lease(guest: V86Guest): Promise<string> {
  const from = guest.serial.length;
  const r = await guest.run('weft-dhcp', 60_000);
  if (r.status !== 0) throw new Error(`the guest got no DHCP lease: ${r.output}`);
  return (await guest.waitForLease(5_000, from)).ip;
}

/**
 * Runs both downloads of `bytes` (default 50 MiB) and prints the comparison. Throws when the
 * benchmark cannot run here (see browserBenchUnavailable) or a download fails.
 */
export async function runBrowserBench(options: { bytes?: number; log?: (line: string) => void } = {}): Promise<BrowserBenchResult> {
  const bytes = options.bytes ?? 50 * 1024 * 1024;
  const log = options.log ?? ((line: string) => console.log(line));
  const why = browserBenchUnavailable();
  if (why) throw new Error(`browser benchmark unavailable: ${why}`);
  const built = await ensureGuestImage();
  if ('skip' in built) throw new Error(`browser benchmark unavailable: cannot build the guest image: ${built.skip}`);
  const image = built.image;
  const host = hostAddress() as string;

  let http: TestServer | undefined;
  let forward: TestServer | undefined;
  let relay: RelayHandle | undefined;
  let server: StaticServer | undefined;
  let session: ChromiumSession | undefined;
  try {
    http = await startHttpTestServer();
    forward = await forwarder(host, http.port);
    relay = await startRelay(['--allow', `${host}/32`]);
    server = await serveStatic(v86ServeOptions(image, { mounts: { [WEB_MOUNT]: webBundleDir() } }));
    session = await launchChromium();
    const url = `http://${host}:${forward.port}/bytes/${bytes}`;

    // (a) weft: the worker's stack on the NIC, its Wisp client to the relay.
    const a = await bootV86Snapshot(session, server, image, {
      nic: 'virtio',
      beforeRun: (g) => attachWeft(g, { relayUrl: relay!.wisp }),
    });
    let weft: BrowserBenchRow;
    try {
      await lease(a.guest);
      const before = await weftStats(a.guest);
      const run = await download(a.guest, url, bytes);
      const after = await weftStats(a.guest);
      weft = {
        peer: 'weft worker',
        bytes,
        seconds: run.seconds,
        mbPerSecond: bytes / 1e6 / run.seconds,
        mainThreadMs: run.mainThreadMs,
        workerBusyMs: after.stats.workerBusyMs - before.stats.workerBusyMs,
      };
    } finally {
      await a.guest.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
      await a.guest.close();
    }

    // (b) v86's built-in Wisp adapter on the same saved state, against the same relay.
    const b = await bootV86Snapshot(session, server, image, { nic: 'virtio', relayUrl: relay.wisp.replace(/^ws:/, 'wisp:') });
    let v86: BrowserBenchRow;
    try {
      await lease(b.guest);
      const run = await download(b.guest, url, bytes);
      v86 = { peer: 'v86 wisp adapter', bytes, seconds: run.seconds, mbPerSecond: bytes / 1e6 / run.seconds, mainThreadMs: run.mainThreadMs };
    } finally {
      await b.guest.close();
    }

    const result = { weft, v86, ratio: weft.mbPerSecond / v86.mbPerSecond };
    const fmt = (n: number, d = 0) => n.toLocaleString('en-US', { maximumFractionDigits: d, minimumFractionDigits: d });
    log(`\nbrowser — v86 guest (virtio-net, restored state) downloads ${fmt(bytes / 1048576)} MiB to /dev/null through weft relay`);
    log(`${'peer'.padEnd(18)} ${'seconds'.padStart(8)} ${'MB/s'.padStart(7)} ${'main thread ms'.padStart(15)} ${'worker ms'.padStart(10)}`);
    for (const r of [weft, v86]) {
      log(`${r.peer.padEnd(18)} ${fmt(r.seconds, 1).padStart(8)} ${fmt(r.mbPerSecond, 2).padStart(7)} ${fmt(r.mainThreadMs).padStart(15)} ${(r.workerBusyMs === undefined ? '—' : fmt(r.workerBusyMs)).padStart(10)}`);
    }
    log(`${'weft / v86'.padEnd(18)} ${''.padStart(8)} ${fmt(result.ratio, 2).padStart(7)}`);
    return result;
  } finally {
    await session?.close();
    await server?.close();
    await relay?.stop();
    await forward?.close();
    await http?.close();
  }
}
