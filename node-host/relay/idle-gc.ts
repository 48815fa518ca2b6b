// Gives memory back after a burst of new streams or clients. While thousands of them open, V8 grows
// its young generation (up to 3 x 16 MiB) because most of what it allocates then survives; it
// shrinks it again only at a garbage collection made while allocation is low, which on a relay that
// then sits with its clients idle may be minutes away — until then that is most of the relay's RSS
// growth (10,000 idle streams: ~66 MiB, ~29 MiB of it after a full GC; 10,000 clients without
// streams: 11 KiB each as they sit, 8 KiB after a GC). So once BURST or more streams and WebSocket
// clients have opened since the last such collection, and then a whole check interval passes with
// nothing new and little traffic, the relay runs one full GC (tens of milliseconds for such a heap).
// The primary of --workers runs the same check on the connections it hands over.

import type { EventLog } from '../log';
import type { RelayMetrics } from './relay-metrics';

const CHECK_MS = 5_000;
const BURST = 1_000;
/** Bytes relayed in one interval below which the relay counts as quiet. */
const QUIET_BYTES = 1024 * 1024;

/** Node's gc(), there when node runs with --expose-gc (bin/weft.js passes it). */
function fullGc(): (() => void) | undefined {
  const g = globalThis as { gc?: () => void };
  return typeof g.gc === 'function' ? g.gc : undefined;
}

/** Starts the check on a relay's metrics (an unref'd timer); returns a function that stops it. */
export function collectAfterStreamBursts(metrics: RelayMetrics, log?: EventLog): () => void {
  return collectAfterBursts(
    () => metrics.streamsTotal.tcp + metrics.streamsTotal.udp + metrics.connectionsTotal,
    () => metrics.bytes.upload + metrics.bytes.download,
    log,
  );
}

/** The check on any count of things opened and bytes moved (both only grow). */
export function collectAfterBursts(opened: () => number, moved: () => number, log?: EventLog): () => void {
  const gc = fullGc();
  if (!gc) {
    log?.('idle-gc-off', { message: 'node runs without --expose-gc: memory after bursts of clients is given back only when V8 decides' });
    return () => {};
  }
  let atLastGc = opened();
  let lastOpened = atLastGc;
  let lastMoved = moved();
  const timer = setInterval(() => {
    const o = opened();
    const m = moved();
    const quiet = o === lastOpened && m - lastMoved < QUIET_BYTES;
    lastOpened = o;
    lastMoved = m;
    if (!quiet || o - atLastGc < BURST) return;
    const streams = o - atLastGc;
    atLastGc = o;
    const started = performance.now();
    gc();
    log?.('idle-gc', { opened: streams, ms: Math.round(performance.now() - started), rssMiB: Math.round(process.memoryUsage.rss() / 2 ** 20) });
  }, CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
