// The DNS server at the stack's DNS address (10.0.2.3), for queries over UDP and TCP. Local names
// (gateway.weft.internal, user records) are answered here; everything else is answered from a bounded
// cache or forwarded — with a fresh random ID, identical in-flight queries joined — through a
// DnsForwarder (any Upstream, DNS-over-HTTPS, …). A guest always gets an answer: FORMERR for what it
// got wrong, SERVFAIL when the forwarder fails or is silent for `timeoutMs`. Answers that do not fit
// the requester's UDP size come back truncated (TC), so the guest retries over TCP and gets them whole.

import type { Ipv4Address } from '../wire/address';
import {
  DNS_EDNS_UDP_SIZE,
  DNS_FLAG_AA,
  DNS_FLAG_CD,
  DNS_FLAG_RA,
  DNS_FLAG_RD,
  DNS_HEADER_LENGTH,
  DnsOpcode,
  DnsRcode,
  DnsType,
  dnsNameKey,
  emitDnsResponse,
  parseDnsHeader,
  parseDnsMessage,
  requesterUdpLimit,
  setDnsFlag,
  setDnsId,
  truncateDnsResponse,
  type DnsAnswerRepr,
  type DnsHeader,
  type DnsMessage,
  type DnsQuestion,
} from '../wire/dns';
import { isDrop, type DropReason } from '../wire/parse-result';
import { DnsCache, dnsCacheKey } from './dns-cache';
import { DnsLocalZone } from './dns-local-zone';

export { DEFAULT_LOCAL_DOMAIN, weftLocalRecords } from './dns-local-zone';

export type DnsTransport = 'udp' | 'tcp';

/** Returned by a forwarder that can abandon a query; the server cancels on its timeout. */
export interface DnsForwardHandle {
  cancel(): void;
}

export interface DnsForwarder {
  /**
   * Sends `query` (a complete message with the server's ID) to a resolver and calls `done` once with
   * its reply, or with undefined when the query failed. `done` may come synchronously. After
   * `cancel()`, `done` should not be called (the server ignores it anyway).
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a forwarder that answers at once returns nothing, `done(…)`'s own result included
  forward(query: Uint8Array, transport: DnsTransport, done: (reply: Uint8Array | undefined) => void): DnsForwardHandle | void;
}

export interface DnsServerOptions {
  /** Lowercase FQDN without trailing dot → IPv4 address. */
  localRecords: Map<string, Ipv4Address>;
  /**
   * Domains weft is authoritative for: a name under one of them that is not in `localRecords` gets
   * NXDOMAIN instead of being forwarded. Default ['weft.internal'].
   */
  localDomains?: string[];
  forwarder?: DnsForwarder;
  /** Cache bounds (LRU): entries (default 1024) and bytes of stored answers (default 4 MiB). */
  cacheEntries?: number;
  cacheBytes?: number;
  /** SERVFAIL if the forwarder has not answered within this (default 5000 ms). */
  timeoutMs?: number;
  /** Forwarded queries in flight (default 256) and requesters joined to one of them (default 32). */
  maxPending?: number;
  maxWaiters?: number;
  /** TTL of local answers, seconds (default 60). */
  localTtl?: number;
  /** Caps on cached TTLs, seconds: positive answers (default 1 day), negative ones (default 3 h, RFC 2308 §5). */
  maxCacheTtl?: number;
  maxNegativeTtl?: number;
  /** Fills `out` with random bytes (query IDs towards the resolver). */
  random: (out: Uint8Array) => void;
  /** Called with the reason for every query dropped or answered with FORMERR. */
  onDrop?: (reason: DropReason) => void;
  /** Called with the reason for every SERVFAIL ('dns-forward-timeout', 'dns-forward-failed', …). */
  onServfail?: (reason: string) => void;
}

export interface DnsServerCounters {
  queries: number;
  answeredLocal: number;
  answeredFromCache: number;
  /** Queries sent to the forwarder (joined duplicates not counted again). */
  forwarded: number;
  /** Queries joined to an identical one already in flight. */
  deduplicated: number;
  /** Forwarded answers relayed to a requester. */
  answeredForwarded: number;
  servfail: number;
  formerr: number;
  notimp: number;
  refused: number;
  /** UDP answers sent truncated (TC) because the requester could not take them whole. */
  truncated: number;
  dropped: number;
  cacheEntries: number;
  cacheBytes: number;
  pending: number;
}

/** Counters of a DNS server that has answered nothing yet (or of none at all). */
export function emptyDnsCounters(): DnsServerCounters {
  return {
    queries: 0,
    answeredLocal: 0,
    answeredFromCache: 0,
    forwarded: 0,
    deduplicated: 0,
    answeredForwarded: 0,
    servfail: 0,
    formerr: 0,
    notimp: 0,
    refused: 0,
    truncated: 0,
    dropped: 0,
    cacheEntries: 0,
    cacheBytes: 0,
    pending: 0,
  };
}

/** One requester waiting for an answer. */
interface Request {
  id: number;
  rd: boolean;
  cd: boolean;
  question: DnsQuestion;
  /** Only what is needed from the requester's OPT (its options are not kept: they view the guest's buffer). */
  edns?: { dnssecOk: boolean };
  transport: DnsTransport;
  udpLimit: number;
  respond: (reply: Uint8Array) => void;
}

interface Pending {
  /** The cache key plus the transport: a UDP answer may be truncated, so TCP queries never join UDP ones. */
  key: string;
  cacheKey: string;
  upstreamId: number;
  deadline: number;
  question: DnsQuestion;
  waiters: Request[];
  handle?: DnsForwardHandle;
}

const DEFAULTS = {
  cacheEntries: 1024,
  cacheBytes: 4 << 20,
  timeoutMs: 5000,
  maxPending: 256,
  maxWaiters: 32,
  localTtl: 60,
  maxCacheTtl: 86_400,
  maxNegativeTtl: 10_800,
};

const OUR_EDNS_SIZE = DNS_EDNS_UDP_SIZE;

export class DnsServer {
  private readonly zone: DnsLocalZone;
  private readonly forwarder: DnsForwarder | undefined;
  private readonly limits: typeof DEFAULTS;
  private readonly random: (out: Uint8Array) => void;
  private readonly onDrop: (reason: DropReason) => void;
  private readonly onServfail: (reason: string) => void;
  /** In-flight forwarded queries by cache key + transport, in creation (= deadline) order. */
  private readonly pending = new Map<string, Pending>();
  private readonly pendingIds = new Set<number>();
  private readonly cache: DnsCache;
  /** The latest time seen in query()/poll(): forwarded answers are stored as of then (never later than true). */
  private lastNow = -Infinity;
  private readonly idBytes = new Uint8Array(2);
  private readonly stats = emptyDnsCounters();

  constructor(opts: DnsServerOptions) {
    this.forwarder = opts.forwarder;
    this.random = opts.random;
    this.onDrop = opts.onDrop ?? (() => {});
    this.onServfail = opts.onServfail ?? (() => {});
    this.limits = {
      cacheEntries: opts.cacheEntries ?? DEFAULTS.cacheEntries,
      cacheBytes: opts.cacheBytes ?? DEFAULTS.cacheBytes,
      timeoutMs: opts.timeoutMs ?? DEFAULTS.timeoutMs,
      maxPending: opts.maxPending ?? DEFAULTS.maxPending,
      maxWaiters: opts.maxWaiters ?? DEFAULTS.maxWaiters,
      localTtl: opts.localTtl ?? DEFAULTS.localTtl,
      maxCacheTtl: opts.maxCacheTtl ?? DEFAULTS.maxCacheTtl,
      maxNegativeTtl: opts.maxNegativeTtl ?? DEFAULTS.maxNegativeTtl,
    };
    this.zone = new DnsLocalZone(opts.localRecords, opts.localDomains); // throws on a bad name at start-up
    const l = this.limits;
    this.cache = new DnsCache({ entries: l.cacheEntries, bytes: l.cacheBytes, maxTtl: l.maxCacheTtl, maxNegativeTtl: l.maxNegativeTtl }, this.onDrop);
  }

  /**
   * Answers one query (a UDP payload, or one TCP message without its length prefix). `respond` gets
   * exactly one reply — at once, or later from the forwarder's callback or poll() — and the result is
   * true; or the message is dropped (no readable header, or itself a response), nothing will follow
   * and the result is false. Never throws.
   */
  query(message: Uint8Array, transport: DnsTransport, now: number, respond: (reply: Uint8Array) => void): boolean {
    this.stats.queries++;
    if (now > this.lastNow) this.lastNow = now;
    const header = parseDnsHeader(message);
    if (isDrop(header)) {
      this.drop(header);
      return false;
    }
    // Never answer a response: two DNS speakers would bounce errors between them forever.
    if (header.qr) {
      this.drop('dns-query-is-response');
      return false;
    }
    let answered = false;
    const once = (reply: Uint8Array): void => {
      if (answered) return;
      answered = true;
      respond(reply);
    };
    try {
      this.handle(message, header, transport, now, once);
    } catch {
      // Unreachable unless there is a bug; the requester still gets an answer (only one).
      this.stats.servfail++;
      this.onServfail('dns-internal-error');
      this.send(once, emitDnsResponse({ id: header.id, flags: DNS_FLAG_RA, rcode: DnsRcode.SERVFAIL }));
    }
    return true;
  }

  /** Fails forwarded queries whose time is up (SERVFAIL). */
  poll(now: number): void {
    if (now > this.lastNow) this.lastNow = now;
    for (const p of [...this.pending.values()]) {
      if (p.deadline > now) continue;
      this.removePending(p);
      try {
        p.handle?.cancel();
      } catch {
        // a forwarder that throws on cancel must not keep the others from their SERVFAIL
      }
      this.fail(p.waiters, 'dns-forward-timeout');
    }
  }

  /** When poll() should run next, or undefined if nothing is waiting. */
  nextDeadline(): number | undefined {
    let next: number | undefined;
    for (const p of this.pending.values()) if (next === undefined || p.deadline < next) next = p.deadline;
    return next;
  }

  counters(): DnsServerCounters {
    return { ...this.stats, cacheEntries: this.cache.size, cacheBytes: this.cache.bytes, pending: this.pending.size };
  }

  /** Empties the cache (e.g. when the upstream changes). */
  /** A guest's DHCP hostname, answered as `<hostname>.<local domain>` (see DnsLocalZone.setGuestName). */
  setGuestName(hostname: string, ip: Ipv4Address): string | undefined {
    return this.zone.setGuestName(hostname, ip);
  }

  clearCache(): void {
    this.cache.clear();
  }

  private handle(message: Uint8Array, header: DnsHeader, transport: DnsTransport, now: number, respond: (reply: Uint8Array) => void): void {
    const msg = parseDnsMessage(message);
    if (isDrop(msg)) return this.headerOnlyReply(header, DnsRcode.FORMERR, respond, msg);
    if (header.opcode !== DnsOpcode.QUERY) return this.headerOnlyReply(header, DnsRcode.NOTIMP, respond);
    if (msg.questions.length !== 1) return this.headerOnlyReply(header, DnsRcode.FORMERR, respond, 'dns-qdcount-not-one');
    const req: Request = {
      id: header.id,
      rd: header.rd,
      cd: header.cd,
      question: msg.questions[0],
      transport,
      udpLimit: requesterUdpLimit(msg),
      respond,
    };
    if (msg.edns) req.edns = { dnssecOk: msg.edns.dnssecOk };
    if (msg.edns && msg.edns.version !== 0) {
      // RFC 6891 §6.1.3: answer BADVERS with the version we do support (0).
      this.stats.formerr++;
      this.onDrop('dns-edns-bad-version');
      return this.generated(req, DnsRcode.BADVERS, [], false);
    }
    const q = req.question;
    if (q.type === DnsType.AXFR || q.type === DnsType.IXFR) {
      this.stats.refused++;
      return this.generated(req, DnsRcode.REFUSED, [], false);
    }
    const nameKey = dnsNameKey(q.name);
    if (this.answerLocal(req, nameKey)) return;

    const key = dnsCacheKey(nameKey, q, msg, header);
    const hit = this.cache.lookup(key, now);
    if (hit) {
      this.stats.answeredFromCache++;
      return this.relay(req, hit.message, hit.parsed);
    }
    this.forward(req, message, key, now);
  }

  // ---- local names --------------------------------------------------------------------------

  private answerLocal(req: Request, nameKey: string): boolean {
    const local = this.zone.answer(req.question, nameKey, this.limits.localTtl);
    if (!local) return false;
    this.stats.answeredLocal++;
    this.generated(req, local.rcode, local.answers, true);
    return true;
  }

  // ---- forwarding ---------------------------------------------------------------------------

  private forward(req: Request, message: Uint8Array, key: string, now: number): void {
    const forwarder = this.forwarder;
    if (!forwarder) return this.fail([req], 'dns-no-forwarder');
    const pendingKey = `${key}\0${req.transport}`;
    const joined = this.pending.get(pendingKey);
    if (joined) {
      if (joined.waiters.length >= this.limits.maxWaiters) return this.fail([req], 'dns-too-many-waiters');
      joined.waiters.push(req);
      this.stats.deduplicated++;
      return;
    }
    if (this.pending.size >= this.limits.maxPending) return this.fail([req], 'dns-too-many-pending');
    const upstreamId = this.freshId();
    const query = message.slice();
    setDnsId(query, upstreamId);
    const p: Pending = { key: pendingKey, cacheKey: key, upstreamId, deadline: now + this.limits.timeoutMs, question: req.question, waiters: [req] };
    this.pending.set(pendingKey, p);
    this.pendingIds.add(upstreamId);
    this.stats.forwarded++;
    // biome-ignore lint/suspicious/noConfusingVoidType: what forward() returns, as it says
    let handle: DnsForwardHandle | void;
    try {
      handle = forwarder.forward(query, req.transport, (reply) => this.onReply(p, reply));
    } catch {
      handle = undefined;
      this.onReply(p, undefined);
    }
    if (handle && this.pending.get(pendingKey) === p) p.handle = handle;
  }

  private onReply(p: Pending, reply: Uint8Array | undefined): void {
    if (this.pending.get(p.key) !== p) return; // timed out already, or a second call
    this.removePending(p);
    try {
      this.answerPending(p, reply);
    } catch {
      this.fail(p.waiters, 'dns-internal-error');
    }
  }

  private answerPending(p: Pending, reply: Uint8Array | undefined): void {
    if (!reply) return this.fail(p.waiters, 'dns-forward-failed');
    const own = reply.slice();
    const msg = parseDnsMessage(own);
    if (isDrop(msg)) return this.fail(p.waiters, 'dns-upstream-malformed');
    const h = msg.header;
    if (!h.qr || h.opcode !== DnsOpcode.QUERY || h.id !== p.upstreamId) return this.fail(p.waiters, 'dns-upstream-mismatch');
    if (msg.questions.length === 0 && msg.rcode !== DnsRcode.NOERROR) {
      // REFUSED / FORMERR / NOTIMP without the question: pass the rcode on, with the question.
      for (const w of p.waiters) this.generated(w, msg.rcode, [], false);
      return;
    }
    const rq = msg.questions[0];
    if (msg.questions.length !== 1 || rq.type !== p.question.type || rq.class !== p.question.class || dnsNameKey(rq.name) !== dnsNameKey(p.question.name)) {
      return this.fail(p.waiters, 'dns-upstream-question-mismatch');
    }
    const stored = this.cache.store(p.cacheKey, own, msg, this.lastNow);
    for (let i = 0; i < p.waiters.length; i++) {
      // The cache keeps `own` untouched; the last waiter may have it when it is not cached.
      const out = i === p.waiters.length - 1 && !stored ? own : own.slice();
      this.stats.answeredForwarded++;
      this.relay(p.waiters[i], out, msg);
    }
  }

  /** Relays a forwarded or cached answer `out` (a copy the requester may own) to `req`. */
  private relay(req: Request, out: Uint8Array, msg: DnsMessage): void {
    setDnsId(out, req.id);
    setDnsFlag(out, DNS_FLAG_RD, req.rd);
    // Echo the requester's spelling of the name (0x20 randomisation): the question is at offset 12,
    // and answers that point to it follow it.
    const q = msg.questions[0];
    if (q && q.offset === DNS_HEADER_LENGTH && q.length === q.nameWire.length + 4 && req.question.nameWire.length === q.nameWire.length) {
      out.set(req.question.nameWire, DNS_HEADER_LENGTH);
    }
    this.deliver(req, out, msg, req.udpLimit);
  }

  private removePending(p: Pending): void {
    this.pending.delete(p.key);
    this.pendingIds.delete(p.upstreamId);
  }

  /** A random ID not used by another query in flight (so a forwarder may match replies by ID). */
  private freshId(): number {
    let id = 0;
    for (let tries = 0; tries < 16; tries++) {
      this.random(this.idBytes);
      id = (this.idBytes[0] << 8) | this.idBytes[1];
      if (!this.pendingIds.has(id)) break;
    }
    return id;
  }

  // ---- replies ------------------------------------------------------------------------------

  private fail(waiters: Request[], reason: DropReason): void {
    for (const w of waiters) {
      this.stats.servfail++;
      this.onServfail(reason);
      this.generated(w, DnsRcode.SERVFAIL, [], false);
    }
  }

  /** An answer weft makes: the question echoed, `answers`, OPT if the requester sent one. */
  private generated(req: Request, rcode: number, answers: DnsAnswerRepr[], authoritative: boolean): void {
    const q = req.question;
    const flags = (authoritative ? DNS_FLAG_AA : 0) | (req.rd ? DNS_FLAG_RD : 0) | (req.cd ? DNS_FLAG_CD : 0) | DNS_FLAG_RA;
    const reply = emitDnsResponse({
      id: req.id,
      flags,
      rcode,
      question: { nameWire: q.nameWire, type: q.type, class: q.class },
      answers,
      edns: req.edns ? { udpPayloadSize: OUR_EDNS_SIZE, dnssecOk: req.edns.dnssecOk } : undefined,
    });
    if (req.transport === 'udp' && reply.length > Math.min(req.udpLimit, OUR_EDNS_SIZE)) {
      const parsed = parseDnsMessage(reply);
      if (!isDrop(parsed)) return this.deliver(req, reply, parsed, Math.min(req.udpLimit, OUR_EDNS_SIZE));
    }
    this.send(req.respond, reply);
  }

  /** Sends `out`, truncated first if it is a UDP answer over `limit`. */
  private deliver(req: Request, out: Uint8Array, msg: DnsMessage, limit: number): void {
    if (req.transport === 'udp' && out.length > limit) {
      this.stats.truncated++;
      const edns = req.edns ? { udpPayloadSize: OUR_EDNS_SIZE, dnssecOk: req.edns.dnssecOk } : undefined;
      out = truncateDnsResponse(out, msg, edns, req.question);
    }
    this.send(req.respond, out);
  }

  /** FORMERR or NOTIMP for a message whose header is all we trust: ID, opcode and RD echoed. */
  private headerOnlyReply(h: DnsHeader, rcode: number, respond: (reply: Uint8Array) => void, reason?: DropReason): void {
    if (rcode === DnsRcode.FORMERR) this.stats.formerr++;
    else this.stats.notimp++;
    if (reason !== undefined) this.onDrop(reason);
    this.send(respond, emitDnsResponse({ id: h.id, opcode: h.opcode, flags: (h.rd ? DNS_FLAG_RD : 0) | DNS_FLAG_RA, rcode }));
  }

  private send(respond: (reply: Uint8Array) => void, reply: Uint8Array): void {
    try {
      respond(reply);
    } catch {
      this.drop('dns-respond-failed');
    }
  }

  private drop(reason: DropReason): void {
    this.stats.dropped++;
    this.onDrop(reason);
  }
}
