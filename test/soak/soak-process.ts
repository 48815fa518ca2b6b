// A weft process under the soak (`weft vm` or `weft relay`), seen from outside: its fds and RSS from
// /proc, its post-GC heap from a preloaded probe, and its log lines counted as they stream.
//
// The heap: weft has no stats output, so its node runs with `--expose-gc --import <probe>`: a small
// preload (written to a temp dir, not part of weft) that every few seconds runs a full GC and prints
// process.memoryUsage() as a JSON line on weft's stderr ({"event":"soak-probe",…}). Post-GC heapUsed
// is the live heap, and arrayBuffers the packet and socket buffers outside it: what a leak grows.

import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { openFdCount } from '../harness/guest-tools';

/** Preloaded into weft's node (`--expose-gc --import`): prints post-GC memory figures on stderr. */
const PROBE_MJS = `
const every = Number(process.env.WEFT_SOAK_PROBE_MS) || 5000;
const probe = () => {
  if (typeof globalThis.gc === 'function') globalThis.gc();
  const m = process.memoryUsage();
  process.stderr.write(JSON.stringify({
    event: 'soak-probe', rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal,
    external: m.external, arrayBuffers: m.arrayBuffers, gc: typeof globalThis.gc === 'function',
  }) + '\\n');
};
setInterval(probe, every).unref();
setTimeout(probe, 200).unref();
`;

/** Writes the probe into `dir`; returns its path. */
export function writeProbe(dir: string): string {
  const path = join(dir, 'probe.mjs');
  writeFileSync(path, PROBE_MJS);
  return path;
}

/** The node arguments that load the probe (and, with a directory, let SIGUSR2 write a heap snapshot). */
export function probedNodeArgs(probe: string, heapSnapshotDir?: string): string[] {
  return [
    '--expose-gc',
    '--import',
    pathToFileURL(probe).href,
    ...(heapSnapshotDir ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${heapSnapshotDir}`] : []),
  ];
}

/** Starts `node <probe args> BUNDLE ARGS…` directly (for weft relay, which needs no TAP). */
export function spawnProbed(bundle: string, args: readonly string[], probe: string, sampleMs: number, heapSnapshotDir?: string): ChildProcess {
  return spawn(process.execPath, [...probedNodeArgs(probe, heapSnapshotDir), bundle, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, WEFT_SOAK_PROBE_MS: String(sampleMs) },
  });
}

interface ProbeLine {
  rss: number;
  heapUsed: number;
  heapTotal: number;
  arrayBuffers: number;
  gc: boolean;
}

/** One process's figures at one moment. */
export interface ProcessSample {
  fds: number;
  rss: number;
  /** From the last probe line (post-GC), or NaN before the first. */
  heapUsed: number;
  heapTotal: number;
  /** ArrayBuffer backing stores (outside the V8 heap, inside RSS), from the same probe line. */
  arrayBuffers: number;
}

/**
 * A probed weft process and its stderr, counted as it streams (a long soak logs far too many flow
 * lines to keep). Closes are `flow-close` lines from weft vm (--log-flows) and `stream-close` lines
 * from weft relay, by protocol.
 */
export class ProbedWeft {
  readonly closed = { tcp: 0, udp: 0 };
  closedByShutdown = 0;
  readonly closeReasons: Record<string, number> = {};
  /** weft relay: UDP streams that lost datagrams from their destination (dropped while the WebSocket was congested), and how many. */
  readonly udpDrops = { streams: 0, datagrams: 0 };
  probe: ProbeLine | undefined;
  probes = 0;
  /** The "ready" line (weft relay's has its port). */
  ready: Record<string, unknown> | undefined;
  stopped: Record<string, unknown> | undefined;
  /** How often each event was logged (everything but closes and probes). */
  readonly eventCounts: Record<string, number> = {};
  readonly warnings: string[] = [];
  /** Recent lines that are not closes or probes, for failure messages. */
  readonly tail: string[] = [];
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private partial = '';
  private readonly listeners = new Set<() => void>();

  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    copyTo?: string,
  ) {
    const copy = copyTo ? createWriteStream(copyTo) : undefined;
    if (copy) child.once('exit', () => copy.end());
    child.stderr!.setEncoding('utf8').on('data', (s: string) => {
      copy?.write(s);
      const lines = (this.partial + s).split('\n');
      this.partial = lines.pop() ?? '';
      for (const line of lines) this.line(line);
      this.notify();
    });
    child.stdout!.resume();
    child.once('exit', (code, signal) => {
      this.exit = { code, signal };
      this.notify();
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  private line(line: string): void {
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.keep(line);
      return;
    }
    const event = String(e.event);
    if (event === 'flow-close' || event === 'stream-close') {
      const protocol = String(e.protocol ?? e.type);
      if (protocol === 'tcp') this.closed.tcp++;
      else this.closed.udp++;
      const reason = `${protocol} ${String(e.reason ?? '(none)')}`;
      this.closeReasons[reason] = (this.closeReasons[reason] ?? 0) + 1;
      if (e.reason === 'shutdown') this.closedByShutdown++;
      if (typeof e.dropped === 'number' && e.dropped > 0) {
        this.udpDrops.streams++;
        this.udpDrops.datagrams += e.dropped;
      }
      return;
    }
    if (event === 'soak-probe') {
      this.probe = e as unknown as ProbeLine;
      this.probes++;
      return;
    }
    this.eventCounts[event] = (this.eventCounts[event] ?? 0) + 1;
    if (event === 'ready') this.ready = e;
    if (event === 'stopped') this.stopped = e;
    if (event === 'warning' || event === 'error') this.warnings.push(line);
    this.keep(line);
  }

  private keep(line: string): void {
    this.tail.push(line);
    if (this.tail.length > 40) this.tail.shift();
  }

  private notify(): void {
    for (const f of [...this.listeners]) f();
  }

  /** fds and RSS now, heap and buffers from the last probe line. Throws if the process is gone. */
  sample(): ProcessSample {
    return {
      fds: openFdCount(this.pid),
      rss: rssOf(this.pid),
      heapUsed: this.probe?.heapUsed ?? NaN,
      heapTotal: this.probe?.heapTotal ?? NaN,
      arrayBuffers: this.probe?.arrayBuffers ?? NaN,
    };
  }

  /** Resolves once `cond()` holds (checked on every log line, every 250 ms and at exit), or rejects after `timeoutMs`. */
  until(cond: () => boolean, what: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const check = () => {
        if (cond()) {
          done();
          resolve();
        } else if (this.exit) {
          done();
          reject(new Error(`${this.name} exited (${JSON.stringify(this.exit)}) while waiting for ${what}:\n${this.tail.join('\n')}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeoutMs} ms (${this.name}):\n${this.tail.join('\n')}`));
      }, timeoutMs);
      const poll = setInterval(check, 250); // conditions on other state than log lines
      const done = () => {
        clearTimeout(timer);
        clearInterval(poll);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
    });
  }

  /** Sends a signal by PID if the process still runs. */
  kill(signal: NodeJS.Signals): void {
    if (this.exit) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // gone meanwhile
    }
  }
}

export function rssOf(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]) * 1024;
}
