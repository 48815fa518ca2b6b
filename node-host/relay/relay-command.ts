// `weft relay`: parse flags, listen, log a ready line, and drain on SIGTERM/SIGINT (exit ≤ 5 s).

import { jsonLineLog } from '../log';
import { parseRelayOptions } from './relay-options';
import { RelayServer } from './relay-server';
import { defaultDemoRoot } from './static-site';
import { collectAfterStreamBursts } from './idle-gc';

/** How long open WebSockets get to close after SIGTERM before they are cut off. */
const DRAIN_GRACE_MS = 3000;
/** The hard limit: the process exits by then whatever is still open. */
const EXIT_DEADLINE_MS = 4500;

/** Runs until a signal; resolves with the exit code. Usage errors throw UsageError. */
export async function runRelayCommand(argv: readonly string[]): Promise<number> {
  const options = parseRelayOptions(argv);
  const log = jsonLineLog();
  const server = new RelayServer(options, { log, demoRoot: options.demo ? defaultDemoRoot() : undefined });
  let bound: { host: string; port: number };
  try {
    bound = await server.listen();
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    process.stderr.write(`weft relay: cannot listen on ${options.host}:${options.port}: ${err.code ?? ''} ${err.message}\n`);
    return 1;
  }
  const hostPart = bound.host.includes(':') ? `[${bound.host}]` : bound.host;
  log('ready', {
    url: `http://${hostPart}:${bound.port}/`,
    wisp: `ws://${hostPart}:${bound.port}${options.path}`,
    port: bound.port,
    policy: {
      allowPrivate: options.policy.allowPrivate,
      allowLoopback: options.policy.allowLoopback,
      allow: options.policy.allow.map((e) => (e.kind === 'host' ? e.name : e.text)),
      deny: options.policy.deny.map((e) => (e.kind === 'host' ? e.name : e.text)),
    },
    auth: options.password ? 'password' : options.token ? 'token' : 'none',
  });
  const stopIdleGc = collectAfterStreamBursts(server.metrics, log);

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      stopIdleGc();
      const started = Date.now();
      log('draining', { signal, clients: server.clientCount });
      // Whatever happens in the drain, the process is gone within 5 seconds.
      setTimeout(() => {
        log('stopped', { forced: true, ms: Date.now() - started });
        process.exit(0);
      }, EXIT_DEADLINE_MS).unref();
      server.drain(DRAIN_GRACE_MS).then(() => {
        log('stopped', { ms: Date.now() - started });
        resolve(0);
      });
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}
