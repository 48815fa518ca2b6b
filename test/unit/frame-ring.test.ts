// The SharedArrayBuffer frame ring (worker/frame-ring.ts) in Node, which has SharedArrayBuffer,
// Atomics and Atomics.waitAsync: order and content, wraparound of the data area and of the 2^32
// positions, a full ring, oversized frames, many frames, and a writer in another thread waking a
// sleeping reader (through waitAsync and through the doorbell).

import { buildSync } from 'esbuild';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { FrameRing, FrameRingReader, FrameRingWriter } from '../../worker/frame-ring';
import { seededRandom } from '../support/frames';

const frameOf = (len: number, seed: number) => Uint8Array.from({ length: len }, (_, i) => (seed * 31 + i * 7) & 0xff);
const syncWake = (fn: () => void) => fn();

function pair(dataBytes: number, startAt = 0) {
  const buffer = FrameRing.allocate(dataBytes, startAt);
  return { buffer, writer: new FrameRingWriter(buffer, () => {}, syncWake), reader: new FrameRingReader(buffer, false) };
}

const drainAll = (reader: FrameRingReader): Uint8Array[] => {
  const out: Uint8Array[] = [];
  reader.drain((f) => out.push(f));
  return out;
};

describe('FrameRing', () => {
  it('hands frames over in order, as copies outside shared memory', () => {
    const { writer, reader } = pair(1024);
    expect(writer.push(Uint8Array.of(1, 2, 3))).toBe(true);
    expect(writer.push(Uint8Array.of(4))).toBe(true);
    expect(writer.push(new Uint8Array(0))).toBe(true); // nothing to carry
    const got = drainAll(reader);
    expect(got.map((f) => [...f])).toEqual([[1, 2, 3], [4]]);
    expect(got[0].buffer).toBeInstanceOf(ArrayBuffer);
    expect(got[0].buffer).not.toBeInstanceOf(SharedArrayBuffer);
    expect(drainAll(reader)).toEqual([]);
    expect(reader.counters()).toMatchObject({ frames: 2, droppedFull: 0, droppedOversized: 0, usedBytes: 0 });
  });

  it('rejects a buffer whose data area is not a power of two', () => {
    expect(() => new FrameRingReader(new SharedArrayBuffer(64 + 100), false)).toThrow(RangeError);
  });

  it('wraps records around the end of the data area without splitting them', () => {
    // 64 data bytes: records of 4 + 12 bytes at most; sizes that do not divide 64 force WRAP markers.
    const { writer, reader } = pair(64);
    expect(writer.maxFrameBytes).toBe(12);
    let seed = 0;
    for (let round = 0; round < 200; round++) {
      const sizes = [1 + (round % 12), 1 + ((round * 5) % 12)];
      const sent = sizes.map((n) => frameOf(n, seed++));
      for (const f of sent) expect(writer.push(f)).toBe(true);
      expect(drainAll(reader)).toEqual(sent);
    }
    expect(reader.counters()).toMatchObject({ frames: 400, droppedFull: 0, usedBytes: 0 });
  });

  it('keeps working across the 2^32 wrap of its positions', () => {
    const { writer, reader } = pair(256, 0xffffff00 | 0);
    let seed = 0;
    for (let i = 0; i < 100; i++) {
      const f = frameOf(1 + (i % 60), seed++);
      expect(writer.push(f)).toBe(true);
      expect(drainAll(reader)).toEqual([f]);
    }
    expect(reader.counters().usedBytes).toBe(0);
  });

  it('drops and counts frames when full, and takes them again once the reader catches up', () => {
    const { writer, reader } = pair(256);
    const frame = frameOf(60, 1); // a 64-byte record: four fill the ring
    let accepted = 0;
    while (writer.push(frame)) accepted++;
    expect(accepted).toBe(4);
    expect(writer.push(frameOf(1, 2))).toBe(false);
    expect(reader.counters()).toMatchObject({ frames: 4, droppedFull: 2, usedBytes: 256 });
    expect(drainAll(reader)).toHaveLength(4);
    expect(writer.push(frame)).toBe(true);
    expect(drainAll(reader)).toEqual([frame]);
  });

  it('a frame that waits for the wrap needs room for the padding too', () => {
    const { writer, reader } = pair(64);
    for (let i = 0; i < 3; i++) expect(writer.push(frameOf(12, i))).toBe(true); // 48 bytes used
    expect(drainAll(reader)).toHaveLength(3); // tail at 48: 16 bytes to the end
    expect(writer.push(frameOf(12, 3))).toBe(true); // exactly to the end
    expect(writer.push(frameOf(12, 4))).toBe(true); // at 0
    expect(writer.push(frameOf(12, 5))).toBe(true);
    expect(writer.push(frameOf(12, 6))).toBe(true);
    expect(writer.push(frameOf(12, 7))).toBe(false); // 64 bytes in use
    expect(drainAll(reader).map((f) => f[0])).toEqual([3, 4, 5, 6].map((i) => frameOf(12, i)[0]));
  });

  it('drops and counts a frame longer than a quarter of the ring, and carries on', () => {
    const { writer, reader } = pair(4096);
    expect(writer.push(new Uint8Array(writer.maxFrameBytes + 1))).toBe(false);
    expect(writer.push(new Uint8Array(65536))).toBe(false);
    const ok = frameOf(writer.maxFrameBytes, 9);
    expect(writer.push(ok)).toBe(true);
    expect(drainAll(reader)).toEqual([ok]);
    expect(reader.counters()).toMatchObject({ frames: 1, droppedOversized: 2, droppedFull: 0 });
  });

  it('carries 100,000 frames of random sizes through a small ring, read in random bursts', () => {
    const { writer, reader } = pair(8192);
    const prng = seededRandom(0x5eed);
    const random = () => prng.next();
    const pending: Uint8Array[] = [];
    let sent = 0;
    let received = 0;
    let dropped = 0;
    let mismatch = -1;
    while (sent < 100_000) {
      const burst = 1 + Math.floor(random() * 20);
      for (let i = 0; i < burst && sent < 100_000; i++) {
        const f = new Uint8Array(1 + Math.floor(random() * 1514));
        f[0] = sent & 0xff;
        f[f.length - 1] = (sent >> 8) & 0xff;
        sent++;
        if (writer.push(f)) pending.push(f);
        else dropped++;
      }
      const max = Math.floor(random() * 25);
      reader.drain((f) => {
        if (mismatch < 0 && Buffer.compare(f, pending[received]) !== 0) mismatch = received;
        received++;
      }, max);
    }
    reader.drain((f) => {
      if (mismatch < 0 && Buffer.compare(f, pending[received]) !== 0) mismatch = received;
      received++;
    });
    expect(mismatch).toBe(-1);
    expect(received).toBe(pending.length);
    expect(reader.counters()).toMatchObject({ frames: pending.length, droppedFull: dropped, usedBytes: 0 });
  });

  it('start() drains at once, then sleeps until the writer wakes it (doorbell)', async () => {
    const buffer = FrameRing.allocate(1024);
    const reader = new FrameRingReader(buffer, false);
    expect(reader.needsDoorbell).toBe(true);
    let rings = 0;
    const writer = new FrameRingWriter(buffer, () => {
      rings++;
      queueMicrotask(() => reader.ring());
    });
    const got: number[] = [];
    let batches = 0;
    writer.push(Uint8Array.of(1));
    reader.start(
      (f) => got.push(f[0]),
      () => batches++,
    );
    expect(got).toEqual([1]);
    writer.push(Uint8Array.of(2));
    writer.push(Uint8Array.of(3)); // one burst: one doorbell
    await new Promise((r) => setTimeout(r, 0));
    expect(got).toEqual([1, 2, 3]);
    expect(rings).toBe(1);
    expect(batches).toBe(2);
    reader.close();
    writer.push(Uint8Array.of(4));
    await new Promise((r) => setTimeout(r, 0));
    expect(got).toEqual([1, 2, 3]);
  });
});

describe('FrameRing across threads', () => {
  const dir = mkdtempSync(join(tmpdir(), 'weft-ring-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** A worker thread that writes `count` frames (frame i: length 1 + i % 1500, first byte i & 0xff); its doorbell is a 'ring' message. */
  function writerThread(buffer: SharedArrayBuffer, count: number): Worker {
    const file = join(dir, 'writer.mjs');
    buildSync({
      stdin: {
        contents: `
          import { workerData, parentPort } from 'node:worker_threads';
          import { FrameRingWriter } from './worker/frame-ring';
          const { buffer, count } = workerData;
          const w = new FrameRingWriter(buffer, () => parentPort.postMessage('ring'), (fn) => fn());
          const nap = new Int32Array(new SharedArrayBuffer(4));
          for (let i = 0; i < count; ) {
            const f = new Uint8Array(1 + (i % 1500));
            f[0] = i & 0xff;
            if (f.length > 1) f[f.length - 1] = (i >> 8) & 0xff;
            if (w.push(f)) i++;
            else Atomics.wait(nap, 0, 0, 1); // full: let the reader catch up
          }
          parentPort.postMessage('done');`,
        resolveDir: resolve(__dirname, '../..'),
        loader: 'ts',
      },
      bundle: true,
      platform: 'node',
      format: 'esm',
      outfile: file,
      logLevel: 'silent',
    });
    return new Worker(file, { workerData: { buffer, count } });
  }

  for (const mode of ['waitAsync', 'doorbell'] as const) {
    it(`a reader woken by ${mode} gets every frame, in order`, async () => {
      const count = 20_000;
      const buffer = FrameRing.allocate(64 * 1024);
      const reader = new FrameRingReader(buffer, mode === 'waitAsync');
      let next = 0;
      let bad: string | undefined;
      const all = new Promise<void>((done) => {
        reader.start((f) => {
          const i = next++;
          if (!bad && (f.length !== 1 + (i % 1500) || f[0] !== (i & 0xff) || (f.length > 1 && f[f.length - 1] !== ((i >> 8) & 0xff)))) {
            bad = `frame ${i}: length ${f.length}, first byte ${f[0]}`;
          }
          if (next === count) done();
        });
      });
      const worker = writerThread(buffer, count);
      worker.on('message', (m) => {
        if (m === 'ring') reader.ring();
      });
      try {
        await all;
      } finally {
        reader.close();
        await worker.terminate();
      }
      expect(bad).toBeUndefined();
      expect(reader.counters()).toMatchObject({ frames: count, droppedOversized: 0, usedBytes: 0 });
    }, 30_000);
  }
});
