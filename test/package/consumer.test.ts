// weft-net as its users get it: `npm pack` makes the tarball, and a scratch project outside the
// repository installs it from that file (its dependency ws, and the examples' v86, vite, typescript
// and express, come from the npm registry, pinned to the versions this repository has installed).
// Then, with nothing from the repository on the path:
//   - the tarball holds what package.json's "exports" and "bin" name, and no sources;
//   - a consumer importing all three entries type-checks under `bundler` and under `nodenext`;
//   - publint and @arethetypeswrong/cli (ESM-only profile) find no problems in the tarball;
//   - `npx weft --help` and `--version` answer;
//   - examples/qemu/run.sh boots weft's QEMU guest, which leases 10.0.2.15 from `weft vm`;
//   - examples/vite-app builds (tsc, vite build); examples/express-relay/server.mjs serves the build
//     with its relay, and in Chromium the page is cross-origin isolated, v86 boots weft's test guest,
//     the page reports its lease and a connected relay, and the guest fetches a file through the relay;
//   - examples/plain-html, served the same way, leases too.
// Skipped with the reason printed: the browser part without Chromium or the guest image, the QEMU
// part without qemu-system-x86_64 or its guest image (`npm run guest-image -- --target qemu`).

import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative, sep } from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanSerial, chromiumMissing, guestImageFor, launchChromium, type ChromiumSession, type GuestImage } from '../e2e/v86-harness';
import { qemuGuestImageFor } from '../harness/qemu-guest';
import { REPO_ROOT } from '../harness/repo-root';

const SUITE = 'weft-net as a consumer installs it';
const EXAMPLES = join(REPO_ROOT, 'examples');
const PACKAGE = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as {
  version: string;
  exports: Record<string, unknown>;
  bin: Record<string, string>;
};
/** Booting the v86 guest from its kernel takes ~20 s on 2 busy cores; allow for slower machines. */
const LEASE_TIMEOUT_MS = 150_000;

const chromiumSkip = process.platform !== 'linux' ? 'needs Linux' : chromiumMissing();
if (chromiumSkip) console.warn(`[skip] ${SUITE}, in Chromium: ${chromiumSkip}`);

declare global {
  interface Window {
    network?: { framePath: string; close(): Promise<void> };
  }
}

// ---------------------------------------------------------------------------------------------
// Processes

/**
 * The environment without what `npm test` says about this repository (npm_config_local_prefix,
 * npm_package_*, npm_lifecycle_*): an npm run in the scratch project would take it as its own.
 * Registry settings (npm_config_registry, …) stay.
 */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!/^(npm_config_local_prefix|npm_package_.*|npm_lifecycle_.*|npm_command|INIT_CWD)$/i.test(k)) env[k] = v;
  }
  return { ...env, ...extra };
}

interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to its end (killing its process group after `timeoutMs`). */
function run(command: string, args: string[], cwd: string, timeoutMs = 120_000, env: Record<string, string> = {}): Promise<RunResult> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, { cwd, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => killGroup(child, 'SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      fail(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      done({ code, stdout, stderr });
    });
  });
}

/** Runs a command that must succeed; throws with its output otherwise. */
async function runOk(command: string, args: string[], cwd: string, timeoutMs?: number, env?: Record<string, string>): Promise<RunResult> {
  const r = await run(command, args, cwd, timeoutMs, env);
  if (r.code !== 0) throw new Error(`${command} ${args.join(' ')} (in ${cwd}) exited with ${r.code}:\n${r.stdout}\n${r.stderr}`);
  return r;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

/** A long-running child (in its own process group) whose output a test waits on. */
class Service {
  output = '';
  private readonly exited: Promise<void>;
  private readonly waiters = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    for (const stream of [child.stdout, child.stderr]) {
      stream?.setEncoding('utf8').on('data', (s: string) => {
        this.output += s;
        for (const w of [...this.waiters]) w();
      });
    }
    this.exited = new Promise((done) => child.once('close', () => done()));
    void this.exited.then(() => {
      for (const w of [...this.waiters]) w();
    });
  }

  static start(name: string, command: string, args: string[], cwd: string, env: Record<string, string> = {}): Service {
    return new Service(name, spawn(command, args, { cwd, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'], detached: true }));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray> {
    return new Promise((done, fail) => {
      const check = () => {
        const m = pattern.exec(this.output);
        if (m) finish(() => done(m));
        else if (!this.running)
          finish(() =>
            fail(new Error(`${this.name} exited (${this.child.exitCode ?? this.child.signalCode}) before ${pattern}:\n${this.output.slice(-3000)}`)),
          );
      };
      const timer = setTimeout(
        () => finish(() => fail(new Error(`${this.name}: no ${pattern} within ${timeoutMs} ms:\n${this.output.slice(-3000)}`))),
        timeoutMs,
      );
      const finish = (settle: () => void) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        settle();
      };
      this.waiters.add(check);
      check();
    });
  }

  /** SIGTERM to its process group, SIGKILL after 5 s. */
  async stop(): Promise<void> {
    if (!this.running) return;
    killGroup(this.child, 'SIGTERM');
    const killer = setTimeout(() => killGroup(this.child, 'SIGKILL'), 5000);
    await this.exited;
    clearTimeout(killer);
  }
}

function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => done(port));
    });
  });
}

/** The version of a package this repository has installed, without build metadata ("0.5.462+g5f9a90f" → "0.5.462"). */
function installedVersion(name: string): string {
  const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string };
  return version.replace(/\+.*$/, '');
}

/** Copies examples/NAME to `to`, as a user would take it: without installed or built files. */
function copyExample(name: string, to: string): void {
  cpSync(join(EXAMPLES, name), to, { recursive: true, filter: (src) => !/[/\\](node_modules|dist|guest)$/.test(src) });
}

// ---------------------------------------------------------------------------------------------
// The consumer's type-check

const CONSUMER_TS = `// A consumer of all three entry points, written as weft's README shows them.
import http from 'node:http';
import type { V86 } from 'v86';
import { attachV86, createNetwork, type NetworkEvent, type WeftNetwork } from 'weft-net/web';
import { createRelay, RelayOptionError, type Relay } from 'weft-net/relay';
import { DirectUpstream, QemuStreamLink, formatIpv4, parseIpv4, runStack } from 'weft-net/node';

export function page(emulator: V86): WeftNetwork {
  const network = createNetwork({ relayUrl: 'wss://relay.example/wisp/', framePath: 'auto', workerUrl: new URL('https://cdn.example/weft-worker.js') });
  network.on('lease', (e) => console.log(e.ip.toUpperCase(), e.mac));
  network.on('relay', (e) => console.log(e.state satisfies 'none' | 'connecting' | 'connected' | 'reconnecting' | 'failed'));
  const attachment = attachV86(emulator, network, { maxQueuedFrames: 512 });
  const types: Array<NetworkEvent['type']> = ['relay', 'lease'];
  console.log(attachment.pacing, attachment.dropped, types, network.framePath);
  // @ts-expect-error: no such event
  network.on('no-such-event', () => undefined);
  // @ts-expect-error: relayUrl is a string
  createNetwork({ relayUrl: 8080 });
  return network;
}

export function server(): { server: http.Server; relay: Relay } {
  const relay = createRelay({ path: '/wisp/', allowLoopback: true, origins: ['https://vm.example.com'] });
  const server = http.createServer((_req, res) => res.end(relay.metrics()));
  server.on('upgrade', (req, socket, head) => relay.handleUpgrade(req, socket, head));
  const clients: number = relay.clients;
  console.log(clients, new RelayOptionError('x').code satisfies 'ERR_WEFT_RELAY_OPTION');
  // @ts-expect-error: allowLoopback is a boolean
  createRelay({ allowLoopback: 'yes' });
  void relay.close(1000);
  return { server, relay };
}

export async function vm(): Promise<void> {
  const link = await QemuStreamLink.listen({ kind: 'unix', path: '/tmp/vm.sock' });
  const upstream = new DirectUpstream({ gateway: parseIpv4('10.0.2.2') });
  const { stack, close } = runStack(link, { upstream });
  stack.on('lease', (e) => console.log('guest got', formatIpv4(e.ip)));
  await close();
}
`;

function consumerTsconfig(module: 'ESNext' | 'NodeNext', moduleResolution: 'Bundler' | 'NodeNext'): string {
  return JSON.stringify(
    {
      compilerOptions: {
        target: 'ES2022',
        module,
        moduleResolution,
        lib: ['ES2022', 'DOM'],
        types: ['node'],
        strict: true,
        noEmit: true,
        verbatimModuleSyntax: true,
        // The package's own declarations are what this checks.
        skipLibCheck: false,
      },
      files: ['consumer.ts'],
    },
    null,
    2,
  );
}

// ---------------------------------------------------------------------------------------------
// The example pages

/** The text the page's serial console shows (escape sequences removed). */
async function serialText(page: Page): Promise<string> {
  return cleanSerial(await page.evaluate(() => document.getElementById('serial')?.textContent ?? ''));
}

async function waitForSerial(page: Page, pattern: RegExp, timeoutMs: number, from = 0): Promise<RegExpExecArray> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const text = await serialText(page);
    const m = pattern.exec(text.slice(from));
    if (m) return m;
    if (performance.now() > deadline) throw new Error(`serial: no ${pattern} within ${timeoutMs} ms; last output:\n${text.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** Waits until the page has set data-lease on <body> (its 'lease' event), with the serial console in the error. */
async function waitForLease(page: Page): Promise<string> {
  try {
    await page.waitForFunction(() => document.body.dataset.lease, undefined, { timeout: LEASE_TIMEOUT_MS, polling: 250 });
  } catch (e) {
    throw new Error(`no lease event on the page: ${(e as Error).message}\nserial:\n${(await serialText(page)).slice(-1500)}`);
  }
  return page.evaluate(() => document.body.dataset.lease ?? '');
}

/** Query string that points the example pages at the test guest, mounted at /test-guest/. */
function guestQuery(image: GuestImage, extra: Record<string, string> = {}): string {
  const at = (f: string) => `/test-guest/${f}`;
  return new URLSearchParams({
    bios: at(image.files.bios),
    vgabios: at(image.files.vgaBios),
    bzimage: at(image.files.bzimage),
    initrd: at(image.files.initrd),
    cmdline: image.cmdline,
    ...extra,
  }).toString();
}

// ---------------------------------------------------------------------------------------------

describe(SUITE, () => {
  /** Everything this file creates: the tarball, the scratch project, its installs. */
  let work: string;
  let tarball: string;
  /** The scratch project: a copy of examples/vite-app with the tarball installed. */
  let app: string;
  const services: Service[] = [];

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'weft-consumer-'));
    const t0 = performance.now();
    // prepack builds the bundles and the declarations (and checks them against api/). It runs in a
    // copy of the repository: a build in place would rewrite dist/ under the other test files, which
    // run weft from it at the same time.
    const source = join(work, 'source');
    cpSync(REPO_ROOT, source, {
      recursive: true,
      filter: (from) => !/^(node_modules|dist|\.cache|test-results|\.git)$/.test(relative(REPO_ROOT, from).split(sep)[0] ?? ''),
    });
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(source, 'node_modules'));
    await runOk('npm', ['pack', '--pack-destination', work], source, 180_000);
    const packed = readdirSync(work).filter((f) => f.endsWith('.tgz'));
    expect(packed).toEqual([`weft-net-${PACKAGE.version}.tgz`]);
    tarball = join(work, packed[0]);

    app = join(work, 'app');
    copyExample('vite-app', app);
    copyExample('express-relay', join(app, 'express-relay'));
    // The vite example's own dependencies (v86, vite, typescript) by its package.json; weft-net from the
    // tarball; what the express example and the type-check need, at this repository's versions.
    const extra = ['express', '@types/node', '@types/express'].map((p) => `${p}@${installedVersion(p)}`);
    await runOk('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', tarball, ...extra], app, 240_000);
    console.log(`[consumer] packed and installed in ${((performance.now() - t0) / 1000).toFixed(1)} s (${work})`);
  }, 420_000);

  afterAll(async () => {
    for (const s of services) await s.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('the tarball holds the entries package.json names, and no sources', async () => {
    const { stdout } = await runOk('tar', ['-tzf', tarball], work);
    const files = stdout
      .split('\n')
      .filter(Boolean)
      .map((f) => f.replace(/^package\//, ''));
    const installed = join(app, 'node_modules', 'weft-net');
    const targets = Object.values(PACKAGE.exports).flatMap((e) => (typeof e === 'string' ? [e] : Object.values(e as Record<string, string>)));
    for (const target of [...targets, ...Object.values(PACKAGE.bin)]) {
      const file = target.replace(/^\.\//, '');
      expect(files, `${file} is in the tarball`).toContain(file);
      expect(existsSync(join(installed, file)), `${file} is installed`).toBe(true);
    }
    expect(files).toContain('dist/weft.js');
    expect(
      files.filter((f) => /\.ts$/.test(f) && !f.endsWith('.d.ts')),
      'TypeScript sources',
    ).toEqual([]);
    expect(
      files.filter((f) => /^(core|web|worker|node-host|test|demo|examples)\//.test(f)),
      'source folders',
    ).toEqual([]);
  });

  it.each([
    ['bundler', 'ESNext', 'Bundler'],
    ['nodenext', 'NodeNext', 'NodeNext'],
  ] as const)(
    'a consumer of weft-net/web, /relay and /node type-checks under moduleResolution %s',
    async (name, module, resolution) => {
      const dir = join(app, `typecheck-${name}`);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'consumer.ts'), CONSUMER_TS);
      writeFileSync(join(dir, 'tsconfig.json'), consumerTsconfig(module, resolution));
      // The consumer's own TypeScript (installed by the vite example's package.json).
      const r = await run(process.execPath, [join(app, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], dir, 120_000);
      expect(`${r.stdout}${r.stderr}`.trim()).toBe('');
      expect(r.code).toBe(0);
    },
    150_000,
  );

  it('publint finds nothing to report in the tarball', async () => {
    const r = await run(join(REPO_ROOT, 'node_modules', '.bin', 'publint'), ['run', tarball, '--level', 'suggestion', '--strict'], work);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toContain('All good!');
  });

  it('@arethetypeswrong/cli (ESM-only profile) finds no problems in the tarball', async () => {
    const r = await run(
      join(REPO_ROOT, 'node_modules', '.bin', 'attw'),
      [tarball, '--profile', 'esm-only', '--format', 'ascii', '--no-color', '--no-emoji'],
      work,
    );
    expect(r.code, r.stdout + r.stderr).toBe(0);
    // The worker script exports nothing, and its types say so.
    for (const entry of ['weft-net/web', 'weft-net/relay', 'weft-net/node', 'weft-net/web/weft-worker.js'])
      expect(r.stdout).toContain(`"${entry}"\n\nnode16 (from ESM): OK (ESM)\nbundler: OK`);
  });

  it('npx weft --help and --version work from the installed package', async () => {
    const help = await runOk('npx', ['--no-install', 'weft', '--help'], app, 60_000);
    expect(help.stdout).toMatch(/^Usage: weft <command> \[options\]/);
    for (const command of ['vm', 'relay', 'start']) expect(help.stdout).toMatch(new RegExp(`^ {2}${command} `, 'm'));
    const version = await runOk('npx', ['--no-install', 'weft', '--version'], app, 60_000);
    expect(version.stdout.trim()).toContain(PACKAGE.version);
  }, 90_000);

  it('examples/qemu/run.sh: a QEMU guest leases 10.0.2.15 from weft vm', async ({ skip }) => {
    const guest = await qemuGuestImageFor(`${SUITE}, QEMU`);
    if (!guest.image) return skip(guest.skipReason);
    const { kernel, initrd, cmdline } = guest.image;
    const dir = join(work, 'qemu');
    copyExample('qemu', dir);
    symlinkSync(join(app, 'node_modules'), join(dir, 'node_modules'));
    const sock = join(dir, 'weft.sock');
    const vm = Service.start('examples/qemu/run.sh', 'sh', ['run.sh', kernel, initrd, cmdline], dir, { WEFT_SOCK: sock });
    services.push(vm);
    const t0 = performance.now();
    // weft's log line, then the guest's own account of the lease.
    await vm.waitFor(/\{[^\n]*"event":"lease"[^\n]*"ip":"10\.0\.2\.15"/, 120_000);
    await vm.waitFor(/lease of 10\.0\.2\.15 obtained from 10\.0\.2\.2/, 30_000);
    console.log(`[consumer] QEMU guest leased 10.0.2.15 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    await vm.stop();
    expect(vm.output).toMatch(/"event":"stopped","signal":"SIGTERM"/);
  }, 180_000);

  it('examples/vite-app builds with tsc and vite against the installed package', async () => {
    const r = await runOk('npm', ['run', 'build'], app, 180_000);
    const assets = readdirSync(join(app, 'dist', 'assets'));
    // weft's worker travels with the build, as do v86's wasm and the page's script.
    expect(
      assets.filter((f) => /^weft-worker-[\w-]+\.js$/.test(f)),
      r.stdout,
    ).toHaveLength(1);
    expect(
      assets.filter((f) => /^v86-[\w-]+\.wasm$/.test(f)),
      r.stdout,
    ).toHaveLength(1);
    expect(readFileSync(join(app, 'dist', 'index.html'), 'utf8')).toMatch(/<script type="module"[^>]* src="\/assets\/index-[\w-]+\.js">/);
  }, 200_000);

  describe.skipIf(chromiumSkip !== undefined)('in Chromium', () => {
    let image: GuestImage | undefined;
    let skipReason: string | undefined;
    let session: ChromiumSession | undefined;

    beforeAll(async () => {
      const built = await guestImageFor(SUITE);
      if (built.skipReason !== undefined) {
        skipReason = built.skipReason;
        return;
      }
      image = built.image;
      session = await launchChromium();
    }, 15 * 60_000);

    afterAll(async () => {
      await session?.close();
    });

    /** Starts examples/express-relay/server.mjs on `site`, with the test guest linked in as /test-guest/. */
    async function serve(name: string, site: string, env: Record<string, string> = {}): Promise<{ origin: string; port: number; server: Service }> {
      symlinkSync(image!.dir, join(site, 'test-guest'));
      const port = env.PORT ? Number(env.PORT) : await freePort();
      const server = Service.start(`${name} server`, process.execPath, [join(app, 'express-relay', 'server.mjs'), site], app, { ...env, PORT: String(port) });
      services.push(server);
      const m = await server.waitFor(/at (http:\/\/127\.0\.0\.1:(\d+))\/ \(Wisp relay at ws:\/\/127\.0\.0\.1:\d+\/wisp\/\)/, 30_000);
      expect(Number(m[2])).toBe(port);
      return { origin: m[1], port, server };
    }

    async function openPage(url: string): Promise<{ page: Page; errors: string[] }> {
      const page = await session!.context.newPage();
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      page.on('response', (r) => {
        if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`);
      });
      await page.goto(url);
      return { page, errors };
    }

    it(
      'the Vite build, served with the Express relay: the v86 guest leases 10.0.2.15 and fetches a file through the relay',
      async ({ skip }) => {
        if (skipReason) skip(skipReason);
        const site = join(app, 'dist');
        const token = randomBytes(12).toString('hex');
        writeFileSync(join(site, 'relay-check.txt'), `${token}\n`);
        const port = await freePort();
        // Loopback allowed (the guest fetches from this server at 10.0.2.2), for this page's origin only.
        const { origin, server } = await serve('vite-app', site, { PORT: String(port), ALLOW_LOOPBACK: '1', ORIGIN: `http://127.0.0.1:${port}` });
        const t0 = performance.now();
        const { page, errors } = await openPage(`${origin}/?${guestQuery(image!, { hostLoopback: '' })}`);
        try {
          // COOP/COEP from the Express example make the page isolated, and weft then uses shared rings.
          expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
          await page.waitForFunction(() => window.network !== undefined);
          expect(await page.evaluate(() => window.network!.framePath)).toBe('sab');

          expect(await waitForLease(page)).toBe('10.0.2.15');
          console.log(`[consumer] vite-app: the guest leased 10.0.2.15 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          expect(await page.evaluate(() => document.body.dataset.relay)).toBe('connected');
          expect(await page.textContent('#events')).toMatch(/lease 10\.0\.2\.15 for ([0-9a-f]{2}:){5}[0-9a-f]{2}/);
          await waitForSerial(page, /WEFT-LEASE[^\n]* ip=10\.0\.2\.15 /, 30_000);

          // Through weft's worker, the relay mounted by the Express example, and back to that server.
          await waitForSerial(page, /weft# /, 60_000);
          const from = (await serialText(page)).length;
          await page.evaluate((line) => window.emulator.serial0_send(line), `wget -q -O - http://10.0.2.2:${port}/relay-check.txt; echo "WEFT-""RC=$?"\n`);
          const rc = await waitForSerial(page, /WEFT-RC=(\d+)/, 60_000, from);
          const output = (await serialText(page)).slice(from);
          expect(rc[1], output).toBe('0');
          expect(output).toContain(token);
          const metrics = await (await fetch(`${origin}/metrics`)).text();
          expect(metrics).toMatch(/^weft_relay_clients 1$/m);
          expect(metrics).toMatch(/^weft_relay_streams_total\{type="tcp"\} [1-9]/m);
          expect(errors).toEqual([]);
        } finally {
          await page.evaluate(() => window.network?.close()).catch(() => undefined);
          await page.close();
          await server.stop();
        }
        expect(server.output).toMatch(/"event":"client-ready"/);
      },
      LEASE_TIMEOUT_MS + 120_000,
    );

    it(
      'examples/plain-html (import map), served with the Express relay: the v86 guest leases 10.0.2.15',
      async ({ skip }) => {
        if (skipReason) skip(skipReason);
        // As its README says: the page at the site's root, with node_modules/ beside it.
        const site = join(work, 'plain-html');
        copyExample('plain-html', site);
        symlinkSync(join(app, 'node_modules'), join(site, 'node_modules'));
        const { origin, server } = await serve('plain-html', site);
        const t0 = performance.now();
        const { page, errors } = await openPage(`${origin}/?${guestQuery(image!)}`);
        try {
          expect(await page.evaluate(() => crossOriginIsolated)).toBe(true);
          expect(await waitForLease(page)).toBe('10.0.2.15');
          console.log(`[consumer] plain-html: the guest leased 10.0.2.15 in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
          expect(await page.evaluate(() => document.body.dataset.relay)).toBe('connected');
          expect(errors).toEqual([]);
        } finally {
          await page.close();
          await server.stop();
        }
      },
      LEASE_TIMEOUT_MS + 60_000,
    );
  });
});
