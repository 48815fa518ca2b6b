// IPv4 fragment reassembly (RFC 791) with hard bounds, so a guest sending fragments it never
// completes cannot make the stack grow: bytes are capped per source and in total (oldest incomplete
// datagrams are evicted first, since a stale one is most likely missing a fragment for good), and
// every datagram expires 30 s after its first fragment. Overlapping fragments discard the whole
// datagram (as RFC 5722 requires for IPv6): overlaps are only ever seen in evasion attacks. Exact
// duplicates, which a duplicating link produces, are ignored instead.

import type { Ipv4Address } from '../wire/address';
import type { DropReason } from '../wire/parse-result';
import { copyBytes } from '../wire/bytes';

export interface FragmentInput {
  src: Ipv4Address;
  dst: Ipv4Address;
  protocol: number;
  id: number;
  /** Fragment offset in bytes. */
  fragmentOffset: number;
  moreFragments: boolean;
  payload: Uint8Array;
}

export interface ReassembledDatagram {
  src: Ipv4Address;
  dst: Ipv4Address;
  protocol: number;
  payload: Uint8Array;
}

export interface ReassemblyLimits {
  reassemblyBytesTotal: number;
  reassemblyBytesPerSource: number;
  reassemblyDatagramsPerSource: number;
  reassemblyTimeoutMs: number;
}

/** Largest payload an IPv4 datagram can carry (65535 minus a 20-byte header). */
const MAX_PAYLOAD = 65515;
/** Bookkeeping charged per fragment so that floods of tiny fragments still hit the byte caps. */
const FRAGMENT_OVERHEAD = 64;
const MAX_FRAGMENTS_PER_DATAGRAM = 2048;

interface Fragment {
  offset: number;
  data: Uint8Array;
}

interface PendingDatagram {
  key: string;
  src: Ipv4Address;
  deadline: number;
  /** Sorted by offset, never overlapping. */
  fragments: Fragment[];
  /** Payload bytes received so far. */
  received: number;
  /** Total payload length, known once the last fragment (MF=0) arrives. */
  total: number | undefined;
  /** Bytes charged against the limits. */
  charged: number;
}

interface SourceUsage {
  bytes: number;
  datagrams: number;
}

export class Ipv4Reassembler {
  /** In creation order, which is also deadline order: eviction and expiry take from the front. */
  private readonly pending = new Map<string, PendingDatagram>();
  private readonly perSource = new Map<Ipv4Address, SourceUsage>();
  private bytesTotal = 0;

  constructor(
    private readonly limits: ReassemblyLimits,
    private readonly onDrop: (reason: DropReason, count?: number) => void,
  ) {}

  get bytesHeld(): number {
    return this.bytesTotal;
  }

  get datagramsPending(): number {
    return this.pending.size;
  }

  /**
   * Adds one fragment (its payload is copied). Returns the whole datagram when this fragment
   * completes it, otherwise null. Rejected fragments are reported through onDrop.
   */
  add(frag: FragmentInput, now: number): ReassembledDatagram | null {
    const len = frag.payload.length;
    const end = frag.fragmentOffset + len;
    if (len === 0) return this.reject('ipv4-fragment-empty');
    if (end > MAX_PAYLOAD) return this.reject('ipv4-fragment-too-large');
    // Every fragment but the last must carry a multiple of 8 bytes, or the next offset is unreachable.
    if (frag.moreFragments && (len & 7) !== 0) return this.reject('ipv4-fragment-bad-length');

    const key = `${frag.src}>${frag.dst}/${frag.protocol}#${frag.id}`;
    let dg = this.pending.get(key);
    if (!dg) {
      dg = { key, src: frag.src, deadline: now + this.limits.reassemblyTimeoutMs, fragments: [], received: 0, total: undefined, charged: 0 };
    }

    if (!frag.moreFragments) {
      if ((dg.total !== undefined && dg.total !== end) || end < this.highestEnd(dg)) {
        this.discard(dg, 'ipv4-fragment-inconsistent', 1);
        return null;
      }
    } else if (dg.total !== undefined && end > dg.total) {
      this.discard(dg, 'ipv4-fragment-inconsistent', 1);
      return null;
    }

    // Find the insertion point and check the neighbours for overlap.
    const frags = dg.fragments;
    let lo = 0;
    let hi = frags.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (frags[mid].offset < frag.fragmentOffset) lo = mid + 1;
      else hi = mid;
    }
    const next = frags[lo];
    if (next && next.offset === frag.fragmentOffset && next.data.length === len) {
      return this.reject('ipv4-fragment-duplicate');
    }
    const prev = frags[lo - 1];
    if ((prev && prev.offset + prev.data.length > frag.fragmentOffset) || (next && end > next.offset)) {
      this.discard(dg, 'ipv4-fragment-overlap', 1);
      return null;
    }
    if (frags.length >= MAX_FRAGMENTS_PER_DATAGRAM) {
      this.discard(dg, 'ipv4-fragment-too-many', 1);
      return null;
    }

    const cost = len + FRAGMENT_OVERHEAD;
    if (!this.makeRoom(dg, cost)) return this.reject('ipv4-reassembly-limit');

    if (!this.pending.has(key)) {
      this.pending.set(key, dg);
      this.usage(dg.src).datagrams++;
    }
    frags.splice(lo, 0, { offset: frag.fragmentOffset, data: copyBytes(frag.payload) });
    dg.received += len;
    dg.charged += cost;
    this.bytesTotal += cost;
    this.usage(dg.src).bytes += cost;
    if (!frag.moreFragments) dg.total = end;

    if (dg.total === undefined || dg.received !== dg.total) return null;
    // No overlaps and received === total, so the fragments tile [0, total) exactly.
    const payload = new Uint8Array(dg.total);
    for (const f of frags) payload.set(f.data, f.offset);
    this.remove(dg);
    return { src: frag.src, dst: frag.dst, protocol: frag.protocol, payload };
  }

  /** Expires datagrams whose 30 s have passed. */
  poll(now: number): void {
    for (const dg of this.pending.values()) {
      if (dg.deadline > now) break;
      this.discard(dg, 'ipv4-reassembly-timeout');
    }
  }

  nextDeadline(): number | undefined {
    for (const dg of this.pending.values()) return dg.deadline;
    return undefined;
  }

  private highestEnd(dg: PendingDatagram): number {
    const last = dg.fragments[dg.fragments.length - 1];
    return last ? last.offset + last.data.length : 0;
  }

  /** Evicts the oldest other datagrams until `cost` more bytes fit; false if it cannot fit at all. */
  private makeRoom(dg: PendingDatagram, cost: number): boolean {
    const { reassemblyBytesPerSource, reassemblyBytesTotal, reassemblyDatagramsPerSource } = this.limits;
    if (dg.charged + cost > reassemblyBytesPerSource || cost > reassemblyBytesTotal) return false;
    const isNew = !this.pending.has(dg.key);
    const src = this.usage(dg.src);
    while (src.bytes + cost > reassemblyBytesPerSource || (isNew && src.datagrams >= reassemblyDatagramsPerSource)) {
      const victim = this.oldest((d) => d.src === dg.src && d !== dg);
      if (!victim) return false;
      this.discard(victim, 'ipv4-reassembly-evicted');
    }
    while (this.bytesTotal + cost > reassemblyBytesTotal) {
      const victim = this.oldest((d) => d !== dg);
      if (!victim) return false;
      this.discard(victim, 'ipv4-reassembly-evicted');
    }
    return true;
  }

  private oldest(match: (d: PendingDatagram) => boolean): PendingDatagram | undefined {
    for (const d of this.pending.values()) if (match(d)) return d;
    return undefined;
  }

  private usage(src: Ipv4Address): SourceUsage {
    let u = this.perSource.get(src);
    if (!u) this.perSource.set(src, (u = { bytes: 0, datagrams: 0 }));
    return u;
  }

  private reject(reason: DropReason): null {
    this.onDrop(reason);
    return null;
  }

  /** Drops a datagram, counting each fragment it held (plus `incoming` just received) under `reason`. */
  private discard(dg: PendingDatagram, reason: DropReason, incoming = 0): void {
    const held = this.pending.has(dg.key) ? dg.fragments.length : 0;
    if (held + incoming > 0) this.onDrop(reason, held + incoming);
    this.remove(dg);
  }

  private remove(dg: PendingDatagram): void {
    if (!this.pending.delete(dg.key)) return;
    this.bytesTotal -= dg.charged;
    const u = this.usage(dg.src);
    u.bytes -= dg.charged;
    u.datagrams--;
    if (u.datagrams === 0) this.perSource.delete(dg.src);
  }
}
