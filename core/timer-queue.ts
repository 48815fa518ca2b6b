// One min-heap of deadlines for many timer owners (TCP connections, UDP flows), so nextDeadline()
// costs O(1) however many flows exist. Entries are lazy: an owner whose deadline moves later keeps
// its earlier entry, which fires early, finds nothing due, and reschedules. Only a deadline that
// moves *earlier* pushes a new entry, which keeps the heap near one entry per owner.

export interface TimerOwner {
  /** Runs whatever is due at `now`; returns the owner's next deadline, or undefined for none. */
  onTimer(now: number): number | undefined;
  /** Earliest entry this owner has in the queue; managed by the queue. */
  timerScheduledAt?: number;
}

interface Entry {
  at: number;
  owner: TimerOwner;
}

export class TimerQueue {
  private readonly heap: Entry[] = [];

  /** `onEarlier` is told when the earliest deadline moves earlier (so a driver can re-arm its timer). */
  constructor(private readonly onEarlier?: (at: number) => void) {}

  get size(): number {
    return this.heap.length;
  }

  /** Makes sure `owner` is called no later than `at`. */
  schedule(owner: TimerOwner, at: number | undefined): void {
    if (at === undefined) return;
    if (owner.timerScheduledAt !== undefined && owner.timerScheduledAt <= at) return;
    owner.timerScheduledAt = at;
    const head = this.heap.length > 0 ? this.heap[0].at : Infinity;
    this.push({ at, owner });
    if (at < head && this.onEarlier) this.onEarlier(at);
  }

  nextDeadline(): number | undefined {
    return this.heap.length > 0 ? this.heap[0].at : undefined;
  }

  /** Fires every entry due at `now`. */
  run(now: number): void {
    while (this.heap.length > 0 && this.heap[0].at <= now) {
      const { at, owner } = this.pop();
      if (owner.timerScheduledAt !== at) continue; // a stale duplicate of a later or earlier entry
      owner.timerScheduledAt = undefined;
      this.schedule(owner, owner.onTimer(now));
    }
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
