// One bound for the bytes all of a stack's connections hold in one direction. Each connection has
// its own limit, but a guest with many connections could otherwise make weft hold that limit times
// the connection count (8,192 in `weft vm`). Two budgets use this: what upstreams sent for guests
// that acknowledge nothing (past it, a connection holding more than a small share pauses its
// upstream), and what guests sent for upstreams that do not read (past it, such a connection's
// window stops opening and what comes beyond is dropped, for the guest to send again). New and
// quiet connections still move while the greedy ones wait (Linux's tcp_mem pressure does the same
// for a host's sockets).

/** What every connection may hold whatever the others hold: one large segment, so none stalls. */
export const BUDGET_MIN_SHARE = 64 * 1024;

export class ByteBudget {
  private held = 0;
  /** Connections paused by the budget, woken once it has room again. */
  private readonly waiting = new Set<() => void>();

  constructor(readonly limitBytes: number) {}

  /** Bytes held across all connections. */
  get bytes(): number {
    return this.held;
  }

  /** True when a connection holding `bytes` must not read more: the stack is over its budget. */
  overFor(bytes: number): boolean {
    return bytes >= BUDGET_MIN_SHARE && this.held >= this.limitBytes;
  }

  /** True when a connection holding `bytes` may read again: below seven eighths of the budget, so reads do not flap at the edge. */
  roomFor(bytes: number): boolean {
    return bytes < BUDGET_MIN_SHARE / 2 || this.held < this.limitBytes - this.limitBytes / 8;
  }

  add(bytes: number): void {
    this.held += bytes;
  }

  release(bytes: number): void {
    this.held -= bytes;
    if (this.waiting.size > 0 && this.roomFor(BUDGET_MIN_SHARE)) this.wake();
  }

  /** Calls `wake` once the budget has room again (a paused connection that its own ACKs would not resume). */
  wait(wake: () => void): void {
    this.waiting.add(wake);
  }

  /** A connection that closed stops waiting. */
  forget(wake: () => void): void {
    this.waiting.delete(wake);
  }

  private wake(): void {
    const waiting = [...this.waiting];
    this.waiting.clear();
    for (const wake of waiting) wake();
  }
}
