// weft's LAN rooms (`weft relay --lan`): what a member and the relay say on a room's WebSocket,
// `<wisp path>lan/<room>`. The first message each way is a small JSON text (the member's `join`
// with the room's key, the relay's `joined` answer); after that every message is binary and holds
// one or more Ethernet frames, each after its length (u16 little-endian). Refusals are WebSocket
// close codes (ROOM_CLOSE) with a reason a person can read. README ("LAN rooms") has the whole
// protocol; both the relay and the page's worker use this file.

/** The protocol version in `join` and `joined`. */
export const ROOM_PROTOCOL_VERSION = 1;

/** Room names: what fits in a URL path segment unescaped, and in a log line. */
export const ROOM_NAME = /^[A-Za-z0-9._~-]{1,64}$/;
/** Bounds on the room key (UTF-8 bytes): long enough not to be guessed online, short enough to hash cheaply. */
export const ROOM_KEY_MIN_BYTES = 8;
export const ROOM_KEY_MAX_BYTES = 256;
/** The largest `join` text the relay reads (a key, a user name and a password fit easily). */
export const ROOM_JOIN_MAX_BYTES = 2048;

/** WebSocket close codes of the LAN room protocol (4000–4999 is the application's range). */
export const ROOM_CLOSE = {
  /** The first message was not a valid `join` (not JSON, a field missing or out of bounds, binary first, or too late). */
  BAD_JOIN: 4400,
  /** The relay wants a user name and password in `join` (it has --password and no token was given), or they were wrong. */
  UNAUTHORIZED: 4401,
  /** The room exists and its key is another one. */
  WRONG_KEY: 4403,
  /** The room has as many members as the relay allows (--lan-max-members). */
  ROOM_FULL: 4409,
  /** No room can be made now: the relay holds --lan-max-rooms, or this address is in --lan-max-rooms-per-ip; or key tries are throttled. */
  TOO_MANY: 4429,
} as const;

/** Close codes after which a member should not try again with the same settings. */
export function isFinalRoomClose(code: number): boolean {
  return code === ROOM_CLOSE.BAD_JOIN || code === ROOM_CLOSE.UNAUTHORIZED || code === ROOM_CLOSE.WRONG_KEY;
}

/** Member → relay, the first message (text). */
export interface RoomJoin {
  type: 'join';
  v: number;
  key: string;
  /** For a relay with --password when the upgrade carried no token. */
  username?: string;
  password?: string;
}

/** Relay → member, the answer to an accepted `join` (text); frames may follow at once. */
export interface RoomJoined {
  type: 'joined';
  v: number;
  room: string;
  /** The room's IP MTU: frames are at most mtu + 14 bytes. */
  mtu: number;
  /** Members now, this one included. */
  members: number;
  /** This member made the room (it did not exist). */
  created: boolean;
  /** What the relay takes from one member: frames and bytes per second (0: no limit). */
  frameRate: number;
  bandwidth: number;
}

/**
 * Relay → member, a text message after `joined`: the room's DHCP leased `ip` to `mac`, a MAC this
 * member has sent from (so a page can report its guests' addresses). Members ignore text they do not know.
 */
export interface RoomLease {
  type: 'lease';
  mac: string;
  ip: string;
  hostname?: string;
}

/** Parses a member's `join`, or says what is wrong with it. */
export function parseRoomJoin(text: string): RoomJoin | { error: string } {
  if (text.length > ROOM_JOIN_MAX_BYTES) return { error: `join is longer than ${ROOM_JOIN_MAX_BYTES} bytes` };
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return { error: 'join is not JSON' };
  }
  if (typeof v !== 'object' || v === null) return { error: 'join is not a JSON object' };
  const o = v as Record<string, unknown>;
  if (o.type !== 'join') return { error: 'the first message must be {"type":"join",…}' };
  if (o.v !== ROOM_PROTOCOL_VERSION) return { error: `protocol version ${String(o.v)} is not supported (this relay speaks ${ROOM_PROTOCOL_VERSION})` };
  if (typeof o.key !== 'string') return { error: 'join has no key' };
  const keyBytes = utf8Length(o.key);
  if (keyBytes < ROOM_KEY_MIN_BYTES || keyBytes > ROOM_KEY_MAX_BYTES) {
    return { error: `the room key must be ${ROOM_KEY_MIN_BYTES}–${ROOM_KEY_MAX_BYTES} bytes` };
  }
  for (const f of ['username', 'password'] as const) {
    if (o[f] !== undefined && (typeof o[f] !== 'string' || utf8Length(o[f] as string) > 255)) return { error: `${f} must be a string of at most 255 bytes` };
  }
  return {
    type: 'join',
    v: ROOM_PROTOCOL_VERSION,
    key: o.key,
    ...(typeof o.username === 'string' ? { username: o.username } : {}),
    ...(typeof o.password === 'string' ? { password: o.password } : {}),
  };
}

/** Parses the relay's `joined`, or undefined when the text is not one. */
export function parseRoomJoined(text: string): RoomJoined | undefined {
  try {
    const o = JSON.parse(text) as Partial<RoomJoined>;
    if (o.type !== 'joined' || typeof o.mtu !== 'number' || typeof o.room !== 'string') return undefined;
    return o as RoomJoined;
  } catch {
    return undefined;
  }
}

/** Parses a text message from the relay after `joined`: a lease, or undefined for anything else. */
export function parseRoomNotice(text: string): RoomLease | undefined {
  try {
    const o = JSON.parse(text) as Partial<RoomLease>;
    if (o.type !== 'lease' || typeof o.mac !== 'string' || typeof o.ip !== 'string') return undefined;
    return { type: 'lease', mac: o.mac, ip: o.ip, ...(typeof o.hostname === 'string' ? { hostname: o.hostname } : {}) };
  } catch {
    return undefined;
  }
}

function utf8Length(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** Bytes each frame costs in a message beyond its own: its length. */
export const ROOM_FRAME_HEADER = 2;
/** The largest frame a message can carry (the length is a u16). */
export const ROOM_MAX_FRAME = 0xffff;

/** Why a frame of a message was not taken. */
export type RoomFrameProblem = 'runt' | 'oversized' | 'truncated';

/**
 * Calls `frame` with a view of each frame of a binary message and `problem` for each one that cannot
 * be used: shorter than an Ethernet header, longer than `maxFrame`, or a length that runs past the
 * end (the rest of the message is then lost). Returns the frames taken.
 */
export function readRoomFrames(
  message: Uint8Array,
  maxFrame: number,
  frame: (f: Uint8Array) => void,
  problem: (p: RoomFrameProblem, bytes: number) => void,
): number {
  let off = 0;
  let n = 0;
  while (off < message.length) {
    if (off + ROOM_FRAME_HEADER > message.length) {
      problem('truncated', message.length - off);
      break;
    }
    const len = message[off] | (message[off + 1] << 8);
    off += ROOM_FRAME_HEADER;
    if (off + len > message.length) {
      problem('truncated', message.length - off);
      break;
    }
    if (len < 14) problem('runt', len);
    else if (len > maxFrame) problem('oversized', len);
    else {
      frame(message.subarray(off, off + len));
      n++;
    }
    off += len;
  }
  return n;
}

/**
 * Packs frames into messages of at most `maxMessage` bytes (a frame larger than that goes alone).
 * The frames are copied: the caller may reuse theirs.
 */
export function packRoomFrames(
  frames: readonly Uint8Array[],
  maxMessage: number,
  allocate: (n: number) => Uint8Array = (n) => new Uint8Array(n),
): Uint8Array[] {
  const out: Uint8Array[] = [];
  let i = 0;
  while (i < frames.length) {
    let size = 0;
    let j = i;
    while (j < frames.length && (j === i || size + ROOM_FRAME_HEADER + frames[j].length <= maxMessage)) {
      size += ROOM_FRAME_HEADER + frames[j].length;
      j++;
    }
    const msg = allocate(size);
    let off = 0;
    for (; i < j; i++) {
      const f = frames[i];
      msg[off] = f.length & 0xff;
      msg[off + 1] = f.length >> 8;
      msg.set(f, off + ROOM_FRAME_HEADER);
      off += ROOM_FRAME_HEADER + f.length;
    }
    out.push(msg);
  }
  return out;
}
