// The relay's full GC after a burst of new streams (node-host/relay/idle-gc.ts): once 1,000 streams
// have opened and then an interval passes with no new stream and little traffic — not before, not
// while traffic flows, and not again until the next burst.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { collectAfterStreamBursts } from '../../node-host/relay/idle-gc';
import { RelayMetrics } from '../../node-host/relay/relay-metrics';

describe('collectAfterStreamBursts', () => {
  const g = globalThis as { gc?: () => void };
  const saved = g.gc;
  afterEach(() => {
    vi.useRealTimers();
    g.gc = saved;
  });

  it('collects once a burst of streams has gone quiet, and not while bytes flow', () => {
    vi.useFakeTimers();
    const gc = vi.fn();
    g.gc = gc;
    const metrics = new RelayMetrics();
    const events: string[] = [];
    const stop = collectAfterStreamBursts(metrics, (event) => events.push(event));
    metrics.streamsTotal.tcp += 999;
    vi.advanceTimersByTime(15_000);
    expect(gc).not.toHaveBeenCalled(); // fewer than 1,000 new streams
    metrics.streamsTotal.tcp += 1;
    vi.advanceTimersByTime(5_000); // streams opened during this interval
    expect(gc).not.toHaveBeenCalled();
    metrics.bytes.download += 10 * 1024 * 1024;
    vi.advanceTimersByTime(5_000); // traffic
    expect(gc).not.toHaveBeenCalled();
    vi.advanceTimersByTime(5_000); // quiet
    expect(gc).toHaveBeenCalledTimes(1);
    expect(events).toEqual(['idle-gc']);
    vi.advanceTimersByTime(60_000);
    expect(gc).toHaveBeenCalledTimes(1); // no new burst
    stop();
  });
});
