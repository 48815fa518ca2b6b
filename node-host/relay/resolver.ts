// Hostname → every address, resolved by the relay itself so policy sees what a socket would reach.
// IP literals (any spelling getaddrinfo accepts, such as 0x7f.1 or 2130706433) resolve to the
// address they stand for, so they cannot slip past the policy either.

import dns from 'node:dns';
import { performance } from 'node:perf_hooks';
import { HostsFile } from './hosts-file';
import { parseIp, type IpAddress } from './ip-range';

export class ResolveError extends Error {
  constructor(
    readonly code: 'not-found' | 'failed',
    message: string,
  ) {
    super(message);
    this.name = 'ResolveError';
  }
}

export type Resolve = (hostname: string) => Promise<IpAddress[]>;

/** c-ares's codes for "this name has no such record". */
const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'ESERVFAIL', 'NXDOMAIN']);

function resolveError(hostname: string, e: unknown): ResolveError {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  return new ResolveError(NOT_FOUND.has(code) ? 'not-found' : 'failed', `${hostname}: ${code || String(e)}`);
}

function toAddresses(texts: string[]): IpAddress[] {
  return texts.map((t) => parseIp(t)).filter((a): a is IpAddress => a !== undefined);
}

/** c-ares settings: a server gets 3 s, then one more try; a silent one costs about 9 s in all. */
const RESOLVER_OPTIONS = { timeout: 3000, tries: 2 };

/**
 * Hostname → addresses, never through getaddrinfo. `dns.lookup` holds one of libuv's four pool
 * threads per lookup, so a handful of names whose DNS never answers would stall every other
 * client's lookups (and the relay's file reads) for as long as they hang. c-ares is asynchronous:
 * a hanging name costs a timer, not a thread. The servers are `servers` (--dns-server) or, without
 * them, resolv.conf's — and then /etc/hosts first, as the system resolver would.
 */
export function createResolver(servers: readonly string[] = [], hosts: HostsFile | undefined = servers.length === 0 ? new HostsFile() : undefined): Resolve {
  const resolver = new dns.promises.Resolver(RESOLVER_OPTIONS);
  if (servers.length > 0) resolver.setServers([...servers]);
  return async (hostname) => {
    const literal = parseIp(hostname);
    if (literal) return [literal];
    const listed = hosts?.lookup(hostname, performance.now());
    if (listed) return listed;
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(hostname), resolver.resolve6(hostname)]);
    const texts = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (texts.length > 0) return toAddresses(texts);
    throw resolveError(hostname, v4.status === 'rejected' ? v4.reason : v6.status === 'rejected' ? v6.reason : undefined);
  };
}
