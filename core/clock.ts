// Time in core has one source: the monotonic Clock the host injects (platform/stack-timer.ts has the one
// hosts use). The parts that are reached from outside — the Stack's entry points, upstream callbacks,
// the Wisp upstream — read it; the state machines they own (reassembly, ARP, DHCP, DNS, timer owners,
// Wisp sessions) take `now` as an argument from them. Nothing in core takes the time from its host, so
// no caller can hand two parts of the stack two different clocks. Monotonic, because deadlines (RTO,
// keep-alive, TIME_WAIT, leases) must not move when the wall clock is stepped.

export interface Clock {
  /** Milliseconds, never decreasing; a fraction is allowed. */
  now(): number;
}
