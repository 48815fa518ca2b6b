// The fault-injecting link on its own: each fault does what it says, at about the rate asked for,
// the same way for the same seed, and everything it holds comes out through poll().
import { describe, expect, it } from 'vitest';
import { FaultInjector, type FaultConfig } from '../../core/link/fault-injector';
import { seededRandom } from '../support/frames';

/** Frame i is 64 bytes holding i in its first two bytes (after a 14-byte "header" of zeros). */
function frame(i: number): Uint8Array {
  const f = new Uint8Array(64);
  f[14] = i >>> 8;
  f[15] = i & 0xff;
  return f;
}
const id = (f: Uint8Array) => (f[14] << 8) | f[15];

function link(config: Partial<FaultConfig>, seed = 1) {
  const out: Uint8Array[] = [];
  const fi = new FaultInjector((f) => out.push(f), seededRandom(seed).next, config);
  return { fi, out, ids: () => out.map(id) };
}

describe('FaultInjector', () => {
  it('passes every frame through unchanged, in order and at once, when no fault is on', () => {
    const { fi, out, ids } = link({});
    for (let i = 0; i < 100; i++) fi.send(frame(i), 0);
    expect(ids()).toEqual([...Array(100).keys()]);
    expect(out[5]).toEqual(frame(5));
    expect(fi.nextDeadline()).toBeUndefined();
    expect(fi.counters()).toMatchObject({ frames: 100, delivered: 100, dropped: 0 });
  });

  it('drops about the share asked for, and counts each drop', () => {
    const { fi, out } = link({ drop: 0.3 });
    for (let i = 0; i < 10_000; i++) fi.send(frame(i), 0);
    const c = fi.counters();
    expect(c.dropped).toBeGreaterThan(2800);
    expect(c.dropped).toBeLessThan(3200);
    expect(out.length + c.dropped).toBe(10_000);
  });

  it('delivers a duplicate right after the original', () => {
    const { fi, ids } = link({ duplicate: 1 });
    fi.send(frame(1), 0);
    fi.send(frame(2), 0);
    expect(ids()).toEqual([1, 1, 2, 2]);
    expect(fi.counters().duplicated).toBe(2);
  });

  it('flips exactly one bit, past the protected header, in a copy', () => {
    const { fi, out } = link({ corrupt: 1, corruptFromByte: 14 });
    for (let i = 0; i < 200; i++) {
      const f = frame(i);
      fi.send(f, 0);
      expect(f).toEqual(frame(i)); // the sender's buffer is untouched
      let bits = 0;
      for (let k = 0; k < f.length; k++) {
        const x = f[k] ^ out[i][k];
        if (x !== 0) expect(k).toBeGreaterThanOrEqual(14);
        bits += x.toString(2).replace(/0/g, '').length;
      }
      expect(bits).toBe(1);
    }
    expect(fi.counters().corrupted).toBe(200);
  });

  it('reorders: a held frame comes out right after the next one', () => {
    const { fi, ids } = link({ reorder: 0.5, reorderHoldMs: 1000 }, 3);
    for (let i = 0; i < 200; i++) fi.send(frame(i), 0);
    fi.poll(1000);
    const got = ids();
    expect([...got].sort((a, b) => a - b)).toEqual([...Array(200).keys()]);
    expect(got).not.toEqual([...Array(200).keys()]);
    expect(fi.counters().reordered).toBeGreaterThan(60);
    // Held frames come out late: some frames arrive after ones sent after them.
    let inversions = 0;
    for (let i = 1; i < got.length; i++) if (got[i] < got[i - 1]) inversions++;
    expect(inversions).toBeGreaterThan(30);
  });

  it('releases a held frame after reorderHoldMs when nothing overtakes it', () => {
    const { fi, ids } = link({ reorder: 1, reorderHoldMs: 30 });
    fi.send(frame(7), 100);
    expect(ids()).toEqual([]);
    expect(fi.nextDeadline()).toBe(130);
    fi.poll(129);
    expect(ids()).toEqual([]);
    fi.poll(130);
    expect(ids()).toEqual([7]);
    expect(fi.held).toBe(0);
  });

  it('delays frames within [min, max] and releases them by poll() in due order', () => {
    const { fi, ids } = link({ delay: 1, delayMinMs: 10, delayMaxMs: 50 }, 9);
    for (let i = 0; i < 50; i++) fi.send(frame(i), 0);
    expect(ids()).toEqual([]);
    const first = fi.nextDeadline() as number;
    expect(first).toBeGreaterThanOrEqual(10);
    fi.poll(9.99);
    expect(ids()).toEqual([]);
    fi.poll(50);
    expect(ids()).toHaveLength(50);
    expect(ids()).not.toEqual([...Array(50).keys()]); // random delays reorder
    expect(fi.nextDeadline()).toBeUndefined();
  });

  it('adds a fixed latency that keeps order', () => {
    const { fi, ids } = link({ latencyMs: 5 });
    fi.send(frame(1), 0);
    fi.send(frame(2), 1);
    expect(fi.nextDeadline()).toBe(5);
    fi.poll(5);
    expect(ids()).toEqual([1]);
    fi.poll(6);
    expect(ids()).toEqual([1, 2]);
  });

  it('is deterministic: the same seed gives the same faults', () => {
    const run = (seed: number) => {
      const { fi, out } = link({ drop: 0.1, duplicate: 0.1, reorder: 0.2, corrupt: 0.1, corruptFromByte: 14, delay: 0.1, delayMaxMs: 20 }, seed);
      for (let i = 0; i < 500; i++) {
        fi.send(frame(i), i);
        fi.poll(i);
      }
      fi.flush();
      return { out: out.map((f) => Array.from(f).join(',')), c: fi.counters() };
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42).out).not.toEqual(run(43).out);
  });

  it('copies what it holds, so the sender may reuse its buffer (a Node Buffer too)', () => {
    const { fi, out } = link({ latencyMs: 1 });
    const buf = Buffer.alloc(64 * 20);
    for (let i = 0; i < 20; i++) {
      buf.set(frame(i), 0);
      fi.send(buf.subarray(0, 64), 0);
    }
    buf.fill(0xee);
    fi.poll(1);
    expect(out.map(id)).toEqual([...Array(20).keys()]);
  });

  it('bounds what it holds and counts the overflow', () => {
    const { fi } = link({ delay: 1, delayMinMs: 100, delayMaxMs: 100, maxHeld: 10 });
    for (let i = 0; i < 25; i++) fi.send(frame(i), 0);
    expect(fi.held).toBe(10);
    expect(fi.counters().overflowed).toBe(15);
  });

  it('rejects probabilities outside [0, 1]', () => {
    expect(() => link({ drop: 1.5 })).toThrow(RangeError);
    expect(() => link({ corrupt: -0.1 })).toThrow(RangeError);
    expect(() => link({ delayMinMs: 10, delayMaxMs: 5 })).toThrow(RangeError);
  });
});
