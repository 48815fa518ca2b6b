// Where `weft vm` forwards DNS and which names it answers itself: the nameservers in /etc/resolv.conf
// (IPv4 only — the upstream reaches IPv4 destinations), or `--dns-server IP[:PORT]`; and
// `--dns-record NAME=IP` for local names.

import { readFileSync } from 'node:fs';
import type { FlowEndpoint } from '../core/upstream';
import { parseIpv4, type Ipv4Address } from '../core/wire/address';
import { DNS_PORT, encodeDnsName } from '../core/wire/dns';
import { UsageError } from './cli-errors';
import type { EventLog } from './log';

export const RESOLV_CONF = '/etc/resolv.conf';

export interface ResolvConf {
  /** IPv4 nameservers in file order, port 53. */
  servers: FlowEndpoint[];
  /** `nameserver` values skipped (IPv6, scoped or malformed), for the log. */
  skipped: string[];
  /** The `search` (or `domain`) list; the last such line wins, as in glibc. */
  search: string[];
}

/** Parses resolv.conf text (resolv.conf(5)): `nameserver`, `search` and `domain` lines. */
export function parseResolvConf(text: string): ResolvConf {
  const servers: FlowEndpoint[] = [];
  const skipped: string[] = [];
  let search: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const [keyword, ...args] = line.split(/\s+/);
    if (keyword === 'nameserver' && args.length > 0) {
      const ip = tryIpv4(args[0]);
      if (ip === undefined) skipped.push(args[0]);
      else servers.push({ ip, port: DNS_PORT });
    } else if ((keyword === 'search' || keyword === 'domain') && args.length > 0) {
      search = args.map((d) => d.replace(/\.$/, '')).filter((d) => d !== '');
    }
  }
  return { servers, skipped, search };
}

/**
 * The host's IPv4 nameservers from resolv.conf. On a missing or unreadable file, or one with no
 * IPv4 nameserver, logs a `dns-no-resolver` error saying what to do and returns none (the DNS server
 * then answers SERVFAIL for everything but local names).
 */
export function readResolvConf(log: EventLog, path: string = RESOLV_CONF): ResolvConf {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    log('dns-no-resolver', { level: 'error', path, error: code, message: `cannot read ${path} (${code}); pass --dns-server IP[:PORT] to forward DNS queries` });
    return { servers: [], skipped: [], search: [] };
  }
  const conf = parseResolvConf(text);
  if (conf.servers.length === 0) {
    const why = conf.skipped.length > 0 ? `only non-IPv4 nameservers (${conf.skipped.join(', ')})` : 'no nameserver line';
    log('dns-no-resolver', { level: 'error', path, message: `${path} has ${why}; pass --dns-server IP[:PORT] to forward DNS queries` });
  } else if (conf.skipped.length > 0) {
    log('dns-resolver-skipped', { path, skipped: conf.skipped, message: 'non-IPv4 nameservers are not used' });
  }
  return conf;
}

/** Parses a `--dns-server` value: an IPv4 address, optionally with :PORT (default 53). */
export function parseDnsServerFlag(value: string): FlowEndpoint {
  const m = /^([^:]+)(?::(\d{1,5}))?$/.exec(value);
  const ip = m ? tryIpv4(m[1]) : undefined;
  const port = m?.[2] === undefined ? DNS_PORT : Number(m[2]);
  if (!m || ip === undefined || port < 1 || port > 65535) {
    throw new UsageError(
      `bad value for --dns-server: ${JSON.stringify(value)} (expected an IPv4 address, optionally with :PORT, e.g. 1.1.1.1 or 127.0.0.1:5353)`,
    );
  }
  return { ip, port };
}

export interface DnsRecordFlag {
  /** Lowercase, without a trailing dot. */
  name: string;
  ip: Ipv4Address;
}

/** Parses a `--dns-record` value: NAME=IPV4, e.g. myapp.test=10.0.2.2. */
export function parseDnsRecordFlag(value: string): DnsRecordFlag {
  const bad = (why: string): never => {
    throw new UsageError(`bad value for --dns-record: ${JSON.stringify(value)} (${why}; expected NAME=IPV4, e.g. myapp.test=10.0.2.2)`);
  };
  const eq = value.indexOf('=');
  if (eq < 0) bad('no "="');
  const name = value.slice(0, eq).trim().toLowerCase().replace(/\.$/, '');
  const ip = tryIpv4(value.slice(eq + 1).trim());
  if (ip === undefined) bad('not an IPv4 address after "="');
  if (!/^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*$/.test(name)) {
    bad('the name may hold only letters, digits, "-" and "_" in dot-separated labels');
  }
  try {
    encodeDnsName(name);
  } catch {
    bad('a label is over 63 characters or the name over 253');
  }
  return { name, ip: ip! };
}

/** The resolvers to forward to: the --dns-server values if any, else the host's resolv.conf. */
export function dnsResolvers(flags: readonly string[], log: EventLog, resolvConfPath: string = RESOLV_CONF): FlowEndpoint[] {
  if (flags.length > 0) return flags.map(parseDnsServerFlag);
  return readResolvConf(log, resolvConfPath).servers;
}

function tryIpv4(text: string): Ipv4Address | undefined {
  try {
    return parseIpv4(text);
  } catch {
    return undefined;
  }
}
