// The QEMU stream link builds the stack's frames in its own write buffer (allocFrame), so a frame
// sent in order needs no copy. Frames are not always sent in the order they were allocated (one
// waits for ARP), some are never sent, and a write may still be queued: whatever the order, every
// frame the client receives must be exactly the bytes that were sent, and nothing else.

import { mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { QemuStreamLink } from '../../node-host/links/qemu-stream-link';

class Receiver {
  readonly frames: Buffer[] = [];
  private buf = Buffer.alloc(0);
  constructor(socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const len = this.buf.readUInt32BE(0);
        this.frames.push(Buffer.from(this.buf.subarray(4, 4 + len)));
        this.buf = this.buf.subarray(4 + len);
      }
    });
  }
  async waitFor(n: number): Promise<Buffer[]> {
    const until = Date.now() + 5000;
    while (this.frames.length < n) {
      if (Date.now() > until) throw new Error(`got ${this.frames.length} of ${n} frames`);
      await new Promise((r) => setTimeout(r, 5));
    }
    return this.frames;
  }
}

/** A frame of `length` bytes whose content says which it is. */
function fill(frame: Uint8Array, tag: number): Uint8Array {
  for (let i = 0; i < frame.length; i++) frame[i] = (tag * 31 + i) & 0xff;
  return frame;
}

describe('QemuStreamLink frames built in its write buffer', () => {
  let dir: string;
  let link: QemuStreamLink;
  let client: net.Socket;
  let rx: Receiver;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-arena-'));
    const path = join(dir, 'q.sock');
    link = await QemuStreamLink.listen({ kind: 'unix', path });
    const connected = new Promise<void>((resolve) => link.on('log', (event) => event === 'client-connected' && resolve()));
    client = net.connect(path);
    rx = new Receiver(client);
    await connected;
  });

  afterEach(async () => {
    client.destroy();
    await link.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('sends frames built in place, in order, zero-filled where nothing was written', async () => {
    const a = link.allocFrame(100);
    expect([...a].every((b) => b === 0)).toBe(true);
    fill(a, 1);
    link.send(a);
    const b = link.allocFrame(61); // odd: the next one starts at an odd offset
    fill(b, 2);
    link.send(b);
    const c = link.allocFrame(65536 + 14);
    fill(c, 3);
    link.send(c);
    const got = await rx.waitFor(3);
    expect(got.map((f) => f.length)).toEqual([100, 61, 65550]);
    expect(got[0].equals(fill(new Uint8Array(100), 1))).toBe(true);
    expect(got[1].equals(fill(new Uint8Array(61), 2))).toBe(true);
    expect(got[2].equals(fill(new Uint8Array(65550), 3))).toBe(true);
  });

  it('keeps a frame that waits (sent after later ones) and one never sent out of the stream', async () => {
    const held = fill(link.allocFrame(200), 1); // waits for ARP
    const lost = fill(link.allocFrame(300), 2); // never sent
    const next = fill(link.allocFrame(400), 3);
    link.send(next);
    // Later bursts, over several turns and past the buffer's size, must not overwrite `held`.
    for (let round = 0; round < 6; round++) {
      for (let i = 0; i < 3; i++) link.send(fill(link.allocFrame(60_000), 10 + round * 3 + i));
      await new Promise((r) => setImmediate(r));
    }
    link.send(held);
    const got = await rx.waitFor(1 + 18 + 1);
    expect(got[0].equals(fill(new Uint8Array(400), 3))).toBe(true);
    for (let k = 0; k < 18; k++) expect(got[1 + k].equals(fill(new Uint8Array(60_000), 10 + k))).toBe(true);
    expect(got[19].equals(fill(new Uint8Array(200), 1))).toBe(true);
    expect(got.some((f) => f.length === lost.length)).toBe(false);
  });

  it('does not reuse the buffer under a frame still held when a burst is written', async () => {
    link.send(fill(link.allocFrame(100), 1));
    const held = fill(link.allocFrame(100), 2);
    await new Promise((r) => setImmediate(r)); // the burst with the first frame is written
    link.send(fill(link.allocFrame(500), 3)); // must not land on `held`
    link.send(held);
    const got = await rx.waitFor(3);
    expect(got[0].equals(fill(new Uint8Array(100), 1))).toBe(true);
    expect(got[1].equals(fill(new Uint8Array(500), 3))).toBe(true);
    expect(got[2].equals(fill(new Uint8Array(100), 2))).toBe(true);
  });

  it('takes frames from elsewhere too (copied), between frames built in place', async () => {
    const a = fill(link.allocFrame(128), 1);
    const outside = fill(new Uint8Array(90), 2);
    link.send(outside); // a reservation (a) lies ahead: goes to a fresh buffer
    link.send(a); // now out of order: copied
    const b = fill(link.allocFrame(70), 3);
    link.send(b);
    const got = await rx.waitFor(3);
    expect(got.map((f) => f.length)).toEqual([90, 128, 70]);
    expect(got[0].equals(fill(new Uint8Array(90), 2))).toBe(true);
    expect(got[1].equals(fill(new Uint8Array(128), 1))).toBe(true);
    expect(got[2].equals(fill(new Uint8Array(70), 3))).toBe(true);
  });
});
