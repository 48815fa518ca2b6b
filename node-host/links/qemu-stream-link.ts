// `--qemu unix:PATH|tcp:HOST:PORT`: QEMU's `-netdev stream,server=off,…` connects to us and sends
// every frame as a 4-byte big-endian length followed by the frame. One client at a time: another
// is refused (and logged) while one is connected; after it leaves we wait for the next.

import fs from 'node:fs';
import net from 'node:net';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { LinkError } from './link-error';

export type StreamEndpoint = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** The largest frame a stream peer may announce: a 64 KiB payload plus the Ethernet header. */
export const MAX_STREAM_FRAME = 65536 + 14;
const LENGTH_BYTES = 4;
/** Bytes queued towards a slow client before further frames are dropped. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/**
 * Frames sent in one burst (one batch of input, one timer) are packed into one buffer and go out
 * in one write: a write per frame cost a system call each, most of weft's time on this link.
 */
const ARENA_BYTES = 256 * 1024;

/** Cuts QEMU's length-prefixed stream into frames; holds at most one partial frame. */
export class StreamFrameDecoder {
  private readonly buf = new Uint8Array(LENGTH_BYTES + MAX_STREAM_FRAME);
  private fill = 0;
  /** Length of the frame being collected, or -1 while the length itself is incomplete. */
  private length = -1;

  /** Feeds bytes; calls `onFrame` per complete frame. Returns an error message on a bad length. */
  push(chunk: Uint8Array, onFrame: (frame: Uint8Array) => void): string | undefined {
    let off = 0;
    while (off < chunk.length) {
      if (this.fill === 0 && chunk.length - off >= LENGTH_BYTES) {
        // Fast path: a whole frame inside this chunk goes out without a copy.
        const len = readU32(chunk, off);
        if (len === 0 || len > MAX_STREAM_FRAME) return badLength(len);
        if (chunk.length - off >= LENGTH_BYTES + len) {
          onFrame(chunk.subarray(off + LENGTH_BYTES, off + LENGTH_BYTES + len));
          off += LENGTH_BYTES + len;
          continue;
        }
      }
      const target = this.length < 0 ? LENGTH_BYTES : LENGTH_BYTES + this.length;
      const n = Math.min(target - this.fill, chunk.length - off);
      this.buf.set(chunk.subarray(off, off + n), this.fill);
      this.fill += n;
      off += n;
      if (this.fill < target) break;
      if (this.length < 0) {
        const len = readU32(this.buf, 0);
        if (len === 0 || len > MAX_STREAM_FRAME) return badLength(len);
        this.length = len;
      } else {
        onFrame(this.buf.subarray(LENGTH_BYTES, LENGTH_BYTES + this.length));
        this.fill = 0;
        this.length = -1;
      }
    }
    return undefined;
  }
}

function readU32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

function badLength(len: number): string {
  return `bad frame length ${len} (must be 1…${MAX_STREAM_FRAME})`;
}

export function formatEndpoint(e: StreamEndpoint): string {
  return e.kind === 'unix' ? `unix:${e.path}` : `tcp:${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;
}

/** Removes a unix socket file left by a process that is gone; refuses to touch anything else. */
async function removeStaleSocket(path: string): Promise<void> {
  let stat: fs.Stats;
  try {
    stat = fs.lstatSync(path);
  } catch {
    return; // nothing there
  }
  if (!stat.isSocket()) throw new LinkError(`${path} exists and is not a socket; refusing to replace it`);
  const alive = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => {
      probe.destroy();
      resolve(false);
    });
  });
  if (alive) throw new LinkError(`another process is listening on ${path}`);
  fs.rmSync(path, { force: true });
}

export class QemuStreamLink extends FrameLinkBase implements FrameLink {
  private client: net.Socket | undefined;
  /** Where frames of the current burst are packed; [sent, fill) is not written yet. */
  private arena = Buffer.allocUnsafe(ARENA_BYTES);
  private sent = 0;
  private fill = 0;
  private flushQueued = false;
  private readonly sockets = new Set<net.Socket>();
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly endpoint: StreamEndpoint,
    private readonly server: net.Server,
  ) {
    super();
    server.on('connection', (s) => this.accept(s));
  }

  /** Starts listening; resolves once the socket is bound. */
  static async listen(endpoint: StreamEndpoint): Promise<QemuStreamLink> {
    if (endpoint.kind === 'unix') await removeStaleSocket(endpoint.path);
    const server = net.createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new LinkError(`cannot listen on ${formatEndpoint(endpoint)}: ${e.message}`)));
      if (endpoint.kind === 'unix') server.listen(endpoint.path, resolve);
      else server.listen(endpoint.port, endpoint.host, resolve);
    });
    const addr = server.address();
    const bound: StreamEndpoint = endpoint.kind === 'tcp' && addr && typeof addr === 'object' ? { ...endpoint, port: addr.port } : endpoint;
    const link = new QemuStreamLink(bound, server);
    server.removeAllListeners('error');
    server.on('error', (e) => link.fail(new LinkError(`listening socket failed: ${e.message}`)));
    return link;
  }

  get description(): Record<string, unknown> {
    return { link: 'qemu-stream', listen: formatEndpoint(this.endpoint) };
  }

  private accept(socket: net.Socket): void {
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    if (this.closed || this.client) {
      this.log('client-refused', { peer, reason: this.closed ? 'closing' : 'a client is already connected' });
      socket.destroy();
      return;
    }
    this.client = socket;
    this.log('client-connected', { peer });
    const decoder = new StreamFrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      const error = decoder.push(chunk, (frame) => this.frameListener(frame));
      this.batchEndListener();
      if (error) {
        this.drop('stream-bad-length');
        this.log('client-error', { peer, message: `${error}; closing the connection` });
        socket.destroy();
      }
    });
    socket.on('error', (e) => this.log('client-error', { peer, message: e.message }));
    socket.once('close', () => {
      if (this.client === socket) this.client = undefined;
      if (!this.closed) this.log('client-disconnected', { peer });
    });
  }

  send(frame: Uint8Array): void {
    const c = this.client;
    if (!c || c.destroyed) {
      this.drop('no-client');
      return;
    }
    if (c.writableLength + this.fill - this.sent > MAX_PENDING_BYTES) {
      this.drop('stream-backlog');
      return;
    }
    const need = LENGTH_BYTES + frame.length;
    if (this.fill + need > this.arena.length) {
      this.flush();
      // What was written from this arena may still be queued in the socket: take a fresh one.
      this.arena = Buffer.allocUnsafe(Math.max(ARENA_BYTES, need));
      this.sent = this.fill = 0;
    }
    this.arena.writeUInt32BE(frame.length, this.fill);
    this.arena.set(frame, this.fill + LENGTH_BYTES);
    this.fill += need;
    if (!this.flushQueued) {
      this.flushQueued = true;
      // Once this turn's I/O callbacks are done (setImmediate), not after each one (a microtask):
      // at a large MTU each 64 KiB read from a host socket makes one segment, and Node runs up to
      // 32 reads per turn — one write per segment woke QEMU per frame.
      setImmediate(this.flushNow);
    }
  }

  private readonly flushNow = () => this.flush();

  private flush(): void {
    this.flushQueued = false;
    const c = this.client;
    if (this.fill === this.sent) return;
    if (!c || c.destroyed) {
      this.sent = this.fill = 0;
      return;
    }
    c.write(this.arena.subarray(this.sent, this.fill));
    this.sent = this.fill;
    // Written at once, nothing of the arena is held any more: start again from its beginning.
    if (c.writableLength === 0) this.sent = this.fill = 0;
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    this.closed = true;
    const serverClosed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    const socketsClosed = [...this.sockets].map(
      (s) =>
        new Promise<void>((resolve) => {
          if (s.closed) return resolve();
          s.once('close', () => resolve());
          s.destroy();
        }),
    );
    this.closing = Promise.all([serverClosed, ...socketsClosed]).then(() => {
      if (this.endpoint.kind === 'unix') fs.rmSync(this.endpoint.path, { force: true });
    });
    return this.closing;
  }
}
