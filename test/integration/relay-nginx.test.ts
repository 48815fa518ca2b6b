// The reference deployment (deploy/nginx/weft-relay.conf) with the real nginx from Debian: TLS with
// a self-signed certificate, two relay instances (one with --workers 2), clients through wss://.
// weft's own client and wisp-js echo through it; the per-IP limit holds through the proxy with
// --trust-proxy; an instance stopped mid-transfer (a rolling restart, and a crash) costs its own
// clients a reconnect — through nginx to the other instance — and nobody else anything.

import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FlowMeta, TcpStream } from '../../core/upstream';
import { parseIpv4 } from '../../core/wire/address';
import { encodeConnect, encodeData, type WispPacket } from '../../core/wisp/wisp-codec';
import { WispUpstream } from '../../node-host/wisp-upstream';
import { connectWsTransport } from '../../node-host/ws-transport';
import { startNginxSite, type NginxSite } from '../harness/nginx-site';
import { spawnWeft } from '../harness/weft-process';
import { missingCommands } from '../harness/guest-tools';
import { RawWispClient, startRelay, tcpServer, wispJsConnect, wispJsRoundTrip, type RunningRelay, type TestServer } from './relay-support';

const missing = missingCommands(['nginx', 'openssl']);
if (missing.length > 0) console.log(`relay-nginx: skipped, missing ${missing.join(', ')} (apt-get install nginx openssl)`);

async function until(ok: () => boolean | Promise<boolean>, what: string, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await ok())) {
    if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** WebSocket clients an instance serves now, over all its workers. */
async function clientsOf(relay: RunningRelay): Promise<number> {
  const text = await (await fetch(`${relay.http}/metrics`)).text();
  return text
    .split('\n')
    .filter((l) => l.startsWith('weft_relay_clients'))
    .reduce((n, l) => n + Number(l.split(' ').pop()), 0);
}

/** A server that sends bytes as fast as the reader takes them, until the connection closes. */
async function firehose(): Promise<TestServer> {
  const chunk = Buffer.alloc(64 * 1024, 0x5a);
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    const pump = () => {
      while (!s.destroyed && s.write(chunk));
    };
    s.on('drain', pump);
    pump();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: 0,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

const loopback = parseIpv4('127.0.0.1');
const meta = (port: number): FlowMeta => ({
  protocol: 'tcp',
  guest: { ip: parseIpv4('10.0.2.15'), port: 40000 + (port % 1000) },
  target: { ip: loopback, port },
});

/** One echo through weft's own client. */
function upstreamEcho(up: WispUpstream, port: number, text: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const stream = up.openTcp({ ip: loopback, port }, meta(port), {
      onConnect: () => stream.write(Buffer.from(text)),
      onData: (d) => {
        resolve(Buffer.from(d).toString());
        stream.end();
      },
      onEnd: () => {},
      onDrain: () => {},
      onClose: (e) => reject(new Error(`closed: ${e?.kind ?? 'cleanly'}`)),
    });
  });
}

describe.skipIf(missing.length > 0)('behind nginx (deploy/nginx/weft-relay.conf)', () => {
  let nginx: NginxSite | undefined;
  let port: number;
  let relays: RunningRelay[] = [];
  let echo: TestServer;
  let hose: TestServer;
  const wss = () => `wss://127.0.0.1:${port}/wisp/`;
  const relayArgs = ['--allow-loopback', '--trust-proxy', '127.0.0.1', '--max-clients-per-ip', '2'];
  let savedTlsSetting: string | undefined;

  beforeAll(async () => {
    echo = await tcpServer('echo');
    hose = await firehose();
    relays = [await startRelay(['--workers', '2', ...relayArgs]), await startRelay(relayArgs)];
    nginx = await startNginxSite([relays[0].port, relays[1].port]);
    port = nginx.port;
    // The certificate is self-signed for this test; TLS is still negotiated end to end.
    savedTlsSetting = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    process.env.NODE_TLS_REJECT_UNAUTHORIZED = '0';
  });

  afterAll(async () => {
    if (savedTlsSetting === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    else process.env.NODE_TLS_REJECT_UNAUTHORIZED = savedTlsSetting;
    await nginx?.stop();
    for (const r of relays) await r.stop();
    await echo?.close();
    await hose?.close();
  });

  it("serves wisp-js and weft's own client over wss://, and /healthz", async () => {
    const health = await fetch(`https://127.0.0.1:${port}/healthz`);
    expect(health.status).toBe(200);
    expect((await fetch(`https://127.0.0.1:${port}/metrics`)).status, '/metrics stays off the public side').toBe(404);
    const conn = await wispJsConnect(wss(), { wisp_version: 2 });
    const r = await wispJsRoundTrip(conn, '127.0.0.1', echo.port, Buffer.from('through nginx'));
    expect('data' in r && Buffer.from(r.data).toString()).toBe('through nginx');
    conn.close();
    const up = new WispUpstream({ url: wss(), connect: connectWsTransport });
    try {
      expect(await upstreamEcho(up, echo.port, 'weft through nginx')).toBe('weft through nginx');
    } finally {
      up.close();
    }
  });

  it('--trust-proxy: the per-IP limit counts the client behind nginx, not nginx', async () => {
    const open: RawWispClient[] = [];
    const status = async (from: string) => {
      try {
        const c = await RawWispClient.open(wss(), [], {}, from);
        open.push(c);
        return 101;
      } catch (e) {
        return (e as { status?: number }).status ?? -1;
      }
    };
    try {
      expect(await status('127.0.0.2')).toBe(101);
      expect(await status('127.0.0.2')).toBe(101);
      // nginx passes the relay's refusal on (both instances refuse: the hash pins 127.0.0.2 to one).
      expect(await status('127.0.0.2')).toBe(503);
      // Another client behind the same proxy still gets in (without --trust-proxy it would not:
      // every client would be nginx's 127.0.0.1).
      expect(await status('127.0.0.3')).toBe(101);
      expect(await status('127.0.0.3')).toBe(101);
      const rejected = relays.flatMap((r) => r.proc.events.filter((e) => e.event === 'upgrade-rejected').map((e) => e.client));
      expect(rejected).toEqual(['127.0.0.2']);
    } finally {
      for (const c of open) c.close();
    }
  });

  for (const how of ['SIGTERM', 'SIGKILL'] as const) {
    it(`an instance stopped mid-transfer (${how === 'SIGTERM' ? 'rolling restart' : 'crash'}): its clients reconnect through nginx to the other; the other's clients are undisturbed`, async () => {
      // Clients from several addresses, so both instances have some.
      const bystanders: RawWispClient[] = [];
      for (let i = 0; i < 16; i++) bystanders.push(await RawWispClient.open(wss(), [], {}, `127.0.1.${i + 1}`));
      // An instance restarted by the previous case is out of nginx's rotation for its fail_timeout
      // (5 s): add clients until both instances have some.
      for (let i = 17; (await Promise.all(relays.map(clientsOf))).some((n) => n === 0); i++) {
        if (i > 60) throw new Error('nginx sends every client to one instance');
        await new Promise((r) => setTimeout(r, 250));
        bystanders.push(await RawWispClient.open(wss(), [], {}, `127.0.1.${i}`));
      }
      const up = new WispUpstream({ url: wss(), connect: connectWsTransport, backoffMs: { initial: 100, max: 1000 } });
      let transfer: TcpStream | undefined;
      try {
        // weft's client mid-transfer: a stream that never ends on its own.
        let received = 0;
        const cut = new Promise<string>((resolve) => {
          transfer = up.openTcp({ ip: loopback, port: hose.port }, meta(hose.port), {
            onConnect: () => {},
            onData: (d) => {
              received += d.length;
            },
            onEnd: () => resolve('end'),
            onDrain: () => {},
            onClose: (e) => resolve(e?.kind ?? 'closed'),
          });
        });
        await until(() => received > 4 << 20, '4 MiB of the transfer', 10_000);
        const counts = await Promise.all(relays.map(clientsOf));
        // The instance serving weft's client, which connects from 127.0.0.1.
        const victimIndex = instanceOf127001(relays);
        const victim = relays[victimIndex];
        const survivorIndex = 1 - victimIndex;
        const survivorCount = counts[survivorIndex];
        const t0 = performance.now();
        victim.proc.kill(how);
        // The transfer is cut (it cannot move to another instance: its destination socket was there).
        expect(await Promise.race([cut, new Promise<string>((r) => setTimeout(() => r('still running'), 8000))])).not.toBe('still running');
        // A new transfer works within seconds, through nginx to the surviving instance.
        let reply: string | undefined;
        await until(
          async () => {
            reply = await upstreamEcho(up, echo.port, 'after the restart').catch(() => undefined);
            return reply !== undefined;
          },
          'an echo after the instance went away',
          10_000,
        );
        expect(reply).toBe('after the restart');
        expect(performance.now() - t0).toBeLessThan(10_000);
        // The survivor's own clients were never cut, and still work.
        const alive = bystanders.filter((c) => c.closeCode === undefined);
        expect(survivorCount).toBeGreaterThan(0);
        expect(alive.length).toBe(survivorCount);
        for (const [i, c] of alive.entries()) {
          c.send(encodeConnect(1, 1, echo.port, '127.0.0.1'));
          c.send(encodeData(1, Buffer.from(`bystander ${i}`)));
          const back = await c.waitFor((p: WispPacket) => p.type === 'data' && p.streamId === 1, `bystander ${i}`);
          expect(back.type === 'data' && Buffer.from(back.payload).toString()).toBe(`bystander ${i}`);
        }
      } finally {
        transfer?.destroy();
        up.close();
        for (const c of bystanders) c.close();
        // Bring the instance back for the next case, on the same port nginx knows.
        await restartInstance(relays);
      }
    });
  }
});

/** Which relay serves a client from 127.0.0.1: the one whose client-ready lines name it last. */
function instanceOf127001(relays: RunningRelay[]): number {
  const last = relays.map((r) => {
    const lines = r.proc.events.filter((e) => e.event === 'client-ready' && String(e.client).startsWith('127.0.0.1:'));
    return lines.length > 0 ? Date.parse(String(lines[lines.length - 1].time)) : -1;
  });
  return last[0] >= last[1] ? 0 : 1;
}

/** Starts a stopped instance again on its old port (nginx's upstream list names the port). */
async function restartInstance(relays: RunningRelay[]): Promise<void> {
  for (let i = 0; i < relays.length; i++) {
    const r = relays[i];
    if (r.proc.child.exitCode === null && r.proc.child.signalCode === null) continue;
    await r.proc.waitForExit(6000).catch(() => undefined);
    const proc = spawnWeft([
      'relay',
      '--listen',
      `127.0.0.1:${r.port}`,
      ...(i === 0 ? ['--workers', '2'] : []),
      '--allow-loopback',
      '--trust-proxy',
      '127.0.0.1',
      '--max-clients-per-ip',
      '2',
    ]);
    await proc.waitForEvent('ready');
    relays[i] = {
      ...r,
      proc,
      async stop() {
        proc.kill('SIGTERM');
        await proc.waitForExit(6000).catch(() => proc.kill('SIGKILL'));
      },
    };
  }
}
