// Linux network namespaces as test guests: a real kernel stack (DHCP client, ping, arping) on a
// TAP whose other end is weft. Everything created here is deleted by cleanup(), which runs from
// afterAll and again, synchronously, on process exit and SIGINT/SIGTERM.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { HARNESS_DIR } from './repo-root';
import { describeScan } from './pcap-tcp-check';
import { recordCaptureProblems, WeftCapture } from './weft-capture';
import { weftBundle } from './weft-bundle';
import { spawnWrappedWeft, type WeftProcess } from './weft-process';

export const TAP_LAUNCHER = join(HARNESS_DIR, 'tap-launcher.py');
export const DGRAM_BRIDGE = join(HARNESS_DIR, 'dgram-bridge.py');
export const UDHCPC_SCRIPT = join(HARNESS_DIR, 'udhcpc-script.sh');

export interface RootCheck {
  ok: boolean;
  reason?: string;
}

/** Whether this suite can create namespaces and TAPs; prints why not when it cannot. */
export function requireRoot(suite: string): RootCheck {
  let reason: string | undefined;
  if (process.platform !== 'linux') reason = 'needs Linux network namespaces';
  else if (process.getuid?.() !== 0) reason = 'needs root (network namespaces and TAP devices)';
  else if (!existsSync('/dev/net/tun')) reason = '/dev/net/tun is missing';
  if (reason) console.warn(`[skip] ${suite}: ${reason}`);
  return reason ? { ok: false, reason } : { ok: true };
}

export interface ExecResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Runs a command to completion with captured output; kills it (by PID) after `timeoutMs`. */
export function run(cmd: string, args: readonly string[], timeoutMs = 20_000): Promise<ExecResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const timer = setTimeout(() => {
      timedOut = true;
      killQuietly(child);
    }, timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve({ code: null, signal: null, stdout, stderr: stderr + e.message, timedOut });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, timedOut });
    });
  });
}

export function netnsExists(name: string): boolean {
  const list = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' });
  return list.split('\n').some((line) => line.split(' ')[0] === name);
}

function isRunning(p: ChildProcess): boolean {
  return p.pid !== undefined && p.exitCode === null && p.signalCode === null;
}

/** SIGKILL by PID; a process that exited since isRunning() looked (ESRCH) is fine. */
function killQuietly(p: ChildProcess): void {
  if (p.pid === undefined) return;
  try {
    process.kill(p.pid, 'SIGKILL');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
  }
}

const live = new Set<Netns>();
let counter = 0;
let hooksInstalled = false;

function installExitHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', () => {
    for (const ns of live) ns.cleanupSync();
  });
  const onSignal = (signal: NodeJS.Signals) => {
    for (const ns of live) ns.cleanupSync();
    process.off(signal, onSignal);
    if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/** How long cleanup() gives a captured weft to stop on SIGTERM (flushing its pcap) before SIGKILL. */
const CAPTURE_STOP_MS = 5_000;

export class Netns {
  private readonly processes = new Set<ChildProcess>();
  /** weft processes started here whose capture is checked at cleanup(). */
  private readonly captured = new Set<WeftProcess>();
  private deleted = false;

  private constructor(readonly name: string) {}

  /** Creates `weft-LABEL-PID-N` with IPv6 off (no MLD/DAD/RS noise) and loopback up. */
  static create(label: string): Netns {
    const ns = new Netns(`weft-${label}-${process.pid}-${++counter}`);
    installExitHooks();
    execFileSync('ip', ['netns', 'add', ns.name]);
    live.add(ns);
    try {
      ns.execSync(['sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1', 'net.ipv6.conf.all.disable_ipv6=1']);
      ns.execSync(['ip', 'link', 'set', 'lo', 'up']);
    } catch (e) {
      ns.cleanupSync();
      throw e;
    }
    return ns;
  }

  private execSync(cmd: readonly string[]): string {
    return execFileSync('ip', ['netns', 'exec', this.name, ...cmd], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /** Runs `cmd` inside the namespace with a timeout and captured output. */
  exec(cmd: readonly string[], timeoutMs = 20_000): Promise<ExecResult> {
    return run('ip', ['netns', 'exec', this.name, ...cmd], timeoutMs);
  }

  /** Remembers a process so cleanup() kills it (by PID) if it is still running. */
  track<T extends ChildProcess>(p: T): T {
    this.processes.add(p);
    p.once('exit', () => this.processes.delete(p));
    return p;
  }

  /** Raises the TAP's queue (weft may be briefly slow to read) and brings it up. */
  async bringUpTap(tap = 'tap0'): Promise<void> {
    const r = await this.exec(['ip', 'link', 'set', 'dev', tap, 'txqueuelen', '10000', 'up']);
    if (r.code !== 0) throw new Error(`cannot bring up ${tap} in ${this.name}: ${r.stderr}`);
  }

  async linkExists(dev: string): Promise<boolean> {
    return (await this.exec(['ip', 'link', 'show', 'dev', dev])).code === 0;
  }

  async macOf(dev: string): Promise<string> {
    const r = await this.exec(['cat', `/sys/class/net/${dev}/address`]);
    if (r.code !== 0) throw new Error(`no MAC for ${dev}: ${r.stderr}`);
    return r.stdout.trim();
  }

  /**
   * `weft vm --tap-fd 3 ARGS…` on a new TAP in this namespace (weft itself stays in ours).
   * `vnetHdr`: open the TAP with IFF_VNET_HDR and checksum/TSO offload and run weft with
   * `--tap-vnet-hdr` (64 KiB TCP segments both ways).
   * `capture`: weft writes a pcap (header-only unless ARGS name one with --pcap) that cleanup()
   * scans for bytes past weft's FIN (weft-capture.ts). Default: on under vitest, off elsewhere
   * (benchmarks measure throughput).
   */
  async spawnWeftOnTap(
    weftArgs: readonly string[],
    tap = 'tap0',
    opts: { vnetHdr?: boolean; capture?: boolean; alsoOn?: readonly Netns[] } = {},
  ): Promise<WeftProcess> {
    const captured = (opts.capture ?? process.env.VITEST !== undefined) ? WeftCapture.forArgs(weftArgs) : undefined;
    // `alsoOn`: more guests on the same LAN — one launcher per namespace, nested, each opening its
    // namespace's TAP as the next fd (3, 4, …) and passing the ones before it on.
    const nets: Netns[] = [this, ...(opts.alsoOn ?? [])];
    const launchers = nets.flatMap((ns, i) => [
      ...(i > 0 ? ['python3'] : []),
      TAP_LAUNCHER,
      '--netns',
      ns.name,
      '--tap',
      tap,
      '--fd',
      String(3 + i),
      ...(opts.vnetHdr ? ['--vnet-hdr'] : []),
      '--',
    ]);
    const weft = spawnWrappedWeft('python3', [
      ...launchers,
      process.execPath,
      weftBundle(),
      'vm',
      ...nets.flatMap((_, i) => ['--tap-fd', String(3 + i)]),
      ...(opts.vnetHdr ? ['--tap-vnet-hdr'] : []),
      ...(captured?.args ?? weftArgs),
    ]);
    this.track(weft.child);
    if (captured) {
      weft.capture = captured.capture;
      this.captured.add(weft);
    }
    await weft.waitForEvent('ready');
    for (const ns of nets) await ns.bringUpTap(tap);
    return weft;
  }

  /**
   * Stops captured weft processes with SIGTERM (so their pcaps are complete) and checks those
   * captures, kills what is still running (by PID), waits for it, and deletes the namespace.
   * Problems in a capture that no test has reported yet are recorded for the file's afterAll
   * (vitest-setup.ts) rather than thrown, so the caller's own cleanup still runs. Idempotent.
   */
  async cleanup(): Promise<void> {
    const captured = [...this.captured];
    this.captured.clear();
    await Promise.all(
      captured.map(async (weft) => {
        weft.kill('SIGTERM');
        await weft.waitForExit(CAPTURE_STOP_MS).catch(() => undefined);
      }),
    );
    const running = [...this.processes].filter(isRunning);
    for (const p of running) killQuietly(p);
    await Promise.all(
      running.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (!isRunning(p)) return resolve();
            const t = setTimeout(resolve, 2000);
            p.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
          }),
      ),
    );
    for (const weft of captured) {
      const report = await weft.capture!.check(weft);
      if (report.scan) console.log(`weft's capture ${report.path}: ${describeScan(report.scan)}`);
      if (!weft.capture!.reported) {
        weft.capture!.reported = true;
        recordCaptureProblems(report);
      }
    }
    this.deleteNamespace();
  }

  /** The same for process exit handlers, where nothing asynchronous runs. */
  cleanupSync(): void {
    for (const p of this.processes) if (isRunning(p)) killQuietly(p);
    for (const weft of this.captured) weft.capture?.discardSync();
    this.deleteNamespace();
  }

  private deleteNamespace(): void {
    if (this.deleted) return;
    try {
      execFileSync('ip', ['netns', 'del', this.name], { stdio: 'ignore' });
    } catch {
      // already gone; netnsExists() tells the truth either way
    }
    this.deleted = true;
    live.delete(this);
  }
}

/** Resolves when `child` prints a line matching `pattern` on stdout; rejects on exit or timeout. */
export function waitForStdout(child: ChildProcess, pattern: RegExp, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    let stderr = '';
    const onData = (s: Buffer) => {
      seen += s.toString();
      const line = seen.split('\n').find((l) => pattern.test(l));
      if (line !== undefined) done(() => resolve(line));
    };
    const onErr = (s: Buffer) => (stderr += s.toString());
    const onExit = (code: number | null) => done(() => reject(new Error(`exited with ${code} before ${pattern}; stderr: ${stderr}`)));
    const timer = setTimeout(() => done(() => reject(new Error(`no ${pattern} within ${timeoutMs} ms; stderr: ${stderr}`))), timeoutMs);
    const done = (f: () => void) => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      f();
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onErr);
    child.once('exit', onExit);
  });
}
