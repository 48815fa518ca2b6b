// `weft relay`: parse flags, listen, log a ready line, and drain on SIGTERM/SIGINT (exit ≤ 5 s).
// With --workers N the process that parses the command line becomes the primary (relay-primary.ts)
// and starts N copies of itself as workers, which serve the connections it hands them.

import type net from 'node:net';
import { jsonLineLog, type EventLog } from '../log';
import { RelayPrimary, WORKER_ENV, type FromWorker, type ToWorker } from './relay-primary';
import { parseRelayOptions, type RelayOptions } from './relay-options';
import { RelayServer } from './relay-server';
import { defaultDemoRoot } from './static-site';
import { collectAfterBursts, collectAfterStreamBursts } from './idle-gc';

/** How long open WebSockets get to close after SIGTERM before they are cut off. */
const DRAIN_GRACE_MS = 3000;
/** The hard limit: the process exits by then whatever is still open. */
const EXIT_DEADLINE_MS = 4500;

/** Runs until a signal; resolves with the exit code. Usage errors throw UsageError. */
export async function runRelayCommand(argv: readonly string[]): Promise<number> {
  const options = parseRelayOptions(argv);
  const log = jsonLineLog();
  const workerIndex = process.env[WORKER_ENV];
  if (workerIndex !== undefined && process.send) return runWorker(options, Number(workerIndex), log);
  if (options.workers > 1) return runPrimary(options, argv, log);
  const server = new RelayServer(options, { log, demoRoot: options.demo ? defaultDemoRoot() : undefined });
  let bound: { host: string; port: number };
  try {
    bound = await server.listen();
  } catch (e) {
    return cannotListen(options, e);
  }
  log('ready', readyFields(options, bound));
  const stopIdleGc = collectAfterStreamBursts(server.metrics, log);
  return untilStopped(['SIGTERM', 'SIGINT'], async (signal) => {
    stopIdleGc();
    const started = Date.now();
    log('draining', { signal, clients: server.clientCount });
    // Whatever happens in the drain, the process is gone within 5 seconds.
    setTimeout(() => {
      log('stopped', { forced: true, ms: Date.now() - started });
      process.exit(0);
    }, EXIT_DEADLINE_MS).unref();
    await server.drain(DRAIN_GRACE_MS);
    log('stopped', { ms: Date.now() - started });
  });
}

/**
 * Resolves with exit code 0 once the first of `events` (signals; 'disconnect' for a worker) has
 * happened and `stop` has finished; later ones change nothing.
 */
function untilStopped(events: readonly (NodeJS.Signals | 'disconnect')[], stop: (event: string) => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    let stopping = false;
    for (const event of events) {
      process.once(event, () => {
        if (stopping) return;
        stopping = true;
        stop(event).then(() => resolve(0));
      });
    }
  });
}

function cannotListen(options: RelayOptions, e: unknown): number {
  const err = e as NodeJS.ErrnoException;
  process.stderr.write(`weft relay: cannot listen on ${options.host}:${options.port}: ${err.code ?? ''} ${err.message}\n`);
  return 1;
}

function readyFields(options: RelayOptions, bound: { host: string; port: number }): Record<string, unknown> {
  const hostPart = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
  return {
    url: `http://${hostPart}:${bound.port}/`,
    wisp: `ws://${hostPart}:${bound.port}${options.path}`,
    port: bound.port,
    workers: options.workers,
    policy: {
      allowPrivate: options.policy.allowPrivate,
      allowLoopback: options.policy.allowLoopback,
      allow: options.policy.allow.map((e) => (e.kind === 'host' ? e.name : e.text)),
      deny: options.policy.deny.map((e) => (e.kind === 'host' ? e.name : e.text)),
    },
    auth: options.password ? 'password' : options.token ? 'token' : 'none',
    ...(options.lan ? { lan: `ws://${hostPart}:${bound.port}${options.path}lan/ROOM`, lanLimits: options.lan } : {}),
    ...(options.trustProxy.empty ? {} : { trustProxy: options.trustProxy.describe() }),
  };
}

/** The primary of `--workers N`: starts the workers, listens, and stops them on SIGTERM/SIGINT. */
async function runPrimary(options: RelayOptions, argv: readonly string[], log: EventLog): Promise<number> {
  const primary = new RelayPrimary(options, { log, argv });
  let bound: { host: string; port: number };
  try {
    bound = await primary.start();
  } catch (e) {
    await primary.stop(1000);
    return cannotListen(options, e);
  }
  log('ready', readyFields(options, bound));
  // The primary holds no clients, but reading 10,000 request heads grows its young generation too.
  const stopIdleGc = collectAfterBursts(
    () => primary.handedOver,
    () => 0,
    log,
  );
  return untilStopped(['SIGTERM', 'SIGINT'], async (signal) => {
    stopIdleGc();
    const started = Date.now();
    log('draining', { signal, clients: primary.clientCount });
    await primary.stop(EXIT_DEADLINE_MS);
    log('stopped', { ms: Date.now() - started });
  });
}

/** One worker of `--workers N`: serves the connections its primary hands over; never listens. */
async function runWorker(options: RelayOptions, index: number, baseLog: EventLog): Promise<number> {
  const log: EventLog = (event, fields = {}) => baseLog(event, { worker: index, ...fields });
  const send = (m: FromWorker) => {
    if (process.connected) process.send?.(m, undefined, undefined, () => undefined);
  };
  const server = new RelayServer(options, {
    log,
    demoRoot: options.demo ? defaultDemoRoot() : undefined,
    onClientCount: (n) => send({ type: 'clients', n }),
    onRoomCount: (n) => send({ type: 'lan-rooms', n }),
    onIpRoomCount: (ip, n) => send({ type: 'lan-ip-rooms', ip, n }),
  });
  const accept = server.serveHandedOver();
  process.on('message', (m: ToWorker, handle?: net.Socket) => {
    if (m.type === 'connection' && handle) accept(handle, Buffer.from(m.head, 'latin1'));
    else if (m.type === 'metrics') send({ type: 'metrics', id: m.id, text: server.metrics.render() });
    else if (m.type === 'lan-rooms-elsewhere' && server.lan) server.lan.roomsElsewhere = m.n;
    else if (m.type === 'lan-ip-rooms-elsewhere' && server.lan) {
      if (m.n > 0) server.lan.ipRoomsElsewhere.set(m.ip, m.n);
      else server.lan.ipRoomsElsewhere.delete(m.ip);
    }
  });
  const stopIdleGc = collectAfterStreamBursts(server.metrics, log);
  send({ type: 'ready' });
  // 'disconnect': the primary is gone (killed outright); nobody hands this worker connections any more.
  return untilStopped(['SIGTERM', 'SIGINT', 'disconnect'], async () => {
    stopIdleGc();
    setTimeout(() => process.exit(0), EXIT_DEADLINE_MS).unref();
    await server.drain(DRAIN_GRACE_MS);
    // The IPC channel would keep this process alive after the drain.
    if (process.connected) process.disconnect?.();
  });
}
