// The client side of one Wisp connection as a state machine: WebSocket messages in, messages and
// host calls out, time passed in. It never sends a TCP DATA packet beyond the credits the server
// granted; what does not fit waits in a per-stream queue with a byte bound. CONNECTs asked for
// before the handshake completes wait too, and go out when the server's first CONTINUE arrives.
//
// Coalescing. Credits count packets, whatever their size, so one DATA per guest segment (1448 bytes
// at MTU 1500) would cap a stream at 128 segments in flight. Whatever waits in a queue goes out in
// DATA packets of up to maxDataPayload bytes, and between cork() and uncork() writes only queue, so
// a host that corks for the span of one batch of input (WispUpstream: until the next microtask)
// sends each stream's writes of that batch as few large packets.

import {
  CloseReason,
  ExtensionId,
  SERVER_STREAM_ID_BASE,
  StreamType,
  WISP_HEADER_LENGTH,
  allocData,
  encodeClose,
  encodeConnect,
  encodeData,
  encodeEnd,
  encodeFlow,
  encodeInfo,
  encodeListen,
  encodePasswordClient,
  encodeUnlisten,
  parseMotd,
  parsePasswordServer,
  parseWispPacket,
  type PacketAllocator,
  type PasswordCredentials,
  type WispExtension,
} from './wisp-codec';
import { WispProtocolError } from './wisp-errors';
import { copyBytes } from '../wire/bytes';
import type { Parsed } from '../wire/parse-result';

export interface WispClientOptions {
  /** 2 when the WebSocket was opened with a subprotocol (offering v2); a v1 server still works. */
  version: 1 | 2;
  /** Advertise UDP support in v2. */
  udp: boolean;
  /** Sent with the password extension when the server offers it. */
  password?: PasswordCredentials;
  maxStreams: number;
  /** Largest DATA payload sent; longer writes are split (each piece costs one credit). */
  maxDataPayload: number;
  /** Bytes a TCP stream may hold beyond its credits before the stream is failed (0x81). */
  maxQueuedBytes: number;
  handshakeTimeoutMs: number;
  /** Offer weft's half-close extension (END packets). */
  halfClose?: boolean;
  /** Offer weft's per-stream flow control extension (PAUSE and RESUME packets). */
  flowControl?: boolean;
  /** Allocates DATA packets and queued copies (every byte is written, so it need not zero-fill). */
  allocate?: PacketAllocator;
  /** Offer weft's publish extension (LISTEN/ACCEPT: the server listens for this client). */
  publish?: boolean;
}

export interface WispReadyInfo {
  version: 1 | 2;
  /** Extension ids both sides support. */
  extensions: number[];
  motd?: string;
  /** The credit every new TCP stream starts with. */
  initialCredits: number;
}

export interface WispClientHost {
  send(message: Uint8Array): void;
  ready(info: WispReadyInfo): void;
  /** With stream-open confirmation: the server connected stream `id`. */
  streamConfirmed(id: number): void;
  streamData(id: number, payload: Uint8Array): void;
  /** With half-close: the server's side sends no more (the destination's FIN). */
  streamEnded(id: number): void;
  /** write() returned false earlier; the queue has drained. */
  streamWritable(id: number): void;
  /** With publish: the server answered LISTEN (`status` 0: listening on `port`; else a close reason). */
  listenResult?(listenerId: number, status: number, port: number): void;
  /**
   * With publish: the server accepted a connection for listener `listenerId` and opened stream `id`
   * for it, already connected (write() works at once). Without a host for it, the stream is closed.
   */
  streamAccepted?(listenerId: number, id: number, remote: { address: string; port: number }): void;
  /** The server closed the stream, or it failed locally. Not called for close(). */
  streamClosed(id: number, reason: number): void;
  /** The connection is over (handshake failed or rejected, or abort()). Streams were reported first. */
  terminate(error: WispProtocolError): void;
}

interface ClientStream {
  id: number;
  type: 'tcp' | 'udp';
  hostname: string;
  port: number;
  /** CONNECT has been sent (false while the handshake is still running). */
  announced: boolean;
  confirmed: boolean;
  credits: number;
  /** Bytes waiting for credits (or for uncork), oldest first; END_MARK stands for END. */
  queue: Uint8Array[];
  /** Bytes of queue[0] already sent. */
  headOffset: number;
  queuedBytes: number;
  /** With flow control: the host asked the server to stop reading this stream's destination. */
  paused: boolean;
  /** write() returned false: call streamWritable once the queue is empty. */
  wantsWritable: boolean;
  /** end() was called: no more writes; END goes out after the queue. */
  ended: boolean;
}

/** A stream as it starts: `announced` (and confirmed) when the server opened it (publish extension). */
function newStream(id: number, type: 'tcp' | 'udp', hostname: string, port: number, announced: boolean, credits: number): ClientStream {
  return {
    id,
    type,
    hostname,
    port,
    announced,
    confirmed: announced,
    credits,
    queue: [],
    headOffset: 0,
    queuedBytes: 0,
    paused: false,
    wantsWritable: false,
    ended: false,
  };
}

/** Queue entry that stands for END: it goes out in order behind the data, without a credit. */
const END_MARK = new Uint8Array(0);

/**
 * Bytes a stream accepts between cork() and uncork() (within its credits) before write() says
 * wait: what one uncork sends per stream, so streams take turns on the WebSocket and a writer with
 * large credits does not pile up megabytes of copies.
 */
const CORKED_ACCEPT_BYTES = 1024 * 1024;

/** UDP datagrams a stream holds while the handshake is still running. */
const MAX_EARLY_DATAGRAMS = 16;

type State = 'new' | 'await-handshake' | 'await-continue' | 'open' | 'closed';

export class WispClientSession {
  private state: State = 'new';
  private readonly streams = new Map<number, ClientStream>();
  private nextId = 1;
  private initialCredits = 0;
  private handshakeDeadline = Infinity;
  private negotiated: number[] = [];
  private motd: string | undefined;
  private version: 1 | 2 = 1;
  private offered: 1 | 2;
  private corked = false;
  /** Streams that queued data while corked (or while sending was blocked). */
  private readonly corkedStreams = new Set<ClientStream>();
  /** The host's WebSocket has too much unsent: TCP DATA waits (setSendBlocked). */
  private sendBlocked = false;

  constructor(
    private readonly options: WispClientOptions,
    private readonly host: WispClientHost,
  ) {
    this.offered = options.version;
  }

  get isOpen(): boolean {
    return this.state === 'open';
  }

  get isClosed(): boolean {
    return this.state === 'closed';
  }

  get openStreams(): number {
    return this.streams.size;
  }

  /** True when the server confirms stream opens (v2 extension 0x05), so callers can wait for it. */
  get confirmsOpens(): boolean {
    return this.negotiated.includes(ExtensionId.STREAM_OPEN_CONFIRMATION);
  }

  /** True when the server speaks weft's half-close extension, so end() can send END. */
  get halfCloses(): boolean {
    return this.negotiated.includes(ExtensionId.WEFT_HALF_CLOSE);
  }

  /** True when the server speaks weft's publish extension, so listen() reaches it. */
  get publishes(): boolean {
    return this.negotiated.includes(ExtensionId.WEFT_PUBLISH);
  }

  /** Asks the server to listen for us (publish extension); the answer comes as listenResult. */
  listen(listenerId: number, port: number): Parsed<void> {
    if (this.state !== 'open' || !this.publishes) return 'wisp-publish-unsupported';
    this.host.send(encodeListen(listenerId, StreamType.TCP, port));
    return undefined;
  }

  /** Stops a listener; streams it opened stay open. */
  unlisten(listenerId: number): void {
    if (this.state === 'open' && this.publishes) this.host.send(encodeUnlisten(listenerId));
  }

  /** True when the server speaks weft's flow control extension, so pauseStream() reaches it. */
  get controlsFlow(): boolean {
    return this.negotiated.includes(ExtensionId.WEFT_FLOW_CONTROL);
  }

  /**
   * Call once the WebSocket is open; `offered` is the version this WebSocket offered (it may differ
   * from options.version after a fallback). The server speaks first in both versions.
   */
  start(now: number, offered: 1 | 2 = this.options.version): void {
    if (this.state !== 'new') return;
    this.offered = offered;
    this.state = 'await-handshake';
    this.handshakeDeadline = now + this.options.handshakeTimeoutMs;
  }

  receive(message: Uint8Array, _now: number): void {
    if (this.state === 'closed' || this.state === 'new') return;
    const p = parseWispPacket(message);
    if (typeof p === 'string') return; // a server bug; nothing the client can do but ignore it
    if (this.state !== 'open') {
      if (p.streamId !== 0) return;
      if (p.type === 'info' && this.state === 'await-handshake' && this.offered === 2) {
        this.answerInfo(p.extensions);
      } else if (p.type === 'continue') {
        this.open(p.bufferRemaining);
      } else if (p.type === 'close') {
        const code =
          p.reason === CloseReason.AUTH_BAD_PASSWORD
            ? 'auth-failed'
            : p.reason === CloseReason.AUTH_MISSING_CREDENTIALS
              ? 'auth-required'
              : 'handshake-rejected';
        this.finish(new WispProtocolError(code, `the server rejected the handshake (close reason 0x${p.reason.toString(16)})`, p.reason));
      }
      return;
    }
    if (p.type === 'listen-result') {
      if (this.publishes) this.host.listenResult?.(p.streamId, p.status, p.port);
      return;
    }
    if (p.type === 'accept') return this.accepted(p.streamId, p.listenerId, p.bufferRemaining, p.remoteAddress, p.remotePort);
    const s = this.streams.get(p.streamId);
    if (!s) return;
    switch (p.type) {
      case 'data':
        this.host.streamData(s.id, p.payload);
        return;
      case 'continue':
        if (s.type !== 'tcp') return;
        s.credits = p.bufferRemaining;
        if (!s.confirmed && this.confirmsOpens) {
          s.confirmed = true;
          this.host.streamConfirmed(s.id);
          if (!this.streams.has(s.id)) return;
        }
        this.flush(s);
        return;
      case 'close':
        this.streams.delete(s.id);
        this.host.streamClosed(s.id, p.reason);
        return;
      case 'end':
        if (this.halfCloses && s.type === 'tcp') this.host.streamEnded(s.id);
        return;
      default:
        return; // CONNECT/INFO/unknown from a server: ignore
    }
  }

  /** Opens a stream; returns its id, or a reason it cannot. CONNECT waits for the handshake. */
  openStream(type: 'tcp' | 'udp', hostname: string, port: number): Parsed<number> {
    if (this.state === 'closed') return 'wisp-connection-closed';
    if (this.streams.size >= this.options.maxStreams) return 'wisp-too-many-streams';
    if (type === 'udp' && this.state === 'open' && this.version === 2 && !this.negotiated.includes(ExtensionId.UDP)) {
      return 'wisp-udp-unsupported';
    }
    let id = this.nextId;
    // Ids from SERVER_STREAM_ID_BASE up are the server's (publish extension): stay below them.
    while (id === 0 || id >= SERVER_STREAM_ID_BASE || this.streams.has(id)) id = id >= SERVER_STREAM_ID_BASE ? 1 : id + 1;
    this.nextId = id + 1;
    const s = newStream(id, type, hostname, port, false, this.initialCredits);
    this.streams.set(id, s);
    if (this.state === 'open') this.announce(s);
    return id;
  }

  /**
   * Queues `data` for stream `id`; returns false when the caller should wait for streamWritable
   * (what is queued is more than the credits carry, more than one uncork sends, or the WebSocket is
   * full). A caller that keeps writing past maxQueuedBytes has the stream failed with 0x81.
   */
  write(id: number, data: Uint8Array): boolean {
    const s = this.streams.get(id);
    if (!s || s.ended) return true;
    const max = this.options.maxDataPayload;
    if (s.type === 'udp') {
      // No credits for UDP. Before the handshake a few datagrams wait; later ones are dropped.
      const datagram = data.length > max ? data.subarray(0, max) : data;
      if (s.announced) this.host.send(encodeData(id, datagram));
      else if (s.queue.length < MAX_EARLY_DATAGRAMS) s.queue.push(copyBytes(datagram));
      return true;
    }
    if (data.length === 0) return s.queue.length === 0;
    let off = 0;
    if (!this.corked && !this.sendBlocked && s.announced && s.queue.length === 0) {
      while (off < data.length && s.credits > 0) {
        const end = Math.min(data.length, off + max);
        s.credits--;
        this.host.send(encodeData(id, data.subarray(off, end)));
        off = end;
      }
    }
    if (off < data.length) {
      // Copy: the caller may reuse its buffer once write() returns.
      s.queue.push(this.copy(off === 0 ? data : data.subarray(off)));
      s.queuedBytes += data.length - off;
      if (this.corked || this.sendBlocked) this.corkedStreams.add(s);
    }
    // While corked, what the credits will carry at uncork is not "beyond the credits".
    const covered = this.corked && s.announced ? s.credits * max : 0;
    if (s.queuedBytes - covered > this.options.maxQueuedBytes) {
      this.fail(s, CloseReason.CLIENT_ERROR);
      return false;
    }
    // Corked, a write the credits will carry at uncork is accepted — unless the host's WebSocket is
    // already full (nothing goes out at uncork then) or the stream holds its share.
    const accepted = this.corked && !this.sendBlocked && s.announced && s.queuedBytes <= CORKED_ACCEPT_BYTES && Math.ceil(s.queuedBytes / max) <= s.credits;
    if (s.queuedBytes > 0 && !accepted) {
      s.wantsWritable = true;
      return false;
    }
    return true;
  }

  /** From now until uncork(), TCP writes only queue (and coalesce). */
  cork(): void {
    this.corked = true;
  }

  /** Sends what the streams queued while corked, as far as their credits go. */
  uncork(): void {
    if (!this.corked) return;
    this.corked = false;
    this.flushWaiting();
  }

  /**
   * The host's WebSocket has more unsent than it wants (`blocked`), or has drained: while blocked,
   * TCP DATA stays in the streams' queues (write() returns false), so the socket's buffer is bounded
   * by the host and not by the sum of every stream's credits.
   */
  setSendBlocked(blocked: boolean): void {
    if (this.sendBlocked === blocked) return;
    this.sendBlocked = blocked;
    if (!blocked && !this.corked) this.flushWaiting();
  }

  private flushWaiting(): void {
    const streams = [...this.corkedStreams];
    this.corkedStreams.clear();
    for (const s of streams) if (this.streams.get(s.id) === s) this.flush(s);
  }

  /**
   * With weft's flow control extension: asks the server to stop (`paused`) or restart reading the
   * destination of TCP stream `id`. Returns false when the server cannot be asked.
   */
  pauseStream(id: number, paused: boolean): boolean {
    const s = this.streams.get(id);
    if (s?.type !== 'tcp' || this.state === 'closed' || (this.state === 'open' && !this.controlsFlow)) return false;
    if (s.paused === paused) return true;
    s.paused = paused;
    if (s.announced) this.host.send(encodeFlow(id, paused));
    return true;
  }

  /**
   * Half-closes a TCP stream: END goes out after everything queued. Returns false when the server
   * does not speak weft's half-close extension (plain Wisp has no way to say it).
   */
  end(id: number): boolean {
    const s = this.streams.get(id);
    if (s?.type !== 'tcp' || !this.isOpen || !this.halfCloses) return false;
    if (s.ended) return true;
    s.ended = true;
    if (s.announced && s.queue.length === 0 && !this.corked) {
      this.host.send(encodeEnd(id));
    } else {
      s.queue.push(END_MARK);
      if (this.corked) this.corkedStreams.add(s);
    }
    return true;
  }

  /** Closes a stream from this side (no streamClosed call follows). */
  close(id: number, reason: number = CloseReason.VOLUNTARY): void {
    const s = this.streams.get(id);
    if (!s) return;
    if (this.corked && s.queuedBytes > 0 && reason === CloseReason.VOLUNTARY) {
      // Written before the close in this same batch: it goes first, as far as credits allow.
      s.wantsWritable = false;
      this.flush(s, true);
    }
    this.streams.delete(id);
    this.corkedStreams.delete(s);
    if (s.announced && this.state === 'open') this.host.send(encodeClose(id, reason));
  }

  /** Ends the connection (the WebSocket closed, or the host gives up): every stream is reported. */
  abort(error: WispProtocolError): void {
    this.finish(error);
  }

  poll(now: number): void {
    if ((this.state === 'await-handshake' || this.state === 'await-continue') && now >= this.handshakeDeadline) {
      this.finish(new WispProtocolError('handshake-timeout', `the server did not complete the handshake within ${this.options.handshakeTimeoutMs} ms`));
    }
  }

  nextDeadline(): number {
    return this.state === 'await-handshake' || this.state === 'await-continue' ? this.handshakeDeadline : Infinity;
  }

  // ---- internals ------------------------------------------------------------------------------

  private accepted(id: number, listenerId: number, credits: number, address: string, port: number): void {
    const refuse = (reason: number) => this.host.send(encodeClose(id, reason));
    if (!this.publishes || id < SERVER_STREAM_ID_BASE || this.streams.has(id)) return refuse(CloseReason.INVALID_INFO);
    if (!this.host.streamAccepted) return refuse(CloseReason.BLOCKED);
    if (this.streams.size >= this.options.maxStreams) return refuse(CloseReason.THROTTLED);
    this.streams.set(id, newStream(id, 'tcp', address, port, true, credits));
    this.host.streamAccepted(listenerId, id, { address, port });
  }

  private answerInfo(serverExts: WispExtension[]): void {
    const o = this.options;
    const byId = new Map(serverExts.map((e) => [e.id, e]));
    const mine: WispExtension[] = [];
    if (o.udp) mine.push({ id: ExtensionId.UDP, payload: new Uint8Array(0) });
    const pw = byId.get(ExtensionId.PASSWORD);
    if (pw) {
      const server = parsePasswordServer(pw.payload);
      const required = typeof server !== 'string' && server.required;
      if (o.password) {
        mine.push({ id: ExtensionId.PASSWORD, payload: encodePasswordClient(o.password) });
      } else if (required) {
        this.host.send(encodeClose(0, CloseReason.AUTH_MISSING_CREDENTIALS));
        this.finish(new WispProtocolError('auth-required', 'the server requires a password and none is configured', CloseReason.AUTH_MISSING_CREDENTIALS));
        return;
      }
    }
    mine.push({ id: ExtensionId.MOTD, payload: new Uint8Array(0) });
    mine.push({ id: ExtensionId.STREAM_OPEN_CONFIRMATION, payload: new Uint8Array(0) });
    if (o.halfClose) mine.push({ id: ExtensionId.WEFT_HALF_CLOSE, payload: new Uint8Array(0) });
    if (o.flowControl) mine.push({ id: ExtensionId.WEFT_FLOW_CONTROL, payload: new Uint8Array(0) });
    if (o.publish) mine.push({ id: ExtensionId.WEFT_PUBLISH, payload: new Uint8Array(0) });
    const motd = byId.get(ExtensionId.MOTD);
    if (motd) this.motd = parseMotd(motd.payload);
    this.negotiated = mine.map((e) => e.id).filter((id) => byId.has(id));
    this.version = 2;
    this.host.send(encodeInfo(2, 0, mine));
    this.state = 'await-continue';
  }

  private open(initialCredits: number): void {
    this.state = 'open';
    this.handshakeDeadline = Infinity;
    this.initialCredits = initialCredits;
    this.host.ready({
      version: this.version,
      extensions: [...this.negotiated],
      ...(this.motd !== undefined ? { motd: this.motd } : {}),
      initialCredits,
    });
    for (const s of [...this.streams.values()]) {
      if (this.state !== 'open') return;
      if (!s.announced && this.streams.has(s.id)) {
        s.credits = initialCredits;
        this.announce(s);
      }
    }
  }

  private announce(s: ClientStream): void {
    s.announced = true;
    s.credits = this.initialCredits;
    this.host.send(encodeConnect(s.id, s.type === 'tcp' ? StreamType.TCP : StreamType.UDP, s.port, s.hostname));
    if (s.paused) {
      if (this.controlsFlow) this.host.send(encodeFlow(s.id, true));
      else s.paused = false;
    }
    this.flush(s);
  }

  /** Sends what credits allow (`evenIfCorked`: also while corked). */
  private flush(s: ClientStream, evenIfCorked = false): void {
    if (s.type === 'udp') {
      for (const d of s.queue.splice(0)) this.host.send(encodeData(s.id, d));
      return;
    }
    if ((this.corked || this.sendBlocked) && !evenIfCorked) {
      this.corkedStreams.add(s);
      return;
    }
    while (s.queue.length > 0 && s.announced && (s.credits > 0 || s.queue[0] === END_MARK)) {
      if (this.sendBlocked && !evenIfCorked) {
        // The host blocked sending during this flush (its buffer filled): the rest waits.
        this.corkedStreams.add(s);
        return;
      }
      if (s.queue[0] === END_MARK) {
        s.queue.shift();
        this.host.send(encodeEnd(s.id));
        continue;
      }
      s.credits--;
      this.host.send(this.takeData(s));
    }
    if (s.queue.length === 0 && s.wantsWritable) {
      s.wantsWritable = false;
      this.host.streamWritable(s.id);
    }
  }

  /** One DATA packet from the front of the queue: up to maxDataPayload bytes, up to the next END. */
  private takeData(s: ClientStream): Uint8Array {
    const max = this.options.maxDataPayload;
    let length = 0;
    for (let i = 0; i < s.queue.length && s.queue[i] !== END_MARK && length < max; i++) {
      length = Math.min(max, length + s.queue[i].length - (i === 0 ? s.headOffset : 0));
    }
    const packet = allocData(s.id, length, this.options.allocate);
    let at = WISP_HEADER_LENGTH;
    while (at < packet.length) {
      const head = s.queue[0];
      const take = Math.min(head.length - s.headOffset, packet.length - at);
      packet.set(head.subarray(s.headOffset, s.headOffset + take), at);
      at += take;
      if (s.headOffset + take === head.length) {
        s.queue.shift();
        s.headOffset = 0;
      } else {
        s.headOffset += take;
      }
    }
    s.queuedBytes -= length;
    return packet;
  }

  private copy(data: Uint8Array): Uint8Array {
    if (!this.options.allocate) return copyBytes(data);
    const c = this.options.allocate(data.length);
    c.set(data);
    return c;
  }

  private fail(s: ClientStream, reason: number): void {
    this.close(s.id, reason);
    this.host.streamClosed(s.id, reason);
  }

  private finish(error: WispProtocolError): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    for (const id of [...this.streams.keys()]) {
      this.streams.delete(id);
      this.host.streamClosed(id, CloseReason.NETWORK_ERROR);
    }
    this.host.terminate(error);
  }
}
