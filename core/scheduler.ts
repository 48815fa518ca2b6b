// For the few core pieces that must act later on their own (the Wisp upstream reconnects and
// times out streams): scheduling is passed in, like the clock, so core itself starts no timers.

export type TimerHandle = unknown;

export interface Scheduler {
  /** Runs `fn` after `delayMs`. */
  schedule(fn: () => void, delayMs: number): TimerHandle;
  cancel(handle: TimerHandle): void;
  /** Runs `fn` after the current call stack unwinds (a microtask where there is one). */
  defer(fn: () => void): void;
}
