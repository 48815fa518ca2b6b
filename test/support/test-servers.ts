// Real servers for integration tests, all on 127.0.0.1 with a kernel-chosen port: an HTTP server
// (deterministic downloads, hashed uploads), a TCP echo server, two half-close servers and a UDP
// echo server. A guest reaches them at gateway:PORT when weft runs with --allow-host-loopback.

import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';

export interface TestServer {
  port: number;
  close(): Promise<void>;
}

// ---- deterministic content --------------------------------------------------------------------

const BLOCK = 1 << 20;
let baseBlock: Uint8Array | undefined;

/** 1 MiB of xorshift32 output from a fixed seed, made once. */
function base(): Uint8Array {
  if (baseBlock) return baseBlock;
  const words = new Uint32Array(BLOCK / 4);
  let x = 0x2545f491;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  baseBlock = new Uint8Array(words.buffer);
  return baseBlock;
}

/**
 * The content of `GET /bytes/N` as chunks (views into one shared, never-modified block): block k is
 * the base block rotated by an offset that depends on k, so the stream does not repeat every MiB.
 */
export function* deterministicChunks(total: number): Generator<Uint8Array> {
  const b = base();
  let left = total;
  for (let k = 0; left > 0; k++) {
    const off = Math.imul(k, 0x9e3779b1) >>> 12; // < 2^20 = BLOCK
    for (const part of [b.subarray(off), b.subarray(0, off)]) {
      if (left === 0 || part.length === 0) continue;
      const piece = part.length <= left ? part : part.subarray(0, left);
      left -= piece.length;
      yield piece;
    }
  }
}

/** The first `n` bytes of the deterministic stream in one buffer (for small sizes). */
export function deterministicBytes(n: number): Buffer {
  return Buffer.concat([...deterministicChunks(n)]);
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The sha256 (hex) of `GET /bytes/N`, computed without a server. */
export function expectedSha256(n: number): string {
  const h = createHash('sha256');
  for (const c of deterministicChunks(n)) h.update(c);
  return h.digest('hex');
}

/** Writes the deterministic stream of `n` bytes to `out`, honouring back-pressure; stops if `out` dies. */
async function writeDeterministic(out: NodeJS.WritableStream & { destroyed: boolean }, n: number): Promise<void> {
  for (const chunk of deterministicChunks(n)) {
    if (out.destroyed) return;
    if (!out.write(chunk)) {
      await new Promise<void>((resolve) => {
        const go = () => {
          out.off('drain', go);
          out.off('close', go);
          resolve();
        };
        out.on('drain', go);
        out.on('close', go);
      });
    }
  }
}

// ---- helpers ----------------------------------------------------------------------------------

async function listenTcp(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

/** A port on 127.0.0.1 with nothing listening (bound, then released): connecting to it is refused. */
/** Connects to 127.0.0.1:port, sends `data`, half-closes, and collects the reply until the server ends. */
export function tcpExchange(port: number, data: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => s.end(data));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
    s.setTimeout(30_000, () => s.destroy(new Error('timed out')));
  });
}

export async function closedTcpPort(): Promise<number> {
  const server = net.createServer();
  const port = await listenTcp(server);
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** `count` free UDP ports on 127.0.0.1, distinct (held open together, then released). */
export async function freeUdpPorts(count: number): Promise<number[]> {
  const sockets = Array.from({ length: count }, () => dgram.createSocket('udp4'));
  await Promise.all(sockets.map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', r))));
  const ports = sockets.map((s) => s.address().port);
  await Promise.all(sockets.map((s) => new Promise<void>((r) => s.close(r))));
  return ports;
}

/** Tracks a server's connections so close() ends them instead of waiting for the clients. */
function closer(server: net.Server): () => Promise<void> {
  const sockets = new Set<net.Socket>();
  server.on('connection', (s: net.Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const s of sockets) s.destroy();
    });
}

// ---- HTTP -------------------------------------------------------------------------------------

export const HELLO_TEXT = 'hello from the weft test server\n';

export interface UploadReply {
  sha256: string;
  bytes: number;
}

/**
 * `GET /bytes/N` → N deterministic bytes (sha256 = expectedSha256(N)); `PUT|POST /upload` → JSON
 * {sha256, bytes} of the body; `GET /hello` → HELLO_TEXT.
 */
export async function startHttpTestServer(): Promise<TestServer> {
  const server = http.createServer((req, res) => {
    const url = req.url ?? '/';
    const bytes = /^\/bytes\/(\d{1,15})$/.exec(url);
    if (req.method === 'GET' && bytes) {
      const n = Number(bytes[1]);
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(n) });
      void writeDeterministic(res, n).then(() => {
        if (!res.destroyed) res.end();
      });
    } else if ((req.method === 'PUT' || req.method === 'POST') && url === '/upload') {
      const hash = createHash('sha256');
      let count = 0;
      req.on('data', (c: Buffer) => {
        hash.update(c);
        count += c.length;
      });
      req.on('end', () => {
        const reply: UploadReply = { sha256: hash.digest('hex'), bytes: count };
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(`${JSON.stringify(reply)}\n`);
      });
    } else if (req.method === 'GET' && url === '/hello') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(HELLO_TEXT);
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  });
  server.keepAliveTimeout = 1000;
  const close = closer(server);
  const port = await listenTcp(server);
  return { port, close };
}

// ---- TCP --------------------------------------------------------------------------------------

/** Echoes every byte back; answers the client's FIN with its own once everything is echoed. */
export async function startTcpEchoServer(): Promise<TestServer> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    s.on('error', () => s.destroy());
    s.pipe(s);
  });
  const close = closer(server);
  return { port: await listenTcp(server), close };
}

/**
 * Reads until the client's FIN, then replies `"<byte count> <sha256 hex>\n"` and ends: a client that
 * sees the reply has proved that data sent after its own FIN still arrives.
 */
export async function startHalfCloseServer(): Promise<TestServer> {
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const hash = createHash('sha256');
    let count = 0;
    s.on('error', () => s.destroy());
    s.on('data', (c: Buffer) => {
      hash.update(c);
      count += c.length;
    });
    s.on('end', () => s.end(`${count} ${hash.digest('hex')}\n`));
  });
  const close = closer(server);
  return { port: await listenTcp(server), close };
}

export interface SendThenReadReport {
  /** Bytes the server sent (the deterministic stream) before its FIN. */
  sent: number;
  /** Everything received from the client, and how much of it arrived after the server's FIN went out. */
  received: number;
  receivedAfterEnd: number;
  sha256: string;
  /** The connection ended with the client's FIN (not an error or reset). */
  clean: boolean;
  /** The socket's error (its code, e.g. ECONNRESET), if it had one. */
  error?: string;
}

export interface SendThenReadServer extends TestServer {
  readonly reports: SendThenReadReport[];
  /** Resolves with the next report not yet taken (one per connection, when it closes). */
  nextReport(timeoutMs?: number): Promise<SendThenReadReport>;
}

/**
 * Sends `bytes` deterministic bytes (sha256 = expectedSha256(bytes)), ends its side, then keeps
 * reading until the client's FIN and reports what it got: proves the client can still send after
 * the far end's FIN.
 */
export async function startSendThenReadServer(bytes: number): Promise<SendThenReadServer> {
  const reports: SendThenReadReport[] = [];
  let taken = 0;
  const waiters: Array<() => void> = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const hash = createHash('sha256');
    let received = 0;
    let receivedAfterEnd = 0;
    let ended = false;
    let clean = false;
    let error: string | undefined;
    s.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
      s.destroy();
    });
    s.on('data', (c: Buffer) => {
      hash.update(c);
      received += c.length;
      if (ended) receivedAfterEnd += c.length;
    });
    s.on('end', () => {
      clean = true;
    });
    s.on('finish', () => {
      ended = true;
    });
    s.on('close', () => {
      reports.push({ sent: bytes, received, receivedAfterEnd, sha256: hash.digest('hex'), clean, ...(error === undefined ? {} : { error }) });
      for (const w of waiters.splice(0)) w();
    });
    void writeDeterministic(s, bytes).then(() => {
      if (!s.destroyed) s.end();
    });
  });
  const close = closer(server);
  const port = await listenTcp(server);
  return {
    port,
    close,
    reports,
    nextReport(timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no send-then-read report within ${timeoutMs} ms`)), timeoutMs);
        const check = () => {
          if (taken < reports.length) {
            clearTimeout(timer);
            resolve(reports[taken++]);
          } else {
            waiters.push(check);
          }
        };
        check();
      });
    },
  };
}

// ---- UDP --------------------------------------------------------------------------------------

export interface UdpEchoServer extends TestServer {
  /** Datagrams echoed so far. */
  readonly echoed: number;
}

/** Sends every datagram back to its sender unchanged. */
export async function startUdpEchoServer(): Promise<UdpEchoServer> {
  const socket = dgram.createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  let echoed = 0;
  socket.on('message', (msg, rinfo) => {
    socket.send(msg, rinfo.port, rinfo.address, (e) => {
      if (!e) echoed++;
    });
  });
  socket.on('error', () => {
    // e.g. ICMP errors from a sender that went away; keep serving
  });
  socket.bind(0, '127.0.0.1');
  await once(socket, 'listening');
  return {
    port: socket.address().port,
    get echoed() {
      return echoed;
    },
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}
