// weft-net/relay mounted on a program's own HTTP server: the same relay as the CLI's, with the
// CLI's checks on its options (a bad value throws a RelayOptionError with a stable code).

import http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { encodeConnect, encodeData } from '../../core/wisp/wisp-codec';
import { createRelay, RelayOptionError, type Relay } from '../../node-host/relay/index';
import { RawWispClient, tcpServer, type TestServer } from './relay-support';

describe("createRelay() on an embedder's http.Server", () => {
  let echo: TestServer;
  let server: http.Server;
  let relay: Relay;
  let base: string;
  const events: Array<{ event: string; fields: Record<string, unknown> }> = [];

  beforeAll(async () => {
    echo = await tcpServer('echo');
    relay = createRelay({ allowLoopback: true, ports: [echo.port], origin: 'https://vm.example', log: (event, fields) => events.push({ event, fields }) });
    server = http.createServer((req, res) => {
      if (req.url === '/metrics') res.end(relay.metrics());
      else res.writeHead(404).end();
    });
    server.on('upgrade', (req, socket, head) => relay.handleUpgrade(req, socket, head));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await relay.close(500);
    await new Promise<void>((r) => server.close(() => r()));
    await echo.close();
  });

  it('relays for a page of the allowed origin, with the policy and metrics of the CLI relay', async () => {
    const client = await RawWispClient.open(`ws://${base}/wisp/`, [], { origin: 'https://vm.example' });
    client.send(encodeConnect(1, 1, echo.port, '127.0.0.1'));
    client.send(encodeData(1, Buffer.from('embedded')));
    const reply = await client.waitFor((p) => p.type === 'data' && p.streamId === 1, 'echo');
    expect(reply.type === 'data' && Buffer.from(reply.payload).toString()).toBe('embedded');
    client.send(encodeConnect(2, 1, echo.port + 1 > 65535 ? 1 : echo.port + 1, '127.0.0.1'));
    expect(await client.waitFor((p) => p.type === 'close' && p.streamId === 2, 'a port outside ports')).toMatchObject({ reason: 0x48 });
    expect(relay.clients).toBe(1);
    expect(await (await fetch(`http://${base}/metrics`)).text()).toMatch(/^weft_relay_streams_total\{type="tcp"\} 2$/m);
    expect(events.some((e) => e.event === 'stream-close')).toBe(true);
    client.close();
  });

  it('refuses another origin and another path', async () => {
    const status = (url: string, origin: string) =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(url, { origin });
        ws.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.once('open', () => {
          resolve(101);
          ws.close();
        });
        ws.once('error', () => {});
      });
    expect(await status(`ws://${base}/wisp/`, 'https://evil.example')).toBe(403);
    expect(await status(`ws://${base}/other/`, 'https://vm.example')).toBe(404);
  });

  it('throws RelayOptionError with a stable code for a value the CLI would refuse', () => {
    expect(() => createRelay({ ports: '0-99999' })).toThrow(RelayOptionError);
    try {
      createRelay({ rate: -1 });
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_WEFT_RELAY_OPTION', message: expect.stringMatching(/rate/) });
      return;
    }
    throw new Error('createRelay accepted rate -1');
  });
});

describe('the relay answers a batch of requests in one write', () => {
  it('200 CONNECTs read together get their 200 refusals in a few writes, not one each', async () => {
    const relay = createRelay({ allowLoopback: true, ports: [1], log: () => {} });
    let reads = 0;
    let writes = 0;
    const server = http.createServer();
    server.on('upgrade', (req, socket: Socket, head) => {
      // Counted where Node hands the relay's bytes to the kernel: one call per write or writev.
      const write = socket._write.bind(socket);
      const writev = socket._writev!.bind(socket);
      socket._write = (...a: Parameters<Socket['_write']>) => {
        writes++;
        write(...a);
      };
      socket._writev = (...a: Parameters<NonNullable<Socket['_writev']>>) => {
        writes++;
        writev(...a);
      };
      socket.on('data', () => reads++);
      relay.handleUpgrade(req, socket, head);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const client = await RawWispClient.open(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/wisp/`);
      await client.waitFor((p) => p.type === 'continue' && p.streamId === 0, 'the first CONTINUE');
      const before = { reads, writes };
      // One TCP write from the client (its socket corked), so the relay reads the batch at once.
      const raw = (client.ws as unknown as { _socket: Socket })._socket;
      raw.cork();
      for (let id = 1; id <= 200; id++) client.send(encodeConnect(id, 1, 2, '127.0.0.1')); // port 2: outside --ports
      raw.uncork();
      for (let id = 1; id <= 200; id++) {
        const close = await client.waitFor((p) => p.type === 'close' && p.streamId === id, `the refusal of stream ${id}`);
        expect(close).toMatchObject({ reason: 0x48 });
      }
      const batch = { reads: reads - before.reads, writes: writes - before.writes };
      console.log(`relay-embedded: 200 refusals after ${batch.reads} reads went out in ${batch.writes} writes`);
      // One write per turn of the relay's event loop that answered: at most one per read.
      expect(batch.writes, JSON.stringify(batch)).toBeLessThanOrEqual(batch.reads + 1);
      expect(batch.writes, JSON.stringify(batch)).toBeLessThan(20);
      client.close();
    } finally {
      await relay.close(500);
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
