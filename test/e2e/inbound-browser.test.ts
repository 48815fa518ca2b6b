// The guest's servers reached from the page (issue 18): a v86 guest in Debian's Chromium with weft's
// worker runs `busybox httpd` and an `nc` echo, and the page reaches them through weft alone (no
// relay): network.fetch gets a page and its image (bytes checked); network.connectTcp moves a
// large payload to the guest's echo and back with sha256 checked on both ends while the page reads
// slowly for a while (back-pressure both ways); and the preview Service Worker renders the guest's
// page with its relative image in another tab, keeps a cookie on the preview path, and answers a
// port with no listener with a 502 page and a closed serving page with a 503 page.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  bootV86Snapshot,
  chromiumMissing,
  guestImageFor,
  launchChromium,
  serveStatic,
  v86ServeOptions,
  type ChromiumSession,
  type GuestImage,
  type StaticServer,
  type V86Guest,
} from './v86-harness';
import { attachWeft, startRelay, webBundleDir, WEB_MOUNT, type RelayHandle } from './weft-page';

const SUITE = 'inbound: the page reaches a v86 guest’s servers (fetch, connectTcp, Service Worker preview)';
const missing = process.platform !== 'linux' ? 'needs Linux' : chromiumMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

/** The echo's payload each way (WEFT_INBOUND_ECHO_MIB overrides; see the test for what it costs). */
const ECHO_BYTES = Number(process.env.WEFT_INBOUND_ECHO_MIB ?? 16) * 1024 * 1024;
const HTTP_PORT = 8000;
const ECHO_PORT = 7000;
const SCOPE = '/preview/';
const MARKER = 'weft-inbound-page';

declare global {
  interface Window {
    weftInbound: Record<string, unknown>;
  }
}

/** A 3×2 opaque PNG (every pixel rgb(200, 30, 60)), built here so the test knows its bytes. */
function png(): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const width = 3;
  const height = 2;
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8); // 8-bit RGB
  const row = Buffer.concat([Buffer.from([0]), Buffer.from(Array.from({ length: width }, () => [200, 30, 60]).flat())]);
  const raw = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const INDEX_HTML = `<!doctype html><title>${MARKER}</title><h1 id=m>${MARKER}</h1><img id=i src=dot.png><a href=cgi-bin/c>c</a>`;
/** A CGI script: sets a cookie and shows the cookie it was sent. */
const CGI = '#!/bin/sh\\necho "Content-Type: text/plain"\\necho "Set-Cookie: weft=yes; Path=/"\\necho ""\\necho "cookie=$HTTP_COOKIE"\\n';
/** A CGI script that redirects to an absolute URL naming the guest's address (the preview must rewrite it). */
const REDIRECT_CGI = '#!/bin/sh\\necho "Status: 302 Found"\\necho "Location: http://10.0.2.15:8000/index.html"\\necho ""\\n';
const PUBLISH_TOKEN = 'inbound-publish-token';
/** A file the preview streams to another tab. */
const BIG_KIB = 4096;

describe.skipIf(missing !== undefined)(SUITE, () => {
  let image: GuestImage | undefined;
  let skipReason: string | undefined;
  let server: StaticServer | undefined;
  let session: ChromiumSession | undefined;
  let guest: V86Guest | undefined;
  const image3x2 = png();
  let bigSha: string | undefined;
  let relay: RelayHandle | undefined;

  beforeAll(async () => {
    const built = await guestImageFor(SUITE);
    if (built.skipReason !== undefined) {
      skipReason = built.skipReason;
      return;
    }
    image = built.image;
    const webDir = webBundleDir();
    // The preview worker at the root: a Service Worker may control only paths under its script's folder.
    const sw = readFileSync(join(webDir, 'preview-sw.js'));
    server = await serveStatic(v86ServeOptions(image, { mounts: { [WEB_MOUNT]: webDir }, files: { '/preview-sw.js': sw } }));
    session = await launchChromium();
    // A relay that publishes (network.publish), on a small range, for a client with its token.
    relay = await startRelay(['--token', PUBLISH_TOKEN, '--publish-ports', '47200-47209']);
    const t0 = performance.now();
    const { guest: g, restored } = await bootV86Snapshot(session, server, image, {
      nic: 'virtio',
      stateTag: 'weft',
      beforeRun: (b) => attachWeft(b, { relayUrl: `${relay!.wisp}?token=${PUBLISH_TOKEN}` }),
    });
    guest = g;
    const from = g.serial.length;
    const dhcp = await g.run('weft-dhcp', 60_000);
    expect(dhcp.status, dhcp.output).toBe(0);
    await g.waitForLease(5_000, from);
    // The web root: an HTML page, its image, a CGI script; then httpd (it daemonizes).
    const b64 = image3x2.toString('base64');
    const setup = await g.run(
      `mkdir -p /tmp/www/cgi-bin && printf '%s' '${INDEX_HTML}' > /tmp/www/index.html && echo ${b64} | base64 -d > /tmp/www/dot.png && ` +
        `printf '${CGI}' > /tmp/www/cgi-bin/c && printf '${REDIRECT_CGI}' > /tmp/www/cgi-bin/r && chmod +x /tmp/www/cgi-bin/c /tmp/www/cgi-bin/r && ` +
        `dd if=/dev/urandom of=/tmp/www/big.bin bs=1024 count=${BIG_KIB} 2>/dev/null && busybox httpd -p ${HTTP_PORT} -h /tmp/www && sha256sum /tmp/www/dot.png /tmp/www/big.bin`,
      30_000,
    );
    expect(setup.status, setup.output).toBe(0);
    expect(setup.output).toContain(createHash('sha256').update(image3x2).digest('hex'));
    bigSha = /([0-9a-f]{64})\s+\/tmp\/www\/big\.bin/.exec(setup.output)?.[1];
    console.log(`[inbound] guest ${restored ? 'restored' : 'booted'}, leased and serving in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, 300_000);

  afterAll(async () => {
    if (guest) {
      await guest.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
      await guest.close();
    }
    await session?.close();
    await server?.close();
    await relay?.stop();
  });

  it('network.publish: the relay listens for the guest’s web server, this host fetches the page there, and close() stops it', async ({ skip }) => {
    if (skipReason || !guest) skip(skipReason ?? 'no guest');
    const p = await guest!.page.evaluate(async () => {
      const pub = await window.weftNet.publish(8000);
      (window as unknown as { pub: { close(): Promise<void> } }).pub = pub;
      return { port: pub.port, url: pub.url };
    });
    expect(p.port).toBeGreaterThanOrEqual(47200);
    expect(p.port).toBeLessThanOrEqual(47209);
    expect(p.url).toBe(`http://127.0.0.1:${p.port}/`);
    const res = await fetch(p.url);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('dot.png');
    expect(relay!.proc.events.some((e) => e.event === 'published' && e.port === p.port)).toBe(true);
    await guest!.page.evaluate(() => (window as unknown as { pub: { close(): Promise<void> } }).pub.close());
    await expect
      .poll(
        async () =>
          fetch(p.url).then(
            () => 'answered',
            () => 'refused',
          ),
        { timeout: 5000 },
      )
      .toBe('refused');
  });

  it('network.fetch gets the guest’s page and its image; a port with no listener rejects at once with the refused error', async ({ skip }) => {
    if (skipReason || !guest) skip(skipReason ?? 'no guest');
    const r = await guest!.page.evaluate(async () => {
      const net = window.weftNet;
      const page = await net.fetch('http://guest:8000/');
      const html = await page.text();
      const img = await net.fetch('http://10.0.2.15:8000/dot.png');
      const bytes = Array.from(new Uint8Array(await img.arrayBuffer()));
      const head = await net.fetch('http://guest:8000/dot.png', { method: 'HEAD' });
      const t0 = performance.now();
      const refused = await net.fetch('http://guest:8001/').then(
        () => undefined,
        (e: unknown) => ({
          name: (e as Error).name,
          message: (e as Error).message,
          cause: ((e as Error).cause as { code?: string } | undefined)?.code,
          ms: performance.now() - t0,
        }),
      );
      return {
        status: page.status,
        type: page.headers.get('content-type'),
        html,
        imgType: img.headers.get('content-type'),
        bytes,
        headLength: head.headers.get('content-length'),
        refused,
      };
    });
    expect(r.status).toBe(200);
    expect(r.type).toMatch(/text\/html/);
    expect(r.html).toContain(MARKER);
    expect(r.imgType).toBe('image/png');
    expect(Buffer.from(r.bytes).equals(image3x2)).toBe(true);
    expect(r.headLength).toBe(String(image3x2.length));
    expect(r.refused).toMatchObject({ name: 'TypeError', cause: 'ERR_WEFT_GUEST_REFUSED' });
    console.log(`[inbound] refused fetch rejected in ${r.refused!.ms.toFixed(0)} ms`);
    expect(r.refused!.ms).toBeLessThan(5000);
  }, 60_000);

  it(`connectTcp: ${ECHO_BYTES / 1048576} MiB to the guest's echo and back, sha256 checked on both ends, with back-pressure both ways`, async ({ skip }) => {
    if (skipReason || !guest) skip(skipReason ?? 'no guest');
    const g = guest!;
    // tee copies what the page sends back to it and into a FIFO that sha256sum reads.
    const setup = await g.run(
      `rm -f /tmp/f /tmp/in.sha && mkfifo /tmp/f && (sha256sum < /tmp/f > /tmp/in.sha &) && (nc -l -p ${ECHO_PORT} -e tee /tmp/f > /dev/null 2>&1 &)`,
      20_000,
    );
    expect(setup.status, setup.output).toBe(0);
    const t0 = performance.now();
    const r = await g.page.evaluate(
      async ({ port, total }) => {
        const net = window.weftNet;
        // The listener may take a moment to start: retry while the guest refuses.
        let conn: Awaited<ReturnType<typeof net.connectTcp>> | undefined;
        for (let i = 0; !conn; i++) {
          try {
            conn = await net.connectTcp(port);
          } catch (e) {
            if ((e as { code?: string }).code !== 'ERR_WEFT_GUEST_REFUSED' || i > 50) throw e;
            await new Promise((res) => setTimeout(res, 200));
          }
        }
        const data = new Uint8Array(total);
        let x = 0x9e3779b9;
        for (let i = 0; i < total; i++) {
          x ^= x << 13;
          x ^= x >>> 17;
          x ^= x << 5;
          data[i] = x & 0xff;
        }
        const hex = (b: ArrayBuffer) => Array.from(new Uint8Array(b), (v) => v.toString(16).padStart(2, '0')).join('');
        const sent = hex(await crypto.subtle.digest('SHA-256', data));
        let written = 0;
        let read = 0;
        let maxAhead = 0;
        let aheadWhileSlow = 0;
        const t = performance.now();
        const writing = (async () => {
          const w = conn.writable.getWriter();
          for (let off = 0; off < total; off += 65536) {
            await w.write(data.subarray(off, off + 65536));
            written = Math.min(total, off + 65536);
          }
          await w.close();
        })();
        const got = new Uint8Array(total);
        const reader = conn.readable.getReader();
        const slowUntil = performance.now() + 3000;
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          got.set(value, read);
          read += value.length;
          maxAhead = Math.max(maxAhead, written - read);
          // For a while the page reads slowly: what the page may write ahead must stay bounded.
          if (performance.now() < slowUntil) {
            await new Promise((res) => setTimeout(res, 100));
            aheadWhileSlow = Math.max(aheadWhileSlow, written - read);
          }
        }
        await writing;
        await conn.closed;
        const echoed = hex(await crypto.subtle.digest('SHA-256', got.subarray(0, read)));
        return { sent, echoed, read, maxAhead, aheadWhileSlow, ms: performance.now() - t };
      },
      { port: ECHO_PORT, total: ECHO_BYTES },
    );
    const s = (performance.now() - t0) / 1000;
    console.log(
      `[inbound] echo ${ECHO_BYTES / 1048576} MiB each way in ${(r.ms / 1000).toFixed(1)} s (${((2 * ECHO_BYTES) / 1e6 / (r.ms / 1000)).toFixed(2)} MB/s both ways); ` +
        `page wrote at most ${(r.maxAhead / 1048576).toFixed(2)} MiB ahead of what it read (${(r.aheadWhileSlow / 1048576).toFixed(2)} MiB while reading slowly); ${s.toFixed(1)} s in all`,
    );
    expect(r.read).toBe(ECHO_BYTES);
    expect(r.echoed).toBe(r.sent);
    // Everything between the page's writer and its reader is bounded buffers (weft's queues and the
    // guest's socket buffers): without back-pressure the writer would be megabytes further ahead.
    expect(r.aheadWhileSlow).toBeLessThan(8 * 1024 * 1024);
    const sha = await g.run('cat /tmp/in.sha', 20_000);
    expect(sha.output.split(/\s+/)[0]).toBe(r.sent);
  }, 240_000);

  it('the preview: another tab renders the guest’s page with its relative image, streams a large file, follows a rewritten redirect, keeps a cookie, and shows 502 for a port with no listener', async ({
    skip,
  }) => {
    if (skipReason || !guest) skip(skipReason ?? 'no guest');
    const scope = await guest!.page.evaluate(async (s) => {
      const preview = await window.weftNet.servePreview({ scope: s, serviceWorkerUrl: '/preview-sw.js' });
      window.weftInbound = { preview };
      return preview.scope;
    }, SCOPE);
    expect(scope).toBe(server!.url(SCOPE));
    const tab = await session!.context.newPage();
    try {
      const res = await tab.goto(server!.url(`${SCOPE}${HTTP_PORT}/`));
      expect(res?.status()).toBe(200);
      await tab.waitForFunction(() => (document.getElementById('i') as HTMLImageElement | null)?.complete === true, undefined, { timeout: 20_000 });
      const page = await tab.evaluate(() => {
        const img = document.getElementById('i') as HTMLImageElement;
        const canvas = document.createElement('canvas');
        canvas.width = img.naturalWidth;
        canvas.height = img.naturalHeight;
        const ctx = canvas.getContext('2d')!;
        ctx.drawImage(img, 0, 0);
        return {
          h1: document.getElementById('m')?.textContent,
          width: img.naturalWidth,
          height: img.naturalHeight,
          pixel: Array.from(ctx.getImageData(1, 1, 1, 1).data),
          controlled: navigator.serviceWorker.controller !== null,
        };
      });
      expect(page).toEqual({ h1: MARKER, width: 3, height: 2, pixel: [200, 30, 60, 255], controlled: true });

      // A large body streams through the SW to the tab whole.
      const big = await tab.evaluate(async () => {
        const buf = await (await fetch('big.bin')).arrayBuffer();
        const hex = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', buf)), (v) => v.toString(16).padStart(2, '0')).join('');
        return { bytes: buf.byteLength, hex };
      });
      expect(big).toEqual({ bytes: BIG_KIB * 1024, hex: bigSha });

      // A redirect to the guest's own address lands in the preview.
      await tab.goto(server!.url(`${SCOPE}${HTTP_PORT}/cgi-bin/r`));
      expect(new URL(tab.url()).pathname).toBe(`${SCOPE}${HTTP_PORT}/index.html`);

      // `<scope>8000` without its slash is redirected to the folder, so relative links resolve inside it.
      await tab.goto(server!.url(`${SCOPE}${HTTP_PORT}`));
      expect(new URL(tab.url()).pathname).toBe(`${SCOPE}${HTTP_PORT}/`);

      // A cookie the guest sets is kept on the preview path and sent back.
      const first = await tab.goto(server!.url(`${SCOPE}${HTTP_PORT}/cgi-bin/c`));
      expect(await first?.text()).toContain('cookie=');
      // Kept on the preview path in the browser's jar, where the preview's scripts see it.
      expect(await tab.evaluate(() => document.cookie)).toBe('weft=yes');
      const second = await tab.goto(server!.url(`${SCOPE}${HTTP_PORT}/cgi-bin/c`));
      expect(await second?.text()).toContain('cookie=weft=yes');
      const cookies = await session!.context.cookies();
      expect(cookies.find((c) => c.name === 'weft')).toMatchObject({ path: `${SCOPE}${HTTP_PORT}/` });

      const refused = await tab.goto(server!.url(`${SCOPE}8001/`));
      expect(refused?.status()).toBe(502);
      expect(await tab.textContent('h1')).toContain('Nothing listens on port 8001');

      // The serving page stops serving: the preview says the VM's page must be open.
      await guest!.page.evaluate(() => (window.weftInbound.preview as { close(): Promise<void> }).close());
      const gone = await tab.goto(server!.url(`${SCOPE}${HTTP_PORT}/`));
      expect(gone?.status()).toBe(503);
      expect(await tab.textContent('h1')).toContain('not open');
    } finally {
      await tab.close();
    }
  }, 120_000);
});
