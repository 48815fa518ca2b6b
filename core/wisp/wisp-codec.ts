// Wisp packets (v1 and the v2 draft): `type u8 | stream_id u32 LE | payload`, one packet per
// WebSocket message. Parsing returns a plain object or a drop reason and never throws; emitting
// returns a fresh Uint8Array that is exactly one WebSocket message.

import type { Parsed } from '../wire/parse-result';
import { readU32LE, writeU32LE } from '../wire/bytes';

export const WISP_HEADER_LENGTH = 5;

export const PacketType = {
  CONNECT: 0x01,
  DATA: 0x02,
  CONTINUE: 0x03,
  CLOSE: 0x04,
  INFO: 0x05,
  /**
   * weft's half-close (not in the Wisp spec): "I will send no more DATA on this stream", like a
   * TCP FIN. Sent only when both ends offered ExtensionId.WEFT_HALF_CLOSE.
   */
  END: 0xf0,
  /**
   * weft's per-stream flow control (not in the Wisp spec), client → server: "stop reading this
   * stream's destination" (PAUSE) and "read it again" (RESUME). Wisp has no flow control towards the
   * client; without this, a stream the guest does not read can only be held back by no longer reading
   * the whole WebSocket, which stalls every other stream on it. Sent only when both ends offered
   * ExtensionId.WEFT_FLOW_CONTROL. Data already on its way still arrives after a PAUSE.
   */
  PAUSE: 0xf1,
  RESUME: 0xf2,
  /**
   * weft's publish extension (ExtensionId.WEFT_PUBLISH), the way in: LISTEN (client → server) asks
   * the server to listen on a port of its own for the client; LISTEN_RESULT answers it; ACCEPT
   * (server → client) opens a stream for each connection the server accepts there; UNLISTEN
   * (client → server) stops listening. The stream id of LISTEN, LISTEN_RESULT and UNLISTEN is a
   * listener id the client chose (its own number space); ACCEPT's is the new stream's id, which the
   * server takes from SERVER_STREAM_ID_BASE up so it never meets an id the client chose.
   */
  LISTEN: 0xf3,
  LISTEN_RESULT: 0xf4,
  ACCEPT: 0xf5,
  UNLISTEN: 0xf6,
} as const;

/** Server-opened stream ids (ACCEPT) start here; with the publish extension clients stay below. */
export const SERVER_STREAM_ID_BASE = 0x8000_0000;

export const StreamType = {
  TCP: 0x01,
  UDP: 0x02,
} as const;
export type StreamTypeValue = (typeof StreamType)[keyof typeof StreamType];

/** Close reasons from the spec. A peer may send any u8; unknown values are kept as numbers. */
export const CloseReason = {
  UNKNOWN: 0x01,
  VOLUNTARY: 0x02,
  NETWORK_ERROR: 0x03,
  INCOMPATIBLE_EXTENSIONS: 0x04,
  INVALID_INFO: 0x41,
  UNREACHABLE: 0x42,
  CONNECT_TIMEOUT: 0x43,
  REFUSED: 0x44,
  DATA_TIMEOUT: 0x47,
  BLOCKED: 0x48,
  THROTTLED: 0x49,
  CLIENT_ERROR: 0x81,
  AUTH_BAD_PASSWORD: 0xc0,
  AUTH_BAD_SIGNATURE: 0xc1,
  AUTH_MISSING_CREDENTIALS: 0xc2,
} as const;

const CLOSE_REASON_NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(CloseReason).map(([name, value]) => [value, name.toLowerCase().replace(/_/g, '-')]),
);

/** A stable name for logs and metrics labels: `blocked`, `refused`, … or `reason-0x5a` for unknown ones. */
export function closeReasonName(reason: number): string {
  return CLOSE_REASON_NAMES.get(reason) ?? `reason-0x${reason.toString(16).padStart(2, '0')}`;
}

/** Extension ids of the v2 draft. */
export const ExtensionId = {
  UDP: 0x01,
  PASSWORD: 0x02,
  KEY_AUTH: 0x03,
  MOTD: 0x04,
  STREAM_OPEN_CONFIRMATION: 0x05,
  /** weft's half-close extension (no payload): both ends understand PacketType.END. */
  WEFT_HALF_CLOSE: 0xf0,
  /** weft's per-stream flow control extension (no payload): both ends understand PAUSE and RESUME. */
  WEFT_FLOW_CONTROL: 0xf1,
  /**
   * weft's publish extension: LISTEN, LISTEN_RESULT, ACCEPT, UNLISTEN. The server's payload is a
   * u16 LE: how many listeners this client may have at once; the client's is empty.
   */
  WEFT_PUBLISH: 0xf2,
} as const;

/** One entry of an INFO packet, payload uninterpreted (its meaning depends on who sent it). */
export interface WispExtension {
  id: number;
  payload: Uint8Array;
}

export type WispPacket =
  | { type: 'connect'; streamId: number; streamType: number; port: number; hostname: string }
  | { type: 'data'; streamId: number; payload: Uint8Array }
  | { type: 'continue'; streamId: number; bufferRemaining: number }
  | { type: 'close'; streamId: number; reason: number }
  | { type: 'info'; streamId: number; major: number; minor: number; extensions: WispExtension[] }
  | { type: 'end'; streamId: number }
  | { type: 'pause'; streamId: number }
  | { type: 'resume'; streamId: number }
  /** Publish: listen on `port` (0: any the server allows) for streams of `streamType`; streamId is the listener id. */
  | { type: 'listen'; streamId: number; streamType: number; port: number }
  /** Publish: `status` 0 = listening on `port`; otherwise a close reason and port 0. streamId is the listener id. */
  | { type: 'listen-result'; streamId: number; status: number; port: number }
  /** Publish: a connection to listener `listenerId` from `remoteAddress`:`remotePort`, as stream `streamId`. */
  | { type: 'accept'; streamId: number; listenerId: number; bufferRemaining: number; remotePort: number; remoteAddress: string }
  /** Publish: stop listening; streamId is the listener id. */
  | { type: 'unlisten'; streamId: number }
  /** A type this implementation does not know (kept so a caller can ignore it, as v2 allows). */
  | { type: 'unknown'; streamId: number; packetType: number };

// fatal: a hostname that is not valid UTF-8 is refused rather than silently mangled.
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });
const utf8Encoder = new TextEncoder();

/** Parses one WebSocket message. DATA payloads and extension payloads are views into `b`. */
export function parseWispPacket(b: Uint8Array): Parsed<WispPacket> {
  if (b.length < WISP_HEADER_LENGTH) return 'wisp-short-packet';
  const type = b[0];
  const streamId = readU32LE(b, 1);
  const p = WISP_HEADER_LENGTH;
  switch (type) {
    case PacketType.CONNECT: {
      if (b.length < p + 3) return 'wisp-connect-short';
      let hostname: string;
      try {
        hostname = utf8Decoder.decode(b.subarray(p + 3));
      } catch {
        return 'wisp-connect-bad-utf8';
      }
      return { type: 'connect', streamId, streamType: b[p], port: b[p + 1] | (b[p + 2] << 8), hostname };
    }
    case PacketType.DATA:
      return { type: 'data', streamId, payload: b.subarray(p) };
    case PacketType.CONTINUE:
      if (b.length < p + 4) return 'wisp-continue-short';
      return { type: 'continue', streamId, bufferRemaining: readU32LE(b, p) };
    case PacketType.CLOSE:
      if (b.length < p + 1) return 'wisp-close-short';
      return { type: 'close', streamId, reason: b[p] };
    case PacketType.INFO: {
      if (b.length < p + 2) return 'wisp-info-short';
      const extensions = parseExtensions(b.subarray(p + 2));
      if (typeof extensions === 'string') return extensions;
      return { type: 'info', streamId, major: b[p], minor: b[p + 1], extensions };
    }
    case PacketType.END:
      return { type: 'end', streamId };
    case PacketType.PAUSE:
      return { type: 'pause', streamId };
    case PacketType.RESUME:
      return { type: 'resume', streamId };
    case PacketType.LISTEN:
      if (b.length < p + 3) return 'wisp-listen-short';
      return { type: 'listen', streamId, streamType: b[p], port: b[p + 1] | (b[p + 2] << 8) };
    case PacketType.LISTEN_RESULT:
      if (b.length < p + 3) return 'wisp-listen-result-short';
      return { type: 'listen-result', streamId, status: b[p], port: b[p + 1] | (b[p + 2] << 8) };
    case PacketType.ACCEPT: {
      if (b.length < p + 10) return 'wisp-accept-short';
      let remoteAddress: string;
      try {
        remoteAddress = utf8Decoder.decode(b.subarray(p + 10));
      } catch {
        return 'wisp-accept-bad-utf8';
      }
      return {
        type: 'accept',
        streamId,
        listenerId: readU32LE(b, p),
        bufferRemaining: readU32LE(b, p + 4),
        remotePort: b[p + 8] | (b[p + 9] << 8),
        remoteAddress,
      };
    }
    case PacketType.UNLISTEN:
      return { type: 'unlisten', streamId };
    default:
      return { type: 'unknown', streamId, packetType: type };
  }
}

function parseExtensions(b: Uint8Array): Parsed<WispExtension[]> {
  const out: WispExtension[] = [];
  let off = 0;
  while (off < b.length) {
    if (off + 5 > b.length) return 'wisp-info-extension-short';
    const len = readU32LE(b, off + 1);
    if (len > b.length - off - 5) return 'wisp-info-extension-overrun';
    out.push({ id: b[off], payload: b.subarray(off + 5, off + 5 + len) });
    off += 5 + len;
  }
  return out;
}

/** Allocates a packet's bytes; a host may pass one that skips zero-filling (Node's Buffer.allocUnsafe). */
export type PacketAllocator = (length: number) => Uint8Array;

const zeroed: PacketAllocator = (length) => new Uint8Array(length);

function header(type: number, streamId: number, payloadLength: number, alloc: PacketAllocator = zeroed): Uint8Array {
  const b = alloc(WISP_HEADER_LENGTH + payloadLength);
  b[0] = type;
  writeU32LE(b, 1, streamId);
  return b;
}

export function encodeConnect(streamId: number, streamType: number, port: number, hostname: string): Uint8Array {
  const host = utf8Encoder.encode(hostname);
  const b = header(PacketType.CONNECT, streamId, 3 + host.length);
  b[5] = streamType;
  b[6] = port & 0xff;
  b[7] = (port >>> 8) & 0xff;
  b.set(host, 8);
  return b;
}

/** A DATA packet with room for `payloadLength` bytes at offset WISP_HEADER_LENGTH, for the caller to fill. */
export function allocData(streamId: number, payloadLength: number, alloc?: PacketAllocator): Uint8Array {
  return header(PacketType.DATA, streamId, payloadLength, alloc);
}

export function encodeData(streamId: number, payload: Uint8Array, alloc?: PacketAllocator): Uint8Array {
  const b = header(PacketType.DATA, streamId, payload.length, alloc);
  b.set(payload, WISP_HEADER_LENGTH);
  return b;
}

export function encodeContinue(streamId: number, bufferRemaining: number): Uint8Array {
  const b = header(PacketType.CONTINUE, streamId, 4);
  writeU32LE(b, 5, bufferRemaining);
  return b;
}

export function encodeClose(streamId: number, reason: number): Uint8Array {
  const b = header(PacketType.CLOSE, streamId, 1);
  b[5] = reason;
  return b;
}

export function encodeEnd(streamId: number): Uint8Array {
  return header(PacketType.END, streamId, 0);
}

/** weft's flow control: PAUSE (`paused`) or RESUME for a stream. */
export function encodeFlow(streamId: number, paused: boolean): Uint8Array {
  return header(paused ? PacketType.PAUSE : PacketType.RESUME, streamId, 0);
}

export function encodeListen(listenerId: number, streamType: number, port: number): Uint8Array {
  const b = header(PacketType.LISTEN, listenerId, 3);
  b[5] = streamType;
  b[6] = port & 0xff;
  b[7] = (port >>> 8) & 0xff;
  return b;
}

export function encodeListenResult(listenerId: number, status: number, port: number): Uint8Array {
  const b = header(PacketType.LISTEN_RESULT, listenerId, 3);
  b[5] = status;
  b[6] = port & 0xff;
  b[7] = (port >>> 8) & 0xff;
  return b;
}

export function encodeAccept(streamId: number, listenerId: number, bufferRemaining: number, remotePort: number, remoteAddress: string): Uint8Array {
  const address = utf8Encoder.encode(remoteAddress);
  const b = header(PacketType.ACCEPT, streamId, 10 + address.length);
  writeU32LE(b, 5, listenerId);
  writeU32LE(b, 9, bufferRemaining);
  b[13] = remotePort & 0xff;
  b[14] = (remotePort >>> 8) & 0xff;
  b.set(address, 15);
  return b;
}

export function encodeUnlisten(listenerId: number): Uint8Array {
  return header(PacketType.UNLISTEN, listenerId, 0);
}

/** The server's WEFT_PUBLISH payload: listeners a client may hold at once. */
export function encodePublishServer(maxListeners: number): Uint8Array {
  return Uint8Array.of(maxListeners & 0xff, (maxListeners >>> 8) & 0xff);
}

export function parsePublishServer(payload: Uint8Array): Parsed<{ maxListeners: number }> {
  if (payload.length < 2) return 'wisp-publish-short';
  return { maxListeners: payload[0] | (payload[1] << 8) };
}

export function encodeInfo(major: number, minor: number, extensions: readonly WispExtension[]): Uint8Array {
  const extLength = extensions.reduce((n, e) => n + 5 + e.payload.length, 0);
  const b = header(PacketType.INFO, 0, 2 + extLength);
  b[5] = major;
  b[6] = minor;
  let off = 7;
  for (const e of extensions) {
    b[off] = e.id;
    writeU32LE(b, off + 1, e.payload.length);
    b.set(e.payload, off + 5);
    off += 5 + e.payload.length;
  }
  return b;
}

// ---- extension payloads ----------------------------------------------------------------------

export interface PasswordCredentials {
  username: string;
  password: string;
}

/** Server side of the password extension: one byte saying whether authentication is required. */
export function encodePasswordServer(required: boolean): Uint8Array {
  return Uint8Array.of(required ? 1 : 0);
}

export function parsePasswordServer(payload: Uint8Array): Parsed<{ required: boolean }> {
  if (payload.length < 1) return 'wisp-password-short';
  return { required: payload[0] !== 0 };
}

/** Client side, draft 6 layout: username length u8, username, then the password fills the rest. */
export function encodePasswordClient(c: PasswordCredentials): Uint8Array {
  const user = utf8Encoder.encode(c.username);
  const pass = utf8Encoder.encode(c.password);
  if (user.length > 255) throw new RangeError('a Wisp username is at most 255 bytes of UTF-8');
  const b = new Uint8Array(1 + user.length + pass.length);
  b[0] = user.length;
  b.set(user, 1);
  b.set(pass, 1 + user.length);
  return b;
}

/**
 * Every reading of a client password payload that its length allows. Drafts 3–5 (and wisp-js)
 * put a u16 LE password length after the username length; draft 6 dropped it. The two layouts
 * cannot always be told apart, so the server accepts the credentials if either reading matches.
 */
export function parsePasswordClient(payload: Uint8Array): PasswordCredentials[] {
  const out: PasswordCredentials[] = [];
  const decode = (b: Uint8Array): string | undefined => {
    try {
      return utf8Decoder.decode(b);
    } catch {
      return undefined;
    }
  };
  if (payload.length >= 1) {
    const ulen = payload[0];
    if (1 + ulen <= payload.length) {
      const username = decode(payload.subarray(1, 1 + ulen));
      const password = decode(payload.subarray(1 + ulen));
      if (username !== undefined && password !== undefined) out.push({ username, password });
    }
    if (payload.length >= 3) {
      const plen = payload[1] | (payload[2] << 8);
      if (3 + ulen + plen === payload.length) {
        const username = decode(payload.subarray(3, 3 + ulen));
        const password = decode(payload.subarray(3 + ulen));
        if (username !== undefined && password !== undefined) out.push({ username, password });
      }
    }
  }
  return out;
}

export function encodeMotd(message: string): Uint8Array {
  return utf8Encoder.encode(message);
}

export function parseMotd(payload: Uint8Array): string {
  // A MOTD is for display only: replace bad UTF-8 instead of rejecting the handshake.
  return new TextDecoder('utf-8').decode(payload);
}
