// `weft vm --qemu unix:PATH|tcp:HOST:PORT` spoken to the way QEMU's `-netdev stream` does:
// 4-byte big-endian length + Ethernet frame, both ways. Runs the built CLI; needs no root.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { QemuStreamLink, StreamFrameDecoder } from '../../node-host/links/qemu-stream-link';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';

const GUEST_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const MAC_A = GUEST_MAC;
const MAC_B = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
const MAC_C = [0x02, 0x00, 0x00, 0x00, 0x00, 0x03];
const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
const GUEST_IP = [10, 0, 2, 15];
const GATEWAY_IP = [10, 0, 2, 2];
const GATEWAY_MAC = '52:55:0a:00:02:02';

/** A broadcast ARP request "who has 10.0.2.2? tell 10.0.2.15" from `from`, padded to 60 bytes. */
function arpRequest(from = GUEST_MAC): Buffer {
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6);
  f.set(from, 6);
  f.writeUInt16BE(0x0806, 12);
  f.writeUInt16BE(1, 14); // Ethernet
  f.writeUInt16BE(0x0800, 16); // IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // request
  f.set(from, 22);
  f.set(GUEST_IP, 28);
  f.set(GATEWAY_IP, 38);
  return f;
}

/** A guest-to-guest frame (an experimental ethertype nobody answers) whose first payload byte is `tag`. */
function ethFrame(dst: number[], src: number[], tag: number, length = 60): Buffer {
  const f = Buffer.alloc(length);
  f.set(dst, 0);
  f.set(src, 6);
  f.writeUInt16BE(0x88b5, 12);
  f[14] = tag;
  return f;
}

const tagOf = (f: Buffer) => f[14];

function framed(frame: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(frame.length);
  return Buffer.concat([len, frame]);
}

const mac = (b: Buffer, off: number) => [...b.subarray(off, off + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');
const ip = (b: Buffer, off: number) => [...b.subarray(off, off + 4)].join('.');

/** A stream client that collects length-prefixed frames. */
class StreamClient {
  readonly frames: Buffer[] = [];
  private buf = Buffer.alloc(0);
  private waiters: Array<() => void> = [];
  closed = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const len = this.buf.readUInt32BE(0);
        this.frames.push(this.buf.subarray(4, 4 + len));
        this.buf = this.buf.subarray(4 + len);
      }
      this.wake();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
  }

  static connect(target: { path: string } | { host: string; port: number }): Promise<StreamClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect(target as net.NetConnectOpts);
      s.once('connect', () => resolve(new StreamClient(s)));
      s.once('error', reject);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves once `n` frames arrived, or rejects on close or after `timeoutMs`. */
  waitFrames(n: number, timeoutMs = 5000): Promise<Buffer[]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`got ${this.frames.length} of ${n} frames`)), timeoutMs);
      const check = () => {
        if (this.frames.length >= n) {
          clearTimeout(timer);
          resolve(this.frames.slice(0, n));
        } else if (this.closed) {
          clearTimeout(timer);
          reject(new Error(`connection closed after ${this.frames.length} of ${n} frames`));
        } else this.waiters.push(check);
      };
      check();
    });
  }

  waitClosed(timeoutMs = 5000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('connection still open')), timeoutMs);
      const check = () => {
        if (this.closed) {
          clearTimeout(timer);
          resolve();
        } else this.waiters.push(check);
      };
      check();
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

function expectArpReply(f: Buffer, to = GUEST_MAC): void {
  expect(f.length).toBeGreaterThanOrEqual(42);
  expect(mac(f, 0)).toBe(mac(Buffer.from(to), 0));
  expect(mac(f, 6)).toBe(GATEWAY_MAC);
  expect(f.readUInt16BE(12)).toBe(0x0806);
  expect(f.readUInt16BE(20)).toBe(2); // reply
  expect(mac(f, 22)).toBe(GATEWAY_MAC);
  expect(ip(f, 28)).toBe('10.0.2.2');
  expect(mac(f, 32)).toBe(mac(Buffer.from(to), 0));
  expect(ip(f, 38)).toBe('10.0.2.15');
}

describe('weft vm --qemu (QEMU stream framing)', () => {
  let weft: WeftProcess | undefined;
  const clients: StreamClient[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'weft-qemu-'));

  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    if (weft && !weft.exit) {
      weft.kill('SIGKILL');
      await weft.waitForExit();
    }
    weft = undefined;
  });

  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  let sockets = 0;
  const socketPath = () => join(dir, `weft-${++sockets}.sock`);

  async function connect(target: { path: string } | { host: string; port: number }): Promise<StreamClient> {
    const c = await StreamClient.connect(target);
    clients.push(c);
    return c;
  }

  async function stop(w: WeftProcess): Promise<void> {
    w.kill('SIGTERM');
    const exit = await w.waitForExit(5000);
    expect(exit.code, w.stderr).toBe(0);
    expect(exit.elapsedMs).toBeLessThan(2000);
    expect(w.events.find((e) => e.event === 'stopped')).toBeDefined();
    expect(w.events.filter((e) => e.event === 'warning')).toEqual([]);
  }

  it('answers an ARP request over a unix socket, and removes the socket on exit', async () => {
    const path = socketPath();
    // A stale socket file from a process that died: weft must replace it.
    execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(path)})`]);
    expect(statSync(path).isSocket()).toBe(true);

    weft = spawnWeft(['vm', '--qemu', `unix:${path}`]);
    const ready = await weft.waitForEvent('ready');
    expect(ready).toMatchObject({ link: 'qemu-stream', listen: `unix:${path}` });

    const c = await connect({ path });
    await weft.waitForEvent('client-connected');
    c.socket.write(framed(arpRequest()));
    const [reply] = await c.waitFrames(1);
    expectArpReply(reply);

    await stop(weft);
    expect(existsSync(path)).toBe(false);
  });

  it('answers over tcp, reassembling frames split across and packed into writes', async () => {
    weft = spawnWeft(['vm', '--qemu', 'tcp:127.0.0.1:0']);
    const ready = await weft.waitForEvent('ready');
    const m = /^tcp:127\.0\.0\.1:(\d+)$/.exec(String(ready.listen));
    expect(m, JSON.stringify(ready)).not.toBeNull();
    const port = Number(m![1]);
    expect(port).toBeGreaterThan(0);

    const c = await connect({ host: '127.0.0.1', port });
    const one = framed(arpRequest());
    // Two frames in one write, then one frame dribbled in three pieces (inside the length, then the body).
    c.socket.write(Buffer.concat([one, one]));
    await c.waitFrames(2);
    for (const piece of [one.subarray(0, 2), one.subarray(2, 30), one.subarray(30)]) {
      c.socket.write(piece);
      await new Promise((r) => setTimeout(r, 20));
    }
    const replies = await c.waitFrames(3);
    for (const r of replies) expectArpReply(r);
    await stop(weft);
  });

  it('refuses a client past --max-guests, and takes the next one after one leaves', async () => {
    const path = socketPath();
    weft = spawnWeft(['vm', '--qemu', `unix:${path}`, '--max-guests', '1']);
    expect(await weft.waitForEvent('ready')).toMatchObject({ maxGuests: 1 });
    const first = await connect({ path });
    await weft.waitForEvent('client-connected');

    const second = await connect({ path });
    await second.waitClosed();
    expect(await weft.waitForEvent('client-refused')).toMatchObject({ reason: '1 of 1 guests connected (--max-guests)' });

    first.close();
    await weft.waitForEvent('client-disconnected');
    const third = await connect({ path });
    third.socket.write(framed(arpRequest()));
    expectArpReply((await third.waitFrames(1))[0]);
    await stop(weft);
  });

  it('puts several clients on one LAN: broadcasts reach the others and weft, unicast only its client', async () => {
    const path = socketPath();
    weft = spawnWeft(['vm', '--qemu', `unix:${path}`]);
    expect(await weft.waitForEvent('ready')).toMatchObject({ maxGuests: 64 });
    const [a, b, c] = [await connect({ path }), await connect({ path }), await connect({ path })];
    await weft.waitForEvent('client-connected', (e) => e.clients === 3);

    // A asks for the gateway: weft answers A alone; B and C see the request (a broadcast).
    a.socket.write(framed(arpRequest(MAC_A)));
    expectArpReply((await a.waitFrames(1))[0], MAC_A);
    for (const other of [b, c]) expect((await other.waitFrames(1))[0].toString('hex')).toBe(arpRequest(MAC_A).toString('hex'));

    // B to A (learned): A gets it, C does not — C's next frame is B's broadcast that follows.
    b.socket.write(framed(ethFrame(MAC_A, MAC_B, 1)));
    b.socket.write(framed(ethFrame(BROADCAST, MAC_B, 2)));
    expect(tagOf((await a.waitFrames(3))[1])).toBe(1);
    expect(tagOf((await c.waitFrames(2))[1])).toBe(2);
    expect(tagOf(a.frames[2])).toBe(2);

    // B asks for the gateway: A sees the request, and weft's answer goes to B only (else A would
    // have it before C's broadcast that follows).
    b.socket.write(framed(arpRequest(MAC_B)));
    expectArpReply((await b.waitFrames(2))[1], MAC_B);
    c.socket.write(framed(ethFrame(BROADCAST, MAC_C, 3)));
    const seen = await a.waitFrames(5);
    expect(seen[3].toString('hex')).toBe(arpRequest(MAC_B).toString('hex'));
    expect(tagOf(seen[4])).toBe(3);
    await stop(weft);
  });

  it('a client that leaves takes its port and MACs with it (logged with its counters); a new one joins', async () => {
    const path = socketPath();
    weft = spawnWeft(['vm', '--qemu', `unix:${path}`]);
    await weft.waitForEvent('ready');
    const [a, b, c] = [await connect({ path }), await connect({ path }), await connect({ path })];
    await weft.waitForEvent('client-connected', (e) => e.clients === 3);
    a.socket.write(framed(ethFrame(BROADCAST, MAC_A, 1)));
    await b.waitFrames(1);
    await c.waitFrames(1);
    a.close();
    expect(await weft.waitForEvent('client-disconnected')).toMatchObject({ client: 1, clients: 2, framesIn: 1, framesOut: 0 });
    // A was learned on its port; with the port gone, a frame for A is unknown again: flooded to C.
    b.socket.write(framed(ethFrame(MAC_A, MAC_B, 2)));
    expect(tagOf((await c.waitFrames(2))[1])).toBe(2);
    const d = await connect({ path });
    expect(await weft.waitForEvent('client-connected', (e) => e.client === 4)).toMatchObject({ clients: 3 });
    d.socket.write(framed(arpRequest(MAC_A)));
    expectArpReply((await d.waitFrames(1))[0], MAC_A);
    await stop(weft);
  });

  it('a client that does not read loses its own frames; the others are served', async () => {
    const path = socketPath();
    weft = spawnWeft(['vm', '--qemu', `unix:${path}`]);
    await weft.waitForEvent('ready');
    const [a, slow] = [await connect({ path }), await connect({ path })];
    await weft.waitForEvent('client-connected', (e) => e.clients === 2);
    slow.socket.pause();
    // 8 MiB of broadcasts from A, each flooded to the slow client: more than its 4 MiB backlog.
    const burst = framed(ethFrame(BROADCAST, MAC_A, 9, 1514));
    for (let i = 0; i < 64; i++) a.socket.write(Buffer.concat(Array.from({ length: 88 }, () => burst)));
    a.socket.write(framed(arpRequest(MAC_A)));
    expectArpReply((await a.waitFrames(1, 20_000))[0], MAC_A);
    await stop(weft);
    const stopped = weft.events.find((e) => e.event === 'stopped');
    expect(stopped?.linkDrops).toMatchObject({ 'stream-backlog': expect.any(Number) });
    expect(stopped?.linkStats).toMatchObject({ clients: 0, macsLearned: 0 });
  }, 30_000);

  it('closes a connection that announces a frame length of 0 or above 65550', async () => {
    const path = socketPath();
    weft = spawnWeft(['vm', '--qemu', `unix:${path}`]);
    await weft.waitForEvent('ready');
    for (const bad of [0, 65536 + 15]) {
      const c = await connect({ path });
      const header = Buffer.alloc(4);
      header.writeUInt32BE(bad);
      c.socket.write(header);
      await c.waitClosed();
      await weft.waitForEvent('client-error', (e) => String(e.message).includes(`bad frame length ${bad}`));
      await weft.waitForEvent('client-disconnected', () => true);
      weft.events.length = 0; // the next round waits for fresh events
    }
    const ok = await connect({ path });
    ok.socket.write(framed(arpRequest()));
    expectArpReply((await ok.waitFrames(1))[0]);
    await stop(weft);
  });
});

/**
 * A QemuStreamLink on a unix socket with one client connected. `received` collects the frames the
 * client decodes; `calls` the link side's socket calls from then on (`write N` with its length,
 * `cork`, `uncork`). close() puts net.Socket's methods back and removes everything.
 */
async function linkWithClient() {
  const dir = mkdtempSync(join(tmpdir(), 'weft-stream-'));
  const path = join(dir, 'link.sock');
  const link = await QemuStreamLink.listen({ kind: 'unix', path });
  const proto = net.Socket.prototype;
  const { write, cork, uncork } = proto;
  const client = net.connect(path);
  await new Promise((r) => client.once('connect', r));
  await new Promise((r) => setTimeout(r, 50)); // the link accepts it
  const received: Buffer[] = [];
  const decoder = new StreamFrameDecoder();
  client.on('data', (chunk: Buffer) => decoder.push(chunk, (f) => received.push(Buffer.from(f))));
  const calls: string[] = [];
  proto.write = function (this: net.Socket, ...args: Parameters<typeof write>) {
    if (this !== client) calls.push(`write ${(args[0] as Uint8Array).length}`);
    return write.apply(this, args);
  } as typeof write;
  proto.cork = function (this: net.Socket) {
    if (this !== client) calls.push('cork');
    return cork.apply(this);
  };
  proto.uncork = function (this: net.Socket) {
    if (this !== client) calls.push('uncork');
    return uncork.apply(this);
  };
  return {
    link,
    received,
    calls,
    async close() {
      Object.assign(proto, { write, cork, uncork });
      client.destroy();
      await link.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** The bytes a burst of frames takes on the stream: each with its 4-byte length. */
const framedLength = (frames: Buffer[]) => frames.reduce((n, f) => n + 4 + f.length, 0);

describe('QemuStreamLink writes', () => {
  it('sends the frames of one burst in one write, each intact and in order, and later bursts reuse the buffer', async () => {
    const { link, received, calls, close } = await linkWithClient();
    try {
      const frames = Array.from({ length: 40 }, (_, i) => Buffer.alloc(60 + i * 37, i));
      for (const f of frames) link.send(f);
      await new Promise((r) => setTimeout(r, 50));
      for (const f of frames.slice(0, 3)) link.send(f);
      await new Promise((r) => setTimeout(r, 50));
      expect(calls).toEqual([`write ${framedLength(frames)}`, `write ${framedLength(frames.slice(0, 3))}`]);
      expect(received.map((f) => f.toString('hex'))).toEqual([...frames, ...frames.slice(0, 3)].map((f) => f.toString('hex')));
    } finally {
      await close();
    }
  });

  it('sends a burst larger than its write buffer in one corked write (one writev), each frame intact and in order', async () => {
    const { link, received, calls, close } = await linkWithClient();
    try {
      // 20 frames of 60 000 bytes: 1.2 MB, several of the link's 256 KiB buffers.
      const frames = Array.from({ length: 20 }, (_, i) => Buffer.alloc(60_000, i + 1));
      for (const f of frames) link.send(f);
      for (let i = 0; i < 100 && received.length < frames.length; i++) await new Promise((r) => setTimeout(r, 20));
      expect(calls[0]).toBe('cork');
      expect(calls.at(-1)).toBe('uncork');
      const written = calls.slice(1, -1);
      expect(written.length).toBeGreaterThan(1);
      expect(written.every((e) => e.startsWith('write '))).toBe(true);
      expect(written.reduce((n, e) => n + Number(e.slice(6)), 0)).toBe(framedLength(frames));
      expect(received.length).toBe(frames.length);
      expect(received.every((f, i) => f.equals(frames[i]))).toBe(true);
    } finally {
      await close();
    }
  });
});

/** A frame of `length` bytes whose content says which it is. */
function fill(frame: Uint8Array, tag: number): Uint8Array {
  for (let i = 0; i < frame.length; i++) frame[i] = (tag * 31 + i) & 0xff;
  return frame;
}

// The link builds the stack's frames in its own write buffer (allocFrame), so a frame sent in order
// needs no copy. Frames are not always sent in the order they were allocated (one waits for ARP),
// some are never sent, and a write may still be queued: whatever the order, every frame the client
// receives must be exactly the bytes that were sent, and nothing else.
describe('QemuStreamLink frames built in its write buffer', () => {
  let dir: string;
  let link: QemuStreamLink;
  let client: net.Socket;
  let rx: StreamClient;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-arena-'));
    const path = join(dir, 'q.sock');
    link = await QemuStreamLink.listen({ kind: 'unix', path });
    const connected = new Promise<void>((resolve) => link.on('log', (event) => event === 'client-connected' && resolve()));
    rx = await StreamClient.connect({ path });
    client = rx.socket;
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
    const got = await rx.waitFrames(3);
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
    const got = await rx.waitFrames(1 + 18 + 1);
    expect(got[0].equals(fill(new Uint8Array(400), 3))).toBe(true);
    for (let k = 0; k < 18; k++) expect(got[1 + k].equals(fill(new Uint8Array(60_000), 10 + k))).toBe(true);
    expect(got[19].equals(fill(new Uint8Array(200), 1))).toBe(true);
    expect(rx.frames.some((f) => f.length === lost.length)).toBe(false);
  });

  it('does not reuse the buffer under a frame still held when a burst is written', async () => {
    link.send(fill(link.allocFrame(100), 1));
    const held = fill(link.allocFrame(100), 2);
    await new Promise((r) => setImmediate(r)); // the burst with the first frame is written
    link.send(fill(link.allocFrame(500), 3)); // must not land on `held`
    link.send(held);
    const got = await rx.waitFrames(3);
    expect(got[0].equals(fill(new Uint8Array(100), 1))).toBe(true);
    expect(got[1].equals(fill(new Uint8Array(500), 3))).toBe(true);
    expect(got[2].equals(fill(new Uint8Array(100), 2))).toBe(true);
  });

  it('zeroes a reused buffer where the frame is not written: all of it, or the head it was asked to', async () => {
    link.send(link.allocFrame(1000).fill(0xff));
    await rx.waitFrames(1); // written: the next frames reuse the same bytes
    const whole = link.allocFrame(1000);
    expect([...whole].every((b) => b === 0)).toBe(true);
    const head = link.allocFrame(1000, 60); // the stack writes bytes 60… itself (a TCP payload)
    expect([...head.subarray(0, 60)].every((b) => b === 0)).toBe(true);
    link.send(whole);
    link.send(fill(head.subarray(60), 4) && head);
    const got = await rx.waitFrames(3);
    expect(got[1].equals(new Uint8Array(1000))).toBe(true);
    const expected = new Uint8Array(1000);
    fill(expected.subarray(60), 4);
    expect(got[2].equals(expected)).toBe(true);
  });

  it('reuses a buffer only once the socket has written it: a peer that stops reading still gets every frame intact', async () => {
    const allocUnsafe = vi.spyOn(Buffer, 'allocUnsafe');
    try {
      client.pause(); // the socket queues what the kernel cannot take
      const sent: number[] = [];
      for (let round = 0; round < 12; round++) {
        for (let i = 0; i < 5; i++) {
          const tag = round * 5 + i;
          link.send(fill(link.allocFrame(60_000), tag));
          sent.push(tag);
        }
        await new Promise((r) => setImmediate(r));
      }
      client.resume();
      const got = await rx.waitFrames(sent.length);
      for (const [k, tag] of sent.entries()) expect(got[k].equals(fill(new Uint8Array(60_000), tag)), `frame ${k}`).toBe(true);
      // Once written, the buffers come back: a further 60 frames (15 buffers' worth) need no new ones.
      const before = allocUnsafe.mock.calls.filter(([n]) => n === 256 * 1024).length;
      for (let round = 0; round < 12; round++) {
        for (let i = 0; i < 5; i++) link.send(fill(link.allocFrame(60_000), 100 + round * 5 + i));
        await rx.waitFrames(sent.length + (round + 1) * 5);
      }
      expect(allocUnsafe.mock.calls.filter(([n]) => n === 256 * 1024).length - before).toBeLessThanOrEqual(1);
      const more = rx.frames.slice(sent.length);
      for (let k = 0; k < 60; k++) expect(more[k].equals(fill(new Uint8Array(60_000), 100 + k)), `later frame ${k}`).toBe(true);
    } finally {
      allocUnsafe.mockRestore();
    }
  });

  it('takes frames from elsewhere too (copied), between frames built in place', async () => {
    const a = fill(link.allocFrame(128), 1);
    const outside = fill(new Uint8Array(90), 2);
    link.send(outside); // a reservation (a) lies ahead: goes to a fresh buffer
    link.send(a); // now out of order: copied
    const b = fill(link.allocFrame(70), 3);
    link.send(b);
    const got = await rx.waitFrames(3);
    expect(got.map((f) => f.length)).toEqual([90, 128, 70]);
    expect(got[0].equals(fill(new Uint8Array(90), 2))).toBe(true);
    expect(got[1].equals(fill(new Uint8Array(128), 1))).toBe(true);
    expect(got[2].equals(fill(new Uint8Array(70), 3))).toBe(true);
  });

  // sendGathered: the stack's long TCP payloads, sent from its send buffer after a head built here.
  it('sends a frame in two parts as one frame, in order with whole frames, across buffers and a paused peer', async () => {
    client.pause();
    const expected: Uint8Array[] = [];
    for (let round = 0; round < 8; round++) {
      for (let i = 0; i < 6; i++) {
        const tag = round * 6 + i;
        if (i % 3 === 2) {
          const whole = fill(link.allocFrame(700 + tag), tag);
          link.send(whole);
          expected.push(new Uint8Array(whole)); // a copy: the link's buffer is reused
        } else {
          const head = fill(link.allocFrame(54 + (tag % 3) * 4), tag);
          const payload = fill(new Uint8Array(30_000 + tag * 11).subarray(tag % 2), tag + 100); // odd offsets too
          link.sendGathered(head, payload);
          const joined = new Uint8Array(head.length + payload.length);
          joined.set(head);
          joined.set(payload, head.length);
          expected.push(joined);
        }
      }
      await new Promise((r) => setImmediate(r));
    }
    // A head that waited (as for ARP) behind later frames is copied, and its payload still follows it.
    const late = fill(link.allocFrame(66), 200);
    link.send(fill(link.allocFrame(80), 201));
    expected.push(fill(new Uint8Array(80), 201));
    const latePayload = fill(new Uint8Array(5000), 202);
    link.sendGathered(late, latePayload);
    expected.push(Buffer.concat([late, latePayload]));
    client.resume();
    const got = await rx.waitFrames(expected.length);
    expect(got.length).toBe(expected.length);
    for (const [k, frame] of expected.entries()) expect(got[k].equals(frame), `frame ${k}`).toBe(true);
    expect(link.drops()).toEqual({});
  });
});
