// weft-net/relay mounted on a program's own HTTP server: the same relay as the CLI's, with the
// CLI's checks on its options (a bad value throws a RelayOptionError with a stable code).

import http from 'node:http';
import type { AddressInfo } from 'node:net';
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
