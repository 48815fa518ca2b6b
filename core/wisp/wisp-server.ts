// The server side of one Wisp connection as a state machine: WebSocket messages in, messages and
// host calls out, time passed in. The host (node-host/relay) owns the sockets, DNS and policy; this
// file owns the protocol: the v2 handshake with v1 fallback, stream bookkeeping, and credits.
//
// Credits. The server grants each TCP stream a buffer of B packets: B for every new stream (the
// CONTINUE on stream 0), then a CONTINUE whenever half a buffer has left its queue. The client
// overwrites its credit with each CONTINUE it receives, so everything it may ever send is at most B
// plus the sum of all values granted: `received > granted` is proof of a client that ignores
// credits, whatever the timing, and the connection is ended for it. The value granted is
// B − queued − (packets the client may still send on its earlier credit: `ceiling − received`), so
// queued + in flight stays within B; granting B − queued instead would let a client that obeys every
// credit keep more and more in flight while CONTINUEs cross its DATA. `queued` (packets handed to
// the host but not yet released by it) has its own hard cap so memory stays bounded even then.

import {
  CloseReason,
  ExtensionId,
  StreamType,
  SERVER_STREAM_ID_BASE,
  encodeAccept,
  encodeClose,
  encodeContinue,
  encodeListenResult,
  encodePublishServer,
  encodeData,
  encodeEnd,
  encodeInfo,
  encodeMotd,
  encodePasswordServer,
  parsePasswordClient,
  parseWispPacket,
  type PacketAllocator,
  type PasswordCredentials,
  type WispExtension,
  type WispPacket,
} from './wisp-codec';
import { WispProtocolError } from './wisp-errors';

export interface WispServerOptions {
  /** 2 when the client offered v2 (it sent Sec-WebSocket-Protocol), otherwise 1. */
  version: 1 | 2;
  /** Packets each TCP stream may have in flight towards the server (the CONTINUE value). */
  bufferPackets: number;
  /** Whether UDP streams are allowed (and advertised in v2). */
  udp: boolean;
  motd?: string;
  /**
   * Checks v2 password credentials. With `passwordRequired`, a v2 client without matching
   * credentials is rejected (0xc2 missing, 0xc0 wrong), and a v1 client cannot connect at all.
   */
  checkPassword?: (c: PasswordCredentials) => boolean;
  passwordRequired: boolean;
  maxStreams: number;
  /** How long a v2 client may take to send its INFO. */
  handshakeTimeoutMs: number;
  /** A stream without traffic for this long is closed with 0x47; 0 disables it. */
  idleTimeoutMs: number;
  /** Offer weft's half-close extension (END packets) to v2 clients. */
  halfClose?: boolean;
  /** Offer weft's per-stream flow control extension (PAUSE and RESUME packets) to v2 clients. */
  flowControl?: boolean;
  /** Allocates DATA packets (every byte is written, so it need not zero-fill). */
  allocate?: PacketAllocator;
  /** Offer weft's publish extension (LISTEN/ACCEPT) with this many listeners per client. */
  publish?: { maxListeners: number };
}

export interface WispStreamRequest {
  id: number;
  type: 'tcp' | 'udp';
  hostname: string;
  port: number;
}

/** What the state machine asks of its host. Every call is synchronous and made during a method call. */
export interface WispServerHost {
  send(message: Uint8Array): void;
  /** The handshake is complete. */
  ready(info: { version: 1 | 2; extensions: number[]; username?: string }): void;
  /** A client asked for a stream; answer later with connected(id) or closeStream(id, reason). */
  openStream(request: WispStreamRequest): void;
  /** Client bytes for the destination; call released(id) once they have left the host's buffers. */
  streamData(id: number, payload: Uint8Array): void;
  /** With half-close: the client sends no more (END); shut the destination's write side after its data. */
  streamEnd(id: number): void;
  /** With flow control: stop (`paused`) or restart reading stream `id`'s destination. */
  streamPaused?(id: number, paused: boolean): void;
  /**
   * With publish: the client asks for a listener (`port` 0: any). Answer with listenResult(), now or
   * later. Only TCP is asked for (the session refuses UDP itself).
   */
  listen?(listenerId: number, port: number): void;
  /** With publish: the client no longer wants listener `listenerId` (streams it opened stay). */
  unlisten?(listenerId: number): void;
  /** The single exit of every stream, whoever ended it. The host frees the destination socket. */
  streamClosed(id: number, reason: number, by: 'client' | 'server'): void;
  /** The connection is over: close the WebSocket. Every stream has been reported closed before this. */
  terminate(error: WispProtocolError): void;
}

interface ServerStream {
  id: number;
  type: 'tcp' | 'udp';
  /** Packets the client may have sent in total without breaking the credit rule. */
  granted: number;
  /**
   * Packets the client can have sent in total on the credits it holds, as far as grants go: what
   * the client may still send (in flight or unspent) is `ceiling − received`.
   */
  ceiling: number;
  received: number;
  /** Packets handed to the host and not yet released. */
  queued: number;
  releasedSinceGrant: number;
  lastActivity: number;
  /** The client sent END: DATA after it is ignored. */
  clientEnded: boolean;
}

type State = 'new' | 'await-info' | 'open' | 'closed';

const NOTHING_IGNORED: ReadonlyMap<string, number> = new Map();

export class WispServerSession {
  private state: State = 'new';
  private readonly streams = new Map<number, ServerStream>();
  private handshakeDeadline = Infinity;
  private confirmOpens = false;
  private halfClose = false;
  private flowControl = false;
  private publish = false;
  /** Listener ids the client holds (publish extension). */
  private readonly listeners = new Set<number>();
  private nextServerStreamId = SERVER_STREAM_ID_BASE;
  /** Made on the first ignored packet: most connections never need it (a relay holds thousands). */
  private ignoredCounts: Map<string, number> | undefined;

  constructor(
    private readonly options: WispServerOptions,
    private readonly host: WispServerHost,
  ) {}

  /** Ignored input, counted by reason (`data-unknown-stream`, `unknown-packet-type`, …). */
  get ignored(): ReadonlyMap<string, number> {
    return this.ignoredCounts ?? NOTHING_IGNORED;
  }

  get openStreams(): number {
    return this.streams.size;
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  /** Call once the WebSocket is open: v2 sends INFO and waits for the client's; v1 grants at once. */
  start(now: number): void {
    if (this.state !== 'new') return;
    if (this.options.version === 2) {
      this.host.send(encodeInfo(2, 0, this.serverExtensions()));
      this.state = 'await-info';
      this.handshakeDeadline = now + this.options.handshakeTimeoutMs;
    } else {
      this.openV1();
    }
  }

  receive(message: Uint8Array, now: number): void {
    if (this.state === 'closed' || this.state === 'new') return;
    const packet = parseWispPacket(message);
    if (typeof packet === 'string') {
      this.malformed(message, packet);
      return;
    }
    if (this.state === 'await-info') {
      if (packet.type === 'info') {
        this.finishHandshake(packet.extensions);
        return;
      }
      // A client that asked for a subprotocol but speaks v1: be lenient and fall back.
      this.openV1();
      // openV1 may have ended the connection (a password is required).
      if ((this.state as State) !== 'open') return;
    }
    this.handle(packet, now);
  }

  /** The destination socket connected: with stream-open confirmation, tell the client. */
  connected(id: number, now: number): void {
    const s = this.streams.get(id);
    if (!s) return;
    s.lastActivity = now;
    if (this.confirmOpens && s.type === 'tcp') this.grant(s, true);
  }

  /** Bytes from the destination for the client (Wisp has no flow control in this direction). */
  sendData(id: number, payload: Uint8Array, now: number): void {
    const s = this.streams.get(id);
    if (!s || this.state !== 'open') return;
    s.lastActivity = now;
    this.host.send(encodeData(id, payload, this.options.allocate));
  }

  /**
   * The destination sent FIN. With half-close the client gets END and the stream stays open for its
   * data; without, Wisp can only close the stream (0x02).
   */
  destinationEnded(id: number): void {
    const s = this.streams.get(id);
    if (!s) return;
    if (this.halfClose && s.type === 'tcp') this.host.send(encodeEnd(id));
    else this.closeStream(id, CloseReason.VOLUNTARY);
  }

  /** True when both ends speak weft's half-close extension. */
  get halfCloses(): boolean {
    return this.halfClose;
  }

  /** True when both ends speak weft's per-stream flow control extension. */
  get controlsFlow(): boolean {
    return this.flowControl;
  }

  /** True when both ends speak weft's publish extension. */
  get publishes(): boolean {
    return this.publish;
  }

  /** The answer to a LISTEN: `status` 0 and the port listened on, or a close reason (port 0). */
  listenResult(listenerId: number, status: number, port: number): void {
    if (!this.listeners.has(listenerId)) return;
    if (status !== 0) this.listeners.delete(listenerId);
    if (this.state === 'open') this.host.send(encodeListenResult(listenerId, status, status === 0 ? port : 0));
  }

  /**
   * A connection arrived at listener `listenerId`: opens a server-side stream for it (ACCEPT) and
   * returns its id, already connected; undefined when the client cannot take one now (the host
   * then drops the connection). Credits work as for a CONNECTed stream.
   */
  acceptStream(listenerId: number, remoteAddress: string, remotePort: number, now: number): number | undefined {
    if (this.state !== 'open' || !this.listeners.has(listenerId) || this.streams.size >= this.options.maxStreams) return undefined;
    let id = this.nextServerStreamId;
    while (this.streams.has(id)) id = id === 0xffff_ffff ? SERVER_STREAM_ID_BASE : id + 1;
    this.nextServerStreamId = id === 0xffff_ffff ? SERVER_STREAM_ID_BASE : id + 1;
    const B = this.options.bufferPackets;
    this.streams.set(id, { id, type: 'tcp', granted: B, ceiling: B, received: 0, queued: 0, releasedSinceGrant: 0, lastActivity: now, clientEnded: false });
    this.host.send(encodeAccept(id, listenerId, B, remotePort, remoteAddress));
    return id;
  }

  /** `count` packets of stream `id` have left the host's buffers; may grant more credit. */
  released(id: number, count = 1): void {
    const s = this.streams.get(id);
    if (s?.type !== 'tcp') return;
    s.queued = Math.max(0, s.queued - count);
    s.releasedSinceGrant += count;
    if (s.releasedSinceGrant * 2 >= this.options.bufferPackets) this.grant(s);
  }

  /** Server-side end of a stream (refused, failed, destination closed, drained): CLOSE goes out. */
  closeStream(id: number, reason: number): void {
    const s = this.streams.get(id);
    if (!s) return;
    this.streams.delete(id);
    if (this.state === 'open') this.host.send(encodeClose(id, reason));
    this.host.streamClosed(id, reason, 'server');
  }

  /** Closes every stream with `reason` (0x02 when the relay drains on SIGTERM). */
  closeAllStreams(reason: number): void {
    for (const id of [...this.streams.keys()]) this.closeStream(id, reason);
  }

  /** The WebSocket went away: report every stream closed, then stop. */
  connectionLost(): void {
    this.end(new WispProtocolError('connection-lost', 'the WebSocket closed'), false);
  }

  poll(now: number): void {
    if (this.state === 'await-info' && now >= this.handshakeDeadline) {
      this.end(new WispProtocolError('handshake-timeout', `no INFO from the client within ${this.options.handshakeTimeoutMs} ms`));
      return;
    }
    const idle = this.options.idleTimeoutMs;
    if (this.state !== 'open' || idle <= 0) return;
    for (const s of [...this.streams.values()]) {
      if (now - s.lastActivity >= idle) this.closeStream(s.id, CloseReason.DATA_TIMEOUT);
    }
  }

  /** When poll() next has work to do (Infinity: nothing scheduled). */
  nextDeadline(): number {
    if (this.state === 'await-info') return this.handshakeDeadline;
    const idle = this.options.idleTimeoutMs;
    if (this.state !== 'open' || idle <= 0) return Infinity;
    let next = Infinity;
    for (const s of this.streams.values()) next = Math.min(next, s.lastActivity + idle);
    return next;
  }

  // ---- internals ------------------------------------------------------------------------------

  private serverExtensions(): WispExtension[] {
    const o = this.options;
    const exts: WispExtension[] = [];
    if (o.udp) exts.push({ id: ExtensionId.UDP, payload: new Uint8Array(0) });
    if (o.checkPassword) exts.push({ id: ExtensionId.PASSWORD, payload: encodePasswordServer(o.passwordRequired) });
    if (o.motd !== undefined) exts.push({ id: ExtensionId.MOTD, payload: encodeMotd(o.motd) });
    exts.push({ id: ExtensionId.STREAM_OPEN_CONFIRMATION, payload: new Uint8Array(0) });
    if (o.halfClose) exts.push({ id: ExtensionId.WEFT_HALF_CLOSE, payload: new Uint8Array(0) });
    if (o.flowControl) exts.push({ id: ExtensionId.WEFT_FLOW_CONTROL, payload: new Uint8Array(0) });
    if (o.publish) exts.push({ id: ExtensionId.WEFT_PUBLISH, payload: encodePublishServer(o.publish.maxListeners) });
    return exts;
  }

  private openV1(): void {
    if (this.options.passwordRequired) {
      this.end(new WispProtocolError('auth-required', 'this relay requires a password, which Wisp v1 cannot carry', CloseReason.AUTH_MISSING_CREDENTIALS));
      return;
    }
    this.state = 'open';
    this.host.send(encodeContinue(0, this.options.bufferPackets));
    this.host.ready({ version: 1, extensions: [] });
  }

  private finishHandshake(clientExts: WispExtension[]): void {
    const ours = new Set(this.serverExtensions().map((e) => e.id));
    const common = [...new Set(clientExts.map((e) => e.id))].filter((id) => ours.has(id));
    let username: string | undefined;
    const o = this.options;
    if (o.checkPassword) {
      const offered = clientExts.find((e) => e.id === ExtensionId.PASSWORD);
      if (offered) {
        const match = parsePasswordClient(offered.payload).find((c) => o.checkPassword!(c));
        if (!match) {
          this.end(new WispProtocolError('auth-failed', 'wrong username or password', CloseReason.AUTH_BAD_PASSWORD));
          return;
        }
        username = match.username;
      } else if (o.passwordRequired) {
        this.end(new WispProtocolError('auth-required', 'the client sent no credentials', CloseReason.AUTH_MISSING_CREDENTIALS));
        return;
      }
    }
    this.confirmOpens = common.includes(ExtensionId.STREAM_OPEN_CONFIRMATION);
    this.halfClose = common.includes(ExtensionId.WEFT_HALF_CLOSE);
    this.flowControl = common.includes(ExtensionId.WEFT_FLOW_CONTROL);
    this.publish = common.includes(ExtensionId.WEFT_PUBLISH);
    this.state = 'open';
    this.handshakeDeadline = Infinity;
    this.host.send(encodeContinue(0, o.bufferPackets));
    this.host.ready({ version: 2, extensions: common, ...(username !== undefined ? { username } : {}) });
  }

  private handle(p: WispPacket, now: number): void {
    switch (p.type) {
      case 'connect':
        this.onConnect(p.streamId, p.streamType, p.hostname, p.port, now);
        return;
      case 'data':
        this.onData(p.streamId, p.payload, now);
        return;
      case 'close': {
        const s = this.streams.get(p.streamId);
        if (!s) return this.count('close-unknown-stream');
        this.streams.delete(p.streamId);
        this.host.streamClosed(p.streamId, p.reason, 'client');
        return;
      }
      case 'end': {
        const s = this.streams.get(p.streamId);
        if (!this.halfClose || !s || s.type !== 'tcp' || s.clientEnded) return this.count('end-ignored');
        s.clientEnded = true;
        s.lastActivity = now;
        this.host.streamEnd(p.streamId);
        return;
      }
      case 'pause':
      case 'resume': {
        const s = this.streams.get(p.streamId);
        if (!this.flowControl || !s || s.type !== 'tcp') return this.count('flow-ignored');
        this.host.streamPaused?.(p.streamId, p.type === 'pause');
        return;
      }
      case 'listen':
        return this.onListen(p.streamId, p.streamType, p.port);
      case 'unlisten':
        if (!this.listeners.delete(p.streamId)) return this.count('unlisten-unknown');
        this.host.unlisten?.(p.streamId);
        return;
      case 'listen-result':
      case 'accept':
        return this.count('server-packet-from-client');
      case 'continue':
        return this.count('client-continue');
      case 'info':
        return this.count('late-info');
      case 'unknown':
        return this.count('unknown-packet-type');
    }
  }

  private onListen(listenerId: number, streamType: number, port: number): void {
    const answer = (status: number) => this.host.send(encodeListenResult(listenerId, status, 0));
    if (!this.publish || !this.host.listen) {
      this.count('listen-ignored');
      return answer(CloseReason.BLOCKED);
    }
    if (this.listeners.has(listenerId)) return answer(CloseReason.INVALID_INFO);
    // UDP would need datagram streams opened by the server; not offered.
    if (streamType !== StreamType.TCP) return answer(CloseReason.BLOCKED);
    if (this.listeners.size >= this.options.publish!.maxListeners) return answer(CloseReason.THROTTLED);
    this.listeners.add(listenerId);
    this.host.listen(listenerId, port);
  }

  private onConnect(id: number, streamType: number, hostname: string, port: number, now: number): void {
    if (id === 0) return this.count('connect-stream-zero');
    // With publish, ids from SERVER_STREAM_ID_BASE up are the server's (ACCEPT).
    if (this.publish && id >= SERVER_STREAM_ID_BASE && !this.streams.has(id)) return void this.host.send(encodeClose(id, CloseReason.INVALID_INFO));
    const existing = this.streams.get(id);
    if (existing) {
      // The client reused a live id: nothing it says on that id can be trusted any more.
      this.closeStream(id, CloseReason.INVALID_INFO);
      return;
    }
    const refuse = (reason: number) => this.host.send(encodeClose(id, reason));
    if (streamType !== StreamType.TCP && streamType !== StreamType.UDP) return refuse(CloseReason.INVALID_INFO);
    if (streamType === StreamType.UDP && !this.options.udp) return refuse(CloseReason.BLOCKED);
    const host = hostname.trim();
    if (host.length === 0 || port === 0) return refuse(CloseReason.INVALID_INFO);
    if (this.streams.size >= this.options.maxStreams) return refuse(CloseReason.THROTTLED);
    const type = streamType === StreamType.TCP ? 'tcp' : 'udp';
    const B = this.options.bufferPackets;
    this.streams.set(id, { id, type, granted: B, ceiling: B, received: 0, queued: 0, releasedSinceGrant: 0, lastActivity: now, clientEnded: false });
    this.host.openStream({ id, type, hostname: host, port });
  }

  private onData(id: number, payload: Uint8Array, now: number): void {
    const s = this.streams.get(id);
    // DATA may cross a CLOSE we sent: ignoring it is normal, not an error.
    if (!s) return this.count('data-unknown-stream');
    s.lastActivity = now;
    if (s.clientEnded) return this.count('data-after-end');
    if (s.type === 'tcp') {
      s.received++;
      s.queued++;
      if (s.received > s.granted) {
        this.end(new WispProtocolError('credit-overrun', `stream ${id}: DATA beyond the ${s.granted} packets granted`));
        return;
      }
      if (s.queued > 4 * this.options.bufferPackets) {
        this.end(new WispProtocolError('credit-overrun', `stream ${id}: ${s.queued} packets queued, over the bound`));
        return;
      }
    }
    this.host.streamData(id, payload);
  }

  /**
   * `onOpen`: the stream-open confirmation, which a client waits for before it sends (a client that
   * sent early overshoots by at most its initial credits, once).
   */
  private grant(s: ServerStream, onOpen = false): void {
    const ceiling = onOpen ? s.received : Math.max(s.ceiling, s.received);
    const remaining = Math.max(0, this.options.bufferPackets - s.queued - (ceiling - s.received));
    s.ceiling = ceiling + remaining;
    s.granted += remaining;
    s.releasedSinceGrant = 0;
    this.host.send(encodeContinue(s.id, remaining));
  }

  private malformed(message: Uint8Array, reason: string): void {
    // A CONNECT we cannot read still names its stream: refuse just that one.
    if (message.length >= 5 && message[0] === 0x01 && this.state === 'open') {
      const id = (message[1] | (message[2] << 8) | (message[3] << 16) | (message[4] << 24)) >>> 0;
      if (id !== 0 && !this.streams.has(id)) {
        this.host.send(encodeClose(id, CloseReason.INVALID_INFO));
        return;
      }
    }
    if (message.length < 5) {
      this.end(new WispProtocolError('malformed-packet', `a ${message.length}-byte message is shorter than the Wisp header`));
      return;
    }
    this.count(reason);
  }

  private count(reason: string): void {
    const counts = (this.ignoredCounts ??= new Map());
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
  }

  /** Ends the connection: CLOSE on stream 0 when the error has a reason, every stream reported. */
  private end(error: WispProtocolError, notifyPeer = true): void {
    if (this.state === 'closed') return;
    if (notifyPeer && error.closeReason !== undefined) this.host.send(encodeClose(0, error.closeReason));
    this.state = 'closed';
    const reason = error.code === 'connection-lost' ? CloseReason.NETWORK_ERROR : CloseReason.UNKNOWN;
    for (const id of [...this.streams.keys()]) {
      this.streams.delete(id);
      this.host.streamClosed(id, reason, 'server');
    }
    this.host.terminate(error);
  }
}
