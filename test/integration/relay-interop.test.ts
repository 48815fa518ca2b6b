// Interop with real peers over real sockets: the wisp-js client against `weft relay` (v1 and v2,
// TCP and UDP echo, password auth), and weft's WispUpstream against the wisp-js server (v1, v2)
// and against `weft relay` (open confirmation, refusals, reconnect after the relay dies).

import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { extensions as wispExtensions } from '@mercuryworkshop/wisp-js/client';
import { logging as wispLogging, server as wispServer } from '@mercuryworkshop/wisp-js/server';
import { UpstreamError, type FlowMeta, type TcpStream } from '../../core/upstream';
import { parseIpv4 } from '../../core/wire/address';
import { connectWsTransport } from '../../node-host/ws-transport';
import { WispUpstream } from '../../node-host/wisp-upstream';
import { startRelay, tcpServer, udpEchoServer, withTimeout, wispJsConnect, wispJsRoundTrip, type RunningRelay, type TestServer } from './relay-support';

const LOOPBACK = parseIpv4('127.0.0.1');
const META: FlowMeta = {
  protocol: 'tcp',
  guest: { ip: parseIpv4('10.0.2.15'), port: 40000 },
  target: { ip: LOOPBACK, port: 0 },
};
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

let echo: TestServer;
let udpEcho: TestServer;
beforeAll(async () => {
  wispLogging.set_level(wispLogging.NONE);
  echo = await tcpServer('echo');
  udpEcho = await udpEchoServer();
});
afterAll(async () => {
  await echo.close();
  await udpEcho.close();
});

describe('wisp-js client → weft relay', () => {
  let relay: RunningRelay;
  beforeAll(async () => {
    relay = await startRelay(['--allow-loopback']);
  });
  afterAll(() => relay.stop());

  it.each([1, 2] as const)('echoes TCP over Wisp v%i', async (version) => {
    const conn = await wispJsConnect(relay.wisp, { wisp_version: version });
    expect(conn.wisp_version).toBe(version);
    const payload = randomBytes(300_000);
    const r = await wispJsRoundTrip(conn, '127.0.0.1', echo.port, payload);
    expect('data' in r && sha(r.data)).toBe(sha(payload));
    conn.close();
  });

  it('echoes UDP over Wisp v2', async () => {
    const conn = await wispJsConnect(relay.wisp, { wisp_version: 2 });
    const r = await wispJsRoundTrip(conn, '127.0.0.1', udpEcho.port, Buffer.from('ping over udp'), 'udp');
    expect('data' in r && Buffer.from(r.data).toString()).toBe('ping over udp');
    conn.close();
  });

  it('reports a refused connection with 0x44', async () => {
    const closed = await tcpServer();
    const port = closed.port;
    await closed.close();
    const conn = await wispJsConnect(relay.wisp, { wisp_version: 1 });
    expect(await wispJsRoundTrip(conn, '127.0.0.1', port, Buffer.from('x'))).toEqual({ closed: 0x44 });
    conn.close();
  });
});

describe('wisp-js client → weft relay --password', () => {
  let relay: RunningRelay;
  beforeAll(async () => {
    relay = await startRelay(['--allow-loopback', '--password', 'alice:s3cret']);
  });
  afterAll(() => relay.stop());

  const withPassword = (password: string) => ({
    wisp_version: 2 as const,
    wisp_extensions: [
      new wispExtensions.UDPExtension({ client_config: {} }),
      new wispExtensions.PasswordAuthExtension({ client_config: { username: 'alice', password } }),
    ],
  });

  it('lets a client with the right password through', async () => {
    const conn = await wispJsConnect(relay.wisp, withPassword('s3cret'));
    const r = await wispJsRoundTrip(conn, '127.0.0.1', echo.port, Buffer.from('authenticated'));
    expect('data' in r && Buffer.from(r.data).toString()).toBe('authenticated');
    conn.close();
  });

  it('turns away a wrong password and a v1 client', async () => {
    await expect(wispJsConnect(relay.wisp, withPassword('wrong'))).rejects.toThrow();
    await expect(wispJsConnect(relay.wisp, { wisp_version: 1 })).rejects.toThrow();
    await relay.proc.waitForEvent('client-error', (e) => e.code === 'auth-failed');
  });

  it('lets one address guess a few times at once, then once a second (even the right password waits)', async () => {
    const fresh = await startRelay(['--allow-loopback', '--password', 'alice:s3cret']);
    try {
      for (let i = 0; i < 6; i++) await expect(wispJsConnect(fresh.wisp, withPassword(`guess${i}`))).rejects.toThrow();
      // The five tries of the burst are spent: the right password is not even checked now.
      await expect(wispJsConnect(fresh.wisp, withPassword('s3cret'))).rejects.toThrow();
      await new Promise((r) => setTimeout(r, 1200)); // one try comes back a second later
      (await wispJsConnect(fresh.wisp, withPassword('s3cret'))).close();
      const metrics = await (await fetch(`${fresh.http}/metrics`)).text();
      expect(Number(/^weft_relay_connection_errors_total\{code="password-tries-throttled"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
    } finally {
      await fresh.stop();
    }
  });
});

/** Opens a TCP flow and collects what happens to it. */
function flow(up: WispUpstream, port: number) {
  const chunks: Buffer[] = [];
  let onBytes = () => {};
  let drained = () => {};
  let connected!: () => void;
  let closed!: (e: UpstreamError | undefined) => void;
  const state = {
    connected: new Promise<void>((r) => (connected = r)),
    closed: new Promise<UpstreamError | undefined>((r) => (closed = r)),
    ended: false,
    stream: undefined as unknown as TcpStream,
    bytes: () => Buffer.concat(chunks),
    waitBytes(n: number) {
      return withTimeout(
        new Promise<void>((resolve) => {
          onBytes = () => {
            if (state.bytes().length >= n) resolve();
          };
          onBytes();
        }),
        20_000,
        `${n} bytes`,
      );
    },
    waitDrain: () => new Promise<void>((r) => (drained = r)),
  };
  state.stream = up.openTcp(
    { ip: LOOPBACK, port },
    { ...META, target: { ip: LOOPBACK, port } },
    {
      onConnect: () => connected(),
      onData: (d) => {
        chunks.push(Buffer.from(d));
        onBytes();
      },
      onEnd: () => (state.ended = true),
      onDrain: () => drained(),
      onClose: (e) => closed(e),
    },
  );
  return state;
}

/** Writes `payload` in `piece`-sized writes, honouring write() === false. */
async function writeAll(f: ReturnType<typeof flow>, payload: Uint8Array, piece: number): Promise<void> {
  for (let off = 0; off < payload.length; off += piece) {
    if (!f.stream.write(payload.subarray(off, off + piece))) await withTimeout(f.waitDrain(), 10_000, 'onDrain');
  }
}

describe('weft WispUpstream → wisp-js server', () => {
  let server: http.Server;
  let port: number;
  let up: WispUpstream | undefined;
  beforeAll(async () => {
    wispServer.options.allow_loopback_ips = true;
    server = http.createServer((_req, res) => res.end());
    server.on('upgrade', (req, socket: net.Socket, head) => wispServer.routeRequest(req, socket, head));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
  });
  afterEach(() => up?.close());
  afterAll(async () => {
    wispServer.options.wisp_version = 2;
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });

  it.each([1, 2] as const)('echoes 1 MiB in 1000-byte writes with wisp-js speaking v%i, within credits', async (version) => {
    wispServer.options.wisp_version = version;
    up = new WispUpstream({ url: `ws://127.0.0.1:${port}/`, connect: connectWsTransport });
    const f = flow(up, echo.port);
    await withTimeout(f.connected, 5000, 'onConnect');
    const payload = randomBytes(1024 * 1024);
    await writeAll(f, payload, 1000);
    await f.waitBytes(payload.length);
    expect(sha(f.bytes())).toBe(sha(payload));
    f.stream.destroy();
  });
});

describe('weft WispUpstream → weft relay', () => {
  let relay: RunningRelay | undefined;
  let up: WispUpstream | undefined;
  afterEach(async () => {
    up?.close();
    await relay?.stop();
  });

  it('waits for stream-open confirmation and maps refusals to UpstreamError kinds', async () => {
    relay = await startRelay(['--allow-loopback', '--deny', '127.0.0.2']);
    const events: object[] = [];
    up = new WispUpstream({ url: relay.wisp.replace('ws:', 'wisp:'), connect: connectWsTransport, log: (e) => events.push(e) });
    const ok = flow(up, echo.port);
    await withTimeout(ok.connected, 5000, 'onConnect');
    expect(events).toContainEqual(expect.objectContaining({ event: 'wisp-ready', version: 2, extensions: expect.arrayContaining([5]) }));
    await writeAll(ok, Buffer.from('hello relay'), 100);
    await ok.waitBytes(11);
    expect(ok.bytes().toString()).toBe('hello relay');

    const gone = await tcpServer();
    const closedPort = gone.port;
    await gone.close();
    const refused = flow(up, closedPort);
    expect((await refused.closed)?.kind).toBe('refused');

    const denied = up.openTcp({ ip: parseIpv4('127.0.0.2'), port: echo.port }, META, {
      onConnect: () => {},
      onData: () => {},
      onEnd: () => {},
      onDrain: () => {},
      onClose: (e) => events.push({ denied: e?.kind }),
    });
    await withTimeout(
      relay.proc.waitForEvent('stream-close', (e) => e.reason === 'blocked'),
      5000,
      'blocked',
    );
    await new Promise((r) => setTimeout(r, 100));
    expect(events).toContainEqual({ denied: 'blocked' });
    denied.destroy();
  });

  it("carries half-close both ways with weft's extension (guest FIN first, then server FIN first)", async () => {
    relay = await startRelay(['--allow-loopback']);
    up = new WispUpstream({ url: relay.wisp, connect: connectWsTransport });
    // Reads to EOF, then answers with what it got, then closes.
    const counter = net.createServer({ allowHalfOpen: true }, (sock) => {
      const hash = createHash('sha256');
      sock.on('data', (d) => hash.update(d));
      sock.on('end', () => sock.end(hash.digest('hex')));
    });
    // Sends first and half-closes, then reads to EOF and reports.
    let reported!: (n: number) => void;
    const report = new Promise<number>((r) => (reported = r));
    const talker = net.createServer({ allowHalfOpen: true }, (sock) => {
      let n = 0;
      sock.on('data', (d) => (n += d.length));
      sock.on('end', () => {
        reported(n);
        sock.end();
      });
      sock.end(Buffer.alloc(100_000, 7));
    });
    await Promise.all([counter, talker].map((srv) => new Promise<void>((r) => srv.listen(0, '127.0.0.1', r))));
    try {
      const a = flow(up, (counter.address() as net.AddressInfo).port);
      await withTimeout(a.connected, 5000, 'connect a');
      const payload = randomBytes(500_000);
      await writeAll(a, payload, 1448);
      a.stream.end();
      await a.waitBytes(64);
      expect(a.bytes().toString()).toBe(sha(payload));
      expect(await withTimeout(a.closed, 5000, 'clean close a')).toBeUndefined();
      expect(a.ended).toBe(true);

      const b = flow(up, (talker.address() as net.AddressInfo).port);
      await b.waitBytes(100_000);
      await withTimeout(
        new Promise<void>((r) => {
          const t = setInterval(() => {
            if (!b.ended) return;
            clearInterval(t);
            r();
          }, 5);
        }),
        5000,
        'onEnd b',
      );
      await writeAll(b, Buffer.alloc(12_345, 1), 1000); // still possible after the server's FIN
      b.stream.end();
      expect(await withTimeout(report, 5000, 'talker report')).toBe(12_345);
      expect(await withTimeout(b.closed, 5000, 'clean close b')).toBeUndefined();
    } finally {
      counter.close();
      talker.close();
    }
  });

  it('resets open flows when the relay dies and opens new ones after it comes back', async () => {
    relay = await startRelay(['--allow-loopback']);
    const port = relay.port;
    up = new WispUpstream({ url: relay.wisp, connect: connectWsTransport, backoffMs: { initial: 100, max: 400 } });
    const before = flow(up, echo.port);
    await withTimeout(before.connected, 5000, 'first onConnect');
    relay.proc.kill('SIGKILL');
    await relay.proc.waitForExit();
    const error = await withTimeout(before.closed, 5000, 'onClose after the relay died');
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error?.kind).toBe('reset');

    relay = await startRelay(['--allow-loopback', '--listen', `127.0.0.1:${port}`]);
    const after = flow(up, echo.port);
    await withTimeout(after.connected, 10_000, 'onConnect after reconnect');
    await writeAll(after, Buffer.from('again'), 5);
    await after.waitBytes(5);
    expect(after.bytes().toString()).toBe('again');
    expect(up.connections).toBeGreaterThanOrEqual(2);
  });
});
