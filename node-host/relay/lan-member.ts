// One member of a LAN room (`weft relay --lan`): its WebSocket, from the `join` text to the frames
// that follow (core/wire/room-protocol.ts), with what bounds it. Frames from the member pass its
// frame and byte budgets (--lan-frame-rate, --lan-bandwidth) and a cap on the source MACs it may
// use (so it cannot fill the room's switch table or DHCP pool) before they reach the room's
// switch; anything over is dropped and counted, never queued. Frames for the member are packed
// into messages once per turn of the event loop; what waits for a member that does not read is
// bounded (QUEUE_BYTES): past it frames for it are dropped and counted, as a full NIC queue drops them.

import type { WebSocket } from 'ws';
import type { SwitchPort } from '../../core/link/learning-switch';
import type { LeaseEvent } from '../../core/stack-events';
import { formatIpv4, formatMac, isGroupMac, readMac } from '../../core/wire/address';
import {
  packRoomFrames,
  parseRoomJoin,
  readRoomFrames,
  ROOM_CLOSE,
  ROOM_PROTOCOL_VERSION,
  type RoomJoin,
  type RoomJoined,
  type RoomLease,
} from '../../core/wire/room-protocol';
import type { EventLog } from '../log';
import { ROOM_MTU, type LanRoom } from './lan-room';
import type { LogThrottle } from './log-throttle';
import type { RelayMetrics } from './relay-metrics';
import type { LanOptions } from './relay-options';
import { type KeyedRateLimiter, TokenBucket } from './token-bucket';

/** The largest Ethernet frame of a room: its MTU and the Ethernet header (no FCS). */
export const ROOM_MAX_FRAME = ROOM_MTU + 14;
/** A member that has not sent its `join` by then is closed. */
const JOIN_TIMEOUT_MS = 10_000;
/** Frames (and message overheads) waiting for one member, queued or unsent on its WebSocket. */
export const QUEUE_BYTES = 1024 * 1024;
/** What one WebSocket message to a member carries at most. */
const MAX_OUT_MESSAGE = 64 * 1024;
/** What one queued message costs beyond its bytes (ws's frame, callback and buffers). */
const MESSAGE_OVERHEAD = 512;
/** Source MACs one member may use: a page's few guests; bounds what it takes of the switch table and the DHCP pool. */
export const MAX_MACS_PER_MEMBER = 4;

export interface LanClient {
  ip: string;
  port: number;
  room: string;
  /** The upgrade carried the relay's token: no password is needed in `join`. */
  preauthorized: boolean;
}

export type JoinOutcome = { room: LanRoom; port: SwitchPort; created: boolean } | { code: number; cause: string; message: string };

/** The relay's settings, counters, logs and password check, which the rooms and their members share. */
export interface LanRelayParts {
  options: LanOptions;
  metrics: RelayMetrics;
  log: EventLog;
  refusalLog: LogThrottle;
  checkPassword: ((c: { username: string; password: string }) => boolean) | undefined;
  passwordTries: KeyedRateLimiter;
}

/** What a member needs from the relay's rooms. */
export interface LanMemberHost {
  readonly relay: LanRelayParts;
  /** Puts the member into its room (made if need be), or says why not. */
  join(member: LanMember, join: RoomJoin): JoinOutcome;
  /** The member's WebSocket closed (joined or not). */
  left(member: LanMember): void;
}

export class LanMember {
  readonly name: string;
  room: LanRoom | undefined;
  private port: SwitchPort | undefined;
  private state: 'joining' | 'member' | 'closed' = 'joining';
  private readonly joinTimer: NodeJS.Timeout;
  private readonly frameBudget: TokenBucket | undefined;
  private readonly byteBudget: TokenBucket | undefined;
  private readonly macs = new Set<number>();
  private queue: Uint8Array[] = [];
  private queuedBytes = 0;
  private unsentBytes = 0;
  private flushScheduled = false;
  private readonly openedAt = performance.now();
  readonly stats = { framesIn: 0, framesOut: 0, bytesIn: 0, bytesOut: 0, dropped: new Map<string, number>() };

  constructor(
    private readonly ws: WebSocket,
    readonly client: LanClient,
    private readonly host: LanMemberHost,
  ) {
    this.name = client.ip.includes(':') ? `[${client.ip}]:${client.port}` : `${client.ip}:${client.port}`;
    const now = performance.now();
    const { frameRate, bandwidth } = host.relay.options;
    // A quarter second of burst: a TCP window's worth goes through at once, a flood does not.
    if (frameRate > 0) this.frameBudget = new TokenBucket(frameRate, Math.max(64, frameRate / 4), now);
    if (bandwidth > 0) this.byteBudget = new TokenBucket(bandwidth, Math.max(64 * 1024, bandwidth / 4), now);
    this.joinTimer = setTimeout(() => this.refuse(ROOM_CLOSE.BAD_JOIN, 'join-timeout', `no join within ${JOIN_TIMEOUT_MS / 1000} s`), JOIN_TIMEOUT_MS);
    this.joinTimer.unref();
    ws.on('message', (data: Buffer, isBinary: boolean) => this.onMessage(data, isBinary));
    ws.on('close', () => this.onClose());
    ws.on('error', () => {
      // 'close' follows (ws reports an oversized message here, closing with 1009).
    });
  }

  /** Closes the member's WebSocket (the relay drains, or refuses it). */
  close(code: number, reason: string): void {
    if (this.state === 'closed') return;
    this.ws.close(code, reason.slice(0, 120));
    // A client that ignores the close frame is cut off.
    setTimeout(() => this.ws.terminate(), 2000).unref();
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    try {
      this.handle(data, isBinary);
    } catch (e) {
      // A bug must cost this member its connection, never the relay (or the room) its life.
      this.drop('internal-error');
      this.host.relay.log('lan-error', { level: 'error', client: this.name, room: this.client.room, message: e instanceof Error ? e.message : String(e) });
      this.close(1011, 'internal error');
    }
  }

  private handle(data: Buffer, isBinary: boolean): void {
    if (this.state === 'closed') return;
    if (this.state === 'joining') {
      if (isBinary) return this.refuse(ROOM_CLOSE.BAD_JOIN, 'bad-join', 'the first message must be the join text');
      return this.onJoin(data.toString('utf8'));
    }
    if (!isBinary) return this.drop('text');
    const room = this.room;
    const port = this.port;
    if (!room || !port) return;
    readRoomFrames(
      new Uint8Array(data.buffer, data.byteOffset, data.length),
      ROOM_MAX_FRAME,
      (frame) => this.input(port, frame),
      (problem) => this.drop(problem),
    );
    room.endOfBatch();
  }

  private onJoin(text: string): void {
    const join = parseRoomJoin(text);
    if ('error' in join) return this.refuse(ROOM_CLOSE.BAD_JOIN, 'bad-join', join.error);
    const { checkPassword } = this.host.relay;
    if (checkPassword && !this.client.preauthorized) {
      if (join.username === undefined || join.password === undefined) {
        return this.refuse(ROOM_CLOSE.UNAUTHORIZED, 'password-missing', 'this relay needs username and password in join (or its token on the URL)');
      }
      // One try a second per address past a few: guessing is as slow as for Wisp's password.
      if (!this.host.relay.passwordTries.tryTake(this.client.ip, performance.now())) {
        return this.refuse(ROOM_CLOSE.UNAUTHORIZED, 'password-tries-throttled', 'too many password tries from this address: wait a second');
      }
      if (!checkPassword({ username: join.username, password: join.password })) {
        return this.refuse(ROOM_CLOSE.UNAUTHORIZED, 'password', 'wrong user name or password');
      }
    }
    const outcome = this.host.join(this, join);
    if ('code' in outcome) return this.refuse(outcome.code, outcome.cause, outcome.message);
    clearTimeout(this.joinTimer);
    this.state = 'member';
    this.room = outcome.room;
    this.port = outcome.port;
    const { frameRate, bandwidth } = this.host.relay.options;
    const joined: RoomJoined = {
      type: 'joined',
      v: ROOM_PROTOCOL_VERSION,
      room: this.client.room,
      mtu: ROOM_MTU,
      members: outcome.room.members,
      created: outcome.created,
      frameRate,
      bandwidth,
    };
    this.ws.send(JSON.stringify(joined));
    this.host.relay.metrics.lan.joinsTotal++;
    this.host.relay.log('lan-join', { client: this.name, room: this.client.room, members: outcome.room.members, created: outcome.created });
  }

  /** A frame from the member, over its budgets or not. */
  private input(port: SwitchPort, frame: Uint8Array): void {
    const now = performance.now();
    if (this.frameBudget && !this.frameBudget.tryConsume(1, now)) return this.drop('frame-rate');
    if (this.byteBudget && !this.byteBudget.tryConsume(frame.length, now)) return this.drop('bandwidth');
    const src = readMac(frame, 6);
    if (!this.macs.has(src) && !isGroupMac(src)) {
      if (this.macs.size >= MAX_MACS_PER_MEMBER) return this.drop('too-many-macs');
      this.macs.add(src);
    }
    this.stats.framesIn++;
    this.stats.bytesIn += frame.length;
    const m = this.host.relay.metrics.lan;
    m.frames.in++;
    m.bytes.in += frame.length;
    // The switch may hand the frame to other members' queues as it is: ws gave us this message's buffer to keep.
    port.input(frame);
  }

  /** The room's DHCP leased an address: the member is told when the MAC is one it sent from (its guest's). */
  leased(e: LeaseEvent): void {
    if (this.state !== 'member' || !this.macs.has(e.mac)) return;
    const lease: RoomLease = { type: 'lease', mac: formatMac(e.mac), ip: formatIpv4(e.ip), ...(e.hostname ? { hostname: e.hostname } : {}) };
    this.ws.send(JSON.stringify(lease));
  }

  /** A frame for the member, from the switch: queued for this turn's message, unless the member is too far behind. */
  deliver(frame: Uint8Array): void {
    if (this.state === 'closed') return;
    if (this.unsentBytes + this.queuedBytes + frame.length > QUEUE_BYTES) return this.drop('not-reading');
    this.queue.push(frame);
    this.queuedBytes += frame.length + 2;
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    const frames = this.queue;
    this.queue = [];
    this.queuedBytes = 0;
    if (this.state === 'closed' || frames.length === 0) return;
    let bytes = 0;
    for (const f of frames) bytes += f.length;
    this.stats.framesOut += frames.length;
    this.stats.bytesOut += bytes;
    const m = this.host.relay.metrics.lan;
    m.frames.out += frames.length;
    m.bytes.out += bytes;
    for (const msg of packRoomFrames(frames, MAX_OUT_MESSAGE, (n) => Buffer.allocUnsafe(n))) {
      const cost = msg.length + MESSAGE_OVERHEAD;
      this.unsentBytes += cost;
      this.ws.send(msg, { binary: true }, () => {
        this.unsentBytes -= cost;
      });
    }
  }

  private drop(reason: string): void {
    this.stats.dropped.set(reason, (this.stats.dropped.get(reason) ?? 0) + 1);
    this.host.relay.metrics.lanDropped(reason);
  }

  private refuse(code: number, cause: string, message: string): void {
    if (this.state !== 'joining') return;
    clearTimeout(this.joinTimer);
    this.host.relay.metrics.lanRefused(cause);
    const extra = this.host.relay.refusalLog.admit(this.client.ip, performance.now());
    if (extra) this.host.relay.log('lan-refused', { client: this.name, room: this.client.room, code, cause, message, ...extra });
    this.close(code, message);
  }

  private onClose(): void {
    if (this.state === 'closed') return;
    const wasMember = this.state === 'member';
    this.state = 'closed';
    clearTimeout(this.joinTimer);
    this.queue = [];
    if (this.port) {
      // What the switch dropped of this member's frames (a spoofed router MAC, a frame to itself), for
      // the leave log; /metrics counted each as it happened (LanRoomHost.onSwitchDrop).
      for (const [reason, n] of Object.entries(this.port.counters().drops)) if (n) this.stats.dropped.set(reason, n);
      this.room?.leave(this.port);
    }
    this.host.left(this);
    if (!wasMember) return;
    const { framesIn, framesOut, bytesIn, bytesOut, dropped } = this.stats;
    this.host.relay.log('lan-leave', {
      client: this.name,
      room: this.client.room,
      durationMs: Math.round(performance.now() - this.openedAt),
      framesIn,
      framesOut,
      bytesIn,
      bytesOut,
      ...(dropped.size ? { dropped: Object.fromEntries(dropped) } : {}),
    });
  }
}
