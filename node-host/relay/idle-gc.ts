// Gives memory back after a burst of new streams. While thousands of streams open, V8 grows its
// young generation (up to 3 x 16 MiB) because most of what it allocates then survives; it shrinks it
// again only at a garbage collection made while allocation is low, which on a relay that then sits
// with its streams idle may be minutes away — until then that is most of the relay's RSS growth
// (10,000 idle streams: ~66 MiB, ~29 MiB of it after a full GC). So once BURST_STREAMS or more
// streams have opened since the last such collection, and then a whole check interval passes with
// no new stream and little traffic, the relay runs one full GC (tens of milliseconds for such a heap).

import type { EventLog } from '../log';
import type { RelayMetrics } from './relay-metrics';

const CHECK_MS = 5_000;
const BURST_STREAMS = 1_000;
/** Bytes relayed in one interval below which the relay counts as quiet. */
const QUIET_BYTES = 1024 * 1024;

/** Node's gc(), there when node runs with --expose-gc (bin/weft.js passes it). */
function fullGc(): (() => void) | undefined {
  const g = globalThis as { gc?: () => void };
  return typeof g.gc === 'function' ? g.gc : undefined;
}

/** Starts the check (an unref'd timer); returns a function that stops it. */
export function collectAfterStreamBursts(metrics: RelayMetrics, log?: EventLog): () => void {
  const gc = fullGc();
  if (!gc) {
    log?.('idle-gc-off', { message: 'node runs without --expose-gc: memory after stream bursts is given back only when V8 decides' });
    return () => {};
  }
  const opened = () => metrics.streamsTotal.tcp + metrics.streamsTotal.udp;
  const moved = () => metrics.bytes.upload + metrics.bytes.download;
  let atLastGc = opened();
  let lastOpened = atLastGc;
  let lastMoved = moved();
  const timer = setInterval(() => {
    const o = opened();
    const m = moved();
    const quiet = o === lastOpened && m - lastMoved < QUIET_BYTES;
    lastOpened = o;
    lastMoved = m;
    if (!quiet || o - atLastGc < BURST_STREAMS) return;
    const streams = o - atLastGc;
    atLastGc = o;
    const started = performance.now();
    gc();
    log?.('idle-gc', { streamsOpened: streams, ms: Math.round(performance.now() - started), rssMiB: Math.round(process.memoryUsage.rss() / 2 ** 20) });
  }, CHECK_MS);
  timer.unref();
  return () => clearInterval(timer);
}
