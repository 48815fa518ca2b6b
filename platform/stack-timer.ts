// The one driver of the stack's timers, for every host (weft vm in Node, the browser worker, tests):
// a monotonic clock, and exactly one timer kept at the stack's next deadline. Uses only what browsers
// and Node both have (performance, setTimeout), so core stays free of timers. The stack reads the time
// from the clock it was built with (core/clock.ts); this timer must be given the same clock, and only
// uses it to turn a deadline into a delay.

import type { Clock, Instant } from '../core/clock';

/**
 * Monotonic milliseconds with a fraction, on the epoch's scale (for pcap timestamps and logs). The
 * one host clock: its reading is where an Instant begins (platform takes only types from core).
 */
export const monotonicClock: Clock = { now: () => (performance.timeOrigin + performance.now()) as Instant };

/** setTimeout's longest delay; a later deadline is re-armed when this fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What the timer drives: the stack, or anything with its two timer methods. */
export interface Deadlines {
  /** Absolute time on the clock's scale, or undefined when nothing is scheduled. */
  nextDeadline(): Instant | undefined;
  /** Runs what is due; the target reads the time from its own clock. */
  poll(): void;
}

export class StackTimer {
  private timer: ReturnType<typeof setTimeout> | undefined;
  private armedFor: Instant | undefined;
  private stopped = false;

  /** `around`: runs each poll (the worker measures its busy time with it). */
  constructor(
    private readonly target: Deadlines,
    private readonly clock: Clock = monotonicClock,
    private readonly around: (work: () => void) => void = (work) => work(),
  ) {}

  /** Re-arms for the target's current next deadline; call after anything that may have moved it. */
  rearm(): void {
    if (this.stopped) return;
    const deadline = this.target.nextDeadline();
    if (deadline === this.armedFor && this.timer) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = deadline;
    if (deadline === undefined) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(deadline - this.clock.now())));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.armedFor = undefined;
      this.around(() => {
        this.target.poll();
        this.rearm();
      });
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
