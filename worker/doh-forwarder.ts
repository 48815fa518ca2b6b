// DNS over HTTPS (RFC 8484) with fetch: the guest's resolver for pages that have no relay. The
// query is POSTed as application/dns-message; any answer size is fine (the DNS server truncates
// for UDP guests and they retry over TCP).

import type { DnsForwarder, DnsForwardHandle, DnsTransport } from '../core/services/dns-server';

export interface DohForwarderOptions {
  url: string;
  /** At most this many requests in flight; more fail at once (default 64). */
  maxInFlight?: number;
  fetch?: typeof fetch;
  onError?: (message: string) => void;
}

export class DohForwarder implements DnsForwarder {
  private inFlight = 0;
  private readonly maxInFlight: number;
  private readonly fetchFn: typeof fetch;

  constructor(private readonly opts: DohForwarderOptions) {
    this.maxInFlight = opts.maxInFlight ?? 64;
    this.fetchFn = opts.fetch ?? fetch.bind(globalThis);
  }

  forward(query: Uint8Array, _transport: DnsTransport, done: (reply: Uint8Array | undefined) => void): DnsForwardHandle {
    if (this.inFlight >= this.maxInFlight) {
      queueMicrotask(() => done(undefined));
      return { cancel() {} };
    }
    const abort = new AbortController();
    let finished = false;
    const finish = (reply: Uint8Array | undefined) => {
      if (finished) return;
      finished = true;
      this.inFlight--;
      done(reply);
    };
    this.inFlight++;
    // RFC 8484 §4.1: the ID should be 0 for cacheability; the DNS server maps IDs itself.
    const body = new Uint8Array(query);
    body[0] = 0;
    body[1] = 0;
    this.fetchFn(this.opts.url, {
      method: 'POST',
      headers: { 'content-type': 'application/dns-message', accept: 'application/dns-message' },
      body,
      signal: abort.signal,
    })
      .then(async (res) => {
        if (!res.ok) throw new Error(`HTTP ${res.status}`);
        const reply = new Uint8Array(await res.arrayBuffer());
        if (reply.length < 12) throw new Error('short answer');
        // Give the answer the query's ID back.
        reply[0] = query[0];
        reply[1] = query[1];
        finish(reply);
      })
      .catch((e: unknown) => {
        if (!finished && !abort.signal.aborted) this.opts.onError?.(`DNS over HTTPS to ${this.opts.url} failed: ${(e as Error).message}`);
        finish(undefined);
      });
    return {
      cancel: () => {
        abort.abort();
        finish(undefined);
      },
    };
  }
}
