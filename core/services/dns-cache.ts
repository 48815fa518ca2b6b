// The DNS server's answer cache: forwarded answers kept for their TTL (capped), negative answers
// (NXDOMAIN, NODATA) for the SOA's negative TTL (RFC 2308), bounded in entries and bytes with the
// least recently used evicted first. A hit comes back as a fresh copy with its TTLs aged.

import {
  DnsRcode,
  DnsType,
  ageDnsTtls,
  dnsTtlRecords,
  parseDnsMessage,
  readSoaMinimum,
  type DnsHeader,
  type DnsMessage,
  type DnsQuestion,
  type DnsRecord,
} from '../wire/dns';
import { isDrop, type DropReason } from '../wire/parse-result';
import { copyBytes } from '../wire/bytes';

export interface DnsCacheLimits {
  /** Entries and bytes of stored answers. */
  entries: number;
  bytes: number;
  /** Caps on cached TTLs, seconds: positive answers, negative ones. */
  maxTtl: number;
  maxNegativeTtl: number;
}

interface CacheEntry {
  message: Uint8Array;
  parsed: DnsMessage;
  records: DnsRecord[];
  storedAt: number;
  expiresAt: number;
}

/** What a hit gives: `message` is the requester's own copy; `parsed` views the cached original. */
export interface DnsCacheHit {
  message: Uint8Array;
  parsed: DnsMessage;
}

/** The cache key of a question: what the answer depends on besides the name, type and class. */
export function dnsCacheKey(nameKey: string, q: DnsQuestion, msg: DnsMessage, h: DnsHeader): string {
  // EDNS presence is part of the key so a requester that sent no OPT never gets one back.
  const flags = `${msg.edns ? 1 : 0}${msg.edns?.dnssecOk ? 1 : 0}${h.cd ? 1 : 0}`;
  return `${nameKey}\0${q.type}\0${q.class}\0${flags}`;
}

export class DnsCache {
  /** LRU: Map order is recency, oldest first. */
  private readonly entries = new Map<string, CacheEntry>();
  private bytesUsed = 0;

  constructor(
    private readonly limits: DnsCacheLimits,
    private readonly onDrop: (reason: DropReason) => void,
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.bytesUsed;
  }

  /** The answer for `key` if it is still fresh at `now`; an expired or unusable entry is dropped. */
  lookup(key: string, now: number): DnsCacheHit | undefined {
    const hit = this.entries.get(key);
    if (!hit) return undefined;
    if (hit.expiresAt > now) {
      this.entries.delete(key);
      this.entries.set(key, hit);
      const out = copyBytes(hit.message);
      ageDnsTtls(out, hit.records, Math.floor((now - hit.storedAt) / 1000));
      // A hostile answer can point a compressed name into a TTL field: aging would then corrupt
      // the name. Such an entry is dropped and the question asked again.
      if (!isDrop(parseDnsMessage(out))) return { message: out, parsed: hit.parsed };
      this.onDrop('dns-cache-entry-corrupt');
    }
    this.evict(key, hit);
    return undefined;
  }

  /**
   * Keeps `message` (parsed as `msg`, which views it) as of `now` if it may be cached; true if it
   * was. The cache then owns `message`: the caller must not change it.
   */
  store(key: string, message: Uint8Array, msg: DnsMessage, now: number): boolean {
    const ttl = this.ttl(message, msg);
    if (ttl === undefined || ttl <= 0) return false;
    if (message.length > this.limits.bytes || this.limits.entries <= 0) return false;
    const old = this.entries.get(key);
    if (old) this.evict(key, old);
    const entry: CacheEntry = {
      message,
      parsed: msg,
      records: dnsTtlRecords(msg),
      storedAt: now,
      expiresAt: now + ttl * 1000,
    };
    this.entries.set(key, entry);
    this.bytesUsed += message.length;
    for (const [k, e] of this.entries) {
      if (this.entries.size <= this.limits.entries && this.bytesUsed <= this.limits.bytes) break;
      this.evict(k, e);
    }
    return this.entries.get(key) === entry;
  }

  clear(): void {
    this.entries.clear();
    this.bytesUsed = 0;
  }

  /**
   * How long an answer may be cached, in seconds, or undefined if it may not: positive answers for
   * their smallest TTL; NXDOMAIN and NODATA (RFC 2308) for min(SOA TTL, SOA MINIMUM), only with an SOA.
   */
  private ttl(message: Uint8Array, msg: DnsMessage): number | undefined {
    if (msg.header.tc) return undefined;
    if (msg.rcode !== DnsRcode.NOERROR && msg.rcode !== DnsRcode.NXDOMAIN) return undefined;
    let ttl = Infinity;
    for (const r of msg.answers) ttl = Math.min(ttl, r.ttl);
    const negative = msg.rcode === DnsRcode.NXDOMAIN || msg.answers.length === 0;
    if (negative) {
      const soa = msg.authority.find((r) => r.type === DnsType.SOA);
      if (!soa) return undefined;
      const minimum = readSoaMinimum(message, soa);
      if (isDrop(minimum)) return undefined;
      ttl = Math.min(ttl, soa.ttl, minimum, this.limits.maxNegativeTtl);
    } else {
      for (const r of msg.authority) ttl = Math.min(ttl, r.ttl);
      ttl = Math.min(ttl, this.limits.maxTtl);
    }
    return ttl;
  }

  private evict(key: string, entry: CacheEntry): void {
    this.entries.delete(key);
    this.bytesUsed -= entry.message.length;
  }
}
