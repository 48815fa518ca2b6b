// A running `weft` process seen from a test: its JSON log lines (stderr), waits with timeouts,
// and its exit. Plain text lines (usage errors) are kept too.

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { WeftCapture } from './weft-capture';
import { weftBundle } from './weft-bundle';

export interface WeftEvent {
  event: string;
  [field: string]: unknown;
}
export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class WeftProcess {
  readonly events: WeftEvent[] = [];
  stderr = '';
  stdout = '';
  exit: ExitInfo | undefined;
  /** The pcap this process writes and the check that runs when it stops (weft-capture.ts), if any. */
  capture: WeftCapture | undefined;
  private readonly exited: Promise<ExitInfo>;
  private waiters: Array<() => void> = [];
  private partial = '';

  constructor(readonly child: ChildProcess) {
    child.stderr?.setEncoding('utf8');
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (s: string) => (this.stdout += s));
    child.stderr?.on('data', (s: string) => {
      this.stderr += s;
      const lines = (this.partial + s).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) {
        if (!line.startsWith('{')) continue;
        try {
          this.events.push(JSON.parse(line) as WeftEvent);
        } catch {
          // not a log line
        }
      }
      this.notify();
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        this.notify();
        resolve(this.exit);
      });
      child.once('error', () => {
        this.exit ??= { code: null, signal: null };
        this.notify();
        resolve(this.exit);
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves with the first log event named `name` that matches; rejects on timeout or exit. */
  waitForEvent(name: string, match: (e: WeftEvent) => boolean = () => true, timeoutMs = 10_000): Promise<WeftEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new Error(`no "${name}" event from weft within ${timeoutMs} ms; stderr:\n${this.stderr}`));
      }, timeoutMs);
      const check = () => {
        const found = this.events.find((e) => e.event === name && match(e));
        if (found) {
          clearTimeout(timer);
          resolve(found);
        } else if (this.exit) {
          clearTimeout(timer);
          reject(new Error(`weft exited (${JSON.stringify(this.exit)}) before a "${name}" event; stderr:\n${this.stderr}`));
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }

  /** Resolves with the exit status and how long it took, or rejects after `timeoutMs`. */
  async waitForExit(timeoutMs = 5_000): Promise<ExitInfo & { elapsedMs: number }> {
    const start = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`weft did not exit within ${timeoutMs} ms`)), timeoutMs);
    });
    try {
      const info = await Promise.race([this.exited, timeout]);
      return { ...info, elapsedMs: performance.now() - start };
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends `signal` to this process by PID, if it is still running. */
  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (this.exit || this.child.pid === undefined) return;
    try {
      process.kill(this.child.pid, signal);
    } catch {
      // already gone
    }
  }
}

/** Starts `node dist/weft.js ARGS…`, with the node flags bin/weft.js gives it. */
export function spawnWeft(args: readonly string[], options: SpawnOptions = {}): WeftProcess {
  return new WeftProcess(spawn(process.execPath, ['--expose-gc', weftBundle(), ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...options }));
}

/** Starts an arbitrary command whose final exec is weft (e.g. through the TAP launcher). */
export function spawnWrappedWeft(command: string, args: readonly string[], options: SpawnOptions = {}): WeftProcess {
  return new WeftProcess(spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options }));
}
