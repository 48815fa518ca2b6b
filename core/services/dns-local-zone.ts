// The names weft answers itself, authoritatively: its own records (gateway.weft.internal, user
// records) and their reverse (PTR) names. Under a local domain, a name that is not a record is
// NXDOMAIN — or NODATA when it is an ancestor of one (an empty non-terminal) — and never forwarded.

import { formatIpv4, type Ipv4Address } from '../wire/address';
import { DnsClass, DnsRcode, DnsType, aRdata, dnsNameKey, encodeDnsName, type DnsAnswerRepr, type DnsQuestion } from '../wire/dns';

export const DEFAULT_LOCAL_DOMAIN = 'weft.internal';

/** The names weft answers itself: gateway.weft.internal and host.weft.internal → the gateway, plus `extra`. */
export function weftLocalRecords(gateway: Ipv4Address, extra: Iterable<[string, Ipv4Address]> = []): Map<string, Ipv4Address> {
  const records = new Map<string, Ipv4Address>([
    [`gateway.${DEFAULT_LOCAL_DOMAIN}`, gateway],
    [`host.${DEFAULT_LOCAL_DOMAIN}`, gateway],
  ]);
  for (const [name, ip] of extra) records.set(normalizeName(name), ip);
  return records;
}

export interface DnsLocalAnswer {
  rcode: number;
  answers: DnsAnswerRepr[];
}

export class DnsLocalZone {
  private readonly names = new Map<string, Ipv4Address>();
  private readonly reverse = new Map<string, Uint8Array>();
  private readonly domains: string[];
  /** Names from guests' DHCP hostnames (setGuestName), a subset of `names`. */
  private readonly guestNames = new Map<string, Ipv4Address>();
  /** Ancestors of local names inside local domains (and the domains): they exist, so NODATA. */
  private readonly emptyNonTerminals = new Set<string>();

  /** Throws on a name that cannot be encoded, so a bad configuration fails at start-up. */
  constructor(records: Map<string, Ipv4Address>, domains: string[] = [DEFAULT_LOCAL_DOMAIN]) {
    this.domains = domains.map(normalizeName);
    for (const d of this.domains) encodeDnsName(d);
    for (const [name, ip] of records) {
      const key = normalizeName(name);
      const wire = encodeDnsName(key);
      this.names.set(key, ip);
      const rev = reverseName(ip);
      if (!this.reverse.has(rev)) this.reverse.set(rev, wire);
      for (const domain of this.domains) {
        if (!isUnder(key, domain)) continue;
        this.emptyNonTerminals.add(domain);
        for (let p = key.indexOf('.'); p >= 0 && key.length - p - 1 > domain.length; p = key.indexOf('.', p + 1)) {
          this.emptyNonTerminals.add(key.slice(p + 1));
        }
      }
    }
    for (const d of this.domains) this.emptyNonTerminals.add(d);
  }

  /**
   * A guest's DHCP hostname as `<hostname>.<first local domain>` (one LAN's guests find each other
   * by name). The newest lease holding a name wins it; a guest's previous name goes. Returns the
   * full name, or undefined for a hostname that is not one DNS label (letters, digits, hyphens).
   */
  setGuestName(hostname: string, ip: Ipv4Address): string | undefined {
    const label = hostname.toLowerCase();
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/.test(label) || this.domains.length === 0) return undefined;
    const name = `${label}.${this.domains[0]}`;
    if (this.names.has(name) && !this.guestNames.has(name)) return undefined; // a configured record stays
    for (const [other, otherIp] of this.guestNames) if (otherIp === ip && other !== name) this.dropGuestName(other);
    this.dropGuestName(name);
    this.guestNames.set(name, ip);
    this.names.set(name, ip);
    this.reverse.set(reverseName(ip), encodeDnsName(name));
    return name;
  }

  private dropGuestName(name: string): void {
    const ip = this.guestNames.get(name);
    if (ip === undefined) return;
    this.guestNames.delete(name);
    this.names.delete(name);
    const rev = reverseName(ip);
    const wire = encodeDnsName(name);
    const target = this.reverse.get(rev);
    if (target && target.length === wire.length && target.every((b, i) => b === wire[i])) this.reverse.delete(rev);
  }

  /** The answer to `q` (whose name is `nameKey`), or undefined when the name is not ours. */
  answer(q: DnsQuestion, nameKey: string, ttl: number): DnsLocalAnswer | undefined {
    const ip = this.names.get(nameKey);
    if (ip !== undefined) {
      const a = (q.type === DnsType.A || q.type === DnsType.ANY) && (q.class === DnsClass.IN || q.class === DnsClass.ANY);
      return { rcode: DnsRcode.NOERROR, answers: a ? [{ type: DnsType.A, class: DnsClass.IN, ttl, rdata: aRdata(ip) }] : [] };
    }
    if (q.type === DnsType.PTR) {
      const target = this.reverse.get(nameKey);
      if (target) return { rcode: DnsRcode.NOERROR, answers: [{ type: DnsType.PTR, class: DnsClass.IN, ttl, rdata: target }] };
    }
    if (this.emptyNonTerminals.has(nameKey)) return { rcode: DnsRcode.NOERROR, answers: [] };
    if (this.domains.some((d) => isUnder(nameKey, d))) return { rcode: DnsRcode.NXDOMAIN, answers: [] };
    return undefined;
  }
}

function normalizeName(name: string): string {
  return dnsNameKey(name.endsWith('.') ? name.slice(0, -1) : name);
}

function isUnder(name: string, domain: string): boolean {
  return name === domain || (name.length > domain.length && name.endsWith(domain) && name[name.length - domain.length - 1] === '.');
}

function reverseName(ip: Ipv4Address): string {
  return `${formatIpv4(ip).split('.').reverse().join('.')}.in-addr.arpa`;
}
