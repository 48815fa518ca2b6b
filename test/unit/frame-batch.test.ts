import { describe, expect, it } from 'vitest';
import { FrameBatcher, MAX_BATCH_FRAMES, unpackFrames } from '../../worker/frame-batch';

function collect(): { batches: Array<{ batch: ArrayBuffer; count: number }>; run: () => void; batcher: FrameBatcher } {
  const batches: Array<{ batch: ArrayBuffer; count: number }> = [];
  let pending: (() => void) | undefined;
  const batcher = new FrameBatcher(
    (batch, count) => batches.push({ batch, count }),
    (fn) => (pending = fn),
  );
  return { batches, batcher, run: () => pending?.() };
}

const unpack = (batch: ArrayBuffer): number[][] => {
  const out: number[][] = [];
  unpackFrames(batch, (f) => out.push([...f]));
  return out;
};

describe('FrameBatcher', () => {
  it('packs the frames pushed before the scheduled flush into one batch, in order', () => {
    const { batches, batcher, run } = collect();
    batcher.push(Uint8Array.of(1, 2, 3));
    batcher.push(Uint8Array.of(4));
    expect(batches).toHaveLength(0);
    run();
    expect(batches).toHaveLength(1);
    expect(batches[0].count).toBe(2);
    expect(unpack(batches[0].batch)).toEqual([[1, 2, 3], [4]]);
  });

  it('copies each frame when it is pushed: the caller may reuse its buffer (ne2k does)', () => {
    const { batches, batcher, run } = collect();
    const ring = Uint8Array.of(9, 9, 9, 9);
    batcher.push(ring.subarray(1, 3));
    ring.fill(0);
    run();
    expect(unpack(batches[0].batch)).toEqual([[9, 9]]);
  });

  it('grows past its first buffer and keeps every byte', () => {
    const { batches, batcher, run } = collect();
    const frames = Array.from({ length: 40 }, (_, i) => new Uint8Array(1514).fill(i));
    for (const f of frames) batcher.push(f);
    run();
    expect(unpack(batches[0].batch)).toEqual(frames.map((f) => [...f]));
  });

  it('sends at once when a batch reaches its frame bound', () => {
    const { batches, batcher, run } = collect();
    for (let i = 0; i < MAX_BATCH_FRAMES + 1; i++) batcher.push(Uint8Array.of(i & 0xff));
    expect(batches).toHaveLength(1);
    expect(batches[0].count).toBe(MAX_BATCH_FRAMES);
    run();
    expect(batches).toHaveLength(2);
    expect(unpack(batches[1].batch)).toEqual([[MAX_BATCH_FRAMES & 0xff]]);
  });

  it('ignores empty frames and sends nothing when nothing is pending', () => {
    const { batches, batcher, run } = collect();
    batcher.push(new Uint8Array(0));
    run();
    batcher.send();
    expect(batches).toHaveLength(0);
  });
});

describe('unpackFrames', () => {
  it('stops at a zero length (the unused tail of a batch buffer) and at a truncated entry', () => {
    const b = new Uint8Array(32);
    const v = new DataView(b.buffer);
    v.setUint32(0, 2, true);
    b.set([7, 8], 4);
    expect(unpack(b.buffer)).toEqual([[7, 8]]);
    v.setUint32(6, 100, true); // claims more bytes than there are
    expect(unpackFrames(b.buffer, () => {})).toBe(1);
  });
});
