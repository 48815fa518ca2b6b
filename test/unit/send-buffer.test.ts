// SendBuffer: the ring that holds bytes on their way to the guest, and the room at its end that a
// host socket may read into in place (tailRoom), so those bytes are not copied a second time.
import { describe, expect, it } from 'vitest';
import { SendBuffer } from '../../core/tcp/send-buffer';

function bytes(n: number, tag: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (tag * 7 + i) & 0xff);
}

function contents(b: SendBuffer): number[] {
  const out = new Uint8Array(b.length);
  b.copy(0, b.length, out, 0);
  return [...out];
}

describe('SendBuffer', () => {
  it('appends copies, wraps around, and grows in powers of two up to its cap', () => {
    const b = new SendBuffer(16, 64);
    expect(b.append(bytes(10, 1))).toBe(true);
    b.consume(6);
    expect(b.append(bytes(10, 2))).toBe(true); // wraps past the end of 16
    expect(b.capacity).toBe(16);
    expect(contents(b)).toEqual([...bytes(10, 1).slice(6), ...bytes(10, 2)]);
    expect(b.append(bytes(20, 3))).toBe(true);
    expect(b.capacity).toBe(64);
    expect(b.append(bytes(31, 4))).toBe(false); // 34 + 31 passes the cap: nothing taken
    expect(b.length).toBe(34);
  });

  it('takes bytes read into its tail room where they lie, with no copy', () => {
    const b = new SendBuffer(1024, 1024);
    b.append(bytes(100, 1));
    const room = b.tailRoom(64, 500) as Uint8Array;
    expect(room.length).toBe(500);
    room.set(bytes(300, 2));
    const before = new Uint8Array(room.buffer, room.byteOffset, 300).slice();
    expect(b.append(room.subarray(0, 300))).toBe(true);
    expect(b.length).toBe(400);
    expect(contents(b)).toEqual([...bytes(100, 1), ...before]);
    // The next room starts where those bytes end.
    const next = b.tailRoom(64, 500) as Uint8Array;
    expect(next.byteOffset).toBe(room.byteOffset + 300);
  });

  it('does not grow for the room: a small buffer lends none, one that grew for its bytes does', () => {
    const b = new SendBuffer(16, 4096);
    expect(b.tailRoom(64, 1000)).toBeUndefined();
    expect(b.capacity).toBe(16);
    b.append(bytes(600, 1)); // grows to 1024 for its bytes
    expect(b.tailRoom(64, 1000)?.length).toBe(424);
  });

  it('offers no room shorter than asked for: the end is about to wrap', () => {
    const b = new SendBuffer(1024, 1024);
    b.append(bytes(1000, 1));
    b.consume(900);
    expect(b.tailRoom(64, 500)).toBeUndefined(); // 24 bytes to the end; the rest is before the start
    b.append(bytes(24, 2));
    // Now the free bytes [0, 900) lie in one piece after the wrapped end.
    const room = b.tailRoom(64, 500) as Uint8Array;
    expect(room.length).toBe(500);
    room.set(bytes(500, 3));
    b.append(room);
    expect(contents(b)).toEqual([...bytes(1000, 1).slice(900), ...bytes(24, 2), ...bytes(500, 3)]);
  });

  it('copies bytes from room that is no longer its end (the buffer grew, or emptied and started over)', () => {
    const b = new SendBuffer(256, 4096);
    b.append(bytes(100, 1));
    const room = b.tailRoom(64, 100) as Uint8Array;
    room.set(bytes(100, 2));
    b.append(bytes(200, 3)); // grows: the room lent lies in the old array
    b.append(room);
    expect(contents(b)).toEqual([...bytes(100, 1), ...bytes(200, 3), ...bytes(100, 2)]);

    const c = new SendBuffer(1024, 1024);
    c.append(bytes(100, 1));
    const late = c.tailRoom(64, 100) as Uint8Array;
    c.consume(100); // empty: the next bytes go to the start
    late.set(bytes(100, 4));
    c.append(late);
    expect(contents(c)).toEqual([...bytes(100, 4)]);
    expect(c.tailRoom(64, 100)?.byteOffset).toBe(late.byteOffset); // right after them, at 100
  });
});
