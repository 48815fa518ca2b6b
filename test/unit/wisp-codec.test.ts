// Wisp packet codec: byte layouts from the spec, written out by hand, and every malformed input.
import { describe, expect, it } from 'vitest';
import {
  CloseReason,
  closeReasonName,
  encodeClose,
  encodeConnect,
  encodeContinue,
  encodeData,
  encodeInfo,
  encodePasswordClient,
  parsePasswordClient,
  parsePasswordServer,
  parseWispPacket,
} from '../../core/wisp/wisp-codec';

const bytes = (...b: number[]) => Uint8Array.from(b);

describe('wisp codec', () => {
  it('encodes CONNECT as type, stream id LE, stream type, port LE, hostname', () => {
    expect([...encodeConnect(0x01020304, 1, 443, 'a.b')]).toEqual([1, 4, 3, 2, 1, 1, 0xbb, 0x01, 0x61, 0x2e, 0x62]);
    expect(parseWispPacket(bytes(1, 7, 0, 0, 0, 2, 0x35, 0, 0x78))).toEqual({
      type: 'connect',
      streamId: 7,
      streamType: 2,
      port: 53,
      hostname: 'x',
    });
  });

  it('round-trips DATA, CONTINUE and CLOSE', () => {
    expect(parseWispPacket(encodeData(9, bytes(1, 2, 3)))).toEqual({ type: 'data', streamId: 9, payload: bytes(1, 2, 3) });
    expect([...encodeContinue(0, 128)]).toEqual([3, 0, 0, 0, 0, 128, 0, 0, 0]);
    expect(parseWispPacket(encodeContinue(5, 0xfffffffe))).toEqual({ type: 'continue', streamId: 5, bufferRemaining: 0xfffffffe });
    expect(parseWispPacket(encodeClose(0xffffffff, 0x48))).toEqual({ type: 'close', streamId: 0xffffffff, reason: 0x48 });
  });

  it('parses unknown close reasons leniently and names them', () => {
    expect(parseWispPacket(bytes(4, 1, 0, 0, 0, 0x5a))).toEqual({ type: 'close', streamId: 1, reason: 0x5a });
    expect(closeReasonName(0x5a)).toBe('reason-0x5a');
    expect(closeReasonName(CloseReason.BLOCKED)).toBe('blocked');
    expect(closeReasonName(0x43)).toBe('connect-timeout');
  });

  it('encodes INFO with extensions id u8 | len u32 LE | payload', () => {
    const info = encodeInfo(2, 0, [
      { id: 1, payload: new Uint8Array(0) },
      { id: 4, payload: bytes(0x68, 0x69) },
    ]);
    expect([...info]).toEqual([5, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0, 4, 2, 0, 0, 0, 0x68, 0x69]);
    expect(parseWispPacket(info)).toEqual({
      type: 'info',
      streamId: 0,
      major: 2,
      minor: 0,
      extensions: [
        { id: 1, payload: new Uint8Array(0) },
        { id: 4, payload: bytes(0x68, 0x69) },
      ],
    });
  });

  it.each([
    [bytes(), 'wisp-short-packet'],
    [bytes(2, 0, 0, 0), 'wisp-short-packet'],
    [bytes(1, 1, 0, 0, 0, 1, 80), 'wisp-connect-short'],
    [bytes(1, 1, 0, 0, 0, 1, 80, 0, 0xff, 0xfe), 'wisp-connect-bad-utf8'],
    [bytes(3, 1, 0, 0, 0, 1, 2, 3), 'wisp-continue-short'],
    [bytes(4, 1, 0, 0, 0), 'wisp-close-short'],
    [bytes(5, 0, 0, 0, 0, 2), 'wisp-info-short'],
    [bytes(5, 0, 0, 0, 0, 2, 0, 1, 0, 0), 'wisp-info-extension-short'],
    [bytes(5, 0, 0, 0, 0, 2, 0, 1, 9, 0, 0, 0, 1), 'wisp-info-extension-overrun'],
  ])('rejects malformed input %j with %s', (input, reason) => {
    expect(parseWispPacket(input)).toBe(reason);
  });

  it('keeps unknown packet types for the caller to ignore', () => {
    expect(parseWispPacket(bytes(0x77, 3, 0, 0, 0, 1))).toEqual({ type: 'unknown', streamId: 3, packetType: 0x77 });
  });

  it('reads both password layouts (draft 6 and the u16-length one wisp-js sends)', () => {
    const draft6 = encodePasswordClient({ username: 'al', password: 'pw' });
    expect([...draft6]).toEqual([2, 0x61, 0x6c, 0x70, 0x77]);
    expect(parsePasswordClient(draft6)).toContainEqual({ username: 'al', password: 'pw' });
    const draft5 = bytes(2, 2, 0, 0x61, 0x6c, 0x70, 0x77);
    expect(parsePasswordClient(draft5)).toContainEqual({ username: 'al', password: 'pw' });
    expect(parsePasswordClient(bytes(9))).toEqual([]);
    expect(parsePasswordServer(bytes(1))).toEqual({ required: true });
    expect(parsePasswordServer(bytes())).toBe('wisp-password-short');
  });
});
