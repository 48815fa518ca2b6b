// `--qemu unix:PATH|tcp:HOST:PORT`: QEMU's `-netdev stream,server=off,…` connects to us and sends
// every frame as a 4-byte big-endian length followed by the frame. Several QEMUs may connect at
// once (up to --max-guests; more are refused and logged): each is a port of one learning switch
// with weft as its router, so the guests share one LAN. A client that leaves takes its port and the
// MACs learned there with it; a reboot connects again and gets a new port.
//
// While one client is connected, frames go straight between it and the stack, as before there was
// a switch: that is the case the link is benchmarked in, and a switch with one guest port has
// nothing to decide.

import fs from 'node:fs';
import net from 'node:net';
import type { LearningSwitch, SwitchPort } from '../../core/link/learning-switch';
import type { Ipv4Address, MacAddress } from '../../core/wire/address';
import { bytesView, readU32 } from '../../core/wire/bytes';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { DEFAULT_ROUTER, lanSwitch, switchStats, type RouterAddresses } from './lan-switch';
import { LinkError } from './link-error';
import { FrameAllocator } from '../../core/frame-allocator';
import { LENGTH_BYTES, StreamFrameWriter } from './stream-frame-writer';

export type StreamEndpoint = { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number };

/** The largest frame a stream peer may announce: a 64 KiB payload plus the Ethernet header. */
export const MAX_STREAM_FRAME = 65536 + 14;
/**
 * QEMU clients connected at once, by default. Each may hold up to 4 MiB of backlog and 320 KiB of
 * buffers, so the bound keeps a listener anyone can reach (tcp:0.0.0.0) from growing without end.
 */
export const DEFAULT_MAX_CLIENTS = 64;

/** How one socket serves several QEMUs on one LAN. */
export interface QemuStreamOptions {
  /** weft's MAC and addresses on the switch's router port (the stack's side); default DEFAULT_ROUTER. */
  router?: RouterAddresses;
  /** Clients connected at once; more are refused (default DEFAULT_MAX_CLIENTS). */
  maxClients?: number;
}

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
          onFrame(bytesView(chunk, off + LENGTH_BYTES, len));
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

interface Client {
  id: number;
  peer: string;
  socket: net.Socket;
  writer: StreamFrameWriter;
  /** Its port on the LAN's switch (used while two or more clients are connected). */
  port: SwitchPort;
  framesIn: number;
  framesOut: number;
  backlogDrops: number;
}

export class QemuStreamLink extends FrameLinkBase implements FrameLink {
  /** Connected clients, in the order they came. */
  private readonly clients: Client[] = [];
  private readonly sw: LearningSwitch;
  private readonly router: SwitchPort;
  private readonly maxClients: number;
  private nextClientId = 1;
  /** Switch drops of ports that are gone (a port's counters go with it). */
  private readonly pastSwitchDrops: Record<string, number> = {};
  private readonly sockets = new Set<net.Socket>();
  /** Frames for the switch (several clients): it may copy them to several ports. */
  private readonly frames = new FrameAllocator();
  private closed = false;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly endpoint: StreamEndpoint,
    private readonly server: net.Server,
    opts: QemuStreamOptions,
  ) {
    super();
    this.maxClients = opts.maxClients ?? DEFAULT_MAX_CLIENTS;
    this.sw = lanSwitch();
    // Frames the switch hands the router are parsed by the stack before the call returns.
    const router = opts.router ?? DEFAULT_ROUTER;
    this.router = this.sw.addRouterPort([router.mac], (frame) => this.frameListener(frame), router.ips);
    server.on('connection', (s) => this.accept(s));
  }

  /** Starts listening; resolves once the socket is bound. */
  static async listen(endpoint: StreamEndpoint, opts: QemuStreamOptions = {}): Promise<QemuStreamLink> {
    if (endpoint.kind === 'unix') await removeStaleSocket(endpoint.path);
    const server = net.createServer({ noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new LinkError(`cannot listen on ${formatEndpoint(endpoint)}: ${e.message}`)));
      if (endpoint.kind === 'unix') server.listen(endpoint.path, resolve);
      else server.listen(endpoint.port, endpoint.host, resolve);
    });
    const addr = server.address();
    const bound: StreamEndpoint = endpoint.kind === 'tcp' && addr && typeof addr === 'object' ? { ...endpoint, port: addr.port } : endpoint;
    const link = new QemuStreamLink(bound, server, opts);
    server.removeAllListeners('error');
    server.on('error', (e) => link.fail(new LinkError(`listening socket failed: ${e.message}`)));
    return link;
  }

  get description(): Record<string, unknown> {
    return { link: 'qemu-stream', listen: formatEndpoint(this.endpoint), maxGuests: this.maxClients };
  }

  private accept(socket: net.Socket): void {
    const peer = socket.remoteAddress ? `${socket.remoteAddress}:${socket.remotePort}` : 'unix';
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    if (this.closed || this.clients.length >= this.maxClients) {
      const reason = this.closed ? 'closing' : `${this.clients.length} of ${this.maxClients} guests connected (--max-guests)`;
      this.log('client-refused', { peer, reason });
      socket.destroy();
      return;
    }
    const id = this.nextClientId++;
    const client: Client = {
      id,
      peer,
      socket,
      writer: new StreamFrameWriter(socket),
      port: this.sw.addPort(`client${id}`, (frame) => this.deliver(client, frame)),
      framesIn: 0,
      framesOut: 0,
      backlogDrops: 0,
    };
    this.clients.push(client);
    this.log('client-connected', { peer, client: id, clients: this.clients.length });
    const decoder = new StreamFrameDecoder();
    const receive = (frame: Uint8Array) => {
      client.framesIn++;
      // Alone, straight to the stack; else through the switch (to the stack or another client,
      // each of which has used the frame before the call returns: no copy).
      if (this.clients.length === 1) this.frameListener(frame);
      else client.port.input(frame);
    };
    socket.on('data', (chunk: Buffer) => {
      const error = decoder.push(chunk, receive);
      this.batchEndListener();
      if (error) {
        this.drop('stream-bad-length');
        this.log('client-error', { peer, client: id, message: `${error}; closing the connection` });
        socket.destroy();
      }
    });
    socket.on('error', (e) => this.log('client-error', { peer, client: id, message: e.message }));
    socket.once('close', () => this.remove(client));
  }

  /** Takes a client off the LAN: its port and the MACs learned there go; its counters are logged. */
  private remove(client: Client): void {
    const i = this.clients.indexOf(client);
    if (i < 0) return;
    this.clients.splice(i, 1);
    const { drops } = client.port.counters();
    for (const [reason, n] of Object.entries(drops)) this.pastSwitchDrops[reason] = (this.pastSwitchDrops[reason] ?? 0) + (n ?? 0);
    client.port.remove();
    if (this.closed) return;
    this.log('client-disconnected', {
      peer: client.peer,
      client: client.id,
      clients: this.clients.length,
      framesIn: client.framesIn,
      framesOut: client.framesOut,
      ...(client.backlogDrops > 0 ? { backlogDrops: client.backlogDrops } : {}),
      ...(Object.keys(drops).length > 0 ? { switchDrops: drops } : {}),
    });
  }

  /** A lone client's frames are built in its write buffer (see StreamFrameWriter.alloc). */
  allocFrame(length: number, zeroBytes?: number): Uint8Array {
    return this.clients.length === 1 ? this.clients[0].writer.alloc(length, zeroBytes) : this.frames.alloc(length);
  }

  /** Several QEMUs on the socket share a switch: it gets the stack's leases (see FrameLink). */
  guardLeases(holder: (ip: Ipv4Address) => MacAddress | undefined): void {
    this.sw.guardLeases(holder);
  }

  send(frame: Uint8Array): void {
    const n = this.clients.length;
    if (n === 1) this.deliver(this.clients[0], frame);
    else if (n === 0) this.drop('no-client');
    else this.router.input(frame);
  }

  /** A lone client takes the two parts as they are; for the switch they are joined. */
  sendGathered(head: Uint8Array, payload: Uint8Array): void {
    if (this.clients.length !== 1) {
      const frame = new Uint8Array(head.length + payload.length);
      frame.set(head);
      frame.set(payload, head.length);
      return this.send(frame);
    }
    this.deliver(this.clients[0], head, payload);
  }

  /** Queues a frame (`payload`: its second part) for one client, counting what cannot go. */
  private deliver(client: Client, frame: Uint8Array, payload?: Uint8Array): void {
    if (client.socket.destroyed) return this.drop('no-client');
    if (!(payload ? client.writer.writeGathered(frame, payload) : client.writer.write(frame))) {
      client.backlogDrops++;
      return this.drop('stream-backlog');
    }
    client.framesOut++;
  }

  /** The link's own drops and its switch's (of ports gone too), by reason. */
  override drops(): Record<string, number> {
    const out = { ...this.dropCounts };
    const add = (drops: Record<string, number | undefined>) => {
      for (const [reason, n] of Object.entries(drops)) out[reason] = (out[reason] ?? 0) + (n ?? 0);
    };
    add(this.pastSwitchDrops);
    add(this.router.counters().drops);
    for (const c of this.clients) add(c.port.counters().drops);
    return out;
  }

  /** Clients connected now and the switch's table, for the stopped line. */
  stats(): Record<string, number> {
    return { clients: this.clients.length, ...switchStats(this.sw) };
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
