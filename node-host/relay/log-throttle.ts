// Refusal log lines per client IP. A client can make the relay refuse things as fast as it can send
// (CONNECTs to a denied host, upgrades with a bad token): one line each would let it fill the
// operator's disk. Each IP gets a burst of lines, then a few a second; the next line written for it
// says how many were skipped, and /metrics counts them all.

import { KeyedRateLimiter } from './token-bucket';

const LINES_PER_SECOND = 10;
const BURST = 50;
const MAX_KEYS = 10_000;

export class LogThrottle {
  private readonly limiter = new KeyedRateLimiter(LINES_PER_SECOND, BURST, MAX_KEYS);
  private readonly skipped = new Map<string, number>();

  /** `onSuppressed`: called for each line not written (the relay counts them in /metrics). */
  constructor(private readonly onSuppressed: () => void) {}

  /** Extra fields for a line about `key` that may be written now, or undefined to skip it. */
  admit(key: string, now: number): { suppressed?: number } | undefined {
    if (!this.limiter.tryTake(key, now)) {
      this.onSuppressed();
      if (!this.skipped.has(key) && this.skipped.size >= MAX_KEYS) this.skipped.delete(this.skipped.keys().next().value as string);
      this.skipped.set(key, (this.skipped.get(key) ?? 0) + 1);
      return undefined;
    }
    const n = this.skipped.get(key);
    if (n === undefined) return {};
    this.skipped.delete(key);
    return { suppressed: n };
  }
}
