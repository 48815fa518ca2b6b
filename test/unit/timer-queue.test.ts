import { describe, expect, it } from 'vitest';
import { TimerQueue, type TimerOwner } from '../../core/timer-queue';

function owner(fired: number[], next?: () => number | undefined): TimerOwner {
  return { onTimer: (now) => { fired.push(now); return next?.(); } };
}

describe('TimerQueue', () => {
  it('fires owners in deadline order and reschedules from onTimer', () => {
    const q = new TimerQueue();
    const fired: number[] = [];
    let again = true;
    const a = owner(fired, () => (again ? ((again = false), 50) : undefined));
    q.schedule(a, 30);
    q.schedule(owner(fired), 10);
    q.run(20);
    expect(fired).toEqual([20]);
    q.run(30);
    q.run(60);
    expect(fired).toEqual([20, 30, 60]);
    expect(q.nextDeadline()).toBeUndefined();
  });

  it('does not fire a cancelled owner, and compaction releases cancelled owners', () => {
    const q = new TimerQueue();
    const fired: number[] = [];
    const owners = Array.from({ length: 1000 }, () => owner(fired));
    owners.forEach((o, i) => q.schedule(o, 1000 + i));
    for (const o of owners.slice(0, 900)) q.cancel(o);
    expect(q.size).toBeLessThan(200); // stale entries were dropped, not kept until they expire
    q.run(10_000);
    expect(fired).toHaveLength(100);
  });

  it('releases a few cancelled owners too, not only many (a stale entry keeps its owner alive)', () => {
    const q = new TimerQueue();
    const live = owner([]);
    q.schedule(live, 600_000);
    const closed = Array.from({ length: 5 }, () => owner([]));
    closed.forEach((o, i) => q.schedule(o, 600_000 + i));
    for (const o of closed) q.cancel(o);
    expect(q.size).toBeLessThanOrEqual(2);
  });

  it('keeps the queue small when one owner keeps moving its deadline earlier', () => {
    const q = new TimerQueue();
    const o = owner([]);
    for (let t = 100_000; t > 0; t -= 1) q.schedule(o, t);
    expect(q.size).toBeLessThan(200);
  });
});
