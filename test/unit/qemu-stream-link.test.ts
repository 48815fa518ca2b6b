// `weft vm --qemu unix:PATH|tcp:HOST:PORT` spoken to the way QEMU's `-netdev stream` does:
// 4-byte big-endian length + Ethernet frame, both ways. Runs the built CLI; needs no root.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';

const GUEST_MAC = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];
const GUEST_IP = [10, 0, 2, 15];
const GATEWAY_IP = [10, 0, 2, 2];
const GATEWAY_MAC = '52:55:0a:00:02:02';

/** A broadcast ARP request "who has 10.0.2.2? tell 10.0.2.15", padded to 60 bytes. */
function arpRequest(): Buffer {
  const f = Buffer.alloc(60);
  f.fill(0xff, 0, 6);
  f.set(GUEST_MAC, 6);
  f.writeUInt16BE(0x0806, 12);
  f.writeUInt16BE(1, 14); // Ethernet
  f.writeUInt16BE(0x0800, 16); // IPv4
  f[18] = 6;
  f[19] = 4;
  f.writeUInt16BE(1, 20); // request
  f.set(GUEST_MAC, 22);
  f.set(GUEST_IP, 28);
  f.set(GATEWAY_IP, 38);
  return f;
}

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

function expectArpReply(f: Buffer): void {
  expect(f.length).toBeGreaterThanOrEqual(42);
  expect(mac(f, 0)).toBe(mac(Buffer.from(GUEST_MAC), 0));
  expect(mac(f, 6)).toBe(GATEWAY_MAC);
  expect(f.readUInt16BE(12)).toBe(0x0806);
  expect(f.readUInt16BE(20)).toBe(2); // reply
  expect(mac(f, 22)).toBe(GATEWAY_MAC);
  expect(ip(f, 28)).toBe('10.0.2.2');
  expect(mac(f, 32)).toBe(mac(Buffer.from(GUEST_MAC), 0));
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
    replies.forEach(expectArpReply);
    await stop(weft);
  });

  it('refuses a second client while one is connected, and takes the next one after it leaves', async () => {
    const path = socketPath();
    weft = spawnWeft(['vm', '--qemu', `unix:${path}`]);
    await weft.waitForEvent('ready');
    const first = await connect({ path });
    await weft.waitForEvent('client-connected');

    const second = await connect({ path });
    await second.waitClosed();
    await weft.waitForEvent('client-refused');

    first.close();
    await weft.waitForEvent('client-disconnected');
    const third = await connect({ path });
    third.socket.write(framed(arpRequest()));
    expectArpReply((await third.waitFrames(1))[0]);
    await stop(weft);
  });

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

describe('QemuStreamLink writes', () => {
  it('sends the frames of one burst in one write, each intact and in order, and later bursts reuse the buffer', async () => {
    const { QemuStreamLink, StreamFrameDecoder } = await import('../../node-host/links/qemu-stream-link');
    const dir = mkdtempSync(join(tmpdir(), 'weft-stream-'));
    const path = join(dir, 'link.sock');
    const link = await QemuStreamLink.listen({ kind: 'unix', path });
    const writes: number[] = [];
    const write = net.Socket.prototype.write;
    try {
      const client = net.connect(path);
      await new Promise((r) => client.once('connect', r));
      await new Promise((r) => setTimeout(r, 50)); // the link accepts it
      const received: Buffer[] = [];
      const decoder = new StreamFrameDecoder();
      client.on('data', (chunk: Buffer) => decoder.push(chunk, (f) => received.push(Buffer.from(f))));
      net.Socket.prototype.write = function (this: net.Socket, ...args: Parameters<typeof write>) {
        if (this !== client) writes.push((args[0] as Uint8Array).length);
        return write.apply(this, args);
      } as typeof write;
      const frames = Array.from({ length: 40 }, (_, i) => Buffer.alloc(60 + i * 37, i));
      for (const f of frames) link.send(f);
      await new Promise((r) => setTimeout(r, 50));
      for (const f of frames.slice(0, 3)) link.send(f);
      await new Promise((r) => setTimeout(r, 50));
      expect(writes).toEqual([frames.reduce((n, f) => n + 4 + f.length, 0), frames.slice(0, 3).reduce((n, f) => n + 4 + f.length, 0)]);
      expect(received.map((f) => f.toString('hex'))).toEqual([...frames, ...frames.slice(0, 3)].map((f) => f.toString('hex')));
      client.destroy();
    } finally {
      net.Socket.prototype.write = write;
      await link.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
