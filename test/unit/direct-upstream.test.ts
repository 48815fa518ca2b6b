// DirectUpstream against real loopback servers: connect and echo, half-close both ways, refused,
// connect timeout (a listener whose accept queue is full), blocked gateway, back-pressure, UDP echo
// up to 65 507 bytes, UDP port unreachable, and no socket left open afterwards.

import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { DirectUpstream, errorKindForErrno, MAX_UDP_PAYLOAD } from '../../node-host/direct-upstream';
import { UpstreamError, type FlowEndpoint, type FlowMeta, type TcpStream, type TcpStreamHandlers } from '../../core/upstream';
import { parseIpv4 } from '../../core/wire/address';
import {
  closedTcpPort,
  deterministicBytes,
  expectedSha256,
  sha256Hex,
  startHalfCloseServer,
  startSendThenReadServer,
  startTcpEchoServer,
  startUdpEchoServer,
  type TestServer,
} from '../support/test-servers';

const GATEWAY = parseIpv4('10.0.2.2');
const GUEST = { ip: parseIpv4('10.0.2.15'), port: 40000 };
const gw = (port: number): FlowEndpoint => ({ ip: GATEWAY, port });
const meta = (protocol: 'tcp' | 'udp', target: FlowEndpoint): FlowMeta => ({ protocol, guest: GUEST, target });

/** Records every handler call of one TCP stream, with promises to wait on. */
class TcpProbe implements TcpStreamHandlers {
  readonly calls: string[] = [];
  readonly chunks: Buffer[] = [];
  closeError: UpstreamError | undefined;
  closed: Promise<UpstreamError | undefined>;
  connected: Promise<void>;
  ended: Promise<void>;
  private resolveClose!: (e: UpstreamError | undefined) => void;
  private resolveConnect!: () => void;
  private resolveEnd!: () => void;
  private drainWaiters: Array<() => void> = [];

  constructor() {
    this.closed = new Promise((r) => (this.resolveClose = r));
    this.connected = new Promise((r) => (this.resolveConnect = r));
    this.ended = new Promise((r) => (this.resolveEnd = r));
  }

  get received(): Buffer {
    return Buffer.concat(this.chunks);
  }

  nextDrain(): Promise<void> {
    return new Promise((r) => this.drainWaiters.push(r));
  }

  onConnect(): void {
    this.calls.push('connect');
    this.resolveConnect();
  }
  onData(data: Uint8Array): void {
    // An empty call only ends a turn's "more follows" reads.
    if (data.length === 0) return;
    this.calls.push('data');
    // A copy: the stream may read the next bytes into the same buffer.
    this.chunks.push(Buffer.from(data));
  }
  onEnd(): void {
    this.calls.push('end');
    this.resolveEnd();
  }
  onDrain(): void {
    this.calls.push('drain');
    for (const w of this.drainWaiters.splice(0)) w();
  }
  onClose(error?: UpstreamError): void {
    this.calls.push(error ? `close:${error.kind}` : 'close');
    this.closeError = error;
    this.resolveClose(error);
  }

  /** Handlers that record into this probe, with some of them replaced (they may call the probe's own). */
  with(overrides: Partial<TcpStreamHandlers>): TcpStreamHandlers {
    return {
      onConnect: () => this.onConnect(),
      onData: (data) => this.onData(data),
      onEnd: () => this.onEnd(),
      onDrain: () => this.onDrain(),
      onClose: (e) => this.onClose(e),
      ...overrides,
    };
  }
}

async function waitFor(cond: () => boolean, timeoutMs = 5_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('errorKindForErrno', () => {
  it('maps errno codes to upstream error kinds', () => {
    expect(errorKindForErrno('ECONNREFUSED')).toBe('refused');
    expect(errorKindForErrno('EHOSTUNREACH')).toBe('unreachable');
    expect(errorKindForErrno('ENETUNREACH')).toBe('unreachable');
    expect(errorKindForErrno('EADDRNOTAVAIL')).toBe('unreachable');
    expect(errorKindForErrno('ETIMEDOUT')).toBe('timeout');
    expect(errorKindForErrno('ECONNRESET')).toBe('reset');
    expect(errorKindForErrno('EPIPE')).toBe('reset');
    expect(errorKindForErrno('EMFILE')).toBe('error');
    expect(errorKindForErrno(undefined)).toBe('error');
  });
});

describe('DirectUpstream', () => {
  const servers: TestServer[] = [];
  let echo: TestServer;
  let upstream: DirectUpstream;
  const events: Array<Record<string, unknown>> = [];

  beforeAll(async () => {
    echo = await startTcpEchoServer();
    servers.push(echo);
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.close()));
  });

  const makeUpstream = (extra: Partial<ConstructorParameters<typeof DirectUpstream>[0]> = {}) =>
    new DirectUpstream({ gateway: GATEWAY, allowHostLoopback: true, log: (e) => events.push(e as Record<string, unknown>), ...extra });

  afterEach(async () => {
    // Every test must leave no socket behind.
    if (upstream) await waitFor(() => upstream.openSockets === 0);
  });

  it('connects through the gateway mapping and echoes data', async () => {
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), probe);
    expect(probe.calls).toEqual([]); // nothing synchronous
    await probe.connected;
    expect(upstream.openSockets).toBe(1);
    const payload = deterministicBytes(200_000);
    stream.write(payload);
    stream.end();
    await probe.ended;
    expect(await probe.closed).toBeUndefined();
    expect(probe.received.equals(payload)).toBe(true);
    expect(probe.calls[0]).toBe('connect');
    expect(probe.calls.filter((c) => c.startsWith('close'))).toEqual(['close']);
    expect(probe.calls.at(-1)).toBe('close');
    expect(events.some((e) => e.event === 'upstream-tcp-connect' && String(e.flow).includes('10.0.2.15:40000'))).toBe(true);
  });

  it('hands over each read as "more follows", then ends the turn with an empty call without it', async () => {
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const reads: Array<[number, boolean | undefined]> = [];
    const stream = upstream.openTcp(
      gw(echo.port),
      meta('tcp', gw(echo.port)),
      probe.with({
        onData: (data, more) => {
          reads.push([data.length, more]);
          probe.onData(data);
        },
        onEnd: () => {
          reads.push([-1, undefined]);
          probe.onEnd();
        },
      }),
    );
    await probe.connected;
    const payload = deterministicBytes(1_000_000);
    stream.write(payload);
    stream.end();
    await probe.closed;
    expect(probe.received.equals(payload)).toBe(true);
    expect(reads.filter(([n]) => n > 0).every(([, more]) => more === true)).toBe(true);
    // Every run of reads is followed by the call that lets a short last segment go, or by the FIN.
    const runEnds = reads.filter(([n], i) => n > 0 && !(reads[i + 1]?.[0] > 0));
    expect(runEnds.length).toBeGreaterThan(0);
    reads.forEach(([n], i) => {
      if (n > 0 && !(reads[i + 1]?.[0] > 0)) expect([0, -1], `after read ${i}`).toContain(reads[i + 1]?.[0]);
    });
    expect(reads.at(-1)).toEqual([-1, undefined]);
  });

  it('reads into the room the stack lends (readRoom), and into its own buffer when none is lent', async () => {
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const lent = new Uint8Array(1 << 20);
    let at = 0;
    let lend = true;
    let inPlace = 0;
    let elsewhere = 0;
    const stream = upstream.openTcp(
      gw(echo.port),
      meta('tcp', gw(echo.port)),
      probe.with({
        onData: (data) => {
          if (data.length === 0) return;
          if (data.buffer === lent.buffer && data.byteOffset === at) {
            inPlace++;
            at += data.length;
          } else elsewhere++;
          probe.onData(data);
          lend = !lend; // every other read in place
        },
        readRoom: () => (lend && at + 65536 <= lent.length ? lent.subarray(at, at + 65536) : undefined),
      }),
    );
    await probe.connected;
    const payload = deterministicBytes(400_000);
    stream.write(payload);
    stream.end();
    await probe.closed;
    expect(probe.received.equals(payload)).toBe(true);
    expect(inPlace).toBeGreaterThan(0);
    expect(elsewhere).toBeGreaterThan(0);
  });

  it('takes written chunks as they are (views into larger buffers too) and delivers each in order', async () => {
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), probe);
    await probe.connected;
    const expected: Buffer[] = [];
    for (let i = 0; i < 64; i++) {
      // The receiver hands over a copy of each segment; here, a window into a buffer of its own.
      const backing = new Uint8Array(64 * 1024 + 32).fill(0xee);
      const chunk = backing.subarray(16, 16 + 64 * 1024).fill(i);
      expected.push(Buffer.from(chunk));
      stream.write(chunk);
    }
    stream.end();
    await probe.closed;
    expect(probe.received.equals(Buffer.concat(expected))).toBe(true);
  });

  it('keeps writing after the far end ends (far end FIN first)', async () => {
    const server = await startSendThenReadServer(100_000);
    servers.push(server);
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(server.port), meta('tcp', gw(server.port)), probe);
    await probe.ended;
    expect(sha256Hex(probe.received)).toBe(expectedSha256(100_000));
    expect(probe.calls).not.toContain('close');
    const after = deterministicBytes(50_000);
    stream.write(after);
    stream.end();
    expect(await probe.closed).toBeUndefined();
    const report = await server.nextReport();
    expect(report).toEqual({ sent: 100_000, received: 50_000, receivedAfterEnd: 50_000, sha256: sha256Hex(after), clean: true });
  });

  it('still receives after it ends its side (our FIN first)', async () => {
    const server = await startHalfCloseServer();
    servers.push(server);
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(server.port), meta('tcp', gw(server.port)), probe);
    await probe.connected;
    const payload = deterministicBytes(300_000);
    stream.write(payload);
    stream.end();
    expect(await probe.closed).toBeUndefined();
    expect(probe.received.toString()).toBe(`300000 ${sha256Hex(payload)}\n`);
  });

  it('fails fast with "refused" on a closed port', async () => {
    upstream = makeUpstream();
    const port = await closedTcpPort();
    const probe = new TcpProbe();
    const start = performance.now();
    upstream.openTcp(gw(port), meta('tcp', gw(port)), probe);
    const error = await probe.closed;
    expect(error).toBeInstanceOf(UpstreamError);
    expect(error!.kind).toBe('refused');
    expect(performance.now() - start).toBeLessThan(1_000);
    expect(probe.calls).toEqual(['close:refused']);
  });

  it('refuses port 0 asynchronously instead of throwing', async () => {
    upstream = makeUpstream();
    const probe = new TcpProbe();
    upstream.openTcp(gw(0), meta('tcp', gw(0)), probe);
    expect(probe.calls).toEqual([]);
    expect((await probe.closed)?.kind).toBe('refused');
    const errors: UpstreamError[] = [];
    const flow = upstream.openUdp(gw(0), meta('udp', gw(0)), { onDatagram: () => {}, onError: (e) => errors.push(e) });
    await sleep(0);
    expect(errors.map((e) => e.kind)).toEqual(['refused']);
    flow.close();
  });

  it('blocks the gateway without allowHostLoopback, asynchronously', async () => {
    upstream = makeUpstream({ allowHostLoopback: false });
    const probe = new TcpProbe();
    upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), probe);
    expect(probe.calls).toEqual([]);
    expect(upstream.openSockets).toBe(0);
    const error = await probe.closed;
    expect(error?.kind).toBe('blocked');
    expect(probe.calls).toEqual(['close:blocked']);

    const udpErrors: UpstreamError[] = [];
    const flow = upstream.openUdp(gw(9), meta('udp', gw(9)), { onDatagram: () => {}, onError: (e) => udpErrors.push(e) });
    expect(udpErrors).toEqual([]);
    await sleep(0);
    expect(udpErrors.map((e) => e.kind)).toEqual(['blocked']);
    flow.close();
  });

  it('never reaches host loopback by its own address, even with allowHostLoopback', async () => {
    upstream = makeUpstream();
    for (const ip of ['127.0.0.1', '0.0.0.0']) {
      const dst = { ip: parseIpv4(ip), port: echo.port };
      const probe = new TcpProbe();
      upstream.openTcp(dst, meta('tcp', dst), probe);
      expect((await probe.closed)?.kind).toBe('blocked');
    }
  });

  it('calls nothing after destroy(), also before the connect completes', async () => {
    upstream = makeUpstream({ allowHostLoopback: false });
    const blocked = new TcpProbe();
    upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), blocked).destroy();

    upstream = makeUpstream();
    const early = new TcpProbe();
    upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), early).destroy();

    const late = new TcpProbe();
    const stream = upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), late);
    await late.connected;
    stream.write(Buffer.from('hello'));
    await waitFor(() => late.calls.includes('data'));
    stream.destroy();
    stream.write(Buffer.from('ignored'));
    stream.end();
    await waitFor(() => upstream.openSockets === 0);
    await sleep(50);
    expect(blocked.calls).toEqual([]);
    expect(early.calls).toEqual([]);
    expect(late.calls).toEqual(['connect', 'data']);
  });

  it('resets the far end when destroyed after connecting', async () => {
    let serverError: string | undefined;
    const server = net.createServer((s) => {
      s.on('error', (e: NodeJS.ErrnoException) => (serverError = e.code));
      s.on('close', () => (serverError ??= 'clean close'));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    servers.push({ port, close: () => new Promise((r) => server.close(() => r())) });

    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(port), meta('tcp', gw(port)), probe);
    await probe.connected;
    await sleep(20);
    stream.destroy();
    await waitFor(() => serverError !== undefined);
    expect(serverError).toBe('ECONNRESET');
    expect(probe.calls).toEqual(['connect']);
  });

  it('reports "reset" when the far end resets an established stream', async () => {
    const server = net.createServer((s) => {
      s.once('data', () => s.resetAndDestroy());
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    servers.push({ port, close: () => new Promise((r) => server.close(() => r())) });

    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(port), meta('tcp', gw(port)), probe);
    await probe.connected;
    stream.write(Buffer.from('x'));
    expect((await probe.closed)?.kind).toBe('reset');
  });

  it('times out a connect that gets no answer (listener with a full accept queue)', async () => {
    // A listener that never accepts, with backlog 0: once one connection fills its accept queue, the
    // kernel drops further SYNs, so the next connect stays pending.
    const py = spawn(
      'python3',
      [
        '-c',
        [
          'import socket, sys',
          's = socket.socket()',
          "s.bind(('127.0.0.1', 0))",
          's.listen(0)',
          'print(s.getsockname()[1], flush=True)',
          'sys.stdin.read()',
        ].join('\n'),
      ],
      { stdio: ['pipe', 'pipe', 'inherit'] },
    );
    const fillers: net.Socket[] = [];
    try {
      const [line] = (await once(py.stdout!, 'data')) as [Buffer];
      const port = Number(line.toString().trim());
      // Fill the accept queue: connects complete until it is full; stop at the first that hangs.
      for (let i = 0; i < 8; i++) {
        const s = net.connect(port, '127.0.0.1');
        s.on('error', () => {});
        fillers.push(s);
        const ok = await Promise.race([once(s, 'connect').then(() => true), sleep(300).then(() => false)]);
        if (!ok) break;
      }
      upstream = makeUpstream({ connectTimeoutMs: 150 });
      const probe = new TcpProbe();
      const start = performance.now();
      upstream.openTcp(gw(port), meta('tcp', gw(port)), probe);
      const error = await probe.closed;
      expect(error?.kind).toBe('timeout');
      expect(performance.now() - start).toBeGreaterThanOrEqual(140);
      expect(probe.calls).toEqual(['close:timeout']);
    } finally {
      for (const s of fillers) s.destroy();
      killChild(py);
    }
  });

  it('reports back-pressure and drains once the far end reads', async () => {
    let serverSocket: net.Socket | undefined;
    let serverReceived = 0;
    const server = net.createServer({ pauseOnConnect: true }, (s) => {
      serverSocket = s;
      s.on('error', () => {}); // our destroy() resets it
      s.on('data', (c: Buffer) => (serverReceived += c.length));
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    servers.push({
      port,
      close: () =>
        new Promise((r) => {
          serverSocket?.destroy();
          server.close(() => r());
        }),
    });

    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(port), meta('tcp', gw(port)), probe);
    await probe.connected;
    // Write until a false is not followed by a drain: the kernel buffers on both sides are full.
    const chunk = new Uint8Array(64 * 1024).fill(7);
    let written = 0;
    for (let i = 0; i < 2000; i++) {
      written += chunk.length;
      if (stream.write(chunk)) continue;
      const drained = await Promise.race([probe.nextDrain().then(() => true), sleep(200).then(() => false)]);
      if (!drained) break;
    }
    expect(written).toBeLessThan(2000 * chunk.length);
    const drain = probe.nextDrain();
    serverSocket!.resume();
    await drain;
    expect(probe.calls).toContain('drain');
    await waitFor(() => serverReceived === written, 10_000);
    stream.destroy();
  });

  it('pauses and resumes delivery', async () => {
    upstream = makeUpstream();
    const probe = new TcpProbe();
    const stream = upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), probe);
    await probe.connected;
    stream.pause();
    stream.write(Buffer.from('ping'));
    await sleep(100);
    expect(probe.calls).toEqual(['connect']);
    stream.resume();
    await waitFor(() => probe.received.toString() === 'ping');
    stream.end();
    expect(await probe.closed).toBeUndefined();
  });

  describe('UDP', () => {
    let udpEcho: TestServer;
    beforeAll(async () => {
      udpEcho = await startUdpEchoServer();
      servers.push(udpEcho);
    });

    it('echoes datagrams up to 65 507 bytes, sent before and after the socket connects', async () => {
      upstream = makeUpstream();
      const got: Array<{ data: Buffer; from: FlowEndpoint }> = [];
      const errors: UpstreamError[] = [];
      const dst = gw(udpEcho.port);
      const flow = upstream.openUdp(dst, meta('udp', dst), {
        onDatagram: (data, from) => got.push({ data: Buffer.from(data), from }),
        onError: (e) => errors.push(e),
      });
      const sizes = [1, 100, 1472, 8000, 30_000, MAX_UDP_PAYLOAD];
      const sent = sizes.map((n, i) => Buffer.from(deterministicBytes(n + i).subarray(i)));
      flow.send(sent[0]); // before connect completes: queued
      await sleep(20);
      for (const d of sent.slice(1)) {
        flow.send(d);
        await sleep(5);
      }
      await waitFor(() => got.length === sent.length);
      expect(errors).toEqual([]);
      expect(got.map((g) => g.data.length).sort((a, b) => a - b)).toEqual(sizes);
      for (const d of sent) expect(got.some((g) => g.data.equals(d))).toBe(true);
      expect(got.every((g) => g.from.ip === GATEWAY && g.from.port === udpEcho.port)).toBe(true);
      expect(upstream.openSockets).toBe(1);
      flow.close();
    });

    it('rejects a datagram above 65 507 bytes with an error, not a throw', async () => {
      upstream = makeUpstream();
      const errors: UpstreamError[] = [];
      const dst = gw(udpEcho.port);
      const flow = upstream.openUdp(dst, meta('udp', dst), { onDatagram: () => {}, onError: (e) => errors.push(e) });
      flow.send(new Uint8Array(MAX_UDP_PAYLOAD + 1));
      await waitFor(() => errors.length === 1);
      expect(errors[0].kind).toBe('error');
      flow.close();
    });

    it('reports port unreachable as "refused" and stays usable', async () => {
      // Bind a port, then close it: datagrams to it draw ICMP port unreachable.
      const probe = dgram.createSocket('udp4');
      probe.bind(0, '127.0.0.1');
      await once(probe, 'listening');
      const port = probe.address().port;
      await new Promise<void>((r) => probe.close(() => r()));

      upstream = makeUpstream();
      const errors: UpstreamError[] = [];
      const got: Buffer[] = [];
      const dst = gw(port);
      const flow = upstream.openUdp(dst, meta('udp', dst), { onDatagram: (d) => got.push(Buffer.from(d)), onError: (e) => errors.push(e) });
      await sleep(20);
      flow.send(Buffer.from('anyone?'));
      await waitFor(() => errors.length >= 1);
      expect(errors[0].kind).toBe('refused');

      // Now something listens there: the same flow works.
      const late = dgram.createSocket('udp4');
      late.on('message', (m, r) => late.send(m, r.port, r.address));
      late.bind(port, '127.0.0.1');
      await once(late, 'listening');
      try {
        flow.send(Buffer.from('again'));
        await waitFor(() => got.length === 1);
        expect(got[0].toString()).toBe('again');
      } finally {
        flow.close();
        await new Promise<void>((r) => late.close(() => r()));
      }
    });

    it('calls nothing after close()', async () => {
      upstream = makeUpstream();
      const calls: string[] = [];
      const dst = gw(udpEcho.port);
      const flow = upstream.openUdp(dst, meta('udp', dst), { onDatagram: () => calls.push('datagram'), onError: () => calls.push('error') });
      await sleep(20);
      flow.send(Buffer.from('x'));
      flow.close();
      flow.send(Buffer.from('y'));
      await sleep(50);
      expect(calls).toEqual([]);
    });
  });

  it('leaves no socket open after many flows', async () => {
    upstream = makeUpstream();
    const port = await closedTcpPort();
    const probes: TcpProbe[] = [];
    const streams: TcpStream[] = [];
    for (let i = 0; i < 50; i++) {
      const p = new TcpProbe();
      probes.push(p);
      streams.push(upstream.openTcp(gw(echo.port), meta('tcp', gw(echo.port)), p));
      upstream.openTcp(gw(port), meta('tcp', gw(port)), new TcpProbe());
    }
    const flows = Array.from({ length: 20 }, () => upstream.openUdp(gw(9), meta('udp', gw(9)), { onDatagram: () => {}, onError: () => {} }));
    expect(upstream.openSockets).toBe(120);
    await Promise.all(probes.map((p) => p.connected));
    streams.forEach((s, i) => {
      if (i % 2) s.end();
      else s.destroy();
    });
    for (const f of flows) f.close();
    await waitFor(() => upstream.openSockets === 0);
  });
});

function killChild(p: ChildProcess): void {
  if (p.pid !== undefined && p.exitCode === null && p.signalCode === null) process.kill(p.pid, 'SIGKILL');
}
