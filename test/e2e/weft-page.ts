// weft in the v86 page, for e2e tests and the browser benchmark: the web bundle (dist/web) mounted
// beside the harness's v86 page, `createNetwork()` + `attachV86()` run in the page before the
// emulator starts, every network event recorded on `window` for the test to read, and a `weft relay`
// process that can be stopped and started again on the same port.

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { NetworkEvent, NetworkOptions, NetworkStats, V86AttachOptions, V86Attachment, WeftNetwork } from '../../web/index';
import { REPO_ROOT } from '../harness/repo-root';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';
import type { V86Guest } from './v86-harness';

export const WEB_DIST_DIR = join(REPO_ROOT, 'dist', 'web');
/** Where the page finds the web library (the harness's static server mounts WEB_DIST_DIR there). */
export const WEB_MOUNT = '/dist/web/';

declare global {
  interface Window {
    weftNet: WeftNetwork;
    weftAttachment: V86Attachment;
    /** Every event the network reported, with the page's performance.now() when it came. */
    weftEvents: Array<NetworkEvent & { at: number }>;
  }
}

/** Returns dist/web, building the bundles first when the library or its worker is missing. */
export function webBundleDir(): string {
  const need = ['weft.mjs', 'weft-worker.js'].map((f) => join(WEB_DIST_DIR, f));
  if (!need.every(existsSync)) execFileSync(process.execPath, ['esbuild.config.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
  for (const f of need) if (!existsSync(f)) throw new Error(`building the web bundles did not produce ${f}`);
  return WEB_DIST_DIR;
}

/**
 * In the page (call it from bootV86's beforeRun): imports the web library, creates the network with
 * `options`, attaches it to `window.emulator`, and records its events on `window.weftEvents`.
 * Resolves when the worker runs the stack.
 */
export async function attachWeft(guest: V86Guest, options: NetworkOptions & { capture?: boolean; attach?: V86AttachOptions }): Promise<void> {
  await guest.page.evaluate(
    async ({ url, options }) => {
      // A dynamic import written as code text: vitest rewrites `import()` in this file's source.
      const load = new Function('u', 'return import(u)') as (u: string) => Promise<typeof import('../../web/index')>;
      const weft = await load(url);
      const { capture, attach, ...settings } = options;
      const net = weft.createNetwork(settings);
      window.weftEvents = [];
      for (const type of ['relay', 'lease', 'flow-open', 'flow-close', 'drops', 'error'] as const) {
        net.on(type, (e: NetworkEvent) => window.weftEvents.push({ ...e, at: performance.now() }));
      }
      window.weftNet = net;
      await net.ready;
      if (capture) await net.startCapture();
      window.weftAttachment = weft.attachV86(window.emulator, net, attach);
    },
    { url: `${WEB_MOUNT}weft.mjs`, options },
  );
}

/** The events recorded so far (optionally only those of one type). */
export async function weftEvents<T extends NetworkEvent['type']>(
  guest: V86Guest,
  type?: T,
): Promise<Array<Extract<NetworkEvent, { type: T }> & { at: number }>> {
  const all = await guest.page.evaluate(() => window.weftEvents);
  return all.filter((e) => type === undefined || e.type === type) as Array<Extract<NetworkEvent, { type: T }> & { at: number }>;
}

/** Polls the page until an event matching `match` has been recorded (at index ≥ `from`). */
export async function waitForWeftEvent(
  guest: V86Guest,
  match: (e: NetworkEvent) => boolean,
  what: string,
  timeoutMs = 20_000,
  from = 0,
): Promise<NetworkEvent & { at: number }> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const events = await guest.page.evaluate(() => window.weftEvents);
    const found = events.slice(from).find(match);
    if (found) return found;
    if (performance.now() > deadline) {
      throw new Error(`no weft event "${what}" within ${timeoutMs} ms; events: ${JSON.stringify(events.slice(-20))}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface WeftPageStats {
  stats: NetworkStats;
  /** Frames the v86 attachment dropped (its queue for the card was full), and how many wait now. */
  attachmentDropped: number;
  attachmentQueued: number;
  attachmentPacing: V86Attachment['pacing'];
  /** Frames the attachment handed the card, and in how many batches (virtio: interrupts). */
  attachmentDelivered: number;
  attachmentBatches: number;
}

export async function weftStats(guest: V86Guest): Promise<WeftPageStats> {
  return guest.page.evaluate(async () => ({
    stats: await window.weftNet.stats(),
    attachmentDropped: window.weftAttachment.dropped,
    attachmentQueued: window.weftAttachment.queued,
    attachmentPacing: window.weftAttachment.pacing,
    attachmentDelivered: window.weftAttachment.delivered,
    attachmentBatches: window.weftAttachment.batches,
  }));
}

/** Stops the capture in the page and returns the pcap file's bytes. */
export async function stopWeftCapture(guest: V86Guest): Promise<Buffer> {
  const bytes = await guest.page.evaluate(async () => {
    const blob = await window.weftNet.stopCapture();
    // Through playwright as a plain number array would be slow for big captures; base64 is fine.
    const buf = new Uint8Array(await blob.arrayBuffer());
    let s = '';
    for (let i = 0; i < buf.length; i += 0x8000) s += String.fromCharCode.apply(null, Array.from(buf.subarray(i, i + 0x8000)));
    return btoa(s);
  });
  return Buffer.from(bytes, 'base64');
}

// ---------------------------------------------------------------------------------------------
// `weft relay`

export interface RelayHandle {
  port: number;
  /** ws://127.0.0.1:PORT/wisp/ */
  wisp: string;
  proc: WeftProcess;
  /** Kills the relay at once (SIGKILL): every WebSocket drops without a close frame. */
  kill(): Promise<void>;
  /** Starts it again on the same port with the same flags. */
  restart(): Promise<void>;
  /** Stops it gracefully (SIGTERM, then SIGKILL). */
  stop(): Promise<void>;
}

/** Starts `weft relay --listen 127.0.0.1:0 ARGS…` and keeps its port for restarts. */
export async function startRelay(args: readonly string[]): Promise<RelayHandle> {
  const launch = async (port: number) => {
    const proc = spawnWeft(['relay', '--listen', `127.0.0.1:${port}`, ...args]);
    const ready = await proc.waitForEvent('ready');
    return { proc, port: ready.port as number };
  };
  let { proc, port } = await launch(0);
  const handle: RelayHandle = {
    port,
    wisp: `ws://127.0.0.1:${port}/wisp/`,
    get proc() {
      return proc;
    },
    async kill() {
      proc.kill('SIGKILL');
      await proc.waitForExit(5000);
    },
    async restart() {
      // The old process is gone, but a port can linger a moment: retry the listen briefly.
      for (let attempt = 0; ; attempt++) {
        try {
          ({ proc } = await launch(port));
          return;
        } catch (e) {
          if (attempt >= 20) throw e;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    },
    async stop() {
      proc.kill('SIGTERM');
      await proc.waitForExit(6000).catch(() => {
        proc.kill('SIGKILL');
        return proc.waitForExit(2000).catch(() => undefined);
      });
    },
  };
  return handle;
}
