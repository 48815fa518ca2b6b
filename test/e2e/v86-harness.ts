// Real Linux guests in v86 in real Chromium, for end-to-end tests: a static HTTP server on 127.0.0.1,
// Debian's Chromium driven by playwright-core (fresh profile, always closed), a page that boots the
// guest image from `npm run guest-image` in v86, and serial-console helpers (wait for a marker, run a
// shell command and read its output and exit status).
//
// Frames in and out of the guest (what weft attaches to), from v86's sources: the NIC emits
// `emulator.add_listener('net0-send', (frame: Uint8Array) => …)` — a view into the NIC's memory, so
// copy it — and takes frames with `emulator.bus.send('net0-receive', frame)`. Without
// `net_device.relay_url` v86 creates no network adapter of its own, so weft is the only peer.
// (`emulator.bus` is real but missing from v86.d.ts; the NIC also announces its MAC as `net0-mac`.)
//
// Typical use:
//   const image = (await ensureGuestImage()) → { image } | { skip }
//   const server = await serveStatic(v86ServeOptions(image, { mounts: { '/dist/': distDir } }));
//   const session = await launchChromium();
//   const guest = await bootV86(session, server, image, { nic: 'virtio', beforeRun: (g) =>
//     g.page.evaluate(async () => { /* import('/dist/web.js'), attachV86(window.emulator, …) */ }) });
//   const lease = await guest.waitForLease();            // init ran weft-dhcp at boot
//   const { output, status } = await guest.run('nslookup example.test');
//   … finally: await session.close(); await server.close();
// bootV86Snapshot() restores a saved state (≈1 s) at the shell prompt instead; then `guest.run('weft-dhcp')`.

import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import type { V86 } from 'v86';
import { runGuestImageBuild } from '../harness/guest-image-build';
import { REPO_ROOT } from '../harness/repo-root';

export const CHROMIUM_PATH = process.env.WEFT_CHROMIUM ?? '/usr/bin/chromium';
export const V86_BUILD_DIR = join(REPO_ROOT, 'node_modules', 'v86', 'build');
export const GUEST_DIR = process.env.WEFT_GUEST_DIR ? resolve(process.env.WEFT_GUEST_DIR) : join(REPO_ROOT, '.cache', 'guest');
export const V86_PAGE = '/v86.html';

declare global {
  interface Window {
    emulator: V86;
    /** The emulators started in a slot (V86Page: several guests in one page). */
    weftEmulators: Record<string, V86>;
    weftV86Start(config: PageConfig): Promise<void>;
    weftSerialOut(chunk: string, slot?: string): void;
  }
}

// ---------------------------------------------------------------------------------------------
// Static HTTP server

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.map': 'application/json',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

export interface ServeOptions {
  /** URL prefix ("/v86/") → directory. The longest matching prefix wins. */
  mounts?: Record<string, string>;
  /** Exact URL path → content served from memory (the type comes from the extension). */
  files?: Record<string, string | Uint8Array>;
  /** Send COOP/COEP (and CORP) so pages are crossOriginIsolated and may use SharedArrayBuffer. */
  crossOriginIsolated?: boolean;
  /** Accept `PUT /__upload/NAME` into this directory (used to save v86 states). */
  uploadDir?: string;
}

export interface StaticServer {
  readonly origin: string;
  readonly port: number;
  url(path: string): string;
  close(): Promise<void>;
}

/** Serves directories and in-memory files on 127.0.0.1 (an ephemeral port), with Range support. */
export async function serveStatic(options: ServeOptions): Promise<StaticServer> {
  const mounts = Object.entries(options.mounts ?? {}).sort((a, b) => b[0].length - a[0].length);
  const files = new Map(Object.entries(options.files ?? {}));

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    if (options.crossOriginIsolated) {
      res.setHeader('Cross-Origin-Opener-Policy', 'same-origin');
      res.setHeader('Cross-Origin-Embedder-Policy', 'require-corp');
      res.setHeader('Cross-Origin-Resource-Policy', 'same-origin');
    }
    res.setHeader('Cache-Control', 'no-store');
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const upload = /^\/__upload\/([\w.-]+)$/.exec(path);
    if (req.method === 'PUT' && upload && options.uploadDir) {
      mkdirSync(options.uploadDir, { recursive: true });
      const dest = join(options.uploadDir, upload[1]);
      await pipeline(req, createWriteStream(`${dest}.part`));
      renameSync(`${dest}.part`, dest);
      res.writeHead(204).end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
      return;
    }
    const type = CONTENT_TYPES[extname(path)] ?? 'application/octet-stream';
    const mem = files.get(path);
    if (mem !== undefined) {
      const body = typeof mem === 'string' ? Buffer.from(mem) : mem;
      res.writeHead(200, { 'Content-Type': type, 'Content-Length': body.length });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    const mount = mounts.find(([prefix]) => path.startsWith(prefix));
    const root = mount && resolve(mount[1]);
    const file = root && normalize(join(root, path.slice(mount[0].length)));
    if (!root || !file || (file !== root && !file.startsWith(root + sep)) || !existsSync(file) || !statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end(`not found: ${path}\n`);
      return;
    }
    const size = statSync(file).size;
    const range = /^bytes=(\d*)-(\d*)$/.exec(req.headers.range ?? '');
    let start = 0;
    let end = size - 1;
    if (range && (range[1] || range[2])) {
      start = range[1] ? Number(range[1]) : Math.max(0, size - Number(range[2]));
      end = range[1] && range[2] ? Math.min(Number(range[2]), size - 1) : size - 1;
      if (start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${size}` }).end();
        return;
      }
      res.writeHead(206, {
        'Content-Type': type,
        'Content-Length': end - start + 1,
        'Content-Range': `bytes ${start}-${end}/${size}`,
        'Accept-Ranges': 'bytes',
      });
    } else {
      res.writeHead(200, { 'Content-Type': type, 'Content-Length': size, 'Accept-Ranges': 'bytes' });
    }
    if (req.method === 'HEAD' || size === 0) res.end();
    else await pipeline(createReadStream(file, { start, end }), res);
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: Error) => {
      if (!res.headersSent) res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`${e.message}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((ok, fail) => {
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => ok());
  });
  const port = (server.address() as AddressInfo).port;
  const origin = `http://127.0.0.1:${port}`;
  let closed: Promise<void> | undefined;
  return {
    origin,
    port,
    url: (path) => origin + path,
    close: () =>
      (closed ??= new Promise<void>((ok) => {
        server.close(() => ok());
        server.closeAllConnections();
      })),
  };
}

// ---------------------------------------------------------------------------------------------
// Guest image (built by test/harness/guest-image/build.mjs)

export interface GuestImage {
  dir: string;
  kernelPackage: string;
  kernelRelease: string;
  cmdline: string;
  /** Digest of everything that boots (kernel, initrd, BIOS): keys saved states. */
  digest: string;
  /** URL paths relative to the image mount (`/guest/` by default). */
  files: { bzimage: string; initrd: string; bios: string; vgaBios: string };
}

interface Manifest {
  kernelRelease: string;
  cmdline: string;
  packages: { kernel: { name: string; version: string } };
  files: Record<'bzimage' | 'initrd' | 'bios' | 'vgaBios', { path: string; size: number; sha256: string }>;
}

/** The built image in `dir`, or undefined when there is none (or a file is missing). */
export function loadGuestImage(dir = GUEST_DIR): GuestImage | undefined {
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch {
    return undefined;
  }
  if (!Object.values(m.files).every((f) => existsSync(join(dir, f.path)))) return undefined;
  const digest = createHash('sha256')
    .update(
      Object.values(m.files)
        .map((f) => f.sha256)
        .join(','),
    )
    .digest('hex');
  return {
    dir,
    kernelPackage: `${m.packages.kernel.name} ${m.packages.kernel.version}`,
    kernelRelease: m.kernelRelease,
    cmdline: m.cmdline,
    digest,
    files: { bzimage: m.files.bzimage.path, initrd: m.files.initrd.path, bios: m.files.bios.path, vgaBios: m.files.vgaBios.path },
  };
}

/** ensureGuestImage for a test suite: the image, or why this machine cannot build it (printed as a skip). */
export async function guestImageFor(suite: string): Promise<{ image: GuestImage; skipReason?: undefined } | { image?: undefined; skipReason: string }> {
  const built = await ensureGuestImage();
  if ('image' in built) return { image: built.image };
  const skipReason = `cannot build the guest image here: ${built.skip}`;
  console.warn(`[skip] ${suite}: ${skipReason}`);
  return { skipReason };
}

/**
 * Runs `npm run guest-image`'s script (a no-op when the cache is current) and loads the image.
 * Resolves `{ skip }` when this machine cannot build it (no apt, not root); rejects when a build fails.
 */
export async function ensureGuestImage(timeoutMs = 15 * 60_000): Promise<{ image: GuestImage } | { skip: string }> {
  const built = await runGuestImageBuild('v86', { WEFT_GUEST_DIR: GUEST_DIR }, timeoutMs);
  if ('skip' in built) return built;
  const image = loadGuestImage();
  if (!image) throw new Error(`the guest image build succeeded but ${GUEST_DIR} holds no complete image`);
  return { image };
}

// ---------------------------------------------------------------------------------------------
// Chromium

/** Why Chromium cannot run here, or undefined when it can. */
export function chromiumMissing(): string | undefined {
  if (!existsSync(CHROMIUM_PATH)) return `${CHROMIUM_PATH} not found (Debian: apt-get install chromium)`;
  return undefined;
}

export interface ChromiumSession {
  readonly context: BrowserContext;
  /** Closes the browser and deletes its profile; safe to call twice. */
  close(): Promise<void>;
}

export async function launchChromium(options: { headless?: boolean; args?: string[] } = {}): Promise<ChromiumSession> {
  const profile = mkdtempSync(join(tmpdir(), 'weft-chromium-'));
  let context: BrowserContext;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM_PATH,
      headless: options.headless ?? true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        ...(options.args ?? []),
      ],
    });
  } catch (e) {
    removeProfile(profile);
    throw e;
  }
  let closed: Promise<void> | undefined;
  return {
    context,
    close: () =>
      (closed ??= context
        .close()
        .catch(() => undefined)
        .then(() => removeProfile(profile))),
  };
}

/** Chromium's helpers may still be writing into the profile as it exits: retry, never throw. */
function removeProfile(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
  } catch (e) {
    console.warn(`could not remove the Chromium profile ${dir}: ${(e as Error).message}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The v86 page

interface PageConfig {
  wasmPath: string;
  memoryBytes: number;
  nic: 'ne2k' | 'virtio';
  relayUrl?: string;
  mtu?: number;
  cmdline: string;
  urls: { bios: string; vgaBios: string; bzimage?: string; initrd?: string; initialState?: string };
  /** Several emulators in one page: this one is `window.weftEmulators[slot]` (else `window.emulator`). */
  slot?: string;
}

/**
 * The page: libv86.js, and `weftV86Start(config)` which creates `window.emulator` (or, with
 * config.slot, `window.weftEmulators[slot]`), not yet running.
 */
const PAGE_HTML = `<!doctype html>
<meta charset="utf-8">
<title>weft · v86 guest</title>
<script src="/v86/libv86.js"></script>
<script>
window.weftV86Start = (cfg) => new Promise((resolve, reject) => {
  const pending = [];
  let timer = 0;
  const flush = () => {
    timer = 0;
    let s = '';
    for (let i = 0; i < pending.length; i += 8192) s += String.fromCharCode.apply(null, pending.slice(i, i + 8192));
    pending.length = 0;
    window.weftSerialOut(s, cfg.slot);
  };
  const url = (u) => (u ? { url: u } : undefined);
  const emulator = new V86({
    wasm_path: cfg.wasmPath,
    memory_size: cfg.memoryBytes,
    vga_memory_size: 2 * 1024 * 1024,
    bios: url(cfg.urls.bios),
    vga_bios: url(cfg.urls.vgaBios),
    bzimage: url(cfg.urls.bzimage),
    initrd: url(cfg.urls.initrd),
    initial_state: url(cfg.urls.initialState),
    cmdline: cfg.cmdline,
    net_device: Object.assign({ type: cfg.nic }, cfg.relayUrl ? { relay_url: cfg.relayUrl } : {}, cfg.mtu ? { mtu: cfg.mtu } : {}),
    // A restored guest keeps the MAC its driver programmed; otherwise the NIC would filter out
    // frames to it (ne2k) or the OS and the NIC would disagree (virtio).
    preserve_mac_from_state_image: true,
    autostart: false,
    disable_keyboard: true,
    disable_mouse: true,
    disable_speaker: true,
  });
  if (cfg.slot) (window.weftEmulators = window.weftEmulators || {})[cfg.slot] = emulator;
  else window.emulator = emulator;
  emulator.add_listener('serial0-output-byte', (b) => {
    pending.push(b);
    if (!timer) timer = setTimeout(flush, 5);
  });
  emulator.add_listener('download-error', (e) => reject(new Error('v86 could not load ' + e.file_name)));
  emulator.add_listener('emulator-loaded', () => resolve());
});
</script>
`;

/** Mounts and files for serveStatic that the v86 page needs: the page, v86's build, the image. */
export function v86ServeOptions(image: GuestImage, extra: ServeOptions = {}): ServeOptions {
  return {
    ...extra,
    mounts: { '/v86/': V86_BUILD_DIR, '/guest/': image.dir, ...extra.mounts },
    files: { [V86_PAGE]: PAGE_HTML, '/favicon.ico': '', ...extra.files },
    uploadDir: extra.uploadDir ?? join(image.dir, 'states'),
  };
}

export interface V86BootOptions {
  nic: 'ne2k' | 'virtio';
  memoryMiB?: number;
  /** Run weft-dhcp during boot (default true); false adds `weft.dhcp=off` (type `weft-dhcp` later). */
  dhcpAtBoot?: boolean;
  /** Appended to the image's kernel command line. */
  cmdlineExtra?: string;
  /** v86's own network backend (e.g. "wisp://127.0.0.1:8080/wisp/" for the benchmark); none by default. */
  relayUrl?: string;
  /** virtio only: the MTU the device offers the guest (v86 default 1500). */
  mtu?: number;
  /**
   * What else the saved state depends on, for its name (bootV86Snapshot): 'weft' when weft's
   * adapter is attached at boot, which offers a virtio card segmentation offload.
   */
  stateTag?: string;
  /** URL path of a saved state to restore instead of booting the kernel. */
  initialState?: string;
  /** Runs after the emulator exists and before it starts: attach the network here. */
  beforeRun?: (guest: V86Guest) => Promise<void>;
}

/** What the guest's `WEFT-BOOT-OK` line says. */
export interface BootInfo {
  /** The driver bound to eth0: "ne2k-pci" or "virtio_net". */
  nic: string;
  mac: string;
  kernel: string;
  /** Guest uptime (s) when eth0 came up. */
  uptime: string;
  /** Wall time since the emulator started. */
  msSinceStart: number;
}

export interface ShellResult {
  output: string;
  status: number;
}

/** Removes terminal escapes (ash's line editor asks for the cursor position) and carriage returns. */
export function cleanSerial(text: string): string {
  // eslint-disable-next-line no-control-regex
  // biome-ignore lint/suspicious/noControlCharactersInRegex: ESC starts the terminal sequences removed here
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
}

/** Everything the guest printed on ttyS0, with waiters for patterns in it. */
export class SerialConsole {
  private text = '';
  private readonly waiters = new Set<() => void>();

  append(chunk: string): void {
    this.text += chunk;
    for (const w of [...this.waiters]) w();
  }

  get length(): number {
    return this.text.length;
  }

  get log(): string {
    return this.text;
  }

  tail(chars = 1500): string {
    return cleanSerial(this.text.slice(-chars));
  }

  /** Resolves with the first match of `pattern` at or after offset `from`; rejects after `timeoutMs`. */
  waitFor(pattern: string | RegExp, timeoutMs = 60_000, from = 0): Promise<{ match: RegExpExecArray; end: number }> {
    const re =
      typeof pattern === 'string'
        ? new RegExp(pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), 'g')
        : new RegExp(pattern.source, pattern.flags.includes('g') ? pattern.flags : `${pattern.flags}g`);
    return new Promise((resolveMatch, reject) => {
      const check = (): boolean => {
        re.lastIndex = from;
        const match = re.exec(this.text);
        if (!match) return false;
        done();
        resolveMatch({ match, end: match.index + match[0].length });
        return true;
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`serial: no ${String(pattern)} within ${timeoutMs} ms; last output:\n${this.tail()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      const waiter = () => void check();
      this.waiters.add(waiter);
      check();
    });
  }
}

/** Parses `KEY=VALUE KEY=VALUE` after a marker. */
function fields(line: string): Record<string, string> {
  return Object.fromEntries([...line.matchAll(/(\w+)=(\S*)/g)].map((m) => [m[1], m[2]]));
}

export class V86Guest {
  readonly serial = new SerialConsole();
  /** performance.now() in Node when the emulator was started. */
  startedAt = 0;
  private seq = 0;
  /** Uncaught exceptions in the page. */
  readonly pageErrors: string[] = [];
  /** The page's console output (v86 logs dropped frames there), the last 1000 lines. */
  readonly consoleLines: string[] = [];

  /** `slot`: this guest's emulator is `window.weftEmulators[slot]` in a page of several (V86Page). */
  constructor(
    readonly page: Page,
    readonly options: V86BootOptions,
    readonly slot?: string,
  ) {}

  /** Waits for `WEFT-BOOT-OK` (eth0 is up) and returns what it reports. */
  async waitForBoot(timeoutMs = 120_000): Promise<BootInfo> {
    const { match } = await this.serial.waitFor(/WEFT-BOOT-(OK|FAIL)([^\r\n]*)\r?\n/, timeoutMs);
    if (match[1] === 'FAIL') throw new Error(`guest boot failed: ${match[0].trim()}`);
    const f = fields(match[2]);
    return { nic: f.nic, mac: f.mac, kernel: f.kernel, uptime: f.uptime, msSinceStart: performance.now() - this.startedAt };
  }

  /** Waits for the DHCP outcome of `weft-dhcp` (at boot, or typed) and returns the lease's fields. */
  async waitForLease(timeoutMs = 60_000, from = 0): Promise<Record<string, string>> {
    const { match } = await this.serial.waitFor(/WEFT-LEASE(-FAIL)?([^\r\n]*)\r?\n/, timeoutMs, from);
    if (match[1]) throw new Error(`guest DHCP failed: ${match[0].trim()}`);
    return fields(match[2]);
  }

  /** Waits until the serial shell has printed its ready marker and prompt; returns ms since start. */
  async waitForShell(timeoutMs = 120_000): Promise<number> {
    const { end } = await this.serial.waitFor('WEFT-SHELL-READY', timeoutMs);
    await this.serial.waitFor('weft# ', 10_000, end);
    return performance.now() - this.startedAt;
  }

  /** Sends text to the guest's ttyS0 as if typed. */
  async type(text: string): Promise<void> {
    await this.page.evaluate(({ t, slot }) => (slot ? window.weftEmulators[slot] : window.emulator).serial0_send(t), { t: text, slot: this.slot });
  }

  /** Ctrl-C on the serial console (interrupts the foreground command). */
  interrupt(): Promise<void> {
    return this.type('\x03');
  }

  /**
   * Runs one shell command line on the serial console and returns its output (stdout and stderr, as
   * the terminal shows them) and exit status. `command` must not end in `&` or `;`.
   */
  async run(command: string, timeoutMs = 30_000): Promise<ShellResult> {
    const n = ++this.seq;
    const from = this.serial.length;
    // The quotes keep the markers out of the echoed command line: only the shell's output matches.
    await this.type(`echo "WEFT-""BEGIN-${n}"; ${command}; echo "WEFT-""END-${n} $?"\n`);
    const begin = await this.serial.waitFor(new RegExp(`WEFT-BEGIN-${n}\\r?\\n`), timeoutMs, from);
    const end = await this.serial.waitFor(new RegExp(`WEFT-END-${n} (\\d+)`), timeoutMs, begin.end);
    const output = cleanSerial(this.serial.log.slice(begin.end, end.match.index));
    return { output: output.endsWith('\n') ? output.slice(0, -1) : output, status: Number(end.match[1]) };
  }

  /** Saves the emulator state to `<uploadDir>/<name>` through the page's server. */
  async saveState(name: string): Promise<void> {
    await this.page.evaluate(
      async ({ n, slot }) => {
        const state = await (slot ? window.weftEmulators[slot] : window.emulator).save_state();
        const r = await fetch(`/__upload/${n}`, { method: 'PUT', body: state });
        if (!r.ok) throw new Error(`upload of the v86 state failed: HTTP ${r.status}`);
      },
      { n: name, slot: this.slot },
    );
  }

  /** Stops the emulator and closes the page (a guest in a slot: stops only its emulator; V86Page.close closes the page). */
  async close(): Promise<void> {
    if (this.slot) {
      await this.page
        .evaluate((slot) => {
          window.weftEmulators?.[slot]?.destroy();
          delete window.weftEmulators?.[slot];
        }, this.slot)
        .catch(() => undefined);
      return;
    }
    await this.page.evaluate(() => window.emulator?.destroy()).catch(() => undefined);
    await this.page.close().catch(() => undefined);
  }
}

/** Records the page's errors and console lines on `guest` (the last 1000 lines). */
function watchPage(page: Page, guest: V86Guest): void {
  page.on('pageerror', (e) => guest.pageErrors.push(e.message));
  page.on('console', (m) => {
    guest.consoleLines.push(`${m.type()}: ${m.text()}`);
    if (guest.consoleLines.length > 1000) guest.consoleLines.shift();
  });
}

/** What weftV86Start needs to boot `image` with `options`. */
function pageConfig(image: GuestImage, options: V86BootOptions, imageMount: string, slot?: string): PageConfig {
  const cmdline = [image.cmdline, options.dhcpAtBoot === false ? 'weft.dhcp=off' : '', options.cmdlineExtra ?? ''].filter(Boolean).join(' ');
  const at = (f: string) => imageMount + f;
  return {
    wasmPath: '/v86/v86.wasm',
    memoryBytes: (options.memoryMiB ?? 128) * 1024 * 1024,
    nic: options.nic,
    relayUrl: options.relayUrl,
    mtu: options.mtu,
    cmdline,
    urls: options.initialState
      ? { bios: at(image.files.bios), vgaBios: at(image.files.vgaBios), initialState: options.initialState }
      : { bios: at(image.files.bios), vgaBios: at(image.files.vgaBios), bzimage: at(image.files.bzimage), initrd: at(image.files.initrd) },
    ...(slot ? { slot } : {}),
  };
}

/** Creates the guest's emulator in its page, runs beforeRun (attach the network there), and starts it. */
async function startEmulator(guest: V86Guest, config: PageConfig): Promise<void> {
  await guest.page.evaluate((c) => window.weftV86Start(c), config);
  await guest.options.beforeRun?.(guest);
  guest.startedAt = performance.now();
  await guest.page.evaluate((slot) => (slot ? window.weftEmulators[slot] : window.emulator).run(), guest.slot);
}

/**
 * One v86 page for several guests, each in a slot of its own (its emulator is
 * `window.weftEmulators[slot]`, its serial console its own): e.g. several guests on one weft
 * network in one page. Close it to close the page and every guest in it.
 */
export class V86Page {
  private readonly guests = new Map<string, V86Guest>();

  private constructor(readonly page: Page) {}

  static async open(session: ChromiumSession, server: StaticServer): Promise<V86Page> {
    const page = await session.context.newPage();
    const v = new V86Page(page);
    try {
      await page.exposeFunction('weftSerialOut', (chunk: string, slot?: string) => v.guests.get(slot ?? '')?.serial.append(chunk));
      await page.goto(server.url(V86_PAGE));
    } catch (e) {
      await page.close().catch(() => undefined);
      throw e;
    }
    return v;
  }

  /** Boots (or, with options.initialState, restores) a guest in `slot`. */
  async boot(slot: string, image: GuestImage, options: V86BootOptions, imageMount = '/guest/'): Promise<V86Guest> {
    if (!slot || this.guests.has(slot)) throw new Error(`V86Page: slot ${JSON.stringify(slot)} is empty or taken`);
    const guest = new V86Guest(this.page, options, slot);
    this.guests.set(slot, guest);
    watchPage(this.page, guest);
    try {
      await startEmulator(guest, pageConfig(image, options, imageMount, slot));
    } catch (e) {
      await guest.close();
      this.guests.delete(slot);
      throw e;
    }
    return guest;
  }

  async close(): Promise<void> {
    for (const g of this.guests.values()) await g.close();
    await this.page.close().catch(() => undefined);
  }
}

/** Opens the v86 page in `session`, creates the emulator with `image`, and starts it. */
export async function bootV86(
  session: ChromiumSession,
  server: StaticServer,
  image: GuestImage,
  options: V86BootOptions,
  imageMount = '/guest/',
): Promise<V86Guest> {
  const page = await session.context.newPage();
  const guest = new V86Guest(page, options);
  try {
    watchPage(page, guest);
    await page.exposeFunction('weftSerialOut', (chunk: string) => guest.serial.append(chunk));
    await page.goto(server.url(V86_PAGE));
    await startEmulator(guest, pageConfig(image, options, imageMount));
    return guest;
  } catch (e) {
    await guest.close();
    throw e;
  }
}

/** Where a saved state for this image, NIC and memory size lives (under the image dir). */
export function stateName(image: GuestImage, options: Pick<V86BootOptions, 'nic' | 'memoryMiB' | 'mtu' | 'cmdlineExtra' | 'stateTag'>): string {
  const v86Version = (JSON.parse(readFileSync(join(V86_BUILD_DIR, '..', 'package.json'), 'utf8')) as { version: string }).version;
  const key = createHash('sha256')
    .update([image.digest, v86Version, options.nic, options.memoryMiB ?? 128, options.mtu ?? '', options.cmdlineExtra ?? '', options.stateTag ?? ''].join('\0'))
    .digest('hex')
    .slice(0, 16);
  return `${statePrefix(options)}${key}.bin`;
}

/** Saved states with this prefix are for the same NIC, MTU and tag (a newer one replaces the older). */
function statePrefix(options: Pick<V86BootOptions, 'nic' | 'mtu' | 'stateTag'>): string {
  return `${options.nic}-${options.mtu ? `mtu${options.mtu}-` : ''}${options.stateTag ? `${options.stateTag}-` : ''}`;
}

/**
 * A guest at its shell prompt with eth0 up and no lease yet (type `weft-dhcp`, or use
 * `guest.run('weft-dhcp')`): restored from a saved state in about a second when one exists for this
 * image, v86 version and options; otherwise booted (with `weft.dhcp=off`) and then saved for next time.
 */
export async function bootV86Snapshot(
  session: ChromiumSession,
  server: StaticServer,
  image: GuestImage,
  options: V86BootOptions,
): Promise<{ guest: V86Guest; restored: boolean }> {
  const name = stateName(image, options);
  const file = join(image.dir, 'states', name);
  if (existsSync(file)) {
    const guest = await bootV86(session, server, image, { ...options, dhcpAtBoot: false, initialState: `/guest/states/${name}` });
    return { guest, restored: true };
  }
  const guest = await bootV86(session, server, image, { ...options, dhcpAtBoot: false });
  await guest.waitForShell();
  await saveGuestState(guest, image, name);
  return { guest, restored: false };
}

/** Saves `guest` as the state `name` in the image's states/ folder, dropping older states for its NIC and MTU. */
export async function saveGuestState(guest: V86Guest, image: GuestImage, name = stateName(image, guest.options)): Promise<void> {
  await guest.saveState(name);
  const dir = join(image.dir, 'states');
  const prefix = statePrefix(guest.options);
  for (const f of readdirSync(dir)) {
    if (f !== name && f.startsWith(prefix) && /^[0-9a-f]{16}\.bin$/.test(f.slice(prefix.length))) rmSync(join(dir, f), { force: true });
  }
}
