// web/guest-http.ts against real servers: node:http (keep-alive, chunked, Content-Length, HEAD,
// 204/304, redirects, request bodies both ways) and raw node:net servers for what node:http will
// not send (a close-delimited body, a server that closes early, oversized heads). The client's
// byte connection is a net.Socket turned into web streams (stream.Duplex.toWeb), as a guest TCP
// connection is in the page.

import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Duplex } from 'node:stream';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { GuestHttpClient, type ByteConnection } from '../../web/guest-http';

/** A client whose connections are TCP to 127.0.0.1 (the URL's host is only a name here). */
function clientFor(port: number, options: { idleTimeoutMs?: number; maxHeadBytes?: number; maxHeaders?: number } = {}): GuestHttpClient {
  return new GuestHttpClient({
    ...options,
    connect: (_host, _port, signal) =>
      new Promise<ByteConnection>((resolve, reject) => {
        const socket = net.connect(port, '127.0.0.1');
        const onAbort = () => socket.destroy();
        signal?.addEventListener('abort', onAbort, { once: true });
        socket.once('connect', () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(Duplex.toWeb(socket) as unknown as ByteConnection);
        });
        socket.once('error', reject);
      }),
  });
}

function listen(server: Server | net.Server): Promise<number> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));
}

function bytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of req) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

describe('GuestHttpClient against node:http', () => {
  let server: Server;
  let port: number;
  let client: GuestHttpClient;
  const sockets = new Set<net.Socket>();
  const big = bytes(1024 * 1024);
  /** Resolves the paused chunked response (the streaming test). */
  let releaseStream: (() => void) | undefined;

  beforeAll(async () => {
    server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const body = await readAll(req);
      res.setHeader('X-Socket', String((req.socket as net.Socket & { id?: number }).id));
      switch (url.pathname) {
        case '/hello':
          res.setHeader('Content-Type', 'text/plain');
          res.end('hello');
          return;
        case '/big':
          res.setHeader('Content-Length', big.length);
          res.end(big);
          return;
        case '/chunked':
          res.write('one,');
          res.write('two,');
          res.end('three');
          return;
        case '/stream':
          res.write('first');
          releaseStream = () => res.end('second');
          return;
        case '/echo':
          res.setHeader('X-Method', req.method ?? '');
          res.setHeader('X-Framing', req.headers['transfer-encoding'] ? 'chunked' : `length ${req.headers['content-length'] ?? 'none'}`);
          res.end(body);
          return;
        case '/head':
          res.setHeader('Content-Length', 5);
          res.end(req.method === 'HEAD' ? undefined : 'abcde');
          return;
        case '/204':
          res.writeHead(204).end();
          return;
        case '/304':
          res.writeHead(304, { ETag: '"x"' }).end();
          return;
        case '/redirect':
          res.writeHead(302, { Location: '/hello' }).end('moved');
          return;
        case '/see-other':
          res.writeHead(303, { Location: `/echo?from=303` }).end();
          return;
        case '/temporary':
          res.writeHead(307, { Location: '/echo' }).end();
          return;
        case '/loop':
          res.writeHead(302, { Location: '/loop' }).end();
          return;
        case '/cookie':
          res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2']);
          res.end(req.headers.cookie ?? '');
          return;
        case '/gzip': {
          const { gzipSync } = await import('node:zlib');
          res.setHeader('Content-Encoding', 'gzip');
          res.end(gzipSync('decoded text'));
          return;
        }
        default:
          res.writeHead(404).end('no');
      }
    });
    let n = 0;
    server.on('connection', (s: net.Socket & { id?: number }) => {
      s.id = ++n;
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    port = await listen(server);
  });

  afterEach(() => client?.close());
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it('keeps the connection alive: two requests, one connection', async () => {
    client = clientFor(port);
    const a = await client.fetch('http://guest/hello');
    expect(await a.text()).toBe('hello');
    expect(a.headers.get('content-type')).toBe('text/plain');
    const b = await client.fetch('http://guest/hello');
    expect(await b.text()).toBe('hello');
    expect(b.headers.get('x-socket')).toBe(a.headers.get('x-socket'));
    expect(client.counters).toEqual({ connectionsOpened: 1, requestsOnReusedConnections: 1 });
    expect(a.url).toBe('http://guest/hello');
    expect(a.status).toBe(200);
  });

  it('a Content-Length body of 1 MiB arrives whole; the idle pool stays within its bound', async () => {
    client = clientFor(port);
    const all = await Promise.all([1, 2, 3, 4, 5, 6].map(() => client.fetch('http://guest/big').then((r) => r.arrayBuffer())));
    for (const body of all) expect(sha(new Uint8Array(body))).toBe(sha(big));
    expect(client.counters.connectionsOpened).toBe(6);
    expect(client.idleConnections).toBe(4);
  });

  it('a chunked body is decoded, and streams as the server sends it', async () => {
    client = clientFor(port);
    expect(await (await client.fetch('http://guest/chunked')).text()).toBe('one,two,three');
    const r = await client.fetch('http://guest/stream');
    const reader = r.body!.getReader();
    const first = await reader.read();
    expect(new TextDecoder().decode(first.value)).toBe('first');
    releaseStream!();
    let rest = '';
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    expect(rest).toBe('second');
  });

  it('request bodies: bytes go with Content-Length, a stream goes chunked', async () => {
    client = clientFor(port);
    const body = bytes(200_000, 7);
    const a = await client.fetch('http://guest/echo', { method: 'POST', body });
    expect(a.headers.get('x-framing')).toBe('length 200000');
    expect(sha(new Uint8Array(await a.arrayBuffer()))).toBe(sha(body));
    const stream = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('streamed '));
        c.enqueue(new TextEncoder().encode('body'));
        c.close();
      },
    });
    const b = await client.fetch('http://guest/echo', { method: 'PUT', body: stream, duplex: 'half' } as RequestInit);
    expect(b.headers.get('x-framing')).toBe('chunked');
    expect(b.headers.get('x-method')).toBe('PUT');
    expect(await b.text()).toBe('streamed body');
  });

  it('HEAD, 204 and 304 have no body, and the connection carries on', async () => {
    client = clientFor(port);
    const head = await client.fetch('http://guest/head', { method: 'HEAD' });
    expect(head.headers.get('content-length')).toBe('5');
    expect(head.body).toBeNull();
    const noContent = await client.fetch('http://guest/204');
    expect(noContent.status).toBe(204);
    expect(noContent.body).toBeNull();
    const notModified = await client.fetch('http://guest/304');
    expect(notModified.status).toBe(304);
    expect(await (await client.fetch('http://guest/head')).text()).toBe('abcde');
    expect(client.counters.connectionsOpened).toBe(1);
  });

  it("redirects: followed ('follow'), 303 turns POST into GET, 307 keeps method and body, 'manual' and 'error', a loop fails", async () => {
    client = clientFor(port);
    const followed = await client.fetch('http://guest/redirect');
    expect(await followed.text()).toBe('hello');
    expect(followed.redirected).toBe(true);
    expect(followed.url).toBe('http://guest/hello');
    const seeOther = await client.fetch('http://guest/see-other', { method: 'POST', body: 'x' });
    expect(seeOther.headers.get('x-method')).toBe('GET');
    expect(seeOther.url).toBe('http://guest/echo?from=303');
    const temporary = await client.fetch('http://guest/temporary', { method: 'POST', body: 'kept' });
    expect(temporary.headers.get('x-method')).toBe('POST');
    expect(await temporary.text()).toBe('kept');
    const manual = await client.fetch('http://guest/redirect', { redirect: 'manual' });
    expect(manual.status).toBe(302);
    expect(manual.headers.get('location')).toBe('/hello');
    await manual.body?.cancel();
    await expect(client.fetch('http://guest/redirect', { redirect: 'error' })).rejects.toThrow(TypeError);
    await expect(client.fetch('http://guest/loop')).rejects.toThrow(/more than 20 redirects/);
  });

  it('sends the Cookie header it is given, hands back every Set-Cookie, and decodes gzip', async () => {
    client = clientFor(port);
    const res = await client.exchange({ method: 'GET', url: new URL('http://guest/cookie'), headers: [['Cookie', 'c=3']], body: null });
    expect(res.headers.filter(([n]) => n.toLowerCase() === 'set-cookie').map(([, v]) => v)).toEqual(['a=1; Path=/', 'b=2']);
    expect(await new Response(res.body).text()).toBe('c=3');
    expect(await (await client.fetch('http://guest/gzip')).text()).toBe('decoded text');
  });

  it('an AbortSignal rejects a fetch under way with its reason, and errors a body being read', async () => {
    client = clientFor(port);
    const before = new AbortController();
    before.abort();
    await expect(client.fetch('http://guest/hello', { signal: before.signal })).rejects.toMatchObject({ name: 'AbortError' });
    const during = new AbortController();
    const r = await client.fetch('http://guest/stream', { signal: during.signal });
    const reader = r.body!.getReader();
    await reader.read();
    during.abort();
    await expect(reader.read()).rejects.toMatchObject({ name: 'AbortError' });
    releaseStream!();
  });

  it('a connection the server closed while idle is not used again', async () => {
    server.keepAliveTimeout = 50;
    try {
      client = clientFor(port);
      await (await client.fetch('http://guest/hello')).text();
      expect(client.idleConnections).toBe(1);
      // Node closes an idle socket about a second after keepAliveTimeout (its keepAliveTimeoutBuffer).
      await expect.poll(() => client.idleConnections, { timeout: 3000 }).toBe(0);
      expect(await (await client.fetch('http://guest/hello')).text()).toBe('hello');
      expect(client.counters.connectionsOpened).toBe(2);
    } finally {
      server.keepAliveTimeout = 5000;
    }
  });
});

describe('GuestHttpClient against raw servers', () => {
  const servers: net.Server[] = [];
  afterAll(async () => {
    for (const s of servers) await new Promise((r) => s.close(r));
  });

  /** A server that answers every connection with `answer` (then ends it, unless `keepOpen`). */
  async function rawServer(answer: (socket: net.Socket) => void): Promise<number> {
    const s = net.createServer((socket) => {
      socket.once('data', () => answer(socket));
      socket.on('error', () => undefined);
    });
    servers.push(s);
    return listen(s);
  }

  it('a close-delimited body ends when the server closes', async () => {
    const port = await rawServer((s) => s.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end'));
    const client = clientFor(port);
    expect(await (await client.fetch('http://guest/')).text()).toBe('until the end');
    expect(client.idleConnections).toBe(0);
  });

  it('a server that closes before the body ends: reading the body rejects with a TypeError', async () => {
    const port = await rawServer((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten..'));
    const r = await clientFor(port).fetch('http://guest/');
    await expect(r.text()).rejects.toThrow(TypeError);
  });

  it('a server that closes without answering: fetch rejects with a TypeError', async () => {
    const port = await rawServer((s) => s.end());
    await expect(clientFor(port).fetch('http://guest/')).rejects.toThrow(/closed the connection without answering/);
  });

  it('a refused connection: fetch rejects with a TypeError whose cause is the connect error', async () => {
    const s = net.createServer();
    const port = await listen(s);
    await new Promise((r) => s.close(r));
    const e = await clientFor(port)
      .fetch('http://guest/')
      .catch((err: unknown) => err);
    expect(e).toBeInstanceOf(TypeError);
    expect((e as TypeError & { cause: { code: string } }).cause.code).toBe('ECONNREFUSED');
  });

  it('heads are bounded: too long, or too many fields, fail with a TypeError', async () => {
    const long = await rawServer((s) => s.end(`HTTP/1.1 200 OK\r\nX-Long: ${'a'.repeat(70_000)}\r\n\r\n`));
    await expect(clientFor(long).fetch('http://guest/')).rejects.toThrow(/longer than/);
    const many = await rawServer((s) => s.end(`HTTP/1.1 200 OK\r\n${Array.from({ length: 101 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`));
    await expect(clientFor(many).fetch('http://guest/')).rejects.toThrow(/more than 100 header fields/);
    const conflicting = await rawServer((s) => s.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd'));
    await expect(clientFor(conflicting).fetch('http://guest/')).rejects.toThrow(/invalid Content-Length/);
  });

  it('a 100 Continue before the answer is skipped; trailers after the last chunk are read', async () => {
    const port = await rawServer((s) =>
      s.end('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n'),
    );
    expect(await (await clientFor(port).fetch('http://guest/')).text()).toBe('hello');
  });
});
