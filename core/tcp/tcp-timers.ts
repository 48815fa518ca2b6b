// Every timer a guest connection runs, as one value: one deadline slot per kind (ms on the stack's
// clock), each armed and cleared by the part that owns it — the connection, its sender (and the
// sender's loss probe) or its receiver — and next() says which fires first, which is what the flow
// table schedules. Which due timer acts first is the connection's onTimer's business (a fixed
// order), not this file's.

import type { Instant } from '../clock';

const TIMERS = [
  'connect', // the upstream connect is given up (passive open, before our SYN-ACK)
  'handshake', // our SYN-ACK is sent again
  'delayed-ack', // the receiver's held ACK goes out (./tcp-receiver.ts)
  'retransmit', // RTO (RFC 6298)
  'reorder', // RACK's reordering window ran out for a suspect piece (./rack.ts)
  'loss-probe', // tail loss probe (./loss-probe.ts)
  'persist', // zero-window probe, or a small window SWS avoidance held back
  'keepalive',
  'time-wait', // 2MSL is over
  'drain', // a closed connection stops waiting for a blocked upstream
] as const;

export type TcpTimer = (typeof TIMERS)[number];

const SLOT = Object.fromEntries(TIMERS.map((t, i) => [t, i])) as Record<TcpTimer, number>;

export class TcpTimers {
  /** Deadline per slot; Infinity = not armed. */
  private readonly at = new Float64Array(TIMERS.length).fill(Infinity);

  /** The deadline of `t`, if armed. */
  get(t: TcpTimer): Instant | undefined {
    const at = this.at[SLOT[t]];
    return at === Infinity ? undefined : (at as Instant);
  }

  armed(t: TcpTimer): boolean {
    return this.at[SLOT[t]] !== Infinity;
  }

  set(t: TcpTimer, deadline: Instant): void {
    this.at[SLOT[t]] = deadline;
  }

  clear(t: TcpTimer): void {
    this.at[SLOT[t]] = Infinity;
  }

  /** Armed and due at `now`. */
  due(t: TcpTimer, now: Instant): boolean {
    return now >= this.at[SLOT[t]];
  }

  /** Disarms every timer but `keep`. */
  clearAllBut(keep?: TcpTimer): void {
    for (let i = 0; i < TIMERS.length; i++) if (TIMERS[i] !== keep) this.at[i] = Infinity;
  }

  /** The timer that fires first (the earlier-listed one of equal deadlines), if any is armed. */
  next(): TcpTimer | undefined {
    let first = -1;
    let min = Infinity;
    for (let i = 0; i < TIMERS.length; i++) {
      if (this.at[i] < min) {
        min = this.at[i];
        first = i;
      }
    }
    return first < 0 ? undefined : TIMERS[first];
  }

  /** When the first timer fires, if any is armed. */
  nextDeadline(): Instant | undefined {
    let min = Infinity;
    for (let i = 0; i < TIMERS.length; i++) if (this.at[i] < min) min = this.at[i];
    return min === Infinity ? undefined : (min as Instant);
  }
}
