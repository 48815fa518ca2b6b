// Time in core has one source: the monotonic Clock the host injects (platform/stack-timer.ts has the one
// hosts use). The parts that are reached from outside — the Stack's entry points, upstream callbacks,
// the Wisp upstream — read it; the state machines they own (reassembly, ARP, DHCP, DNS, timer owners,
// Wisp sessions) take `now` as an argument from them. Nothing in core takes the time from its host, so
// no caller can hand two parts of the stack two different clocks. Monotonic, because deadlines (RTO,
// keep-alive, TIME_WAIT, leases) must not move when the wall clock is stepped.

/**
 * A point in time: milliseconds on the injected Clock's scale (a fraction is allowed). Branded, at no
 * run-time cost, so that a duration (an RTO, a `…Ms` setting) or a wall-clock `Date.now()` cannot
 * be passed where a deadline or a clock reading is expected: deadlines are made with after().
 * Durations stay plain numbers, and `b - a` of two instants is one.
 */
export type Instant = number & { readonly __brand: 'Instant' };

/** A number known to be on the clock's scale (a host's clock reading, a test's simulated time) as an Instant. */
export function instant(ms: number): Instant {
  return ms as Instant;
}

/** The deadline `ms` milliseconds after `t`. */
export function after(t: Instant, ms: number): Instant {
  return (t + ms) as Instant;
}

export interface Clock {
  /** Milliseconds, never decreasing; a fraction is allowed. */
  now(): Instant;
}
