// Token buckets for --rate (new streams per second per client IP) and --bandwidth (bytes per second
// per client). Time is passed in, so the limits are tested without waiting.

export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    /** Tokens added per second. */
    private readonly rate: number,
    /** Most tokens the bucket holds: the burst allowed after a quiet spell. */
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  private refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.rate) / 1000);
      this.last = now;
    }
  }

  /** Takes one token if there is one. */
  tryTake(now: number): boolean {
    this.refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /**
   * Takes `n` tokens even if that overdraws the bucket, and returns how many milliseconds the
   * caller should pause so the long-run rate holds (0 when there was enough).
   */
  consume(n: number, now: number): number {
    this.refill(now);
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.rate);
  }

  /** Takes `n` tokens only if there are that many (a datagram over the budget is dropped instead). */
  tryConsume(n: number, now: number): boolean {
    this.refill(now);
    if (this.tokens < n) return false;
    this.tokens -= n;
    return true;
  }

  /** Whether a token is there, without taking it. */
  has(now: number): boolean {
    this.refill(now);
    return this.tokens >= 1;
  }

  /** True when the bucket is full (an idle client): its entry can be forgotten. */
  isFull(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.burst;
  }
}

/** One bucket per key (client IP), bounded: full (idle) buckets are dropped when the map grows. */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, TokenBucket>();

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    private readonly maxKeys = 10_000,
  ) {}

  tryTake(key: string, now: number): boolean {
    let b = this.buckets.get(key);
    if (!b) {
      if (this.buckets.size >= this.maxKeys) this.prune(now);
      b = new TokenBucket(this.rate, this.burst, now);
      this.buckets.set(key, b);
    }
    return b.tryTake(now);
  }

  /**
   * Whether `key` has a token, without taking one: for a check whose failures alone cost a token
   * (a wrong room key), asked before checking, so guesses past the budget are not even checked.
   */
  has(key: string, now: number): boolean {
    return this.buckets.get(key)?.has(now) ?? true;
  }

  private prune(now: number): void {
    for (const [k, b] of this.buckets) if (b.isFull(now)) this.buckets.delete(k);
    // Still full of busy clients: forget the oldest entries rather than grow without bound.
    for (const k of this.buckets.keys()) {
      if (this.buckets.size < this.maxKeys) break;
      this.buckets.delete(k);
    }
  }
}
