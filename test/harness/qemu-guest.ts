// Real Linux guests in QEMU for integration tests: Debian's qemu-system-x86_64 boots the x86-64 guest
// that `test/harness/guest-image/build.mjs --target qemu` builds from Debian packages into
// .cache/guest-qemu/ (a cloud-amd64 kernel, busybox, the virtio-net modules). Each boot is handed a
// shell script (`-fw_cfg name=opt/weft/script`); the guest's /init brings eth0 up, leases an address
// with udhcpc, runs the script and powers off. Everything the guest prints goes to ttyS0, which is
// QEMU's stdout here: marker lines `WEFT-<TAG> [NAME] [key=value …]` are parsed as they arrive, so a
// test can act while the guest runs (wait for `WEFT-READY forward`, then connect).
//
// Markers from the image: WEFT-INIT, WEFT-BOOT-OK (nic, mac, kernel), WEFT-LEASE (ip, mask, router,
// dns, domain, mtu, lease), WEFT-SCRIPT-START, WEFT-SCRIPT-END rc=N. The script adds its own, by
// convention WEFT-RESULT NAME key=value … (GuestRun.results) and WEFT-READY NAME.
//
// Acceleration: KVM when /dev/kvm really boots this guest, else TCG. On nested machines /dev/kvm may
// open and a guest still hang without a word, so a probe boot decides, once per QEMU version and host
// kernel; the answer is cached in the image folder (accel.json). WEFT_QEMU_ACCEL=kvm|tcg skips it.
// Boots take ≈2.5 s under TCG on this 2-core machine (qboot firmware, -kernel/-initrd, quiet).
//
// Every QEMU started here is killed by PID when its boot times out, by killAllQemuGuests(), and
// synchronously on process exit or SIGINT/SIGTERM; each boot's temporary folder (the script) goes
// with it.
//
// Typical use:
//   const built = await qemuGuestImageFor(SUITE);      // builds the image if missing; { skipReason } if it cannot
//   const { accel } = await chooseAccel(built.image);
//   const guest = bootQemuGuest({ image, accel, link: { kind: 'stream', path: sock }, script: 'echo WEFT-RESULT x ok=1' });
//   const run = await guest.finished;                   // run.results.x.ok === '1', run.lease.ip, run.scriptRc
//   … afterAll: killAllQemuGuests()

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { runGuestImageBuild } from './guest-image-build';
import { REPO_ROOT } from './repo-root';

export const QEMU_BINARY = process.env.WEFT_QEMU || 'qemu-system-x86_64';
export const QEMU_GUEST_DIR = resolve(process.env.WEFT_QEMU_GUEST_DIR || join(REPO_ROOT, '.cache', 'guest-qemu'));
/** Debian's qemu-system-data ships qboot: a minimal firmware that boots -kernel ≈0.4 s sooner than SeaBIOS under TCG. */
const QBOOT = '/usr/share/qemu/qboot.rom';
/** QEMU's own default for the first NIC; set explicitly so a reboot comes back with the same address. */
export const DEFAULT_GUEST_MAC = '52:54:00:12:34:56';
const DEFAULT_MEMORY_MIB = 256;
const DEFAULT_BOOT_TIMEOUT_MS = 120_000;
/** A KVM boot of this guest takes about a second; a nested /dev/kvm that fails hangs silently. */
const KVM_PROBE_TIMEOUT_MS = 20_000;
/** Serial lines quoted in a failure message. */
const QUOTED_SERIAL_LINES = 60;

// ---------------------------------------------------------------------------------------------
// the image

export interface QemuGuestImage {
  dir: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  kernelPackage: string;
  kernelRelease: string;
}

interface Manifest {
  target?: string;
  kernelRelease: string;
  cmdline: string;
  packages: { kernel: { name: string; version: string } };
  files: Record<'bzimage' | 'initrd', { path: string; size: number }>;
}

/** The built image in `dir`, or undefined when there is none (or a file is missing). */
export function loadQemuGuestImage(dir = QEMU_GUEST_DIR): QemuGuestImage | undefined {
  let m: Manifest;
  try {
    m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch {
    return undefined;
  }
  if (m.target !== 'qemu') return undefined;
  const kernel = join(dir, m.files.bzimage.path);
  const initrd = join(dir, m.files.initrd.path);
  if (!existsSync(kernel) || !existsSync(initrd)) return undefined;
  return {
    dir,
    kernel,
    initrd,
    cmdline: m.cmdline,
    kernelPackage: `${m.packages.kernel.name} ${m.packages.kernel.version}`,
    kernelRelease: m.kernelRelease,
  };
}

/** Why QEMU cannot run here, or undefined when it can. */
export function qemuMissing(): string | undefined {
  const r = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return `${QEMU_BINARY} not found (Debian: apt-get install qemu-system-x86)`;
  return undefined;
}

/**
 * For a test suite: QEMU is there and the image is built (building it when missing or stale), or why
 * not (printed as a `[skip]` line). Rejects when a build that should work fails.
 */
export async function qemuGuestImageFor(suite: string): Promise<{ image: QemuGuestImage; skipReason?: undefined } | { image?: undefined; skipReason: string }> {
  const skip = (skipReason: string) => {
    console.warn(`[skip] ${suite}: ${skipReason}`);
    return { skipReason };
  };
  if (process.platform !== 'linux') return skip('QEMU guests are tested on Linux only');
  const missing = qemuMissing();
  if (missing) return skip(missing);
  const built = await runGuestImageBuild('qemu', { WEFT_QEMU_GUEST_DIR: QEMU_GUEST_DIR });
  if ('skip' in built) return skip(`cannot build the QEMU guest image here: ${built.skip}`);
  const image = loadQemuGuestImage();
  if (!image) throw new Error(`the QEMU guest image build succeeded but ${QEMU_GUEST_DIR} holds no complete image`);
  return { image };
}

// ---------------------------------------------------------------------------------------------
// acceleration

export type Accel = 'kvm' | 'tcg';

export interface AccelChoice {
  accel: Accel;
  /** Why, for the test log: "a KVM probe boot finished in 1.2 s", "/dev/kvm: ENOENT", … */
  reason: string;
}

interface AccelCache extends AccelChoice {
  key: string;
  probedAt: string;
}

/** What a probe's answer depends on: the QEMU build and the host kernel (and so its KVM). */
function probeKey(): string {
  const version = spawnSync(QEMU_BINARY, ['--version'], { encoding: 'utf8' }).stdout.split('\n')[0] ?? '';
  return `${version.trim()} | host ${release()}`;
}

/**
 * KVM if it boots this guest here, else TCG: WEFT_QEMU_ACCEL if set, else /dev/kvm must open read-write
 * and a probe boot must finish (cached in `image.dir`/accel.json per QEMU version and host kernel).
 */
export async function chooseAccel(image: QemuGuestImage): Promise<AccelChoice> {
  const forced = process.env.WEFT_QEMU_ACCEL;
  if (forced === 'kvm' || forced === 'tcg') return { accel: forced, reason: 'WEFT_QEMU_ACCEL' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch (e) {
    return { accel: 'tcg', reason: `/dev/kvm: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` };
  }
  const cachePath = join(image.dir, 'accel.json');
  const key = probeKey();
  try {
    const cached = JSON.parse(readFileSync(cachePath, 'utf8')) as AccelCache;
    if (cached.key === key && (cached.accel === 'kvm' || cached.accel === 'tcg')) {
      return { accel: cached.accel, reason: `${cached.reason} (probed ${cached.probedAt}; cached in ${cachePath})` };
    }
  } catch {
    // no cache yet, or an unreadable one: probe
  }
  const guest = bootQemuGuest({
    image,
    accel: 'kvm',
    link: { kind: 'none' },
    script: 'echo WEFT-RESULT probe ok=1',
    timeoutMs: KVM_PROBE_TIMEOUT_MS,
    label: 'KVM probe',
  });
  const run = await guest.finished;
  const seconds = (run.elapsedMs / 1000).toFixed(1);
  const choice: AccelChoice =
    run.code === 0 && run.results.probe?.ok === '1'
      ? { accel: 'kvm', reason: `a KVM probe boot finished in ${seconds} s` }
      : {
          accel: 'tcg',
          reason:
            `a KVM probe boot ${run.timedOut ? `printed ${run.markers.length} markers and did not finish within ${KVM_PROBE_TIMEOUT_MS / 1000} s` : `exited with ${run.code ?? run.signal} after ${seconds} s`}` +
            (run.stderr.trim() ? ` (QEMU: ${run.stderr.trim().split('\n').slice(-1)[0]})` : '') +
            pvmHint(),
        };
  const cache: AccelCache = { ...choice, key, probedAt: new Date().toISOString() };
  writeFileSync(cachePath, `${JSON.stringify(cache, null, 2)}\n`);
  return choice;
}

/**
 * Some nested hosts (Firecracker-style sandboxes among them) offer /dev/kvm through PVM, which runs
 * only guest kernels built for it: a stock Debian kernel stops at `-cpu host`'s MSRs or never leaves
 * its decompressor. Saying so spares the reader a hunt for a QEMU option that does not exist.
 */
function pvmHint(): string {
  return existsSync('/sys/module/kvm_pvm') ? '; this /dev/kvm is PVM (module kvm_pvm), which boots only guest kernels built for PVM' : '';
}

// ---------------------------------------------------------------------------------------------
// one boot

/** How the guest's NIC reaches weft: `weft vm --qemu unix:PATH`, `weft vm --dgram WEFTPORT:QEMUPORT`, or no NIC. */
export type QemuLink =
  | { kind: 'stream'; path: string }
  | { kind: 'dgram'; weftPort: number; qemuPort: number }
  /** QEMU's own slirp (`-netdev user`): benchmarks compare weft with it. */
  | { kind: 'user' }
  | { kind: 'none' };

/** QEMU's arguments for a virtio-net-pci NIC on `link` (nothing for 'none'). */
export function qemuNetArgs(link: QemuLink, mac = DEFAULT_GUEST_MAC): string[] {
  let netdev: string;
  switch (link.kind) {
    case 'none':
      return [];
    case 'stream':
      netdev = `stream,id=n0,server=off,addr.type=unix,addr.path=${link.path}`;
      break;
    case 'dgram':
      netdev =
        `dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port=${link.qemuPort},` + `remote.type=inet,remote.host=127.0.0.1,remote.port=${link.weftPort}`;
      break;
    case 'user':
      // libslirp inside QEMU: the guest leases 10.0.2.15, and 10.0.2.2 reaches the host's loopback.
      netdev = 'user,id=n0';
      break;
  }
  // romfile=: no iPXE option ROM (qboot would not run it anyway; it only costs time).
  return ['-netdev', netdev, '-device', `virtio-net-pci,netdev=n0,mac=${mac},romfile=`];
}

export interface QemuBootOptions {
  image: QemuGuestImage;
  accel: Accel;
  link: QemuLink;
  /** Shell script (busybox sh) the guest runs after DHCP; the guest powers off when it ends. */
  script: string;
  mac?: string;
  memoryMiB?: number;
  /** QEMU is killed (SIGKILL) after this long; the run then says timedOut. */
  timeoutMs?: number;
  /** Names this boot in failure messages ("stream boot 1"). */
  label?: string;
}

export interface GuestMarker {
  /** "RESULT" for `WEFT-RESULT …`. */
  tag: string;
  /** The first word after the tag that is not key=value, if any. */
  name: string | undefined;
  fields: Record<string, string>;
  line: string;
  /** Milliseconds since QEMU was started. */
  atMs: number;
}

export interface GuestRun {
  label: string;
  accel: Accel;
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** From spawning QEMU to its exit. */
  elapsedMs: number;
  /** From spawning QEMU to WEFT-SCRIPT-START: boot, NIC, DHCP. */
  bootMs: number | undefined;
  /** The script's exit status (WEFT-SCRIPT-END rc=N), if it ended. */
  scriptRc: number | undefined;
  /** The fields of WEFT-LEASE, if udhcpc got one. */
  lease: Record<string, string> | undefined;
  /** WEFT-RESULT NAME … by NAME (the last one of a name wins). */
  results: Record<string, Record<string, string>>;
  markers: GuestMarker[];
  serial: string;
  stderr: string;
}

const MARKER = /^WEFT-([A-Z0-9-]+)(?:\s+(.*))?$/;

function parseMarker(line: string, atMs: number): GuestMarker | undefined {
  const m = MARKER.exec(line);
  if (!m) return undefined;
  const fields: Record<string, string> = {};
  let name: string | undefined;
  for (const word of (m[2] ?? '').split(/\s+/).filter(Boolean)) {
    const eq = word.indexOf('=');
    if (eq > 0) fields[word.slice(0, eq)] = word.slice(eq + 1);
    else name ??= word;
  }
  return { tag: m[1], name, fields, line, atMs };
}

const live = new Set<QemuGuest>();
const exitCleanups = new Set<() => void>();
let hooksInstalled = false;

function cleanUpSync(): void {
  killAllQemuGuests();
  for (const fn of exitCleanups) {
    try {
      fn();
    } catch {
      // the others must still run
    }
  }
}

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', cleanUpSync);
  const onSignal = (signal: NodeJS.Signals) => {
    cleanUpSync();
    process.off(signal, onSignal);
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/**
 * Runs `fn` (synchronous: kill a helper process by PID, delete a folder) when this process exits or
 * gets SIGINT/SIGTERM, after every QEMU is killed. Returns the function that unregisters it, for a
 * suite whose own afterAll has cleaned up.
 */
export function cleanupOnExit(fn: () => void): () => void {
  installExitHooks();
  exitCleanups.add(fn);
  return () => exitCleanups.delete(fn);
}

/** Kills (SIGKILL, by PID) every QEMU this process started that is still running, and removes their folders. */
export function killAllQemuGuests(): void {
  for (const guest of live) guest.kill();
}

/** A running QEMU: its serial output, markers as they arrive, and the run once it exits. */
export class QemuGuest {
  readonly markers: GuestMarker[] = [];
  serial = '';
  stderr = '';
  /** Resolves when QEMU has exited (by itself, or killed at the timeout); never rejects. */
  readonly finished: Promise<GuestRun>;
  private readonly child: ChildProcess;
  private readonly started = performance.now();
  private partial = '';
  private waiters: Array<() => void> = [];
  private exited = false;
  private timedOut = false;

  constructor(
    readonly label: string,
    readonly accel: Accel,
    command: string[],
    private readonly dir: string,
    timeoutMs: number,
  ) {
    installExitHooks();
    live.add(this);
    this.child = spawn(command[0], command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.setEncoding('utf8').on('data', (s: string) => this.onSerial(s));
    this.child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    const timer = setTimeout(() => {
      this.timedOut = true;
      this.kill();
    }, timeoutMs);
    this.finished = new Promise((resolveRun) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        if (this.exited) return;
        this.exited = true;
        clearTimeout(timer);
        live.delete(this);
        rmSync(this.dir, { recursive: true, force: true });
        if (this.partial) this.onLine(this.partial);
        this.notify();
        resolveRun(this.run(code, signal));
      };
      // 'close' comes after stdout has ended, so every serial line is in.
      this.child.once('close', done);
      this.child.once('error', (e) => {
        this.stderr += `${e.message}\n`;
        done(null, null);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** SIGKILL by PID if QEMU still runs. */
  kill(): void {
    if (this.exited || this.child.pid === undefined || this.child.exitCode !== null || this.child.signalCode !== null) return;
    try {
      process.kill(this.child.pid, 'SIGKILL');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Resolves with the first marker `WEFT-<tag>` that matches; rejects on timeout or when QEMU exits first. */
  waitForMarker(tag: string, match: (m: GuestMarker) => boolean = () => true, timeoutMs = 60_000): Promise<GuestMarker> {
    return new Promise((resolveMarker, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no WEFT-${tag} marker from ${this.label} within ${timeoutMs} ms${this.describeSerial()}`));
      }, timeoutMs);
      const check = () => {
        const found = this.markers.find((m) => m.tag === tag && match(m));
        if (found) {
          clearTimeout(timer);
          resolveMarker(found);
        } else if (this.exited) {
          clearTimeout(timer);
          reject(new Error(`${this.label} ended before a WEFT-${tag} marker${this.describeSerial()}`));
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  /** The last serial lines and QEMU's stderr, for a failure message. */
  describeSerial(): string {
    return describeOutput(this.serial, this.stderr);
  }

  private onSerial(chunk: string): void {
    this.serial += chunk;
    const lines = (this.partial + chunk).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.onLine(line);
    this.notify();
  }

  private onLine(raw: string): void {
    const marker = parseMarker(raw.replace(/\r$/, ''), performance.now() - this.started);
    if (marker) this.markers.push(marker);
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  private run(code: number | null, signal: NodeJS.Signals | null): GuestRun {
    const find = (tag: string) => this.markers.find((m) => m.tag === tag);
    const results: Record<string, Record<string, string>> = {};
    for (const m of this.markers) if (m.tag === 'RESULT' && m.name) results[m.name] = m.fields;
    const end = find('SCRIPT-END');
    return {
      label: this.label,
      accel: this.accel,
      code,
      signal,
      timedOut: this.timedOut,
      elapsedMs: performance.now() - this.started,
      bootMs: find('SCRIPT-START')?.atMs,
      scriptRc: end ? Number(end.fields.rc) : undefined,
      lease: find('LEASE')?.fields,
      results,
      markers: [...this.markers],
      serial: this.serial,
      stderr: this.stderr,
    };
  }
}

function describeOutput(serial: string, stderr: string): string {
  const lines = serial.replace(/\r/g, '').split('\n');
  const tail = lines.slice(-QUOTED_SERIAL_LINES).join('\n');
  return (
    `; serial${lines.length > QUOTED_SERIAL_LINES ? ` (last ${QUOTED_SERIAL_LINES} lines)` : ''}:\n${tail}` +
    (stderr.trim() ? `\nQEMU stderr:\n${stderr.trim()}` : '')
  );
}

/** One line on how a boot went, with its serial tail: for failure messages. */
export function describeRun(run: GuestRun): string {
  const how = run.timedOut ? 'was killed at its timeout' : `exited with ${run.code ?? run.signal}`;
  return (
    `${run.label} (${run.accel}) ${how} after ${(run.elapsedMs / 1000).toFixed(1)} s, script rc ${run.scriptRc ?? 'none'}` +
    describeOutput(run.serial, run.stderr)
  );
}

/** Boots the guest with `script`; QEMU runs until the guest powers off (or the timeout kills it). */
export function bootQemuGuest(opts: QemuBootOptions): QemuGuest {
  const dir = mkdtempSync(join(tmpdir(), 'weft-qemu-guest-'));
  const scriptPath = join(dir, 'script.sh');
  writeFileSync(scriptPath, opts.script);
  const command = [
    QEMU_BINARY,
    '-accel',
    opts.accel,
    ...(opts.accel === 'kvm' ? ['-cpu', 'host'] : []),
    ...(existsSync(QBOOT) ? ['-bios', QBOOT] : []),
    '-m',
    String(opts.memoryMiB ?? DEFAULT_MEMORY_MIB),
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-vga',
    'none',
    '-monitor',
    'none',
    '-serial',
    'stdio',
    // The guest's poweroff, reboot or panic (panic=-1) all end QEMU.
    '-no-reboot',
    '-kernel',
    opts.image.kernel,
    '-initrd',
    opts.image.initrd,
    '-append',
    opts.image.cmdline,
    '-fw_cfg',
    `name=opt/weft/script,file=${scriptPath}`,
    ...qemuNetArgs(opts.link, opts.mac),
  ];
  return new QemuGuest(opts.label ?? `QEMU guest (${opts.link.kind})`, opts.accel, command, dir, opts.timeoutMs ?? DEFAULT_BOOT_TIMEOUT_MS);
}
