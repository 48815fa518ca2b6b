// The demo as a person uses it: `weft start` (what `npm start` runs) serves the page and the relay;
// Debian's Chromium opens it; the default guest boots to its prompt in the page's terminal; typing a
// `wget` of a local test page into the terminal shows the page, the flow in the connections table,
// non-zero throughput in the chart, and a "Download pcap" that tshark reads with the HTTP exchange in
// it. A destination the relay's policy refuses becomes a notice that names it, and a relay that is not
// there becomes a notice with the URL tried. The "Serve from the VM" card starts busybox httpd in the
// guest, shows its page in the card's iframe and in a new tab (through the preview Service Worker),
// and says that this relay does not publish. Screenshots (1280×800 and narrow) go to test-results/.
//
// The relay runs with --allow-loopback (the guest reaches the test page at 10.0.2.2:PORT) and
// --ports PORT (so any other port is refused by policy, for the refusal notice).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../harness/repo-root';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';
import { chromiumMissing, guestImageFor, launchChromium, type ChromiumSession } from './v86-harness';

const SUITE = 'the demo page (npm start): a VM boots, wget shows up in the panel, pcap downloads';
const RESULTS = join(REPO_ROOT, 'test-results');
const DEMO_DIR = join(REPO_ROOT, 'dist', 'demo');
const PAGE_MARKER = `weft-demo-test-${process.pid}`;
const PAGE_BODY = `<!doctype html>\n<title>${PAGE_MARKER}</title>\n<p>${PAGE_MARKER}: served from the test's HTTP server on 127.0.0.1</p>\n${'<!-- padding -->\n'.repeat(100)}`;

function tsharkMissing(): string | undefined {
  return spawnSync('tshark', ['--version'], { stdio: 'ignore' }).status === 0 ? undefined : 'tshark not found (Debian: apt-get install tshark)';
}

const missing = process.platform !== 'linux' ? 'needs Linux' : (chromiumMissing() ?? tsharkMissing());
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

/** dist/demo, built when it is missing (`npm test` and `npm start` build it first). */
function demoBundle(): void {
  if (!['index.html', 'main.js', 'weft-worker.js', 'preview-sw.js'].every((f) => existsSync(join(DEMO_DIR, f)))) {
    execFileSync(process.execPath, ['esbuild.config.mjs'], { cwd: REPO_ROOT, stdio: 'inherit' });
  }
}

async function startPageServer(): Promise<{ port: number; requests: string[]; close(): Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    if (req.url === '/page.html') res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE_BODY);
    else res.writeHead(404).end('not found\n');
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  return {
    port: (server.address() as AddressInfo).port,
    requests,
    close: () =>
      new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      }),
  };
}

async function waitUntil<T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs: number, page?: Page): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (performance.now() > deadline) {
      const terminal = page ? (await page.evaluate(() => window.weftDemo?.terminalLines() ?? []).catch(() => [])).filter(Boolean).slice(-15).join('\n') : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${terminal ? `; the terminal shows:\n${terminal}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}

const terminalText = (page: Page) => page.evaluate(() => window.weftDemo.terminalLines().join('\n'));

describe.skipIf(missing !== undefined)(SUITE, () => {
  let skipReason: string | undefined;
  let pageServer: Awaited<ReturnType<typeof startPageServer>> | undefined;
  let demo: WeftProcess | undefined;
  let origin = '';
  let session: ChromiumSession | undefined;
  let page: Page | undefined;
  const pageErrors: string[] = [];

  beforeAll(async () => {
    const built = await guestImageFor(SUITE);
    if (built.skipReason !== undefined) {
      skipReason = built.skipReason;
      return;
    }
    demoBundle();
    mkdirSync(RESULTS, { recursive: true });
    pageServer = await startPageServer();
    demo = spawnWeft(['start', '--listen', '127.0.0.1:0', '--allow-loopback', '--ports', String(pageServer.port)], {
      env: { ...process.env, WEFT_GUEST_DIR: built.image.dir, WEFT_NO_GUEST_BUILD: '1' },
    });
    const ready = await demo.waitForEvent('ready', () => true, 20_000);
    origin = `http://127.0.0.1:${ready.port as number}`;
    session = await launchChromium();
  }, 15 * 60_000);

  afterAll(async () => {
    await session?.close();
    if (demo && !demo.exit) {
      demo.kill('SIGTERM');
      await demo.waitForExit(8000).catch(() => demo?.kill('SIGKILL'));
    }
    await pageServer?.close();
  });

  it('boots the guest to its prompt in the terminal, cross-origin isolated', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    expect(demo!.stdout).toContain(`weft demo: ${origin}/`);
    page = await session!.context.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    await page.setViewportSize({ width: 1280, height: 800 });
    const t0 = performance.now();
    await page.goto(`${origin}/`);
    expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
    await waitUntil('the relay to connect', async () => (await page!.getAttribute('#relay-state', 'data-state')) === 'connected', 20_000, page);
    await waitUntil(
      'the boot to finish (#boot data-stage=ready)',
      async () => {
        const stage = await page!.getAttribute('#boot', 'data-stage');
        if (stage === 'failed') throw new Error(`boot failed: ${await page!.textContent('#boot-text')}`);
        return stage === 'ready';
      },
      240_000,
      page,
    );
    await waitUntil('the shell prompt', async () => /weft# $/m.test(await terminalText(page!)), 20_000, page);
    expect(await page.textContent('#lease')).toMatch(/^10\.0\.2\.15 · /);
    // Keyboard focus is the terminal's (xterm's hidden textarea).
    expect(await page.evaluate(() => document.activeElement?.closest('#terminal') !== null)).toBe(true);
    console.log(`[demo] prompt after ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, 300_000);

  it('a wget typed into the terminal shows in the flow table, the chart and the pcap', async ({ skip }) => {
    if (skipReason || !page) skip(skipReason ?? 'the guest did not boot');
    const p = page!;
    const port = pageServer!.port;
    await p.click('#terminal');
    await p.keyboard.type(`wget -O - http://10.0.2.2:${port}/page.html\n`, { delay: 5 });
    await waitUntil('the page in the terminal', async () => (await terminalText(p)).includes(`<p>${PAGE_MARKER}`), 60_000, p);
    expect(pageServer!.requests).toContain('GET /page.html');

    const row = p.locator(`#flows-body tr[data-target="10.0.2.2:${port}"]`);
    await waitUntil('the flow in the table', async () => (await row.count()) > 0, 5_000, p);
    // A row comes with the flow's opening; its byte counts follow from a once-a-second poll, so the
    // page's bytes may be a poll away.
    const bytesOf = (text: string) => Number.parseFloat(text) * (text.endsWith('KB') ? 1024 : 1);
    const cells = await waitUntil(
      "the page's bytes in the flow's row",
      async () => {
        const c = await row.first().locator('td').allTextContents();
        return bytesOf(c[4]) > PAGE_BODY.length * 0.9 ? c : undefined;
      },
      5_000,
      p,
    );
    expect(cells[0]).toMatch(new RegExp(`^:\\d+ → 10\\.0\\.2\\.2:${port}$`));
    expect(cells[1]).toBe('TCP');
    expect(cells[4]).toMatch(/^\d+(\.\d)? (B|KB)$/);

    // The chart samples once a second: the download is in a sample within two.
    const peak = await waitUntil('non-zero throughput in the chart', async () => Number(await p.getAttribute('#chart', 'data-peak')) || undefined, 3_000, p);
    expect(peak).toBeGreaterThan(0);
    expect(await p.locator('#chart canvas').count()).toBeGreaterThan(0);
    // The packet log redraws at most four times a second, so the request's line may be a redraw away.
    await waitUntil('the request in the packet log', async () => (await p.textContent('#packets'))?.includes('GET /page.html HTTP/1.1'), 5_000, p);

    await p.screenshot({ path: join(RESULTS, 'demo-1280x800.png') });

    const [download] = await Promise.all([p.waitForEvent('download'), p.click('#pcap')]);
    expect(download.suggestedFilename()).toMatch(/^weft-.*\.pcap$/);
    const dir = mkdtempSync(join(tmpdir(), 'weft-demo-pcap-'));
    const file = join(dir, download.suggestedFilename());
    await download.saveAs(file);
    const tshark = spawnSync('tshark', ['-r', file, '-Y', 'http', '-T', 'fields', '-e', 'ip.src', '-e', 'http.request.uri', '-e', 'http.response.code'], {
      encoding: 'utf8',
    });
    expect(tshark.status, tshark.stderr).toBe(0);
    const lines = tshark.stdout
      .trim()
      .split('\n')
      .map((l) => l.split('\t'));
    expect(lines).toContainEqual(['10.0.2.15', '/page.html', '']);
    expect(lines).toContainEqual(['10.0.2.2', '', '200']);
    expect(readFileSync(file).includes(Buffer.from(PAGE_MARKER))).toBe(true);
  }, 120_000);

  it('says which destination the relay refused, and why', async ({ skip }) => {
    if (skipReason || !page) skip(skipReason ?? 'the guest did not boot');
    const p = page!;
    // The relay allows only the test page's port (--ports): any other port on 10.0.2.2 is refused.
    const refused = pageServer!.port === 65535 ? 65534 : pageServer!.port + 1;
    await p.click('#terminal');
    await p.keyboard.type(`wget -O - http://10.0.2.2:${refused}/\n`, { delay: 5 });
    const notice = p.locator(`#notices .notice[data-key="close:tcp:10.0.2.2:${refused}"]`);
    await waitUntil('the refusal notice', async () => (await notice.count()) > 0, 20_000, p);
    expect(await notice.textContent()).toContain(`The relay refused TCP to 10.0.2.2 port ${refused}: blocked by its policy.`);
    const row = p.locator(`#flows-body tr[data-target="10.0.2.2:${refused}"]`);
    await waitUntil('the refused flow in the table', async () => (await row.count()) > 0, 5_000, p);
    expect(await row.first().locator('td').nth(2).textContent()).toBe('refused by relay policy');
    await waitUntil('the shell prompt after wget gave up', async () => /weft# $/.test(await terminalText(p)), 20_000, p);
  }, 60_000);

  it('"Serve from the VM": one click starts httpd in the guest; the card and a new tab show its page; the relay says it does not publish', async ({ skip }) => {
    if (skipReason || !page) skip(skipReason ?? 'the guest did not boot');
    const p = page!;
    await p.click('#serve-start');
    await waitUntil('the guest to serve port 8000', async () => (await p.getAttribute('#serve-status', 'data-state')) === 'serving', 30_000, p);
    // The shell's output lines (the typed command line holds the same words, but not at a line's start).
    const printed = (start: string) => p.evaluate((s) => window.weftDemo.terminalLines().some((l) => l.startsWith(s)), start);
    expect(await printed('Serving /tmp/www on port 8000')).toBe(true);
    // A second click rewrites the page; the running server keeps serving it.
    await p.click('#serve-start');
    await waitUntil('the second click to finish', () => printed('Port 8000 is taken'), 20_000, p);
    await waitUntil('the guest to serve port 8000 again', async () => (await p.getAttribute('#serve-status', 'data-state')) === 'serving', 20_000, p);

    // The page's copy of the preview Service Worker, beside it so its folder covers /preview/.
    expect((await fetch(`${origin}/preview-sw.js`)).headers.get('content-type')).toMatch(/^text\/javascript/);
    await p.click('#serve-preview');
    const framed = p.frameLocator('#serve-iframe');
    expect(await framed.locator('h1').textContent({ timeout: 20_000 })).toBe('Hello from the VM');
    const text = await framed.locator('body').textContent();
    expect(text).toMatch(/This page was made at .*\d\d:\d\d:\d\d.* in the Linux guest, and busybox httpd serves it on port 8000\./);
    expect(await p.getAttribute('#serve-iframe', 'src')).toBe(`${origin}/preview/8000/`);

    const [tab] = await Promise.all([session!.context.waitForEvent('page'), p.click('#serve-open')]);
    try {
      await tab.waitForLoadState();
      expect(tab.url()).toBe(`${origin}/preview/8000/`);
      expect(await tab.locator('body').textContent()).toBe(text);
    } finally {
      await tab.close();
    }

    // `weft start` here has no --publish-ports: the refusal, and the flags that would allow it.
    await p.click('#serve-publish');
    await waitUntil('the refusal', async () => (await p.getAttribute('#serve-publish-result', 'data-state')) === 'failed', 20_000, p);
    const refusal = await p.textContent('#serve-publish-result');
    expect(refusal).toContain('network.publish(8000): the relay does not offer publishing');
    expect(refusal).toContain('--publish-ports');
    await p.locator('#serve').screenshot({ path: join(RESULTS, 'demo-serve.png') });
  }, 90_000);

  it('fits a narrow window', async ({ skip }) => {
    if (skipReason || !page) skip(skipReason ?? 'the guest did not boot');
    const p = page!;
    await p.setViewportSize({ width: 420, height: 860 });
    await p.waitForTimeout(500);
    expect(await p.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(420);
    const terminal = await p.locator('#terminal').boundingBox();
    expect(terminal!.width).toBeGreaterThan(350);
    expect(terminal!.height).toBeGreaterThan(250);
    await p.screenshot({ path: join(RESULTS, 'demo-narrow.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  }, 30_000);

  it('"Add a VM": a second guest on the same LAN pings the first and opens TCP to it; the flow table shows it as LAN traffic', async ({ skip }) => {
    if (skipReason || !page) skip(skipReason ?? 'the guest did not boot');
    const p = page!;
    await p.setViewportSize({ width: 1280, height: 800 });
    const vmText = (vm: number) => p.evaluate((n) => window.weftDemo.terminalLines(n).join('\n'), vm);
    const firstIp = await p.getAttribute('#lease', 'data-ip');
    expect(firstIp).toBe('10.0.2.15');
    // VM 1 listens; what it receives lands in a file.
    await p.click('#terminal');
    await p.keyboard.type('nc -l -p 7000 > /tmp/from-vm2 &\n', { delay: 5 });

    await p.click('#add-vm');
    expect(await p.getAttribute('#vm-tab-2', 'aria-selected')).toBe('true');
    expect(await p.isVisible('#terminal')).toBe(false);
    await waitUntil(
      'VM 2 to boot (#boot data-vm=2, data-stage=ready)',
      async () => (await p.getAttribute('#boot', 'data-vm')) === '2' && (await p.getAttribute('#boot', 'data-stage')) === 'ready',
      240_000,
      p,
    );
    await waitUntil('the shell prompt of VM 2', async () => /weft# $/m.test(await vmText(2)), 20_000, p);
    const secondIp = await waitUntil('VM 2 to lease', () => p.getAttribute('#lease-2', 'data-ip').then((ip) => ip ?? undefined), 20_000, p);
    expect(secondIp).not.toBe(firstIp);

    await p.click('#terminal-2');
    // By name: each VM sends its hostname (vm1, vm2) with DHCP, and weft's DNS answers it.
    expect(await p.textContent('#lease')).toMatch(/ · vm1$/);
    await p.keyboard.type(`ping -c 2 vm1.weft.internal; echo hello-from-vm2 | nc ${firstIp} 7000\n`, { delay: 5 });
    await waitUntil('the pings', async () => /2 packets transmitted, 2 packets received/.test(await vmText(2)), 30_000, p);
    const tcpRow = p.locator(`#flows-body tr.lan[data-target="${firstIp}:7000"]`);
    await waitUntil('the guest-to-guest TCP row', async () => (await tcpRow.count()) > 0, 10_000, p);
    const cells = await tcpRow.first().locator('td').allTextContents();
    // The destination by the name VM 2 looked up for it (the ping above).
    expect(cells[0]).toMatch(new RegExp(`^${secondIp!.replace(/\./g, '\\.')}:\\d+ → vm1\\.weft\\.internal:7000$`));
    expect(cells[1]).toBe('TCP');
    expect(await p.locator(`#flows-body tr.lan[data-target="${firstIp}"]`).count()).toBeGreaterThan(0); // the ping

    await p.click('#vm-tab-1');
    await p.click('#terminal');
    await p.keyboard.type('cat /tmp/from-vm2\n', { delay: 5 });
    await waitUntil('VM 1 to have the bytes', async () => (await vmText(1)).split('\n').some((l) => l.trim() === 'hello-from-vm2'), 20_000, p);
    await p.screenshot({ path: join(RESULTS, 'demo-two-vms.png') });
    expect(pageErrors).toEqual([]);
  }, 300_000);

  it('names the relay URL it could not reach', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const p = await session!.context.newPage();
    try {
      // Port 9 on 127.0.0.1: nothing listens there, so the WebSocket is refused at once.
      await p.goto(`${origin}/?relay=${encodeURIComponent('ws://127.0.0.1:9/wisp/')}`);
      const notice = p.locator('#notices .notice[data-key="relay"]');
      await waitUntil('the relay notice', async () => (await notice.count()) > 0, 20_000);
      expect(await notice.textContent()).toContain('Cannot reach the relay at ws://127.0.0.1:9/wisp/');
    } finally {
      await p.close();
    }
  }, 40_000);

  it('explains a missing guest image', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const empty = mkdtempSync(join(tmpdir(), 'weft-demo-noimage-'));
    const relay = spawnWeft(['relay', '--demo', '--listen', '127.0.0.1:0'], { env: { ...process.env, WEFT_GUEST_DIR: empty } });
    const p = await session!.context.newPage();
    try {
      const ready = await relay.waitForEvent('ready');
      await p.goto(`http://127.0.0.1:${ready.port as number}/`);
      await waitUntil('the boot to fail', async () => (await p.getAttribute('#boot', 'data-stage')) === 'failed', 20_000);
      const notice = p.locator('#notices .notice[data-key="image"]');
      expect(await notice.textContent()).toContain('There is no default guest image on this server.');
      expect(await notice.textContent()).toContain('npm run guest-image');
    } finally {
      await p.close();
      relay.kill('SIGTERM');
      await relay.waitForExit(6000).catch(() => relay.kill('SIGKILL'));
    }
  }, 40_000);

  it('stops cleanly on SIGTERM (weft start and its relay)', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    await page?.close();
    demo!.kill('SIGTERM');
    const exit = await demo!.waitForExit(8000);
    expect(exit.code).toBe(0);
    expect(demo!.events.some((e) => e.event === 'stopped')).toBe(true);
    await expect(fetch(`${origin}/healthz`)).rejects.toThrow();
  }, 20_000);
});
