// The guests' IPv4 → MAC bindings (ARP cache), bounded: when full, the least recently confirmed
// entry goes. Frames for an address not yet resolved wait in a small bounded queue while ARP
// requests are retried; if nobody answers they are dropped and counted, and the address is
// reported as unresolved (so what waits on it, such as an active open, can give up).

import type { Ipv4Address, MacAddress } from '../wire/address';
import type { DropReason } from '../wire/parse-result';

interface Entry {
  mac: MacAddress;
  expires: number;
}

interface Pending {
  frames: Uint8Array[];
  /** When to send the next request (or give up, once `attempts` reached the limit). */
  nextAttempt: number;
  attempts: number;
}

export interface NeighborCacheOptions {
  maxEntries: number;
  maxPendingFrames: number;
  entryLifetimeMs: number;
  retryIntervalMs: number;
  maxAttempts: number;
}

export class NeighborCache {
  /** Insertion order = least recently confirmed first. */
  private readonly entries = new Map<Ipv4Address, Entry>();
  /** The address learnt last: already the newest in `entries`, so learning it again only refreshes it. */
  private newest: Ipv4Address | undefined;
  private readonly pending = new Map<Ipv4Address, Pending>();
  private pendingFrames = 0;

  constructor(
    private readonly opts: NeighborCacheOptions,
    private readonly onDrop: (reason: DropReason, count?: number) => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  lookup(ip: Ipv4Address, now: number): MacAddress | undefined {
    const e = this.entries.get(ip);
    if (!e) return undefined;
    if (e.expires <= now) {
      this.entries.delete(ip);
      return undefined;
    }
    return e.mac;
  }

  /** Records a binding; returns frames that were waiting for it, ready to send to `mac`. */
  learn(ip: Ipv4Address, mac: MacAddress, now: number): Uint8Array[] {
    const existing = this.entries.get(ip);
    // Every frame from the guest teaches its binding again: for the newest entry that is a refresh,
    // not a delete and re-insert (nothing can be pending for an address that resolved).
    if (existing && ip === this.newest) {
      existing.mac = mac;
      existing.expires = now + this.opts.entryLifetimeMs;
      return [];
    }
    this.newest = ip;
    if (existing) this.entries.delete(ip);
    else if (this.entries.size >= this.opts.maxEntries) {
      const oldest = this.entries.keys().next().value as Ipv4Address;
      this.entries.delete(oldest);
    }
    this.entries.set(ip, { mac, expires: now + this.opts.entryLifetimeMs });
    const p = this.pending.get(ip);
    if (!p) return [];
    this.pending.delete(ip);
    this.pendingFrames -= p.frames.length;
    return p.frames;
  }

  forget(ip: Ipv4Address): void {
    this.entries.delete(ip);
    if (ip === this.newest) this.newest = undefined;
  }

  /**
   * Queues a frame (its destination MAC still to be filled in) until `ip` resolves.
   * Returns true when the caller should send an ARP request now.
   */
  enqueue(ip: Ipv4Address, frame: Uint8Array, now: number): boolean {
    let p = this.pending.get(ip);
    const isNew = !p;
    if (!p) {
      p = { frames: [], nextAttempt: now + this.opts.retryIntervalMs, attempts: 1 };
      this.pending.set(ip, p);
    }
    if (this.pendingFrames >= this.opts.maxPendingFrames) {
      this.onDrop('arp-queue-full');
    } else {
      p.frames.push(frame);
      this.pendingFrames++;
    }
    return isNew;
  }

  /**
   * Retries or gives up on unresolved addresses: `retry` are the addresses to send a request for
   * now, `unresolved` those that ran out of attempts (their frames dropped and counted).
   */
  poll(now: number): { retry: Ipv4Address[]; unresolved: Ipv4Address[] } {
    const retry: Ipv4Address[] = [];
    const unresolved: Ipv4Address[] = [];
    for (const [ip, p] of this.pending) {
      if (p.nextAttempt > now) continue;
      if (p.attempts >= this.opts.maxAttempts) {
        this.pending.delete(ip);
        this.pendingFrames -= p.frames.length;
        if (p.frames.length > 0) this.onDrop('arp-unresolved', p.frames.length);
        unresolved.push(ip);
        continue;
      }
      p.attempts++;
      p.nextAttempt = now + this.opts.retryIntervalMs;
      retry.push(ip);
    }
    return { retry, unresolved };
  }

  nextDeadline(): number | undefined {
    let d: number | undefined;
    for (const p of this.pending.values()) if (d === undefined || p.nextAttempt < d) d = p.nextAttempt;
    return d;
  }
}
