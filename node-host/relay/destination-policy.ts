// Where the relay may connect. The check runs on every *resolved* address (a hostname that resolves
// to 127.0.0.1 is loopback, whatever it is called), and on the IPv4 address inside IPv6 forms.
//
// Order: a port outside --ports is blocked; --deny (host or range) blocks; --allow (host or range)
// allows; then the default-denied groups block unless a flag opens them; everything else is allowed.

import { canonicalIp, cidrContains, formatIp, parseCidr, type Cidr, type IpAddress } from './ip-range';

export type RangeGroup = 'loopback' | 'unspecified' | 'private' | 'link-local' | 'multicast' | 'reserved';

/** Ranges refused unless allowed. `private` opens with --allow-private, `loopback` with --allow-loopback. */
const DEFAULT_DENIED: ReadonlyArray<[RangeGroup, string]> = [
  ['loopback', '127.0.0.0/8'],
  ['loopback', '::1/128'],
  // 0.0.0.0/8 reaches this host on Linux (connect to 0.0.0.0 is loopback), as does ::.
  ['unspecified', '0.0.0.0/8'],
  ['unspecified', '::/128'],
  ['private', '10.0.0.0/8'],
  ['private', '172.16.0.0/12'],
  ['private', '192.168.0.0/16'],
  ['private', '100.64.0.0/10'], // carrier-grade NAT
  ['private', 'fc00::/7'], // unique local
  ['private', 'fec0::/10'], // deprecated site-local
  ['link-local', '169.254.0.0/16'], // includes the cloud metadata service 169.254.169.254
  ['link-local', 'fe80::/10'],
  ['multicast', '224.0.0.0/4'],
  ['multicast', 'ff00::/8'],
  ['reserved', '240.0.0.0/4'], // includes the broadcast address 255.255.255.255
  ['reserved', '192.0.0.0/24'],
  ['reserved', '192.0.2.0/24'],
  ['reserved', '198.18.0.0/15'],
  ['reserved', '198.51.100.0/24'],
  ['reserved', '203.0.113.0/24'],
  ['reserved', '2001:db8::/32'],
  ['reserved', '3fff::/20'], // documentation (RFC 9637)
  // Not reachable as themselves, or wrapping other addresses (IANA special-purpose registries): a
  // 6to4 or Teredo address can carry a private or loopback IPv4 address inside.
  ['reserved', '192.88.99.0/24'], // 6to4 relay anycast (deprecated)
  ['reserved', '2002::/16'], // 6to4
  ['reserved', '2001::/32'], // Teredo
  ['reserved', '2001:2::/48'], // benchmarking
  ['reserved', '64:ff9b:1::/48'], // local-use NAT64
  ['reserved', '100::/64'], // discard-only
  ['reserved', '5f00::/16'], // SRv6 SIDs
];

const DENIED: ReadonlyArray<[RangeGroup, Cidr]> = DEFAULT_DENIED.map(([g, text]) => [g, parseCidr(text)!]);

/** A --allow/--deny entry: an address range, or a hostname (".example.com" also matches subdomains). */
export type PolicyEntry = { kind: 'range'; cidr: Cidr; text: string } | { kind: 'host'; name: string };

export interface PolicyConfig {
  allow: PolicyEntry[];
  deny: PolicyEntry[];
  allowPrivate: boolean;
  allowLoopback: boolean;
  /** Allowed destination port ranges (inclusive); empty means every port 1–65535. */
  ports: Array<[number, number]>;
}

export type PolicyDecision = { allowed: true } | { allowed: false; why: string };

export function parsePolicyEntry(text: string): PolicyEntry | undefined {
  const t = text.trim();
  const cidr = parseCidr(t);
  if (cidr) return { kind: 'range', cidr, text: t };
  const name = t.toLowerCase().replace(/\.$/, '');
  // Hostname labels: letters, digits, hyphens, underscores; a leading dot means "and subdomains".
  if (/^\.?([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/.test(name)) {
    return { kind: 'host', name };
  }
  return undefined;
}

function hostMatches(entry: string, hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  if (entry.startsWith('.')) return h === entry.slice(1) || h.endsWith(entry);
  return h === entry;
}

function matches(entries: PolicyEntry[], hostname: string, address: IpAddress): PolicyEntry | undefined {
  return entries.find((e) => (e.kind === 'host' ? hostMatches(e.name, hostname) : cidrContains(e.cidr, address)));
}

export class DestinationPolicy {
  constructor(private readonly config: PolicyConfig) {}

  portAllowed(port: number): boolean {
    const ranges = this.config.ports;
    return ranges.length === 0 || ranges.some(([lo, hi]) => port >= lo && port <= hi);
  }

  /** Decides for one resolved address of `hostname` (the name the client asked for). */
  check(hostname: string, resolved: IpAddress, port: number): PolicyDecision {
    const address = canonicalIp(resolved);
    const shown = formatIp(resolved);
    if (!this.portAllowed(port)) return { allowed: false, why: `port ${port} is not in --ports` };
    // Deny rules see both spellings, so --deny ::ffff:0:0/96 works as written.
    const denied = matches(this.config.deny, hostname, address) ?? matches(this.config.deny, hostname, resolved);
    if (denied) return { allowed: false, why: `${shown} matches --deny ${denied.kind === 'host' ? denied.name : denied.text}` };
    if (matches(this.config.allow, hostname, address) ?? matches(this.config.allow, hostname, resolved)) return { allowed: true };
    for (const [group, cidr] of DENIED) {
      if (!cidrContains(cidr, address)) continue;
      if (group === 'private' && this.config.allowPrivate) continue;
      if (group === 'loopback' && this.config.allowLoopback) continue;
      return { allowed: false, why: `${shown} is ${group} (${formatIp(cidr)}/${cidr.prefix})` };
    }
    return { allowed: true };
  }
}
