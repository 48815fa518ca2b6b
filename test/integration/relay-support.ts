// Shared pieces of the relay tests: a running `weft relay`, echo servers on loopback, a wisp-js
// client, and a raw WebSocket client that speaks hand-made Wisp packets.

import dgram from 'node:dgram';
import net from 'node:net';
import { WebSocket } from 'ws';
import { client as wispClient } from '@mercuryworkshop/wisp-js/client';
import { parseWispPacket, type WispPacket } from '../../core/wisp/wisp-codec';
import { spawnWeft, type WeftProcess } from '../harness/weft-process';

export interface RunningRelay {
  proc: WeftProcess;
  port: number;
  http: string;
  wisp: string;
  stop(): Promise<void>;
}

/** Starts `weft relay --listen 127.0.0.1:0 ARGS…` (with `env` added to ours) and waits for its ready line. */
export async function startRelay(args: string[] = [], env: Record<string, string> = {}): Promise<RunningRelay> {
  const proc = spawnWeft(['relay', '--listen', '127.0.0.1:0', ...args], { env: { ...process.env, ...env } });
  const ready = await proc.waitForEvent('ready');
  const port = ready.port as number;
  return {
    proc,
    port,
    http: `http://127.0.0.1:${port}`,
    wisp: `ws://127.0.0.1:${port}/wisp/`,
    async stop() {
      proc.kill('SIGTERM');
      await proc.waitForExit(6000).catch(() => proc.kill('SIGKILL'));
    },
  };
}

export interface TestServer {
  port: number;
  connections: number;
  close(): Promise<void>;
}

/** A TCP server on 127.0.0.1 that echoes; `mode: 'stall'` accepts but never reads. */
export async function tcpServer(mode: 'echo' | 'stall' = 'echo'): Promise<TestServer> {
  const sockets = new Set<net.Socket>();
  const result = { port: 0, connections: 0, close: async () => {} };
  const server = net.createServer((s) => {
    result.connections++;
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    if (mode === 'echo') s.pipe(s);
    else s.pause();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  result.port = (server.address() as net.AddressInfo).port;
  result.close = () =>
    new Promise<void>((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    });
  return result;
}

export async function udpEchoServer(): Promise<TestServer> {
  const socket = dgram.createSocket('udp4');
  socket.on('message', (m, rinfo) => socket.send(m, rinfo.port, rinfo.address));
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  return { port: socket.address().port, connections: 0, close: () => new Promise<void>((r) => socket.close(() => r())) };
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]);
}

/** A wisp-js ClientConnection once it is open. */
export function wispJsConnect(url: string, options: ConstructorParameters<typeof wispClient.ClientConnection>[1] = {}) {
  return withTimeout(
    new Promise<InstanceType<typeof wispClient.ClientConnection>>((resolve, reject) => {
      const conn = new wispClient.ClientConnection(url, options);
      conn.onopen = () => resolve(conn);
      conn.onclose = () => reject(new Error('wisp-js connection closed before it opened'));
      conn.onerror = () => reject(new Error('wisp-js connection error'));
    }),
    5000,
    'wisp-js connect',
  );
}

/** Sends `payload` on a new wisp-js stream and resolves with as many bytes back, or the close reason. */
export function wispJsRoundTrip(
  conn: InstanceType<typeof wispClient.ClientConnection>,
  host: string,
  port: number,
  payload: Uint8Array,
  type: 'tcp' | 'udp' = 'tcp',
): Promise<{ data: Uint8Array } | { closed: number }> {
  return withTimeout(
    new Promise((resolve) => {
      const stream = conn.create_stream(host, port, type);
      const chunks: Uint8Array[] = [];
      let got = 0;
      stream.onmessage = (d) => {
        chunks.push(d);
        got += d.length;
        if (got >= payload.length) {
          resolve({ data: Buffer.concat(chunks) });
          stream.close(0x02);
        }
      };
      stream.onclose = (reason) => resolve({ closed: reason });
      stream.send(payload);
    }),
    10_000,
    `wisp-js round trip to ${host}:${port}`,
  );
}

/** A WebSocket that speaks hand-made Wisp packets and records what the server sends. */
export class RawWispClient {
  readonly packets: WispPacket[] = [];
  closeCode: number | undefined;
  private waiters: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => {
      const p = parseWispPacket(new Uint8Array(data));
      if (typeof p !== 'string') this.packets.push(p);
      this.notify();
    });
    ws.on('close', (code) => {
      this.closeCode = code;
      this.notify();
    });
    ws.on('error', () => {});
  }

  /** `localAddress` picks the client's own address (any of 127/8 on loopback), for per-IP tests. */
  static open(url: string, protocols: string[] = [], headers: Record<string, string> = {}, localAddress?: string): Promise<RawWispClient> {
    const ws = new WebSocket(url, protocols, { headers, ...(localAddress ? { localAddress } : {}) });
    return withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', () => resolve(new RawWispClient(ws)));
        ws.once('unexpected-response', (_req, res) => {
          reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
          ws.terminate();
        });
        ws.once('error', reject);
      }),
      5000,
      `WebSocket to ${url}`,
    );
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  send(bytes: Uint8Array): void {
    this.ws.send(bytes);
  }

  /** Resolves with the first packet (already received or later) that matches. */
  waitFor(match: (p: WispPacket) => boolean, what: string, ms = 5000): Promise<WispPacket> {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          const found = this.packets.find(match);
          if (found) resolve(found);
          else if (this.closeCode !== undefined) reject(new Error(`closed (${this.closeCode}) while waiting for ${what}`));
          else this.waiters.push(check);
        };
        check();
      }),
      ms,
      what,
    );
  }

  waitForClose(ms = 5000): Promise<number> {
    return withTimeout(
      new Promise((resolve) => {
        const check = () => (this.closeCode !== undefined ? resolve(this.closeCode) : this.waiters.push(check));
        check();
      }),
      ms,
      'WebSocket close',
    );
  }

  close(): void {
    this.ws.terminate();
  }
}
