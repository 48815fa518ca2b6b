// `weft relay --workers N`: the primary process. It owns the listening socket and nothing else: it
// reads each connection's request head, answers /healthz and /metrics itself, and hands every
// other connection — socket and the bytes already read — to one worker process, chosen by the
// client's IP (after --trust-proxy). One IP always lands on the same worker while that worker
// lives, so the per-IP limits (clients, stream rate, password tries, log throttle) stay exact
// without shared counters. The total --max-clients is checked here, from the counts the workers
// report. Workers that die are started again; their clients reconnect (weft's client does).
//
// Why not node:cluster's own balancing or SO_REUSEPORT: both spread connections by connection,
// not by client, so N workers would each allow a client its full per-IP quota.
//
// LAN rooms (--lan) are the exception: a room's members must meet in one worker, so a room's path
// (`<path>lan/<room>`) is routed by a hash of the room's name instead. Per-IP LAN bounds then hold
// per worker; --lan-max-rooms holds over all of them, each worker being told the rooms the others hold.

import { fork, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import type { EventLog } from '../log';
import { lanRoomOf } from './lan-rooms';
import { mergeExpositions } from './metrics-merge';
import type { RelayOptions } from './relay-options';

/** Environment variable that makes `weft relay` a worker (its value: the worker's index). */
export const WORKER_ENV = 'WEFT_RELAY_WORKER';

/** A request head larger than this is refused (431), as Node's own server does at 16 KiB. */
const MAX_HEAD_BYTES = 16 * 1024;
/** A connection that has not sent its whole request head by then is closed. */
const HEAD_TIMEOUT_MS = 10_000;
/** Connections whose head is still being read, at most; more are closed at once (slowloris). */
const MAX_PENDING_HEADS = 4096;
/** How long /metrics waits for a worker's numbers before leaving that worker out. */
const METRICS_TIMEOUT_MS = 1000;
/** A worker that dies is started again after this, doubling to MAX_RESTART_DELAY_MS while it keeps dying young. */
const RESTART_DELAY_MS = 500;
const MAX_RESTART_DELAY_MS = 10_000;
/** A worker that lived this long counts as healthy again: its next restart waits RESTART_DELAY_MS. */
const HEALTHY_AFTER_MS = 30_000;

/** Primary → worker. */
export type ToWorker =
  | { type: 'connection'; head: string }
  | { type: 'metrics'; id: number }
  | { type: 'lan-rooms-elsewhere'; n: number }
  | { type: 'lan-ip-rooms-elsewhere'; ip: string; n: number };
/** Worker → primary. */
export type FromWorker =
  | { type: 'ready' }
  | { type: 'clients'; n: number }
  | { type: 'lan-rooms'; n: number }
  | { type: 'lan-ip-rooms'; ip: string; n: number }
  | { type: 'metrics'; id: number; text: string };

interface Worker {
  index: number;
  child: ChildProcess;
  ready: boolean;
  clients: number;
  /** LAN rooms the worker holds (--lan). */
  rooms: number;
  /** Client IP → LAN rooms it is in on this worker (absent: none). */
  ipRooms: Map<string, number>;
  startedAt: number;
}

/** What the primary needs from the CLI that starts it. */
export interface RelayPrimaryHost {
  log: EventLog;
  /** argv of `weft relay` (without "relay"), given to each worker unchanged. */
  argv: readonly string[];
}

export class RelayPrimary {
  private readonly workers: Array<Worker | undefined>;
  private readonly restartDelay: number[];
  private readonly server: net.Server;
  private readonly pending = new Set<net.Socket>();
  private stopping = false;
  private restarts = 0;
  /** Connections handed to workers since start (for the idle GC after a burst). */
  handedOver = 0;
  private rejected = new Map<string, number>();
  private metricsId = 0;
  private readonly metricsWaiters = new Map<number, (worker: number, text: string) => void>();
  private readyWaiter: (() => void) | undefined;

  constructor(
    private readonly options: RelayOptions,
    private readonly deps: RelayPrimaryHost,
  ) {
    this.workers = new Array(options.workers).fill(undefined);
    this.restartDelay = new Array(options.workers).fill(RESTART_DELAY_MS);
    this.server = net.createServer((socket) => this.onConnection(socket));
  }

  /** Starts every worker, waits until each is ready, then listens. */
  async start(): Promise<{ host: string; port: number }> {
    const allReady = new Promise<void>((resolve) => (this.readyWaiter = resolve));
    for (let i = 0; i < this.workers.length; i++) this.spawn(i);
    await allReady;
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.options.port, this.options.host, () => {
        this.server.off('error', reject);
        const a = this.server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  get clientCount(): number {
    return this.workers.reduce((n, w) => n + (w?.clients ?? 0), 0);
  }

  /**
   * Stops listening and has every worker drain (SIGTERM: its streams closed with 0x02, its
   * WebSockets with 1001); resolves once all have exited, or after `deadlineMs` when the rest are
   * killed.
   */
  async stop(deadlineMs: number): Promise<void> {
    this.stopping = true;
    this.server.close();
    for (const s of this.pending) s.destroy();
    const live = this.workers.filter((w): w is Worker => w !== undefined && w.child.exitCode === null && w.child.signalCode === null);
    await Promise.all(
      live.map(
        (w) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => {
              w.child.kill('SIGKILL');
              resolve();
            }, deadlineMs);
            w.child.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            w.child.kill('SIGTERM');
          }),
      ),
    );
  }

  private spawn(index: number): void {
    const child = fork(process.argv[1], ['relay', ...this.deps.argv], {
      env: { ...process.env, [WORKER_ENV]: String(index) },
      execArgv: process.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const worker: Worker = { index, child, ready: false, clients: 0, rooms: 0, ipRooms: new Map(), startedAt: Date.now() };
    this.workers[index] = worker;
    this.deps.log('worker-started', { worker: index, pid: child.pid });
    child.on('message', (m: FromWorker) => this.onMessage(worker, m));
    // An IPC channel that breaks (the worker gone mid-send) must not take the primary down.
    child.on('error', (e) => this.deps.log('worker-error', { worker: index, message: e.message }));
    child.once('exit', (code, signal) => {
      worker.ready = false;
      worker.clients = 0;
      worker.rooms = 0;
      const ips = [...worker.ipRooms.keys()];
      worker.ipRooms.clear();
      if (this.workers[index] === worker) this.workers[index] = undefined;
      this.shareRooms();
      for (const ip of ips) this.shareIpRooms(ip);
      if (this.stopping) return;
      const lived = Date.now() - worker.startedAt;
      if (lived >= HEALTHY_AFTER_MS) this.restartDelay[index] = RESTART_DELAY_MS;
      const delay = this.restartDelay[index];
      this.restartDelay[index] = Math.min(MAX_RESTART_DELAY_MS, delay * 2);
      this.deps.log('worker-exit', { level: 'warn', worker: index, code, signal, restartInMs: delay });
      setTimeout(() => {
        if (this.stopping) return;
        this.restarts++;
        this.spawn(index);
      }, delay).unref();
    });
  }

  private onMessage(worker: Worker, m: FromWorker): void {
    if (m.type === 'ready') {
      worker.ready = true;
      // A worker (re)started knows nothing of the addresses' rooms on the others.
      for (const ip of new Set(this.workers.flatMap((w) => (w && w !== worker ? [...w.ipRooms.keys()] : [])))) this.shareIpRooms(ip, worker);
      if (this.readyWaiter && this.workers.every((w) => w?.ready)) {
        this.readyWaiter();
        this.readyWaiter = undefined;
      }
    } else if (m.type === 'clients') {
      worker.clients = m.n;
    } else if (m.type === 'lan-rooms') {
      worker.rooms = m.n;
      this.shareRooms();
    } else if (m.type === 'lan-ip-rooms') {
      if (m.n > 0) worker.ipRooms.set(m.ip, m.n);
      else worker.ipRooms.delete(m.ip);
      this.shareIpRooms(m.ip);
    } else if (m.type === 'metrics') {
      this.metricsWaiters.get(m.id)?.(worker.index, m.text);
    }
  }

  /** Tells each worker how many LAN rooms the others hold, for --lan-max-rooms over the whole relay. */
  private shareRooms(): void {
    if (!this.options.lan) return;
    const total = this.workers.reduce((n, w) => n + (w?.rooms ?? 0), 0);
    for (const w of this.workers) if (w) tell(w, { type: 'lan-rooms-elsewhere', n: total - w.rooms });
  }

  /**
   * Tells each worker (or just `only`) how many LAN rooms `ip` is in on the others, for
   * --lan-max-rooms-per-ip over the whole relay (a room lives on the worker its name hashes to).
   */
  private shareIpRooms(ip: string, only?: Worker): void {
    if (!this.options.lan) return;
    const total = this.workers.reduce((n, w) => n + (w?.ipRooms.get(ip) ?? 0), 0);
    for (const w of only ? [only] : this.workers) if (w) tell(w, { type: 'lan-ip-rooms-elsewhere', ip, n: total - (w.ipRooms.get(ip) ?? 0) });
  }

  private onConnection(socket: net.Socket): void {
    if (this.stopping || this.pending.size >= MAX_PENDING_HEADS) {
      socket.destroy();
      return;
    }
    this.pending.add(socket);
    let head: Buffer = Buffer.alloc(0);
    const done = () => {
      this.pending.delete(socket);
      clearTimeout(timer);
      socket.removeListener('data', onData);
    };
    const timer = setTimeout(() => {
      done();
      socket.destroy();
    }, HEAD_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      head = head.length === 0 ? chunk : Buffer.concat([head, chunk]);
      const end = head.indexOf('\r\n\r\n');
      if (end < 0) {
        if (head.length > MAX_HEAD_BYTES) {
          done();
          answer(socket, 431, 'Request Header Fields Too Large', 'request head too large\n');
        }
        return;
      }
      done();
      // Flowing mode: nothing waits in the stream's buffer; all that was read is in `head`.
      stopReading(socket);
      this.route(socket, head, head.subarray(0, end).toString('latin1'));
    };
    socket.on('data', onData);
    socket.on('error', () => {
      done();
      socket.destroy();
    });
  }

  private route(socket: net.Socket, raw: Buffer, headText: string): void {
    const lines = headText.split('\r\n');
    const target = lines[0].split(' ')[1] ?? '/';
    let pathname = '/';
    try {
      pathname = new URL(target, 'http://relay').pathname;
    } catch {
      // a target the worker's HTTP parser will answer 400 to
    }
    const forwardedFor: string[] = [];
    let upgrade = false;
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':');
      if (colon < 0) continue;
      const name = line.slice(0, colon).trim().toLowerCase();
      if (name === 'x-forwarded-for') forwardedFor.push(line.slice(colon + 1).trim());
      else if (name === 'upgrade') upgrade = true;
    }
    if (pathname === '/healthz') return this.healthz(socket);
    if (pathname === '/metrics') return void this.metrics(socket);
    const ip = this.options.trustProxy.clientAddress(socket.remoteAddress, forwardedFor.length > 0 ? forwardedFor : undefined);
    // A LAN room's members all go to the worker its name hashes to (a bad name: the worker answers 400).
    const room = this.options.lan ? lanRoomOf(pathname, this.options.path) : undefined;
    if (upgrade && (pathname === this.options.path || typeof room === 'string') && this.clientCount >= this.options.maxClients) {
      this.rejected.set('max-clients', (this.rejected.get('max-clients') ?? 0) + 1);
      return answer(socket, 503, 'Service Unavailable', 'Service Unavailable\n');
    }
    const worker = this.workerFor(typeof room === 'string' ? `lan/${room}` : ip);
    if (!worker) return answer(socket, 503, 'Service Unavailable', 'no relay worker is running\n');
    const msg: ToWorker = { type: 'connection', head: raw.toString('latin1') };
    try {
      this.handedOver++;
      worker.child.send(msg, socket, (e) => {
        if (e) socket.destroy();
      });
    } catch {
      socket.destroy();
    }
  }

  /**
   * The worker for a client IP (or a LAN room, `lan/<room>`): a stable hash, or the next ready
   * worker while that one restarts.
   */
  private workerFor(key: string): Worker | undefined {
    let h = 2166136261;
    for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 16777619) >>> 0;
    const n = this.workers.length;
    for (let k = 0; k < n; k++) {
      const w = this.workers[(h + k) % n];
      if (w?.ready && w.child.connected) return w;
    }
    return undefined;
  }

  private healthz(socket: net.Socket): void {
    const ready = this.workers.filter((w) => w?.ready).length;
    if (this.stopping || ready === 0) answer(socket, 503, 'Service Unavailable', this.stopping ? 'draining\n' : 'no worker ready\n');
    else answer(socket, 200, 'OK', ready === this.workers.length ? 'ok\n' : `ok (${ready} of ${this.workers.length} workers)\n`);
  }

  private async metrics(socket: net.Socket): Promise<void> {
    const id = ++this.metricsId;
    const live = this.workers.filter((w): w is Worker => w?.ready === true);
    const texts = new Map<number, string>();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, METRICS_TIMEOUT_MS);
      this.metricsWaiters.set(id, (worker, text) => {
        texts.set(worker, text);
        if (texts.size === live.length) {
          clearTimeout(timer);
          resolve();
        }
      });
      if (live.length === 0) resolve();
      // One that does not get it is counted as missing below.
      for (const w of live) tell(w, { type: 'metrics', id });
    });
    this.metricsWaiters.delete(id);
    const own = [
      '# HELP weft_relay_workers Worker processes, by state.',
      '# TYPE weft_relay_workers gauge',
      `weft_relay_workers{state="ready"} ${live.length}`,
      `weft_relay_workers{state="configured"} ${this.workers.length}`,
      `weft_relay_workers{state="answered_scrape"} ${texts.size}`,
      '# HELP weft_relay_worker_restarts_total Workers started again after they exited.',
      '# TYPE weft_relay_worker_restarts_total counter',
      `weft_relay_worker_restarts_total ${this.restarts}`,
      '# HELP weft_relay_rejected_upgrades_total WebSocket upgrades refused, by cause.',
      '# TYPE weft_relay_rejected_upgrades_total counter',
      ...[...this.rejected].map(([cause, n]) => `weft_relay_rejected_upgrades_total{cause="${cause}"} ${n}`),
    ].join('\n');
    const body = mergeExpositions([
      ...[...texts].sort((a, b) => a[0] - b[0]).map(([w, text]) => ({ worker: String(w), text })),
      { worker: 'primary', text: own },
    ]);
    answer(socket, 200, 'OK', body, 'text/plain; version=0.0.4; charset=utf-8');
  }
}

/**
 * Stops this process reading the socket at all, not just emitting 'data' (pause() only does the
 * latter; the handle keeps reading into the stream's buffer). Until the worker has taken the
 * handle and this process has closed its copy, both hold the descriptor: bytes the client sends
 * after the worker's 101 — its first Wisp packets — would otherwise be read here and lost.
 * net.Socket has no public way to do this; the handle's readStop is what pause() itself uses for
 * sockets created with an `onread` buffer. relay-workers.test.ts fails within a few connections
 * without it.
 */
function stopReading(socket: net.Socket): void {
  socket.pause();
  const handle = (socket as unknown as { _handle?: { readStop?: () => number; reading?: boolean } })._handle;
  if (handle?.readStop) {
    handle.reading = false;
    handle.readStop();
  }
}

function answer(socket: net.Socket, status: number, reason: string, body: string, type = 'text/plain'): void {
  socket.end(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: ${type}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** Sends a worker a message if its IPC channel is up; one going away misses it (a restarted worker is told its counts again). */
function tell(w: Worker, m: ToWorker): void {
  if (!w.child.connected) return;
  try {
    w.child.send(m);
  } catch {
    // the worker is going away
  }
}
