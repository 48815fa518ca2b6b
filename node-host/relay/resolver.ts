// Hostname → every address, resolved by the relay itself so policy sees what a socket would reach.
// IP literals (any spelling getaddrinfo accepts, such as 0x7f.1 or 2130706433) resolve to the
// address they stand for, so they cannot slip past the policy either.

import dns from 'node:dns';
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

const NOT_FOUND = new Set(['ENOTFOUND', 'ENODATA', 'EAI_NONAME', 'EAI_NODATA', 'ESERVFAIL', 'NXDOMAIN']);

function resolveError(hostname: string, e: unknown): ResolveError {
  const code = (e as NodeJS.ErrnoException)?.code ?? '';
  return new ResolveError(NOT_FOUND.has(code) ? 'not-found' : 'failed', `${hostname}: ${code || String(e)}`);
}

function toAddresses(texts: string[]): IpAddress[] {
  return texts.map((t) => parseIp(t)).filter((a): a is IpAddress => a !== undefined);
}

/**
 * The system resolver (getaddrinfo, as `dns.lookup`), or — with `servers` (the --dns-server flag) —
 * those DNS servers queried directly for A and AAAA records.
 */
export function createResolver(servers: readonly string[] = []): Resolve {
  if (servers.length === 0) {
    return async (hostname) => {
      const literal = parseIp(hostname);
      if (literal) return [literal];
      try {
        const found = await dns.promises.lookup(hostname, { all: true, verbatim: true });
        const out = toAddresses(found.map((f) => f.address));
        if (out.length === 0) throw new ResolveError('not-found', `${hostname}: no addresses`);
        return out;
      } catch (e) {
        throw e instanceof ResolveError ? e : resolveError(hostname, e);
      }
    };
  }
  const resolver = new dns.promises.Resolver({ timeout: 3000, tries: 2 });
  resolver.setServers([...servers]);
  return async (hostname) => {
    const literal = parseIp(hostname);
    if (literal) return [literal];
    const [v4, v6] = await Promise.allSettled([resolver.resolve4(hostname), resolver.resolve6(hostname)]);
    const texts = [...(v4.status === 'fulfilled' ? v4.value : []), ...(v6.status === 'fulfilled' ? v6.value : [])];
    if (texts.length > 0) return toAddresses(texts);
    throw resolveError(hostname, v4.status === 'rejected' ? v4.reason : v6.status === 'rejected' ? v6.reason : undefined);
  };
}
