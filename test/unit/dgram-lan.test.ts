// `weft vm --dgram` with several QEMU peers on one LAN, spoken to as QEMU's `-netdev dgram` does
// (one Ethernet frame per UDP datagram on loopback): one local port for several listed peers
// (`--dgram LPORT:RPORT1,RPORT2`), and one port per peer (`--dgram L1:R1 --dgram L2:R2`). Runs the
// built CLI; needs no root.

import dgram from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';
import { freeUdpPorts } from '../support/test-servers';

const MAC_A = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B = [0x02, 0, 0, 0, 0, 0x0b];
const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

/** A broadcast "who has 10.0.2.2? tell 10.0.2.15" from `from`. */
function arpRequest(from: number[]): Buffer {
  const f = Buffer.alloc(60);
  f.set(BROADCAST, 0);
  f.set(from, 6);
  f.writeUInt16BE(0x0806, 12);
  f.set([0, 1, 8, 0, 6, 4, 0, 1], 14);
  f.set(from, 22);
  f.set([10, 0, 2, 15], 28);
  f.set([10, 0, 2, 2], 38);
  return f;
}

/** A guest-to-guest frame (an experimental ethertype) whose first payload byte is `tag`. */
function ethFrame(dst: number[], src: number[], tag: number): Buffer {
  const f = Buffer.alloc(60);
  f.set(dst, 0);
  f.set(src, 6);
  f.writeUInt16BE(0x88b5, 12);
  f[14] = tag;
  return f;
}

const isArpReplyTo = (f: Buffer, to: number[]) => f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 2 && f.subarray(0, 6).equals(Buffer.from(to));

/** A QEMU stand-in: a UDP socket on 127.0.0.1:port that sends to weft's port and keeps what comes. */
class Peer {
  readonly frames: Buffer[] = [];
  private waiters: Array<() => void> = [];

  private constructor(
    readonly socket: dgram.Socket,
    private readonly weftPort: number,
  ) {
    socket.on('message', (m) => {
      this.frames.push(m);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  static async bind(port: number, weftPort: number): Promise<Peer> {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind(port, '127.0.0.1', r));
    return new Peer(s, weftPort);
  }

  send(frame: Buffer): void {
    this.socket.send(frame, this.weftPort, '127.0.0.1');
  }

  /** Resolves with the first frame (from those not yet taken) that matches. */
  next(match: (f: Buffer) => boolean, timeoutMs = 5000): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no matching frame within ${timeoutMs} ms (got ${this.frames.length})`)), timeoutMs);
      const check = () => {
        const i = this.frames.findIndex(match);
        if (i >= 0) {
          clearTimeout(timer);
          resolve(this.frames.splice(i, 1)[0]);
        } else this.waiters.push(check);
      };
      check();
    });
  }

  close(): void {
    this.socket.close();
  }
}

describe('weft vm --dgram with several peers on one LAN', () => {
  let weft: WeftProcess | undefined;
  const peers: Peer[] = [];

  afterEach(async () => {
    for (const p of peers.splice(0)) p.close();
    if (weft && !weft.exit) {
      weft.kill('SIGKILL');
      await weft.waitForExit();
    }
    weft = undefined;
  });

  async function stop(w: WeftProcess): Promise<Record<string, unknown>> {
    w.kill('SIGTERM');
    const exit = await w.waitForExit(5000);
    expect(exit.code, w.stderr).toBe(0);
    return w.events.find((e) => e.event === 'stopped') as Record<string, unknown>;
  }

  /** Two guests that talk: each gets weft's ARP answer, sees the other's broadcast, and gets its unicast. */
  async function expectOneLan(a: Peer, b: Peer): Promise<void> {
    a.send(arpRequest(MAC_A));
    await a.next((f) => isArpReplyTo(f, MAC_A));
    await b.next((f) => f.equals(arpRequest(MAC_A)));
    b.send(arpRequest(MAC_B));
    await b.next((f) => isArpReplyTo(f, MAC_B));
    await a.next((f) => f.equals(arpRequest(MAC_B)));
    b.send(ethFrame(MAC_A, MAC_B, 7));
    await a.next((f) => f[14] === 7 && f.readUInt16BE(12) === 0x88b5);
    a.send(ethFrame(MAC_B, MAC_A, 8));
    await b.next((f) => f[14] === 8 && f.readUInt16BE(12) === 0x88b5);
    expect(a.frames.filter((f) => f.readUInt16BE(12) === 0x0806 && f.readUInt16BE(20) === 2)).toEqual([]);
  }

  it('LPORT:RPORT1,RPORT2: one port of weft for two peers, one LAN; a sender not listed is dropped and counted', async () => {
    const [weftPort, portA, portB, strangerPort] = await freeUdpPorts(4);
    weft = spawnWeft(['vm', '--dgram', `${weftPort}:${portA},${portB}`]);
    const ready = await weft.waitForEvent('ready');
    expect(ready).toMatchObject({ link: 'lan', ports: [{ remote: `127.0.0.1:${portA}` }, { remote: `127.0.0.1:${portB}` }] });
    const a = await Peer.bind(portA, weftPort);
    const b = await Peer.bind(portB, weftPort);
    const stranger = await Peer.bind(strangerPort, weftPort);
    peers.push(a, b, stranger);

    await expectOneLan(a, b);
    stranger.send(arpRequest([0x02, 0, 0, 0, 0, 0x66]));
    stranger.send(ethFrame(MAC_A, [0x02, 0, 0, 0, 0, 0x66], 9));
    // Nothing of the stranger's reaches the guests or weft (no answer comes back to it either).
    a.send(ethFrame(MAC_B, MAC_A, 10));
    await b.next((f) => f[14] === 10);
    await new Promise((r) => setTimeout(r, 200));
    expect(stranger.frames).toEqual([]);
    expect(a.frames.filter((f) => f[14] === 9)).toEqual([]);
    const stopped = await stop(weft);
    expect(stopped.linkDrops).toMatchObject({ 'port0-dgram-unknown-peer': 2 });
  });

  it('--dgram L1:R1 --dgram L2:R2: a port of weft per peer, one LAN', async () => {
    const [weftA, weftB, portA, portB] = await freeUdpPorts(4);
    weft = spawnWeft(['vm', '--dgram', `${weftA}:${portA}`, '--dgram', `${weftB}:${portB}`]);
    expect(await weft.waitForEvent('ready')).toMatchObject({ link: 'lan' });
    const a = await Peer.bind(portA, weftA);
    const b = await Peer.bind(portB, weftB);
    peers.push(a, b);
    await expectOneLan(a, b);
    const stopped = await stop(weft);
    expect(stopped.linkStats).toMatchObject({ macsLearned: 2, macsEvicted: 0 });
  });

  it('refuses a repeated remote port, and --max-guests without --qemu', async () => {
    for (const args of [
      ['--dgram', '5000:5001,5001'],
      ['--dgram', '5000:5001', '--max-guests', '4'],
    ]) {
      const w = spawnWeft(['vm', ...args]);
      const exit = await w.waitForExit(5000);
      expect(exit.code, w.stderr).toBe(2);
    }
  });
});
