// An HTTP/1.1 client over any byte connection ({ readable, writable } WHATWG streams): what
// network.fetch() and the preview speak to the guest's web server with. It follows fetch's
// semantics where a page can see them (Request/Response, redirect modes, AbortSignal, TypeError on
// failure) and keeps connections alive in a small idle pool per origin. RFC 9112 framing: a
// response body ends by Content-Length, by chunked coding, or by the server closing; HEAD, 1xx, 204
// and 304 answers have none. The head is bounded (bytes and header count), as is every chunk-size
// and trailer line.

/** A byte connection: TCP into the guest (network.connectTcp), or anything else that moves bytes both ways. */
export interface ByteConnection {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<Uint8Array>;
}

export interface GuestHttpOptions {
  /** Opens a connection to `hostname:port` (the URL's). Rejects with what fetch should give as the cause. */
  connect(hostname: string, port: number, signal: AbortSignal | undefined): Promise<ByteConnection>;
  /** Idle connections kept per origin for reuse (default 4); more are closed. */
  maxIdlePerOrigin?: number;
  /** An idle connection is closed after this many ms (default 5,000). */
  idleTimeoutMs?: number;
  /** Largest response head, status line to the empty line (default 64 KiB). */
  maxHeadBytes?: number;
  /** Most header fields in a response head, and in its trailers (default 100). */
  maxHeaders?: number;
  /** Redirects followed before fetch fails (default 20, as browsers). */
  maxRedirects?: number;
}

/** A request as it goes on the wire: the header list as given (Cookie included), no redirects followed. */
export interface HttpRequest {
  method: string;
  url: URL;
  headers: Array<[string, string]>;
  /** A stream goes chunked; bytes go with Content-Length. */
  body: Uint8Array | ReadableStream<Uint8Array> | null;
  signal?: AbortSignal;
}

/** A response as it came: every header field in order (Set-Cookie included), the body decoded from its framing. */
export interface HttpResponse {
  status: number;
  statusText: string;
  headers: Array<[string, string]>;
  /** Null for HEAD, 204 and 304 answers. */
  body: ReadableStream<Uint8Array> | null;
}

const CRLF = '\r\n';
/** A chunk-size line longer than this is refused (extensions included). */
const MAX_CHUNK_LINE_BYTES = 4096;
/** A redirect's body smaller than this is read to its end so the connection can be reused. */
const MAX_DRAINED_REDIRECT_BYTES = 64 * 1024;
/** A request body up to this size is sent in the same write as the head. */
const COALESCE_BYTES = 16 * 1024;
/** How long a response that came before its request's body was all written waits for that write. */
const UPLOAD_GRACE_MS = 1000;
/** How long a connection the client is done with may take to close after its FIN. */
const RETIRE_MS = 2000;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
const NULL_BODY_STATUSES = new Set([101, 103, 204, 205, 304]);

/** A failure of the exchange itself, before fetch wraps it into a TypeError. */
class HttpExchangeError extends Error {
  constructor(
    message: string,
    /** Nothing of a response arrived: a reused connection that the server had closed may be the cause. */
    readonly beforeResponse = false,
  ) {
    super(message);
    this.name = 'HttpExchangeError';
  }
}

/** One HTTP/1.1 connection: a reader with the bytes read ahead, and a writer. */
class Http1Connection {
  private buf: Uint8Array = new Uint8Array(0);
  private eof = false;
  /** A read started while the connection was idle (it notices the server closing it). */
  private pending: Promise<ReadableStreamReadResult<Uint8Array>> | undefined;
  private readonly reader: ReadableStreamDefaultReader<Uint8Array>;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;
  /** Requests sent on this connection so far. */
  uses = 0;
  gone = false;
  idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    readonly origin: string,
    conn: ByteConnection,
  ) {
    this.reader = conn.readable.getReader();
    this.writer = conn.writable.getWriter();
  }

  get buffered(): number {
    return this.buf.length;
  }

  /** Reads more; false at the end of the stream. */
  async fill(): Promise<boolean> {
    if (this.eof) return false;
    const p = this.pending ?? this.reader.read();
    this.pending = undefined;
    const r = await p;
    if (r.done) {
      this.eof = true;
      return false;
    }
    const chunk = r.value;
    if (this.buf.length === 0) this.buf = chunk;
    else {
      const joined = new Uint8Array(this.buf.length + chunk.length);
      joined.set(this.buf);
      joined.set(chunk, this.buf.length);
      this.buf = joined;
    }
    return true;
  }

  /** Up to `n` buffered bytes, removed from the buffer. */
  take(n: number): Uint8Array {
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(out.length);
    return out;
  }

  /** Where the first `\n` at or after `from` is in the buffer, or -1. */
  indexOfLf(from: number): number {
    return this.buf.indexOf(0x0a, from);
  }

  byteAt(i: number): number {
    return this.buf[i];
  }

  write(bytes: Uint8Array): Promise<void> {
    return this.writer.write(bytes);
  }

  /** Starts a read that tells when the idle connection is closed by the server: `onEvent` runs if it completes. */
  watchIdle(onEvent: () => void): void {
    const p = this.reader.read();
    this.pending = p;
    p.then(onEvent, onEvent);
  }

  /** Aborts both directions (TCP: RST). */
  destroy(): void {
    if (this.gone) return;
    this.gone = true;
    clearTimeout(this.idleTimer);
    this.reader.cancel().catch(() => undefined);
    this.writer.abort().catch(() => undefined);
  }

  /** Closes politely: our FIN, then the server's side read to its end (bounded in time), else aborted. */
  retire(): void {
    if (this.gone) return;
    this.gone = true;
    clearTimeout(this.idleTimer);
    this.writer.close().catch(() => undefined);
    const timer = setTimeout(() => {
      this.reader.cancel().catch(() => undefined);
      this.writer.abort().catch(() => undefined);
    }, RETIRE_MS);
    const drain = async (): Promise<void> => {
      if (this.eof) return;
      if (this.pending) await this.pending;
      for (;;) if ((await this.reader.read()).done) return;
    };
    drain()
      .catch(() => undefined)
      .finally(() => clearTimeout(timer));
  }
}

type Framing = { kind: 'none' } | { kind: 'length'; remaining: number } | { kind: 'chunked' } | { kind: 'close' };

/** HTTP/1.1 to the guest, with fetch's semantics on top (see the file comment). */
export class GuestHttpClient {
  private readonly idle = new Map<string, Http1Connection[]>();
  private readonly maxIdlePerOrigin: number;
  private readonly idleTimeoutMs: number;
  private readonly maxHeadBytes: number;
  private readonly maxHeaders: number;
  private readonly maxRedirects: number;
  /** Connections opened and requests that went on a reused connection (for tests and stats). */
  readonly counters = { connectionsOpened: 0, requestsOnReusedConnections: 0 };

  constructor(private readonly options: GuestHttpOptions) {
    this.maxIdlePerOrigin = options.maxIdlePerOrigin ?? 4;
    this.idleTimeoutMs = options.idleTimeoutMs ?? 5000;
    this.maxHeadBytes = options.maxHeadBytes ?? 64 * 1024;
    this.maxHeaders = options.maxHeaders ?? 100;
    this.maxRedirects = options.maxRedirects ?? 20;
  }

  /** Idle connections kept now, over all origins. */
  get idleConnections(): number {
    let n = 0;
    for (const list of this.idle.values()) n += list.length;
    return n;
  }

  /** fetch() against the guest: follows init.redirect, honours init.signal, rejects with TypeError on network failures. */
  async fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    const request = new Request(input, init);
    const signal = init?.signal ?? (input instanceof Request ? input.signal : undefined) ?? undefined;
    signal?.throwIfAborted();
    // A stream body is sent as it comes (chunked) and cannot be sent again; any other is read now
    // (a Request does not say what its body was made from: its body is read whole).
    const streamed = init?.body instanceof ReadableStream;
    let body: Uint8Array | ReadableStream<Uint8Array> | null = null;
    if (request.body !== null) body = streamed ? request.body : new Uint8Array(await request.arrayBuffer());
    let method = request.method;
    let url = new URL(request.url);
    let headers = [...request.headers];
    for (let redirects = 0; ; redirects++) {
      const res = await this.exchange({ method, url, headers, body, ...(signal ? { signal } : {}) });
      const location = headerValue(res.headers, 'location');
      if (!REDIRECT_STATUSES.has(res.status) || location === undefined || request.redirect === 'manual') {
        return toResponse(res, url, redirects > 0, signal);
      }
      await discard(res.body);
      if (request.redirect === 'error') throw new TypeError(`network.fetch: ${url.href} redirected (${res.status}) and redirect is 'error'`);
      if (redirects >= this.maxRedirects) throw new TypeError(`network.fetch: more than ${this.maxRedirects} redirects from ${request.url}`);
      let next: URL;
      try {
        next = new URL(location, url);
      } catch {
        throw new TypeError(`network.fetch: ${url.href} redirected to an invalid URL: ${location}`);
      }
      if (next.protocol !== 'http:') throw new TypeError(`network.fetch: ${url.href} redirected to ${next.href}, which is not http: on the guest`);
      if (res.status === 303 ? method !== 'HEAD' : (res.status === 301 || res.status === 302) && method === 'POST') {
        method = 'GET';
        body = null;
        headers = headers.filter(([n]) => !/^content-(type|length|encoding|language|location)$/i.test(n));
      } else if (body instanceof ReadableStream) {
        throw new TypeError(`network.fetch: ${url.href} redirected (${res.status}) a request whose streamed body cannot be sent again`);
      }
      if (next.origin !== url.origin) headers = headers.filter(([n]) => n.toLowerCase() !== 'authorization');
      url = next;
    }
  }

  /**
   * One request and its response, on an idle connection to the origin or a new one; no redirect
   * is followed. A reused connection the server had closed meanwhile is retried once on a new one
   * when the body can be sent again. Rejects with a TypeError (its cause says why) or the signal's reason.
   */
  async exchange(req: HttpRequest): Promise<HttpResponse> {
    req.signal?.throwIfAborted();
    if (req.url.protocol !== 'http:') throw new TypeError(`network.fetch: only http: URLs reach the guest, not ${req.url.protocol}`);
    const origin = `${req.url.hostname}:${portOf(req.url)}`;
    for (let attempt = 0; ; attempt++) {
      const reused = this.takeIdle(origin);
      let conn: Http1Connection;
      if (reused) {
        conn = reused;
        this.counters.requestsOnReusedConnections++;
      } else {
        let c: ByteConnection;
        try {
          c = await this.options.connect(req.url.hostname, portOf(req.url), req.signal);
        } catch (e) {
          req.signal?.throwIfAborted();
          throw e instanceof TypeError ? e : new TypeError(`network.fetch: cannot connect to ${req.url.host}: ${messageOf(e)}`, { cause: e });
        }
        conn = new Http1Connection(origin, c);
        this.counters.connectionsOpened++;
      }
      try {
        return await this.exchangeOn(conn, req);
      } catch (e) {
        conn.destroy();
        req.signal?.throwIfAborted();
        const retry = reused && attempt === 0 && e instanceof HttpExchangeError && e.beforeResponse && !(req.body instanceof ReadableStream);
        if (retry) continue;
        throw e instanceof TypeError ? e : new TypeError(`network.fetch: ${req.method} ${req.url.href} failed: ${messageOf(e)}`, { cause: e });
      }
    }
  }

  /** Closes every idle connection. */
  close(): void {
    for (const list of this.idle.values()) for (const c of list) c.retire();
    this.idle.clear();
  }

  private async exchangeOn(conn: Http1Connection, req: HttpRequest): Promise<HttpResponse> {
    conn.uses++;
    const onAbort = () => conn.destroy();
    req.signal?.addEventListener('abort', onAbort, { once: true });
    let released = false;
    const done = (reusable: boolean) => {
      if (released) return;
      released = true;
      req.signal?.removeEventListener('abort', onAbort);
      if (reusable) this.putIdle(conn);
      else conn.retire();
    };
    try {
      const wantsClose = req.headers.some(([n, v]) => n.toLowerCase() === 'connection' && /(^|,)\s*close\s*(,|$)/i.test(v));
      let uploading = true;
      const upload = this.sendRequest(conn, req).finally(() => (uploading = false));
      // The server may answer before it read the whole body (an error, typically): read at once.
      upload.catch(() => undefined);
      let head = await this.readHead(conn);
      while (head.status >= 100 && head.status < 200) {
        if (head.status === 101) throw new HttpExchangeError('the server switched protocols (101), which fetch does not support');
        head = await this.readHead(conn);
      }
      // A server answers once it has the body: give the last write a moment to report so the
      // connection stays reusable, but not for ever (one that answered early may never read it all).
      if (uploading) await Promise.race([upload.catch(() => undefined), new Promise((r) => setTimeout(r, UPLOAD_GRACE_MS))]);
      if (!uploading) await upload;
      const framing = this.framingOf(req.method, head.status, head.headers);
      // The connection can carry the next request only if this body ends by its framing and both sides keep it open.
      const keep =
        !wantsClose &&
        !uploading &&
        framing.kind !== 'close' &&
        head.version === '1.1' &&
        !headerValues(head.headers, 'connection').some((v) => /(^|,)\s*close\s*(,|$)/i.test(v)) &&
        !(headerValue(head.headers, 'transfer-encoding') !== undefined && headerValue(head.headers, 'content-length') !== undefined);
      const response: HttpResponse = { status: head.status, statusText: head.statusText, headers: head.headers, body: null };
      if (framing.kind === 'none' || (framing.kind === 'length' && framing.remaining === 0)) {
        done(keep);
        return response;
      }
      response.body = this.bodyStream(conn, framing, req.signal, done, keep);
      return response;
    } catch (e) {
      released = true;
      req.signal?.removeEventListener('abort', onAbort);
      throw e;
    }
  }

  private async sendRequest(conn: Http1Connection, req: HttpRequest): Promise<void> {
    const lines = [`${req.method} ${req.url.pathname}${req.url.search} HTTP/1.1`];
    const names = new Set(req.headers.map(([n]) => n.toLowerCase()));
    if (!TOKEN.test(req.method)) throw new TypeError(`network.fetch: invalid method ${JSON.stringify(req.method)}`);
    lines.push(`Host: ${req.url.host}`);
    for (const [name, value] of req.headers) {
      const n = name.toLowerCase();
      // Framing and the host are the client's; the rest goes as given.
      if (n === 'host' || n === 'content-length' || n === 'transfer-encoding') continue;
      if (!TOKEN.test(name) || /[\r\n\0]/.test(value)) throw new TypeError(`network.fetch: invalid header ${JSON.stringify(name)}`);
      lines.push(`${name}: ${value}`);
    }
    if (!names.has('accept')) lines.push('Accept: */*');
    const body = req.body;
    if (body instanceof ReadableStream) lines.push('Transfer-Encoding: chunked');
    else if (body !== null || !['GET', 'HEAD', 'OPTIONS', 'DELETE', 'TRACE', 'CONNECT'].includes(req.method))
      lines.push(`Content-Length: ${body?.length ?? 0}`);
    const head = latin1(lines.join(CRLF) + CRLF + CRLF);
    if (body instanceof Uint8Array && body.length > 0 && body.length <= COALESCE_BYTES) {
      const both = new Uint8Array(head.length + body.length);
      both.set(head);
      both.set(body, head.length);
      await conn.write(both);
      return;
    }
    await conn.write(head);
    if (body instanceof Uint8Array) {
      if (body.length > 0) await conn.write(body);
      return;
    }
    if (!body) return;
    const reader = body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (!(value instanceof Uint8Array)) throw new TypeError('network.fetch: a request body stream must give Uint8Array chunks');
        if (value.length === 0) continue;
        await conn.write(latin1(`${value.length.toString(16)}${CRLF}`));
        await conn.write(value);
        await conn.write(latin1(CRLF));
      }
      await conn.write(latin1(`0${CRLF}${CRLF}`));
    } catch (e) {
      reader.cancel(e).catch(() => undefined);
      throw e;
    }
  }

  /** Reads one response head (status line and fields), bounded by maxHeadBytes and maxHeaders. */
  private async readHead(conn: Http1Connection): Promise<{ version: '1.0' | '1.1'; status: number; statusText: string; headers: Array<[string, string]> }> {
    const lines = await this.readLines(conn, this.maxHeadBytes, true);
    const m = /^HTTP\/1\.([01]) (\d{3})(?: (.*))?$/.exec(lines[0]);
    if (!m) throw new HttpExchangeError(`not an HTTP/1.x status line: ${JSON.stringify(lines[0].slice(0, 80))}`);
    return { version: m[1] === '1' ? '1.1' : '1.0', status: Number(m[2]), statusText: m[3] ?? '', headers: this.parseFields(lines.slice(1)) };
  }

  /** Lines up to an empty one (which ends them), at most `maxBytes` in all; CRLF or bare LF. */
  private async readLines(conn: Http1Connection, maxBytes: number, isHead: boolean): Promise<string[]> {
    const lines: string[] = [];
    let total = 0;
    for (;;) {
      const line = await this.readLine(conn, maxBytes - total, isHead && lines.length === 0 && total === 0);
      total += line.length + 2;
      if (line === '') {
        if (isHead && lines.length === 0) continue; // a stray empty line before the status line
        return lines;
      }
      lines.push(line);
      if (lines.length > this.maxHeaders + 1) throw new HttpExchangeError(`the response has more than ${this.maxHeaders} header fields`);
    }
  }

  private async readLine(conn: Http1Connection, maxBytes: number, first: boolean): Promise<string> {
    let scanned = 0;
    for (;;) {
      const lf = conn.indexOfLf(scanned);
      if (lf >= 0) {
        if (lf > maxBytes) break;
        const end = lf > 0 && conn.byteAt(lf - 1) === 0x0d ? lf - 1 : lf;
        const bytes = conn.take(lf + 1);
        return fromLatin1(bytes.subarray(0, end));
      }
      scanned = conn.buffered;
      if (scanned > maxBytes) break;
      if (!(await conn.fill())) {
        throw new HttpExchangeError(
          first && scanned === 0 ? 'the server closed the connection without answering' : 'the server closed the connection in the middle of a response head',
          first && scanned === 0,
        );
      }
    }
    throw new HttpExchangeError(`a response head (or chunk line) longer than ${maxBytes} bytes`);
  }

  private parseFields(lines: string[]): Array<[string, string]> {
    const out: Array<[string, string]> = [];
    for (const line of lines) {
      if (line[0] === ' ' || line[0] === '\t') throw new HttpExchangeError('the response folds a header line (obsolete, refused)');
      const colon = line.indexOf(':');
      const name = colon > 0 ? line.slice(0, colon) : '';
      if (!TOKEN.test(name)) throw new HttpExchangeError(`a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
      out.push([name, line.slice(colon + 1).trim()]);
    }
    return out;
  }

  /** How the body ends (RFC 9112 §6.3). */
  private framingOf(method: string, status: number, headers: Array<[string, string]>): Framing {
    if (method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200)) return { kind: 'none' };
    const te = headerValues(headers, 'transfer-encoding');
    if (te.length > 0) {
      const codings = te
        .join(',')
        .split(',')
        .map((s) => s.trim().toLowerCase())
        .filter(Boolean);
      return codings[codings.length - 1] === 'chunked' ? { kind: 'chunked' } : { kind: 'close' };
    }
    const cl = headerValues(headers, 'content-length');
    if (cl.length > 0) {
      const values = new Set(
        cl
          .join(',')
          .split(',')
          .map((s) => s.trim()),
      );
      const [v] = values;
      if (values.size !== 1 || !/^\d{1,15}$/.test(v)) throw new HttpExchangeError(`an invalid Content-Length: ${cl.join(', ')}`);
      return { kind: 'length', remaining: Number(v) };
    }
    return { kind: 'close' };
  }

  /** The response body as a stream that reads from the connection only as it is read. */
  private bodyStream(
    conn: Http1Connection,
    framing: Framing,
    signal: AbortSignal | undefined,
    done: (reusable: boolean) => void,
    keep: boolean,
  ): ReadableStream<Uint8Array> {
    let chunkLeft = 0; // chunked: data bytes left in the current chunk (−1: its CRLF is next)
    const next = async (): Promise<Uint8Array | null> => {
      switch (framing.kind) {
        case 'length': {
          if (framing.remaining === 0) return null;
          if (conn.buffered === 0 && !(await conn.fill()))
            throw new HttpExchangeError(`the server closed the connection ${framing.remaining} bytes before the body's end`);
          const piece = conn.take(framing.remaining);
          framing.remaining -= piece.length;
          return piece;
        }
        case 'close': {
          if (conn.buffered === 0 && !(await conn.fill())) return null;
          return conn.take(conn.buffered);
        }
        case 'chunked': {
          for (;;) {
            if (chunkLeft > 0) {
              if (conn.buffered === 0 && !(await conn.fill())) throw new HttpExchangeError('the server closed the connection in the middle of a chunk');
              const piece = conn.take(chunkLeft);
              chunkLeft -= piece.length;
              if (chunkLeft === 0) chunkLeft = -1;
              return piece;
            }
            if (chunkLeft === -1) {
              if ((await this.readLine(conn, 2, false)) !== '') throw new HttpExchangeError('a chunk is longer than its size says');
              chunkLeft = 0;
            }
            const sizeLine = await this.readLine(conn, MAX_CHUNK_LINE_BYTES, false);
            const m = /^([0-9A-Fa-f]{1,12})[ \t]*(;.*)?$/.exec(sizeLine);
            if (!m) throw new HttpExchangeError(`an invalid chunk size line: ${JSON.stringify(sizeLine.slice(0, 40))}`);
            const size = parseInt(m[1], 16);
            if (size === 0) {
              await this.readLines(conn, this.maxHeadBytes, false); // trailers, ignored as fetch does
              return null;
            }
            chunkLeft = size;
          }
        }
        default:
          return null;
      }
    };
    return new ReadableStream<Uint8Array>(
      {
        pull: async (c) => {
          try {
            const piece = await next();
            if (piece === null) {
              c.close();
              done(keep && framing.kind !== 'close');
            } else if (piece.length > 0) {
              // A copy: the piece is a view into the connection's read buffer.
              c.enqueue(piece.slice());
            }
          } catch (e) {
            conn.destroy();
            done(false);
            c.error(signal?.aborted ? signal.reason : new TypeError(`network.fetch: the response body failed: ${messageOf(e)}`, { cause: e }));
          }
        },
        cancel: () => {
          conn.destroy();
          done(false);
        },
      },
      { highWaterMark: 0 },
    );
  }

  private takeIdle(origin: string): Http1Connection | undefined {
    const list = this.idle.get(origin);
    const conn = list?.pop();
    if (list?.length === 0) this.idle.delete(origin);
    if (conn) clearTimeout(conn.idleTimer);
    return conn;
  }

  private putIdle(conn: Http1Connection): void {
    if (conn.gone || conn.buffered > 0) {
      conn.destroy();
      return;
    }
    const list = this.idle.get(conn.origin) ?? [];
    this.idle.set(conn.origin, list);
    list.push(conn);
    // The bound: the oldest idle connection goes.
    while (list.length > this.maxIdlePerOrigin) (list.shift() as Http1Connection).retire();
    const drop = () => {
      const i = list.indexOf(conn);
      if (i < 0) return;
      list.splice(i, 1);
      if (list.length === 0 && this.idle.get(conn.origin) === list) this.idle.delete(conn.origin);
      conn.destroy();
    };
    conn.idleTimer = setTimeout(drop, this.idleTimeoutMs);
    // A server that closes an idle connection (or sends on it) makes it useless: drop it at once.
    conn.watchIdle(drop);
  }
}

/** A Response for a page, as fetch makes one: url and redirected set, the body decoded from its Content-Encoding. */
function toResponse(res: HttpResponse, url: URL, redirected: boolean, signal: AbortSignal | undefined): Response {
  if (res.status < 200 || res.status > 599) throw new TypeError(`network.fetch: the guest answered with status ${res.status}, which a Response cannot carry`);
  const headers = new Headers();
  for (const [name, value] of res.headers) {
    try {
      headers.append(name, value);
    } catch {
      // A value Headers refuses (a control character) is left out, as a browser's fetch does.
    }
  }
  let body = res.body;
  if (body && NULL_BODY_STATUSES.has(res.status)) {
    void body.cancel();
    body = null;
  }
  body = decodedBody(body, res.headers).body;
  if (signal && body) body = abortable(body, signal);
  const statusText = /^[\t\x20-\x7e\x80-\xff]*$/.test(res.statusText) ? res.statusText : '';
  const response = new Response(body, { status: res.status, statusText, headers });
  Object.defineProperty(response, 'url', { value: url.href });
  Object.defineProperty(response, 'redirected', { value: redirected });
  return response;
}

/**
 * The body decoded from its Content-Encoding when it is gzip or deflate (as fetch decodes it);
 * `decoded` says whether it was, and the Content-Encoding and Content-Length fields then no longer apply.
 */
export function decodedBody(
  body: ReadableStream<Uint8Array> | null,
  headers: Array<[string, string]>,
): { body: ReadableStream<Uint8Array> | null; decoded: boolean } {
  const coding = (headerValue(headers, 'content-encoding') ?? '').trim().toLowerCase();
  if (!body || !(coding === 'gzip' || coding === 'x-gzip' || coding === 'deflate') || typeof DecompressionStream !== 'function')
    return { body, decoded: false };
  const stream = new DecompressionStream(coding === 'deflate' ? 'deflate' : 'gzip') as unknown as ReadableWritablePair<Uint8Array, Uint8Array>;
  return { body: body.pipeThrough(stream), decoded: true };
}

/** The body errors with the signal's reason when it is aborted (fetch's behaviour), and the connection goes. */
function abortable(body: ReadableStream<Uint8Array>, signal: AbortSignal): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  const onAbort = () => void reader.cancel(signal.reason).catch(() => undefined);
  signal.addEventListener('abort', onAbort, { once: true });
  return new ReadableStream<Uint8Array>(
    {
      pull: async (c) => {
        try {
          const r = await reader.read();
          if (signal.aborted) throw signal.reason;
          if (r.done) {
            signal.removeEventListener('abort', onAbort);
            c.close();
          } else c.enqueue(r.value);
        } catch (e) {
          signal.removeEventListener('abort', onAbort);
          c.error(signal.aborted ? signal.reason : e);
        }
      },
      cancel: (reason) => {
        signal.removeEventListener('abort', onAbort);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** Reads a redirect's small body to its end (the connection can then be reused), else cancels it. */
async function discard(body: ReadableStream<Uint8Array> | null): Promise<void> {
  if (!body) return;
  const reader = body.getReader();
  let n = 0;
  try {
    for (;;) {
      const r = await reader.read();
      if (r.done) return;
      n += r.value.length;
      if (n > MAX_DRAINED_REDIRECT_BYTES) break;
    }
  } catch {
    return;
  }
  await reader.cancel().catch(() => undefined);
}

/** The URL's port (80 when it names none). */
export function portOf(url: URL): number {
  return url.port ? Number(url.port) : 80;
}

/** The first value of a header field, by case-insensitive name. */
export function headerValue(headers: Array<[string, string]>, name: string): string | undefined {
  const n = name.toLowerCase();
  return headers.find(([k]) => k.toLowerCase() === n)?.[1];
}

function headerValues(headers: Array<[string, string]>, name: string): string[] {
  const n = name.toLowerCase();
  return headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
}

function latin1(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff)
      throw new TypeError(`network.fetch: a request head may hold only Latin-1 characters: ${JSON.stringify(s.slice(Math.max(0, i - 20), i + 20))}`);
    out[i] = c;
  }
  return out;
}

function fromLatin1(bytes: Uint8Array): string {
  let s = '';
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  return s;
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
