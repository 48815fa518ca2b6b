// A link that misbehaves on purpose, for deterministic tests of everything above it: it wraps a
// frame sink and drops, duplicates, reorders, corrupts and delays the frames sent through it, each
// with its own probability. It is sans-I/O like the stack: time is passed in, randomness comes from
// a seeded generator the caller owns, and frames it holds leave through poll(now) — so one seed
// always gives the same faults on the same traffic.
//
// Decisions for each frame, in order: drop, corrupt, duplicate; then each copy is reordered or
// delayed on its own. A frame that is held is copied (the sender may reuse its buffer).

import { copyBytes } from '../wire/bytes';

export interface FaultConfig {
  /** Probability that a frame is lost. */
  drop: number;
  /** Probability that a frame is delivered twice. */
  duplicate: number;
  /**
   * Probability that a frame is held back and released right after the next frame that gets
   * through (or after `reorderHoldMs`, if none comes), so the two arrive swapped.
   */
  reorder: number;
  /** Probability that one random bit of the frame is flipped. */
  corrupt: number;
  /** Probability that a frame is delayed by a random time in [delayMinMs, delayMaxMs]. */
  delay: number;
  delayMinMs: number;
  delayMaxMs: number;
  /** Added to every frame's delivery time (a link with latency); 0 delivers at once. */
  latencyMs: number;
  /** The longest a reordered frame waits for a frame to overtake it. */
  reorderHoldMs: number;
  /**
   * Bit flips land at or after this byte offset. 14 keeps them out of the Ethernet header, which a
   * real link protects with its FCS; what is left is covered by the IPv4/TCP/UDP checksums.
   */
  corruptFromByte: number;
  /** Frames held at once (delayed + reordered); past it new frames are dropped as overflow. */
  maxHeld: number;
}

export const NO_FAULTS: FaultConfig = {
  drop: 0,
  duplicate: 0,
  reorder: 0,
  corrupt: 0,
  delay: 0,
  delayMinMs: 0,
  delayMaxMs: 0,
  latencyMs: 0,
  reorderHoldMs: 50,
  corruptFromByte: 0,
  maxHeld: 65_536,
};

export interface FaultCounters {
  /** Frames given to send(). */
  frames: number;
  /** Frames handed to the sink (duplicates included). */
  delivered: number;
  dropped: number;
  duplicated: number;
  reordered: number;
  corrupted: number;
  delayed: number;
  /** Frames dropped because `maxHeld` frames were already held. */
  overflowed: number;
}

interface Held {
  at: number;
  /** Insertion order: frames due at the same time leave in the order they were held. */
  order: number;
  frame: Uint8Array;
}

const PROBABILITIES = ['drop', 'duplicate', 'reorder', 'corrupt', 'delay'] as const;

function validate(c: FaultConfig): FaultConfig {
  for (const k of PROBABILITIES) {
    const p = c[k];
    if (!(p >= 0 && p <= 1)) throw new RangeError(`fault probability ${k} must be in [0, 1], got ${p}`);
  }
  if (!(c.delayMinMs >= 0 && c.delayMaxMs >= c.delayMinMs)) throw new RangeError('need 0 ≤ delayMinMs ≤ delayMaxMs');
  if (!(c.latencyMs >= 0) || !(c.reorderHoldMs >= 0)) throw new RangeError('latencyMs and reorderHoldMs must be ≥ 0');
  if (!(c.maxHeld >= 0) || !(c.corruptFromByte >= 0)) throw new RangeError('maxHeld and corruptFromByte must be ≥ 0');
  return c;
}

export class FaultInjector {
  config: Readonly<FaultConfig>;
  private readonly stats: FaultCounters = { frames: 0, delivered: 0, dropped: 0, duplicated: 0, reordered: 0, corrupted: 0, delayed: 0, overflowed: 0 };
  /** Frames waiting for a time, sorted by (at, order). */
  private readonly timed: Held[] = [];
  /** Frames waiting to be overtaken, oldest first. */
  private readonly reorderHeld: Held[] = [];
  private order = 0;

  /**
   * @param sink where frames go; called synchronously from send() and poll().
   * @param random uniform numbers in [0, 1) from a seeded generator.
   */
  constructor(
    private readonly sink: (frame: Uint8Array) => void,
    private readonly random: () => number,
    config: Partial<FaultConfig> = {},
  ) {
    this.config = validate({ ...NO_FAULTS, ...config });
  }

  /** Changes faults from now on (e.g. a link that goes dark for a while); held frames keep their times. */
  configure(config: Partial<FaultConfig>): void {
    this.config = validate({ ...this.config, ...config });
  }

  counters(): FaultCounters {
    return { ...this.stats };
  }

  /** Frames held for later (delayed, in flight with latency, or waiting to be overtaken). */
  get held(): number {
    return this.timed.length + this.reorderHeld.length;
  }

  /** Sends one frame through the faulty link at time `now`. */
  send(frame: Uint8Array, now: number): void {
    const c = this.config;
    this.stats.frames++;
    if (this.chance(c.drop)) {
      this.stats.dropped++;
      return;
    }
    let f = frame;
    if (this.chance(c.corrupt) && f.length > c.corruptFromByte) {
      f = copyBytes(f);
      const bit = Math.floor(this.random() * (f.length - c.corruptFromByte) * 8);
      f[c.corruptFromByte + (bit >>> 3)] ^= 1 << (bit & 7);
      this.stats.corrupted++;
    }
    const copies = this.chance(c.duplicate) ? 2 : 1;
    if (copies === 2) this.stats.duplicated++;
    for (let i = 0; i < copies; i++) this.route(f, now);
  }

  private route(frame: Uint8Array, now: number): void {
    const c = this.config;
    if (this.chance(c.reorder)) {
      if (!this.canHold()) return;
      this.stats.reordered++;
      this.reorderHeld.push({ at: now + c.reorderHoldMs, order: this.order++, frame: copyBytes(frame) });
      return;
    }
    let at = now + c.latencyMs;
    if (this.chance(c.delay)) {
      this.stats.delayed++;
      at += c.delayMinMs + this.random() * (c.delayMaxMs - c.delayMinMs);
    }
    if (at > now) {
      if (!this.canHold()) return;
      this.insertTimed({ at, order: this.order++, frame: copyBytes(frame) });
      return;
    }
    this.pass(frame, now);
  }

  /** A frame gets through now; whatever waited to be overtaken follows it. */
  private pass(frame: Uint8Array, now: number): void {
    this.deliver(frame);
    if (this.reorderHeld.length === 0) return;
    for (const h of this.reorderHeld.splice(0)) this.afterHold(h, now);
  }

  /** A frame released from the reorder hold still crosses the link's latency. */
  private afterHold(h: Held, now: number): void {
    const at = now + this.config.latencyMs;
    if (at > now) this.insertTimed({ at, order: this.order++, frame: h.frame });
    else this.deliver(h.frame);
  }

  /** Delivers every frame that is due at `now`. */
  poll(now: number): void {
    // Frames held for reordering that nothing overtook in time go out on their own.
    while (this.reorderHeld.length > 0 && this.reorderHeld[0].at <= now) this.afterHold(this.reorderHeld.shift() as Held, now);
    while (this.timed.length > 0 && this.timed[0].at <= now) {
      const h = this.timed.shift() as Held;
      this.pass(h.frame, now);
    }
  }

  /** When poll() next has a frame to deliver, or undefined when nothing is held. */
  nextDeadline(): number | undefined {
    let d: number | undefined;
    if (this.timed.length > 0) d = this.timed[0].at;
    if (this.reorderHeld.length > 0 && (d === undefined || this.reorderHeld[0].at < d)) d = this.reorderHeld[0].at;
    return d;
  }

  /** Delivers everything held at once, in due order (e.g. before a test's final check). */
  flush(): void {
    const all = [...this.timed, ...this.reorderHeld].sort((a, b) => a.at - b.at || a.order - b.order);
    this.timed.length = 0;
    this.reorderHeld.length = 0;
    for (const h of all) this.deliver(h.frame);
  }

  private deliver(frame: Uint8Array): void {
    this.stats.delivered++;
    this.sink(frame);
  }

  private canHold(): boolean {
    if (this.held < this.config.maxHeld) return true;
    this.stats.overflowed++;
    return false;
  }

  private insertTimed(h: Held): void {
    const t = this.timed;
    let lo = 0;
    let hi = t.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (t[mid].at < h.at || (t[mid].at === h.at && t[mid].order < h.order)) lo = mid + 1;
      else hi = mid;
    }
    t.splice(lo, 0, h);
  }

  /** Draws from the generator only for faults that are on: a clean link consumes no randomness. */
  private chance(p: number): boolean {
    if (p <= 0) return false;
    if (p >= 1) return true;
    return this.random() < p;
  }
}
