// Which address a client really has, when the relay sits behind a reverse proxy (nginx, HAProxy):
// the TCP peer is then the proxy, and per-IP limits and logs would lump every client together.
// `--trust-proxy CIDR` names the proxies; only a peer inside one of them may say, in
// X-Forwarded-For, whom it forwards for. The header is read from the right: each hop appends the
// address it received the connection from, so the rightmost address that is not a trusted proxy is
// the first one no trusted hop can have forged (a client can put anything at the left).

import { canonicalIp, cidrContains, formatCidr, formatIp, parseCidr, parseIp, type Cidr } from './ip-range';

export class TrustedProxies {
  private constructor(private readonly ranges: readonly Cidr[]) {}

  static readonly NONE = new TrustedProxies([]);

  /** Parses CIDRs or bare addresses; `{ invalid }` names the first one that is neither. */
  static parse(texts: readonly string[]): TrustedProxies | { invalid: string } {
    const ranges: Cidr[] = [];
    for (const t of texts) {
      const cidr = parseCidr(t);
      if (!cidr) return { invalid: t };
      ranges.push(cidr);
    }
    return new TrustedProxies(ranges);
  }

  /** The ranges as given back, for logs. */
  describe(): string[] {
    return this.ranges.map(formatCidr);
  }

  get empty(): boolean {
    return this.ranges.length === 0;
  }

  trusts(address: string | undefined): boolean {
    if (address === undefined || this.ranges.length === 0) return false;
    const ip = parseIp(address);
    if (!ip) return false;
    const a = canonicalIp(ip);
    return this.ranges.some((r) => cidrContains(r, a));
  }

  /**
   * The client's address: the TCP peer's, unless that peer is a trusted proxy and the request
   * carries X-Forwarded-For, in which case the rightmost entry that is not itself trusted (or the
   * leftmost when every hop is trusted). Malformed entries stop the walk: what lies left of one
   * cannot be vouched for, so the peer's last vouched-for hop is used.
   */
  clientAddress(peer: string | undefined, forwardedFor: string | string[] | undefined): string {
    const fallback = peer ?? '?';
    if (forwardedFor === undefined || !this.trusts(peer)) return normalise(fallback);
    const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor)
      .split(',')
      .map((h) => h.trim())
      .filter((h) => h !== '');
    let client = fallback;
    for (let i = hops.length - 1; i >= 0; i--) {
      const ip = parseIp(stripPort(hops[i]));
      if (!ip) break;
      client = formatIp(canonicalIp(ip));
      if (!this.trusts(client)) return client;
    }
    return normalise(client);
  }
}

/** "::ffff:1.2.3.4" (a dual-stack listener's IPv4 peer) as "1.2.3.4", so one client is one key. */
function normalise(address: string): string {
  const ip = parseIp(address);
  return ip ? formatIp(canonicalIp(ip)) : address;
}

/** "1.2.3.4:5678" and "[::1]:5678" as the address alone (some proxies append the port). */
function stripPort(hop: string): string {
  const v6 = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (v6) return v6[1];
  const v4 = /^(\d+\.\d+\.\d+\.\d+):\d+$/.exec(hop);
  return v4 ? v4[1] : hop;
}
