// A page's link to a LAN room of `weft relay --lan` (createNetwork({ relayUrl, lan: { room, key } })):
// one WebSocket to `<relay path>lan/<room>`, the join with the room's key as its first message, then
// Ethernet frames both ways, batched per turn (core/wire/room-protocol.ts). It reconnects with
// backoff when the connection drops (the room's router, in the relay, gives the guests their
// addresses back), and gives up only on a refusal that would repeat (a wrong key, bad credentials).
// What waits to be sent is bounded: past SEND_BACKLOG_BYTES frames are dropped and counted, as a
// full NIC queue drops them.

import {
  isFinalRoomClose,
  packRoomFrames,
  parseRoomJoined,
  parseRoomNotice,
  readRoomFrames,
  ROOM_PROTOCOL_VERSION,
  type RoomJoin,
  type RoomJoined,
  type RoomLease,
} from '../core/wire/room-protocol';
import type { RelayState } from './worker-api';

/** Bytes the WebSocket may hold unsent before frames to the room are dropped. */
const SEND_BACKLOG_BYTES = 2 * 1024 * 1024;
/** What one message to the relay carries at most (the relay takes up to 256 KiB). */
const MAX_MESSAGE = 64 * 1024;
/** Reconnect delays: the first, doubling up to the last. */
const BACKOFF_MS = { initial: 250, max: 10_000 };
/** Failed attempts in a row after which the state is 'failed' (retries go on). */
const ATTEMPTS_BEFORE_FAILED = 5;

/** The room's WebSocket URL: the relay's Wisp URL with `lan/<room>` after its path (its query, the token, kept). */
export function roomUrl(relayUrl: string, room: string): string {
  const url = new URL(relayUrl.replace(/^wisp:/, 'ws:').replace(/^wisps:/, 'wss:'));
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.pathname += `lan/${encodeURIComponent(room)}`;
  return url.toString();
}

export interface RoomLinkOptions {
  relayUrl: string;
  room: string;
  key: string;
  /** For a relay with --password (without its token on the URL). */
  password?: { username: string; password: string };
  /** A frame from the room (the link's to give away). */
  onFrame(frame: Uint8Array): void;
  /** The frames of one message from the relay have all been given to onFrame. */
  onBatchEnd(): void;
  /** The link's state: 'connected' once in the room. */
  onState(state: RelayState, message?: string): void;
  /** The room's DHCP leased an address to one of this page's guests. */
  onLease(lease: RoomLease): void;
  /** The relay refused in a way that would repeat: the link has stopped. */
  onRefused(code: number, message: string): void;
  onDrop(reason: string): void;
  /** Runs each callback from the WebSocket (the worker measures its busy time). */
  around(fn: () => void): void;
}

export class RoomLink {
  readonly url: string;
  /** Frames and bytes to the room (out) and from it (in). */
  readonly counters = { framesOut: 0, bytesOut: 0, framesIn: 0, bytesIn: 0 };
  joined: RoomJoined | undefined;
  private ws: WebSocket | undefined;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private delayMs = BACKOFF_MS.initial;
  private attempts = 0;
  private state: RelayState = 'none';
  private reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  private stopped = false;

  constructor(private readonly o: RoomLinkOptions) {
    this.url = roomUrl(o.relayUrl, o.room);
    this.setState('connecting');
    this.open();
  }

  /** Queues a frame for the room (copied when this turn's message is built); false when it was dropped. */
  send(frame: Uint8Array): boolean {
    const ws = this.ws;
    if (!this.joined || !ws || ws.readyState !== WebSocket.OPEN) {
      this.o.onDrop('room-not-joined');
      return false;
    }
    if (ws.bufferedAmount + this.pendingBytes + frame.length > SEND_BACKLOG_BYTES) {
      this.o.onDrop('room-send-backlog');
      return false;
    }
    this.pending.push(frame);
    this.pendingBytes += frame.length + 2;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
    return true;
  }

  close(): void {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.ws?.close(1000, 'leaving');
    this.ws = undefined;
    this.pending = [];
    this.setState('none');
  }

  private flush(): void {
    this.flushScheduled = false;
    const frames = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || frames.length === 0) return;
    for (const f of frames) {
      this.counters.framesOut++;
      this.counters.bytesOut += f.length;
    }
    for (const msg of packRoomFrames(frames, MAX_MESSAGE)) ws.send(msg as Uint8Array<ArrayBuffer>);
  }

  private open(): void {
    if (this.stopped) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      // A URL the browser will not take cannot get better by trying again.
      this.refused(0, `the room's URL ${this.url} cannot be used: ${e instanceof Error ? e.message : String(e)}`);
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    const join: RoomJoin = { type: 'join', v: ROOM_PROTOCOL_VERSION, key: this.o.key, ...(this.o.password ?? {}) };
    ws.onopen = () => this.o.around(() => ws.send(JSON.stringify(join)));
    ws.onmessage = (e: MessageEvent) =>
      this.o.around(() => {
        if (this.ws !== ws) return;
        if (typeof e.data === 'string') return this.onText(e.data);
        if (!(e.data instanceof ArrayBuffer) || !this.joined) return;
        readRoomFrames(
          new Uint8Array(e.data),
          0xffff,
          (frame) => {
            this.counters.framesIn++;
            this.counters.bytesIn += frame.length;
            this.o.onFrame(frame);
          },
          (problem) => this.o.onDrop(`room-${problem}`),
        );
        this.o.onBatchEnd();
      });
    ws.onclose = (e: CloseEvent) => this.o.around(() => this.onClose(ws, e.code, e.reason));
  }

  private onText(text: string): void {
    if (this.joined) {
      const lease = parseRoomNotice(text);
      if (lease) this.o.onLease(lease);
      return;
    }
    const joined = parseRoomJoined(text);
    if (!joined) return;
    this.joined = joined;
    this.attempts = 0;
    this.delayMs = BACKOFF_MS.initial;
    this.setState('connected', `room ${joined.room}: ${joined.members} member${joined.members === 1 ? '' : 's'}`);
  }

  private onClose(ws: WebSocket, code: number, reason: string): void {
    if (this.ws !== ws || this.stopped) return;
    this.ws = undefined;
    const wasJoined = this.joined !== undefined;
    this.joined = undefined;
    const why = `the relay closed the room's connection (${code}${reason ? ` ${reason}` : ''})`;
    if (isFinalRoomClose(code)) return this.refused(code, reason || why);
    if (wasJoined) {
      this.attempts = 0;
      this.setState('reconnecting', why);
    } else if (++this.attempts >= ATTEMPTS_BEFORE_FAILED) {
      this.setState('failed', `${this.attempts} attempts failed (last: ${why}); still retrying`);
    }
    // Jitter, so the members of a room a relay dropped do not all come back at once.
    const delay = this.delayMs * (0.8 + 0.4 * Math.random());
    this.delayMs = Math.min(BACKOFF_MS.max, this.delayMs * 2);
    this.reconnectTimer = setTimeout(() => this.open(), delay);
  }

  private refused(code: number, message: string): void {
    this.stopped = true;
    this.setState('failed', message);
    this.o.onRefused(code, message);
  }

  private setState(state: RelayState, message?: string): void {
    if (state === this.state && message === undefined) return;
    this.state = state;
    this.o.onState(state, message);
  }
}
