// The LAN room protocol's codec (core/wire/room-protocol.ts): the join text, and frames packed into
// messages with their lengths and read back, bad lengths counted and never read past.

import { describe, expect, it } from 'vitest';
import { packRoomFrames, parseRoomJoin, readRoomFrames, type RoomFrameProblem } from '../../core/wire/room-protocol';

const frame = (n: number, fill: number) => new Uint8Array(n).fill(fill);

function read(message: Uint8Array, maxFrame = 1514): { frames: Uint8Array[]; problems: RoomFrameProblem[] } {
  const frames: Uint8Array[] = [];
  const problems: RoomFrameProblem[] = [];
  readRoomFrames(
    message,
    maxFrame,
    (f) => frames.push(f.slice()),
    (p) => problems.push(p),
  );
  return { frames, problems };
}

describe('room frames', () => {
  it('packs frames with u16 little-endian lengths and reads them back', () => {
    const frames = [frame(60, 1), frame(1514, 2), frame(300, 3)];
    const [msg, ...rest] = packRoomFrames(frames, 64 * 1024);
    expect(rest).toHaveLength(0);
    expect(msg.length).toBe(6 + 60 + 1514 + 300);
    expect([msg[0], msg[1]]).toEqual([60, 0]);
    expect([msg[62], msg[63]]).toEqual([1514 & 0xff, 1514 >> 8]);
    expect(read(msg)).toEqual({ frames, problems: [] });
  });

  it('splits into messages no larger than asked, a frame larger than that alone', () => {
    const msgs = packRoomFrames([frame(100, 1), frame(100, 2), frame(100, 3), frame(500, 4)], 250);
    expect(msgs.map((m) => m.length)).toEqual([204, 102, 502]);
    expect(msgs.flatMap((m) => read(m, 1514).frames.map((f) => f[0]))).toEqual([1, 2, 3, 4]);
  });

  it('drops runts and oversized frames but reads on; stops at a length past the end', () => {
    const msg = packRoomFrames([frame(10, 1), frame(2000, 2), frame(60, 3)], 64 * 1024)[0];
    expect(read(msg)).toEqual({ frames: [frame(60, 3)], problems: ['runt', 'oversized'] });
    const cut = msg.subarray(0, msg.length - 1);
    expect(read(cut)).toEqual({ frames: [], problems: ['runt', 'oversized', 'truncated'] });
    expect(read(new Uint8Array([5]))).toEqual({ frames: [], problems: ['truncated'] });
    expect(read(new Uint8Array(0))).toEqual({ frames: [], problems: [] });
  });
});

describe('room join', () => {
  it('takes a join with a key of 8 to 256 bytes and optional credentials', () => {
    expect(parseRoomJoin('{"type":"join","v":1,"key":"12345678"}')).toEqual({ type: 'join', v: 1, key: '12345678' });
    expect(parseRoomJoin('{"type":"join","v":1,"key":"12345678","username":"u","password":"p","other":1}')).toEqual({
      type: 'join',
      v: 1,
      key: '12345678',
      username: 'u',
      password: 'p',
    });
  });

  it('says what is wrong with a bad one', () => {
    const error = (t: string) => (parseRoomJoin(t) as { error: string }).error;
    expect(error('nope')).toBe('join is not JSON');
    expect(error('[1]')).toContain('{"type":"join"');
    expect(error('{"type":"join","v":2,"key":"12345678"}')).toContain('version 2');
    expect(error('{"type":"join","v":1}')).toBe('join has no key');
    expect(error('{"type":"join","v":1,"key":"1234567"}')).toContain('8–256 bytes');
    expect(error(JSON.stringify({ type: 'join', v: 1, key: 'k'.repeat(257) }))).toContain('8–256 bytes');
    expect(error('{"type":"join","v":1,"key":"12345678","password":5}')).toContain('password');
    expect(error(`{"type":"join","v":1,"key":"${'x'.repeat(3000)}"}`)).toContain('longer than');
  });
});
