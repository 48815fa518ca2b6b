import { describe, expect, it } from 'vitest';
import { TimerQueue, type TimerOwner } from '../../core/timer-queue';
import { instant, type Instant } from '../../core/clock';

function owner(fired: number[], next?: () => Instant | undefined): TimerOwner {
  return {
    onTimer: (now) => {
      fired.push(now);
      return next?.();
    },
  };
}

describe('TimerQueue', () => {
  it('fires owners in deadline order and reschedules from onTimer', () => {
    const q = new TimerQueue();
    const fired: number[] = [];
    let again = true;
    const a = owner(fired, () => {
      if (!again) return undefined;
      again = false;
      return instant(50);
    });
    q.schedule(a, instant(30));
    q.schedule(owner(fired), instant(10));
    q.run(instant(20));
    expect(fired).toEqual([20]);
    q.run(instant(30));
    q.run(instant(60));
    expect(fired).toEqual([20, 30, 60]);
    expect(q.nextDeadline()).toBeUndefined();
  });

  it('does not fire a cancelled owner, and compaction releases cancelled owners', () => {
    const q = new TimerQueue();
    const fired: number[] = [];
    const owners = Array.from({ length: 1000 }, () => owner(fired));
    owners.forEach((o, i) => {
      q.schedule(o, instant(1000 + i));
    });
    for (const o of owners.slice(0, 900)) q.cancel(o);
    expect(q.size).toBeLessThan(200); // stale entries were dropped, not kept until they expire
    q.run(instant(10_000));
    expect(fired).toHaveLength(100);
  });

  it('releases a few cancelled owners too, not only many (a stale entry keeps its owner alive)', () => {
    const q = new TimerQueue();
    const live = owner([]);
    q.schedule(live, instant(600_000));
    const closed = Array.from({ length: 5 }, () => owner([]));
    closed.forEach((o, i) => {
      q.schedule(o, instant(600_000 + i));
    });
    for (const o of closed) q.cancel(o);
    expect(q.size).toBeLessThanOrEqual(2);
  });

  it('keeps the queue small when one owner keeps moving its deadline earlier', () => {
    const q = new TimerQueue();
    const o = owner([]);
    for (let t = 100_000; t > 0; t -= 1) q.schedule(o, instant(t));
    expect(q.size).toBeLessThan(200);
  });
});
