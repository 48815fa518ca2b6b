// The LAN rooms of one relay process (`weft relay --lan`): members' WebSockets are taken here after
// the relay's usual upgrade checks (origin, token, client counts), joined to their room — made by
// the first member, with the key it brought — and the room is closed when its last member leaves.
// Bounds: rooms on the relay (over every --workers worker, from the counts the primary passes
// round), rooms one client IP is in, members per room, wrong keys per IP (a few, then one a second,
// as password tries). The key is kept only as a salted digest and compared in constant time.

import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import { ROOM_CLOSE, ROOM_NAME, type RoomJoin } from '../../core/wire/room-protocol';
import type { WispTransport } from '../../core/wisp/wisp-upstream';
import { LanMember, type JoinOutcome, type LanClient, type LanMemberHost, type LanRelayParts } from './lan-member';
import { LanRoom } from './lan-room';
import { KeyedRateLimiter } from './token-bucket';

/** Largest message a member may send: many frames of a room's MTU in one batch. */
export const LAN_MAX_MESSAGE_BYTES = 256 * 1024;

/** The room named by a request path `<wisp path>lan/<room>`: the name, null for a bad name, undefined for another path. */
export function lanRoomOf(pathname: string, wispPath: string): string | null | undefined {
  const prefix = `${wispPath}lan/`;
  if (!pathname.startsWith(prefix)) return undefined;
  let name: string;
  try {
    name = decodeURIComponent(pathname.slice(prefix.length));
  } catch {
    return null;
  }
  return ROOM_NAME.test(name) ? name : null;
}

/** What the rooms need from the relay server that owns them. */
export interface LanRoomsHost extends LanRelayParts {
  /** A Wisp connection into this relay for a room's router. */
  openWisp(label: string): WispTransport;
  /** The relay allows loopback: a room's gateway address then reaches the relay's host. */
  gatewayIsHost: boolean;
  /** Told the number of member WebSockets (joined or joining) after each change. */
  onCount(): void;
  /** Told the number of rooms after each change (a worker tells its primary). */
  onRooms?(rooms: number): void;
  /** Told the number of rooms a client address is in after each change (a worker tells its primary). */
  onIpRooms?(ip: string, rooms: number): void;
}

export class LanRooms implements LanMemberHost {
  private readonly rooms = new Map<string, LanRoom>();
  private readonly members = new Set<LanMember>();
  /** Client IP → room → members from that IP in it. */
  private readonly byIp = new Map<string, Map<string, number>>();
  private readonly keyTries = new KeyedRateLimiter(1, 5);
  private readonly salt = randomBytes(16);
  private readonly wss: WebSocketServer;
  /** Rooms the other workers hold (--workers: the primary passes the sum round). */
  roomsElsewhere = 0;
  /** Client IP → rooms it is in on the other workers (--workers: the primary passes them round; absent = none). */
  readonly ipRoomsElsewhere = new Map<string, number>();

  constructor(private readonly host: LanRoomsHost) {
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: LAN_MAX_MESSAGE_BYTES,
      perMessageDeflate: false,
      handleProtocols: (protocols) => protocols.values().next().value ?? false,
    });
    host.metrics.lanEnabled = true;
  }

  /** @internal LanMemberHost: the members use the relay's own parts. */
  get relay(): LanRelayParts {
    return this.host;
  }

  /** Member WebSockets now, joined or still joining. */
  get memberCount(): number {
    return this.members.size;
  }

  get roomCount(): number {
    return this.rooms.size;
  }

  /** Takes over an upgrade the relay has admitted (origin, token and client counts checked). */
  accept(req: http.IncomingMessage, socket: Duplex, head: Buffer, client: LanClient): void {
    this.wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      const member = new LanMember(ws, client, this);
      this.members.add(member);
      this.updateCounts();
    });
  }

  /** @internal LanMemberHost: called by a member with its `join`. */
  join(member: LanMember, join: RoomJoin): JoinOutcome {
    const { ip, room: name } = member.client;
    const o = this.host.options;
    const now = performance.now();
    const ipRooms = this.byIp.get(ip);
    const room = this.rooms.get(name);
    if (room) {
      // Past a few wrong keys, one a second per address, and those past the budget are not even checked.
      if (!this.keyTries.has(ip, now))
        return { code: ROOM_CLOSE.TOO_MANY, cause: 'key-tries-throttled', message: 'too many wrong keys from this address: wait a second' };
      if (!timingSafeEqual(this.digest(name, join.key), room.keyDigest)) {
        this.keyTries.tryTake(ip, now);
        return { code: ROOM_CLOSE.WRONG_KEY, cause: 'wrong-key', message: `wrong key for room ${name}` };
      }
      if (room.members >= o.maxMembers)
        return { code: ROOM_CLOSE.ROOM_FULL, cause: 'room-full', message: `room ${name} has ${o.maxMembers} members (--lan-max-members)` };
    } else if (this.rooms.size + this.roomsElsewhere >= o.maxRooms) {
      return { code: ROOM_CLOSE.TOO_MANY, cause: 'max-rooms', message: `this relay holds ${o.maxRooms} rooms (--lan-max-rooms)` };
    }
    if (!ipRooms?.has(name) && (ipRooms?.size ?? 0) + (this.ipRoomsElsewhere.get(ip) ?? 0) >= o.maxRoomsPerIp) {
      return { code: ROOM_CLOSE.TOO_MANY, cause: 'rooms-per-ip', message: `this address is in ${o.maxRoomsPerIp} rooms (--lan-max-rooms-per-ip)` };
    }
    let created = false;
    let joined = room;
    if (!joined) {
      joined = new LanRoom(name, this.digest(name, join.key), {
        log: this.host.log,
        openWisp: (label) => this.host.openWisp(label),
        gatewayIsHost: this.host.gatewayIsHost,
        onLease: (lease) => {
          for (const m of this.members) if (m.room === joined) m.leased(lease);
        },
        // Counted as they happen, so /metrics shows a spoofing member while it is still there.
        onSwitchDrop: (reason) => this.host.metrics.lanDropped(reason),
      });
      this.rooms.set(name, joined);
      created = true;
      this.host.metrics.lan.roomsTotal++;
      this.host.log('lan-room-open', { room: name, client: member.name });
    }
    const counts = ipRooms ?? new Map<string, number>();
    const newRoomForIp = !counts.has(name);
    counts.set(name, (counts.get(name) ?? 0) + 1);
    this.byIp.set(ip, counts);
    if (newRoomForIp) this.host.onIpRooms?.(ip, counts.size);
    const port = joined.join(member.name, (frame) => member.deliver(frame));
    this.updateCounts();
    return { room: joined, port, created };
  }

  /** @internal LanMemberHost: a member's WebSocket closed. */
  left(member: LanMember): void {
    if (!this.members.delete(member)) return;
    const { ip, room: name } = member.client;
    const room = member.room;
    if (room) {
      const counts = this.byIp.get(ip);
      const n = (counts?.get(name) ?? 1) - 1;
      if (n > 0) counts?.set(name, n);
      else if (counts?.delete(name)) this.host.onIpRooms?.(ip, counts.size);
      if (counts?.size === 0) this.byIp.delete(ip);
      if (room.members === 0 && this.rooms.get(name) === room) {
        this.rooms.delete(name);
        room.close();
        this.host.log('lan-room-close', { room: name, durationMs: Date.now() - room.openedAt, ...room.counters() });
      }
    }
    this.updateCounts();
  }

  /** The relay stops: every member is closed with 1001 (their rooms close as the last one goes). */
  drain(): void {
    for (const m of this.members) m.close(1001, 'relay shutting down');
  }

  /** After the members' sockets are gone (or cut off): any room left is closed. */
  closeAll(): void {
    for (const room of this.rooms.values()) room.close();
    this.rooms.clear();
    this.updateCounts();
  }

  private digest(room: string, key: string): Buffer {
    return createHash('sha256').update(this.salt).update(room).update('\0').update(key).digest();
  }

  private updateCounts(): void {
    const m = this.host.metrics.lan;
    let joined = 0;
    for (const r of this.rooms.values()) joined += r.members;
    const roomsChanged = m.rooms !== this.rooms.size;
    m.rooms = this.rooms.size;
    m.members = joined;
    this.host.onCount();
    if (roomsChanged) this.host.onRooms?.(this.rooms.size);
  }
}
