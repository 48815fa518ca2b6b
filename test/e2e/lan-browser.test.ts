// One LAN for several v86 guests in Debian's Chromium (issue 19, items 3 and 4): two guests in one
// page on one network, and two guests in two tabs that join one LAN by name (a SharedWorker runs the
// stack). The guests — real Linux in v86, restored from one saved state and given MACs and DHCP
// hostnames of their own — lease distinct addresses, ping each other, move a few MiB over TCP with
// busybox nc (sha256 on both ends), resolve each other as <hostname>.weft.internal, and still reach
// an HTTP server on this host through `weft relay`. In one page, the guests' TCP stays in the page
// (the worker sees almost none of its frames). Across tabs, events and calls work from either tab,
// a tab with other settings is refused, and when the tab that opened the LAN closes (without
// close()) the other keeps networking while the closed tab's port leaves the LAN.

import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NetworkEvent, V86Attachment } from '../../web/index';
import { expectedSha256, startHttpTestServer, type TestServer } from '../support/test-servers';
import {
  bootV86,
  bootV86Snapshot,
  chromiumMissing,
  guestImageFor,
  launchChromium,
  serveStatic,
  stateName,
  V86Page,
  v86ServeOptions,
  V86_PAGE,
  type ChromiumSession,
  type GuestImage,
  type StaticServer,
  type V86BootOptions,
  type V86Guest,
} from './v86-harness';
import { attachWeft, startRelay, waitForWeftEvent, webBundleDir, WEB_MOUNT, type RelayHandle } from './weft-page';

const SUITE = 'one LAN for several v86 guests: two in one page, two in two tabs';
const missing = process.platform !== 'linux' ? 'needs Linux' : chromiumMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

type Weft = typeof import('../../web/index');

declare global {
  interface Window {
    /** The web library, for attaching guests in slots (V86Page). */
    weftLib: Weft;
    weftAttachments: Record<string, V86Attachment>;
  }
}

/** What every guest here starts from: the saved state of a virtio guest booted with weft attached. */
const BOOT: V86BootOptions = { nic: 'virtio', stateTag: 'weft', dhcpAtBoot: false };
/** Bytes each TCP test moves from one guest to the other. */
const TCP_BYTES = 3 * 1024 * 1024;
const NC_PORT = 9000;

/** Gives the guest its own MAC (both start from one saved state, with one MAC) and leases an address announcing `hostname`. */
async function lease(guest: V86Guest, mac: string, hostname: string): Promise<string> {
  const from = guest.serial.length;
  const r = await guest.run(`ip link set dev eth0 address ${mac} && weft-dhcp -x hostname:${hostname}`, 60_000);
  expect(r.status, r.output).toBe(0);
  const l = await guest.waitForLease(5_000, from);
  return l.ip;
}

/** `from` pings `ip` (three echoes): its exit status and output. */
async function ping(from: V86Guest, ip: string, count = 3): Promise<{ status: number; output: string }> {
  return from.run(`ping -c ${count} -W 2 ${ip}`, 30_000);
}

/**
 * Moves TCP_BYTES of random data from `from` to `to` over TCP (busybox nc: the receiver's nc runs
 * sha256sum on what arrives and sends the digest back); returns both digests and the seconds it took.
 */
async function tcpTransfer(from: V86Guest, to: V86Guest, toIp: string): Promise<{ sent: string; received: string; seconds: number }> {
  const listen = await to.run(`(nc -l -p ${NC_PORT} -e sha256sum > /dev/null 2>&1 &)`, 10_000);
  expect(listen.status, listen.output).toBe(0);
  const made = await from.run(`dd if=/dev/urandom of=/tmp/out bs=65536 count=${TCP_BYTES / 65536} 2>/dev/null && sha256sum /tmp/out`, 30_000);
  expect(made.status, made.output).toBe(0);
  const t0 = performance.now();
  const r = await from.run(`nc ${toIp} ${NC_PORT} < /tmp/out`, 120_000);
  const seconds = (performance.now() - t0) / 1000;
  expect(r.status, r.output).toBe(0);
  const digest = (text: string) => /\b([0-9a-f]{64})\b/.exec(text)?.[1] ?? `no digest in ${JSON.stringify(text)}`;
  return { sent: digest(made.output), received: digest(r.output), seconds };
}

/** `guest` downloads 100,000 bytes from the host's test server (10.0.2.2 → 127.0.0.1 through the relay); returns the sha256. */
async function reachHost(guest: V86Guest, http: TestServer): Promise<string> {
  const r = await guest.run(`wget -q -O - http://10.0.2.2:${http.port}/bytes/100000 | sha256sum`, 60_000);
  return r.output.split(/\s/)[0];
}

/** The network's stats, read in `page`. */
function statsIn(page: Page) {
  return page.evaluate(() => window.weftNet.stats());
}

describe.skipIf(missing !== undefined)(SUITE, () => {
  let image: GuestImage | undefined;
  let skipReason: string | undefined;
  let server: StaticServer | undefined;
  let session: ChromiumSession | undefined;
  let http: TestServer | undefined;
  let relay: RelayHandle | undefined;
  /** Where the saved state is, for BOOT.initialState. */
  let initialState = '';

  beforeAll(async () => {
    const built = await guestImageFor(SUITE);
    if (built.skipReason !== undefined) {
      skipReason = built.skipReason;
      return;
    }
    image = built.image;
    server = await serveStatic(v86ServeOptions(image, { mounts: { [WEB_MOUNT]: webBundleDir() } }));
    session = await launchChromium();
    http = await startHttpTestServer();
    relay = await startRelay(['--allow-loopback']);
    const name = stateName(image, BOOT);
    if (!existsSync(join(image.dir, 'states', name))) {
      // No saved state yet: boot once (about a minute) and save it, as the other e2e tests do.
      const { guest } = await bootV86Snapshot(session, server, image, { ...BOOT, beforeRun: (g) => attachWeft(g, {}) });
      await guest.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
      await guest.close();
    }
    initialState = `/guest/states/${name}`;
  }, 300_000);

  afterAll(async () => {
    await session?.close();
    await server?.close();
    await relay?.stop();
    await http?.close();
  });

  describe('two guests in one page, one network', () => {
    let v86: V86Page | undefined;
    let alpha: V86Guest | undefined;
    let beta: V86Guest | undefined;
    let ipAlpha = '';
    let ipBeta = '';

    beforeAll(async () => {
      if (skipReason || !session || !server || !image) return;
      const t0 = performance.now();
      v86 = await V86Page.open(session, server);
      await v86.page.evaluate(
        async ({ url, relayUrl }) => {
          // A dynamic import written as code text: vitest rewrites `import()` in this file's source.
          const load = new Function('u', 'return import(u)') as (u: string) => Promise<Weft>;
          const weft = await load(url);
          const net = weft.createNetwork({ relayUrl, allowHostLoopback: true });
          window.weftLib = weft;
          window.weftNet = net;
          window.weftAttachments = {};
          window.weftEvents = [];
          for (const type of ['relay', 'lease', 'flow-open', 'flow-close', 'drops', 'error'] as const) {
            net.on(type, (e: NetworkEvent) => window.weftEvents.push({ ...e, at: performance.now() }));
          }
          await net.ready;
        },
        { url: `${WEB_MOUNT}weft.mjs`, relayUrl: relay!.wisp },
      );
      const attach = (g: V86Guest) =>
        g.page.evaluate((slot) => {
          window.weftAttachments[slot] = window.weftLib.attachV86(window.weftEmulators[slot], window.weftNet);
        }, g.slot as string);
      alpha = await v86.boot('alpha', image, { ...BOOT, initialState, beforeRun: attach });
      beta = await v86.boot('beta', image, { ...BOOT, initialState, beforeRun: attach });
      ipAlpha = await lease(alpha, '02:00:00:00:00:0a', 'alpha');
      ipBeta = await lease(beta, '02:00:00:00:00:0b', 'beta');
      console.log(`[lan] one page: two guests restored and leased in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }, 180_000);

    afterAll(async () => {
      await v86?.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
      await v86?.close();
    });

    it('each guest leases its own address, announced with its hostname; the page has two ports', async ({ skip }) => {
      if (skipReason || !alpha) skip(skipReason ?? 'no guests');
      expect(ipAlpha).toMatch(/^10\.0\.2\.\d+$/);
      expect(ipBeta).toMatch(/^10\.0\.2\.\d+$/);
      expect(ipAlpha).not.toBe(ipBeta);
      const leases = await v86!.page.evaluate(() => window.weftEvents.filter((e) => e.type === 'lease'));
      expect(leases).toEqual(
        expect.arrayContaining([
          expect.objectContaining({ ip: ipAlpha, hostname: 'alpha', mac: '02:00:00:00:00:0a' }),
          expect.objectContaining({ ip: ipBeta, hostname: 'beta', mac: '02:00:00:00:00:0b' }),
        ]),
      );
      expect((await statsIn(v86!.page)).lan.ports).toBe(2);
    });

    it('the guests ping each other', async ({ skip }) => {
      if (skipReason || !alpha || !beta) skip(skipReason ?? 'no guests');
      const ab = await ping(alpha!, ipBeta);
      expect(ab.status, ab.output).toBe(0);
      const ba = await ping(beta!, ipAlpha);
      expect(ba.status, ba.output).toBe(0);
    }, 60_000);

    it('each resolves the other by its DHCP hostname (<hostname>.weft.internal)', async ({ skip }) => {
      if (skipReason || !alpha || !beta) skip(skipReason ?? 'no guests');
      const a = await alpha!.run('nslookup beta.weft.internal', 20_000);
      expect(a.output).toContain(ipBeta);
      const b = await beta!.run('nslookup alpha.weft.internal', 20_000);
      expect(b.output).toContain(ipAlpha);
    }, 60_000);

    it(`TCP between the guests: ${TCP_BYTES / 1048576} MiB with nc, sha256 equal on both ends, switched in the page (not through the worker)`, async ({
      skip,
    }) => {
      if (skipReason || !alpha || !beta) skip(skipReason ?? 'no guests');
      const before = await statsIn(v86!.page);
      const r = await tcpTransfer(alpha!, beta!, ipBeta);
      const after = await statsIn(v86!.page);
      console.log(`[lan] one page: ${TCP_BYTES / 1048576} MiB guest to guest in ${r.seconds.toFixed(1)} s`);
      expect(r.received).toBe(r.sent);
      // ~2,900 full-size segments and their ACKs went guest to guest; what reached the worker meanwhile
      // is the guests' other chatter (DHCP renewals, ARP to weft…), not the transfer.
      const toWorker = after.framesFromPage - before.framesFromPage;
      expect(toWorker, 'frames the worker got during the transfer').toBeLessThan(200);
      expect(after.lan.drops).toEqual({});
    }, 180_000);

    it('both guests still reach this host through the relay', async ({ skip }) => {
      if (skipReason || !alpha || !beta) skip(skipReason ?? 'no guests');
      expect(await reachHost(alpha!, http!)).toBe(expectedSha256(100000));
      expect(await reachHost(beta!, http!)).toBe(expectedSha256(100000));
    }, 120_000);
  });

  describe("two tabs on one LAN (createNetwork({ lan }): a SharedWorker's stack)", () => {
    const LAN = 'e2e-lan';
    let tabA: V86Guest | undefined;
    let tabB: V86Guest | undefined;
    let ipA = '';
    let ipB = '';
    const settings = () => ({ lan: LAN, relayUrl: relay!.wisp, allowHostLoopback: true });
    const extraPages: Page[] = [];

    /** A plain page of the same origin with the web library loaded, for a network of its own. */
    async function plainPage(): Promise<Page> {
      const page = await session!.context.newPage();
      extraPages.push(page);
      await page.goto(server!.url(V86_PAGE));
      await page.evaluate(async (url) => {
        const load = new Function('u', 'return import(u)') as (u: string) => Promise<Weft>;
        window.weftLib = await load(url);
      }, `${WEB_MOUNT}weft.mjs`);
      return page;
    }

    beforeAll(async () => {
      if (skipReason || !session || !server || !image) return;
      const t0 = performance.now();
      // Tab A opens the LAN (its SharedWorker starts the stack); tab B joins it.
      tabA = await bootV86(session, server, image, { ...BOOT, initialState, beforeRun: (g) => attachWeft(g, settings()) });
      tabB = await bootV86(session, server, image, { ...BOOT, initialState, beforeRun: (g) => attachWeft(g, settings()) });
      ipA = await lease(tabA, '02:00:00:00:01:0a', 'tab-a');
      ipB = await lease(tabB, '02:00:00:00:01:0b', 'tab-b');
      console.log(`[lan] two tabs: two guests restored and leased in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }, 180_000);

    afterAll(async () => {
      for (const g of [tabA, tabB]) {
        await g?.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
        await g?.close();
      }
      for (const p of extraPages) await p.close().catch(() => undefined);
    });

    it('one stack for both tabs: distinct leases, and each tab hears both (events reach every tab); both count two tabs', async ({ skip }) => {
      if (skipReason || !tabA || !tabB) skip(skipReason ?? 'no guests');
      expect(ipA).not.toBe(ipB);
      for (const tab of [tabA!, tabB!]) {
        await waitForWeftEvent(tab, (e) => e.type === 'lease' && e.ip === ipA && e.hostname === 'tab-a', 'lease of tab A');
        await waitForWeftEvent(tab, (e) => e.type === 'lease' && e.ip === ipB && e.hostname === 'tab-b', 'lease of tab B');
        const s = await statsIn(tab.page);
        expect(s.lan).toMatchObject({ name: LAN, tabs: 2, ports: 1 });
        expect(s.framePath).toBe('transfer');
        expect(s.relay).toBe('connected');
      }
    });

    it('the guests ping each other and resolve each other by name', async ({ skip }) => {
      if (skipReason || !tabA || !tabB) skip(skipReason ?? 'no guests');
      const ab = await ping(tabA!, ipB);
      expect(ab.status, ab.output).toBe(0);
      const ba = await ping(tabB!, ipA);
      expect(ba.status, ba.output).toBe(0);
      expect((await tabA!.run('nslookup tab-b.weft.internal', 20_000)).output).toContain(ipB);
      expect((await tabB!.run('nslookup tab-a.weft.internal', 20_000)).output).toContain(ipA);
    }, 90_000);

    it(`TCP between the tabs' guests: ${TCP_BYTES / 1048576} MiB with nc, sha256 equal on both ends`, async ({ skip }) => {
      if (skipReason || !tabA || !tabB) skip(skipReason ?? 'no guests');
      const r = await tcpTransfer(tabB!, tabA!, ipA);
      console.log(`[lan] two tabs: ${TCP_BYTES / 1048576} MiB guest to guest in ${r.seconds.toFixed(1)} s`);
      expect(r.received).toBe(r.sent);
    }, 180_000);

    it("calls work from either tab: tab B fetches from tab A's guest, and its own guest is the default", async ({ skip }) => {
      if (skipReason || !tabA || !tabB) skip(skipReason ?? 'no guests');
      for (const [g, name] of [
        [tabA!, 'tab-a'],
        [tabB!, 'tab-b'],
      ] as const) {
        const r = await g.run(`mkdir -p /tmp/www && echo ${name} > /tmp/www/index.html && busybox httpd -p 8000 -h /tmp/www`, 10_000);
        expect(r.status, r.output).toBe(0);
      }
      const got = await tabB!.page.evaluate(async (ip) => {
        const other = await (await window.weftNet.fetch(`http://${ip}:8000/`)).text();
        const own = await (await window.weftNet.fetch('http://guest:8000/')).text();
        return { other, own };
      }, ipA);
      expect(got).toEqual({ other: 'tab-a\n', own: 'tab-b\n' });
      expect(await tabA!.page.evaluate(async () => (await window.weftNet.fetch('http://guest:8000/')).text())).toBe('tab-a\n');
    }, 60_000);

    it('a tab with other settings is refused with ERR_WEFT_LAN_MISMATCH', async ({ skip }) => {
      if (skipReason || !tabA) skip(skipReason ?? 'no guests');
      const page = await plainPage();
      const r = await page.evaluate(async (s) => {
        const net = window.weftLib.createNetwork({ ...s, mtu: 1400 });
        const outcome = await net.ready.then(
          () => 'joined',
          (e: { code?: string; message?: string }) => `${e.code}: ${e.message}`,
        );
        await net.close();
        return outcome;
      }, settings());
      expect(r).toMatch(/^ERR_WEFT_LAN_MISMATCH: .*mtu differ/);
      await page.close();
    }, 30_000);

    it("closing the tab that opened the LAN (without close()): the other tab's guest keeps networking, and the closed tab's port leaves", async ({ skip }) => {
      if (skipReason || !tabA || !tabB) skip(skipReason ?? 'no guests');
      await tabA!.page.close();
      tabA = undefined;
      // The shared worker is granted the closed tab's Web Lock and takes its port off the LAN.
      await expect.poll(async () => (await statsIn(tabB!.page)).lan.tabs, { timeout: 10_000 }).toBe(1);
      const from = tabB!.serial.length;
      const renew = await tabB!.run('weft-dhcp -x hostname:tab-b', 60_000);
      expect(renew.status, renew.output).toBe(0);
      expect((await tabB!.waitForLease(5_000, from)).ip).toBe(ipB);
      const gw = await ping(tabB!, '10.0.2.2');
      expect(gw.status, gw.output).toBe(0);
      expect(await reachHost(tabB!, http!)).toBe(expectedSha256(100000));
      const gone = await ping(tabB!, ipA, 2);
      expect(gone.status, 'the closed tab’s guest no longer answers').not.toBe(0);
    }, 120_000);

    it('when the last tab leaves (close()), the stack stops: the next tab starts the LAN with its own settings', async ({ skip }) => {
      if (skipReason || !tabB) skip(skipReason ?? 'no guests');
      await tabB!.page.evaluate(() => window.weftNet.close());
      const page = await plainPage();
      const r = await page.evaluate(async (s) => {
        const net = window.weftLib.createNetwork({ ...s, mtu: 1400 });
        const outcome = await net.ready.then(
          async () => {
            const stats = await net.stats();
            return `joined: ${stats.lan.tabs} tab`;
          },
          (e: { code?: string }) => String(e.code),
        );
        await net.close();
        return outcome;
      }, settings());
      expect(r).toBe('joined: 1 tab');
    }, 30_000);
  });

  it('a LAN of tabs on a cross-origin isolated page (COOP + COEP, as the demo is served): both tabs reach one stack over transferred batches', async ({
    skip,
  }) => {
    if (skipReason || !session || !image) skip(skipReason ?? 'no guest image');
    const isolated = await serveStatic(v86ServeOptions(image!, { mounts: { [WEB_MOUNT]: webBundleDir() }, crossOriginIsolated: true }));
    const pages: Page[] = [];
    try {
      const join = async () => {
        const page = await session!.context.newPage();
        pages.push(page);
        await page.goto(isolated.url(V86_PAGE));
        return page.evaluate(async (url) => {
          const load = new Function('u', 'return import(u)') as (u: string) => Promise<Weft>;
          const weft = await load(url);
          const net = weft.createNetwork({ lan: 'isolated' });
          await net.ready;
          const stats = await net.stats();
          return { isolated: crossOriginIsolated, framePath: net.framePath, tabs: stats.lan?.tabs };
        }, `${WEB_MOUNT}weft.mjs`);
      };
      const a = await join();
      const b = await join();
      expect(a).toMatchObject({ isolated: true, framePath: 'transfer', tabs: 1 });
      expect(b).toMatchObject({ isolated: true, framePath: 'transfer', tabs: 2 });
    } finally {
      for (const p of pages) await p.close().catch(() => undefined);
      await isolated.close();
    }
  }, 60_000);
});
