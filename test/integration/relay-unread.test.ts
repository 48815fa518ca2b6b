// A client that sends requests the relay answers itself (CONNECTs it refuses) and never reads the
// answers must not grow the relay's memory: the relay stops reading that client once its unsent
// answers pass a bound, and closes it (1008) if they pass a second. It once queued every answer:
// 20 MiB of CONNECTs took its RSS up by 720 MiB, ~114 MiB aborted it (heap out of memory), taking
// every client with it. A well-behaved client on the same relay keeps working throughout.

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { encodeConnect, StreamType } from '../../core/wisp/wisp-codec';
import { startRelay, tcpServer, wispJsConnect, wispJsRoundTrip, type RunningRelay, type TestServer } from './relay-support';

/** CONNECT bytes the abuser offers the relay: twice what once cost the relay 720 MiB. */
const OFFERED_BYTES = 40 * 1024 * 1024;
/** How much the relay's RSS may grow while it is abused. */
const RSS_GROWTH_LIMIT_MIB = 200;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

describe.skipIf(process.platform !== 'linux')('a client that never reads its answers', () => {
  let relay: RunningRelay;
  let echo: TestServer;

  beforeAll(async () => {
    // --rate 0: no CONNECT rate limit, so every CONNECT is answered (refused: port 1 on loopback).
    relay = await startRelay(['--allow-loopback', '--rate', '0']);
    echo = await tcpServer('echo');
  });
  afterAll(async () => {
    await relay?.stop();
    await echo?.close();
  });

  it('is no longer read (or is closed) while the relay stays small and serves others', { timeout: 120_000 }, async () => {
    const pid = relay.proc.pid as number;
    const before = rssMiB(pid);
    // A zero mask spares this process the masking work (a real abuser has a machine of its own).
    const abuser = new WebSocket(relay.wisp, { perMessageDeflate: false, generateMask: (m) => m.fill(0) });
    let closeCode: number | undefined;
    abuser.on('close', (code) => (closeCode = code));
    abuser.on('error', () => {});
    await new Promise<void>((resolve, reject) => {
      abuser.once('open', () => resolve());
      abuser.once('error', reject);
    });
    abuser.pause(); // never reads again

    // One CONNECT per message (each one is answered with a CLOSE), in corked batches.
    let id = 1;
    let offered = 0;
    let maxRss = before;
    const started = Date.now();
    let stalledSince: number | undefined;
    const socket = (abuser as unknown as { _socket: import('node:net').Socket })._socket;
    // Until all is offered, the abuser is closed, or the relay has read nothing for 3 s.
    while (
      offered < OFFERED_BYTES &&
      closeCode === undefined &&
      Date.now() - started < 60_000 &&
      (stalledSince === undefined || Date.now() - stalledSince < 3000)
    ) {
      // Keep at most 8 MiB queued here: what the relay does not read stays on this side.
      if (abuser.bufferedAmount < 8 * 1024 * 1024) {
        socket.cork();
        for (let i = 0; i < 10_000; i++, id++) {
          const c = encodeConnect(id, StreamType.TCP, 1, '127.0.0.1');
          abuser.send(c);
          offered += c.length;
        }
        socket.uncork();
        await new Promise((r) => setImmediate(r));
        stalledSince = undefined;
      } else {
        stalledSince ??= Date.now();
        await new Promise((r) => setTimeout(r, 20));
      }
      maxRss = Math.max(maxRss, rssMiB(pid));
    }
    for (let i = 0; i < 20 && closeCode === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      maxRss = Math.max(maxRss, rssMiB(pid));
    }
    const taken = offered - abuser.bufferedAmount;
    console.log(
      `abuser offered ${(offered / 2 ** 20).toFixed(0)} MiB of CONNECTs, the relay took ~${(taken / 2 ** 20).toFixed(1)} MiB; ` +
        `relay RSS ${before.toFixed(0)} → max ${maxRss.toFixed(0)} MiB; abuser closed with ${closeCode ?? 'nothing (still stopped)'}`,
    );

    expect(relay.proc.exit, 'the relay is still running').toBeUndefined();
    expect(maxRss - before, 'relay RSS growth (MiB)').toBeLessThan(RSS_GROWTH_LIMIT_MIB);
    // Either the relay closed it for not reading, or it stopped reading it (what it sent stays here).
    expect(closeCode === 1008 || abuser.bufferedAmount > 0, `closed with ${closeCode}, ${abuser.bufferedAmount} bytes unsent`).toBe(true);

    // Meanwhile a well-behaved client works as before.
    const conn = await wispJsConnect(relay.wisp);
    const payload = new Uint8Array(100_000).fill(7);
    const r = await wispJsRoundTrip(conn, '127.0.0.1', echo.port, payload);
    expect('data' in r && r.data.length).toBe(payload.length);
    conn.close();
    abuser.terminate();
  });
});
