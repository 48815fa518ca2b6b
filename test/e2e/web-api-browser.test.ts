// The page API in Debian's Chromium, with the real worker and no guest: a FramePort written in the
// page plays the guest (frames built here), so what the unit tests fake — the Worker, its 'error'
// event for a script that does not load, comlink across a real worker, EventTarget — is the
// browser's own. A few seconds; needs only Chromium and the web bundles.

import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dhcpFrame, GATEWAY_IP, pingFrame } from '../support/frames';
import { chromiumMissing, launchChromium, serveStatic, type ChromiumSession, type StaticServer } from './v86-harness';
import { webBundleDir, WEB_MOUNT } from './weft-page';

const SUITE = 'weft-net/web in the browser: events, error codes and AbortSignal with the real worker';
const missing = process.platform !== 'linux' ? 'needs Linux' : chromiumMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

type Weft = typeof import('../../web/index');

declare global {
  interface Window {
    /** What the test keeps in the page between evaluate() calls. */
    webApi: {
      weft: Weft;
      net: import('../../web/index').WeftNetwork;
      netController: AbortController;
      portController: AbortController;
      /** Frames each page port received, and the function that sends one as its guest. */
      ports: Record<'a' | 'b', { got: number[][]; send(frame: number[]): void }>;
      leases: Array<{ ip: string; mac: string }>;
      /** The same events through on(), which hands over the NetworkEvent itself. */
      leasesViaOn: string[];
    };
  }
}

/** DHCP DISCOVER, then REQUEST for 10.0.2.15 from server 10.0.2.2 (selecting), as udhcpc sends them. */
const DISCOVER = Array.from(dhcpFrame(1));
const REQUEST = Array.from(dhcpFrame(3, undefined, 0x1234, [50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2]));
const ping = (seq: number) => Array.from(pingFrame(GATEWAY_IP, 32, seq));

/** The sequence numbers of the ICMP echo replies among `frames` (Ethernet + 20-byte IPv4 header; an independent reading). */
function echoReplySeqs(frames: number[][]): number[] {
  return frames.filter((f) => f[12] === 0x08 && f[13] === 0x00 && f[23] === 1 && f[34] === 0).map((f) => (f[40] << 8) | f[41]);
}

describe.skipIf(missing !== undefined)(SUITE, () => {
  let server: StaticServer | undefined;
  let session: ChromiumSession | undefined;
  let page: Page;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    server = await serveStatic({
      mounts: { [WEB_MOUNT]: webBundleDir() },
      files: { '/index.html': '<!doctype html><meta charset="utf-8"><title>weft web API</title>' },
    });
    session = await launchChromium();
    page = await session.context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.goto(server.url('/index.html'));
  }, 120_000);

  afterAll(async () => {
    await page?.evaluate(() => window.webApi?.net.close()).catch(() => undefined);
    await session?.close();
    await server?.close();
  });

  it("addEventListener('lease') gets the lease a page port asked for; aborting the port's signal detaches it both ways", async () => {
    await page.evaluate(
      async ({ url, discover, request }) => {
        // A dynamic import written as code text: vitest rewrites `import()` in this file's source.
        const load = new Function('u', 'return import(u)') as (u: string) => Promise<Weft>;
        const weft = await load(url);
        const netController = new AbortController();
        const portController = new AbortController();
        const net = weft.createNetwork({ signal: netController.signal });
        const leases: Array<{ ip: string; mac: string }> = [];
        net.addEventListener('lease', (e) => leases.push({ ip: e.detail.ip, mac: e.detail.mac }));
        const leasesViaOn: string[] = [];
        net.on('lease', (e) => leasesViaOn.push(e.ip));
        await net.ready;
        const port = () => {
          let guest: ((frame: Uint8Array) => void) | undefined;
          const got: number[][] = [];
          return {
            got,
            send: (frame: number[]) => guest?.(Uint8Array.from(frame)),
            frames: { send: (f: Uint8Array) => void got.push(Array.from(f)), onFrame: (cb: (f: Uint8Array) => void) => void (guest = cb) },
          };
        };
        const a = port();
        const b = port();
        net.attach(a.frames, { signal: portController.signal });
        net.attach(b.frames);
        window.webApi = { weft, net, netController, portController, ports: { a, b }, leases, leasesViaOn };
        a.send(discover);
        a.send(request);
      },
      { url: `${WEB_MOUNT}weft.mjs`, discover: DISCOVER, request: REQUEST },
    );
    await expect.poll(() => page.evaluate(() => window.webApi.leases), { timeout: 10_000 }).toEqual([{ ip: '10.0.2.15', mac: '52:54:00:12:34:56' }]);
    expect(await page.evaluate(() => window.webApi.leasesViaOn)).toEqual(['10.0.2.15']);

    // Attached, port a's ping is answered (to a alone: the ports are switched, and the guest's MAC was seen on a).
    await page.evaluate((frame) => window.webApi.ports.a.send(frame), ping(1));
    const framesOf = (port: 'a' | 'b') => page.evaluate((p) => window.webApi.ports[p].got, port);
    await expect.poll(async () => echoReplySeqs(await framesOf('a')), { timeout: 10_000 }).toEqual([1]);

    // Aborted, a's frames no longer reach the stack (b, sending with the same MAC now, would see the reply to seq 2), and nothing more reaches a.
    const before = await page.evaluate(
      (frames) => {
        const { portController, ports } = window.webApi;
        portController.abort();
        const n = ports.a.got.length;
        ports.a.send(frames[0]);
        ports.b.send(frames[1]);
        return n;
      },
      [ping(2), ping(3)],
    );
    await expect.poll(async () => echoReplySeqs(await framesOf('b')), { timeout: 10_000 }).toContain(3);
    expect((await framesOf('a')).length, 'frames reaching the detached port').toBe(before);
    expect(echoReplySeqs(await framesOf('b'))).toEqual([3]);
    expect(pageErrors).toEqual([]);
  }, 60_000);

  it("aborting the network's signal closes it: calls reject with ERR_WEFT_CLOSED, attach throws it", async () => {
    const r = await page.evaluate(async () => {
      const { net, netController, weft } = window.webApi;
      netController.abort();
      const stats = await net.stats().then(
        () => 'resolved',
        (e: unknown) => (e instanceof weft.WeftError ? e.code : String(e)),
      );
      let attach = 'attached';
      try {
        net.attach({ send() {}, onFrame() {} });
      } catch (e) {
        attach = (e as InstanceType<Weft['WeftError']>).code;
      }
      return { stats, attach, ready: await net.ready.then(() => 'resolved') };
    });
    expect(r).toEqual({ stats: 'ERR_WEFT_CLOSED', attach: 'ERR_WEFT_CLOSED', ready: 'resolved' });
  });

  it('a worker script that does not load: ready rejects with ERR_WEFT_START_FAILED, an error event carries the code, close() ends', async () => {
    const r = await page.evaluate(async () => {
      const { weft } = window.webApi;
      const net = weft.createNetwork({ workerUrl: '/no/such/weft-worker.js' });
      const codes: Array<string | undefined> = [];
      net.addEventListener('error', (e) => codes.push(e.detail.code));
      const ready = await net.ready.then(
        () => undefined,
        (e: unknown) => ({
          isWeftError: e instanceof weft.WeftError,
          name: (e as Error).name,
          code: (e as { code?: string }).code,
          message: (e as Error).message,
        }),
      );
      await net.close();
      return { ready, codes };
    });
    expect(r.ready).toMatchObject({ isWeftError: true, name: 'WeftError', code: 'ERR_WEFT_START_FAILED', message: expect.stringContaining('workerUrl') });
    expect(r.codes).toEqual(['ERR_WEFT_START_FAILED']);
  });
});
