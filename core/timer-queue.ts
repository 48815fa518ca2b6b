// One min-heap of deadlines for many timer owners (TCP connections, UDP flows), so nextDeadline()
// costs O(1) however many flows exist. Entries are lazy: an owner whose deadline moves later keeps
// its earlier entry, which fires early, finds nothing due, and reschedules. Only a deadline that
// moves *earlier* pushes a new entry, which keeps the heap near one entry per owner.

import type { Instant } from './clock';

export interface TimerOwner {
  /** Runs whatever is due at `now`; returns the owner's next deadline, or undefined for none. */
  onTimer(now: Instant): Instant | undefined;
  /** Earliest entry this owner has in the queue; managed by the queue. */
  timerScheduledAt?: Instant;
}

interface Entry {
  at: Instant;
  owner: TimerOwner;
}

export class TimerQueue {
  private heap: Entry[] = [];
  /** Entries known to be superseded (their owner has an earlier one, or was cancelled). */
  private stale = 0;

  /** `onEarlier` is told when the earliest deadline moves earlier (so a driver can re-arm its timer). */
  constructor(private readonly onEarlier?: (at: Instant) => void) {}

  get size(): number {
    return this.heap.length;
  }

  /** Makes sure `owner` is called no later than `at`. */
  schedule(owner: TimerOwner, at: Instant | undefined): void {
    if (at === undefined) return;
    if (owner.timerScheduledAt !== undefined && owner.timerScheduledAt <= at) return;
    if (owner.timerScheduledAt !== undefined) this.stale++;
    owner.timerScheduledAt = at;
    this.compact();
    const head = this.heap.length > 0 ? this.heap[0].at : Infinity;
    this.push({ at, owner });
    if (at < head && this.onEarlier) this.onEarlier(at);
  }

  /**
   * The owner is gone (a closed connection): its entries no longer fire, and compaction drops them
   * so the queue does not keep the owner — and its buffers — alive until they would have fired.
   */
  cancel(owner: TimerOwner): void {
    if (owner.timerScheduledAt === undefined) return;
    owner.timerScheduledAt = undefined;
    this.stale++;
    this.compact();
  }

  nextDeadline(): Instant | undefined {
    return this.heap.length > 0 ? this.heap[0].at : undefined;
  }

  /** Fires every entry due at `now`. */
  run(now: Instant): void {
    while (this.heap.length > 0 && this.heap[0].at <= now) {
      const { at, owner } = this.pop();
      if (owner.timerScheduledAt !== at) {
        // A stale duplicate of a later or earlier entry, or of a cancelled owner.
        this.stale = Math.max(0, this.stale - 1);
        continue;
      }
      owner.timerScheduledAt = undefined;
      this.schedule(owner, owner.onTimer(now));
    }
  }

  /**
   * Rebuilds the heap without stale entries once they are half of it — however small it is: a
   * stale entry keeps its owner (a closed connection and its buffers) reachable until it expires.
   * Each rebuild removes at least half the heap, so the cost per entry stays constant.
   */
  private compact(): void {
    if (this.stale === 0 || this.stale * 2 < this.heap.length) return;
    const live = this.heap.filter((e) => e.owner.timerScheduledAt === e.at);
    this.heap = [];
    this.stale = 0;
    for (const e of live) this.push(e);
  }

  private push(e: Entry): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent].at <= e.at) break;
      h[i] = h[parent];
      i = parent;
    }
    h[i] = e;
  }

  private pop(): Entry {
    const h = this.heap;
    const top = h[0];
    const last = h.pop() as Entry;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const c = r < h.length && h[r].at < h[l].at ? r : l;
        if (h[c].at >= last.at) break;
        h[i] = h[c];
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}
