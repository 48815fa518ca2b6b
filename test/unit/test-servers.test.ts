// The integration-test servers of test/support/test-servers.ts, checked with plain Node clients.

import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { missingCommands, writeGuestScripts } from '../harness/guest-tools';
import {
  deterministicBytes,
  deterministicChunks,
  expectedSha256,
  HELLO_TEXT,
  sha256Hex,
  startHalfCloseServer,
  startHttpTestServer,
  startSendThenReadServer,
  startTcpEchoServer,
  startUdpEchoServer,
  type TestServer,
} from '../support/test-servers';

const servers: TestServer[] = [];
afterAll(async () => {
  await Promise.all(servers.map((s) => s.close()));
});

async function started<T extends TestServer>(p: Promise<T>): Promise<T> {
  const s = await p;
  servers.push(s);
  return s;
}

function request(port: number, method: string, path: string, body?: Buffer): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Connects, sends `data`, half-closes, and collects everything until the server's FIN. */
async function exchange(port: number, data: Buffer): Promise<Buffer> {
  const s = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  await once(s, 'connect');
  s.end(data);
  await once(s, 'end');
  s.destroy();
  return Buffer.concat(chunks);
}

describe('deterministic content', () => {
  it('is reproducible, has the requested length, and does not repeat every MiB', () => {
    const n = 3 * (1 << 20) + 12345;
    const a = deterministicBytes(n);
    expect(a.length).toBe(n);
    expect(deterministicBytes(n).equals(a)).toBe(true);
    expect(sha256Hex(a)).toBe(expectedSha256(n));
    const mib = 1 << 20;
    expect(a.subarray(0, mib).equals(a.subarray(mib, 2 * mib))).toBe(false);
    // A prefix of a longer stream is the shorter stream.
    expect(deterministicBytes(1000).equals(a.subarray(0, 1000))).toBe(true);
    expect([...deterministicChunks(0)]).toEqual([]);
    expect(expectedSha256(0)).toBe(createHash('sha256').digest('hex'));
  });
});

describe('the guest-side generator (test/harness/guest-tools.ts)', () => {
  it.skipIf(missingCommands(['python3']).length > 0)('produces the same stream and sha256 in Python', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-guest-tools-'));
    try {
      const scripts = writeGuestScripts(dir);
      for (const n of [0, 5, (1 << 20) + 1, 2 * (1 << 20) + 777]) {
        const r = execFileSync(scripts.python, [scripts.stream, String(n)], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
        expect(r.equals(deterministicBytes(n)), `stream of ${n} bytes`).toBe(true);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('HTTP test server', () => {
  it('serves /bytes/N, /hello, /upload and 404', async () => {
    const server = await started(startHttpTestServer());
    for (const n of [0, 1, 1000, (1 << 20) + 7]) {
      const r = await request(server.port, 'GET', `/bytes/${n}`);
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(n);
      expect(sha256Hex(r.body)).toBe(expectedSha256(n));
    }
    const hello = await request(server.port, 'GET', '/hello');
    expect(hello.body.toString()).toBe(HELLO_TEXT);

    const body = deterministicBytes(300_000);
    for (const method of ['PUT', 'POST']) {
      const up = await request(server.port, method, '/upload', body);
      expect(up.status).toBe(200);
      expect(JSON.parse(up.body.toString())).toEqual({ sha256: sha256Hex(body), bytes: body.length });
    }
    expect((await request(server.port, 'GET', '/nothing')).status).toBe(404);
  });
});

describe('TCP test servers', () => {
  it('echo: returns every byte, then FIN after ours', async () => {
    const server = await started(startTcpEchoServer());
    const data = deterministicBytes(500_000);
    expect((await exchange(server.port, data)).equals(data)).toBe(true);
  });

  it('half-close: answers "<count> <sha256>" after our FIN', async () => {
    const server = await started(startHalfCloseServer());
    const data = deterministicBytes(123_456);
    expect((await exchange(server.port, data)).toString()).toBe(`123456 ${sha256Hex(data)}\n`);
    expect((await exchange(server.port, Buffer.alloc(0))).toString()).toBe(`0 ${sha256Hex('')}\n`);
  });

  it('send-then-read: sends N bytes and FIN, then reports what arrived after', async () => {
    const server = await started(startSendThenReadServer(200_000));
    const s = net.connect({ port: server.port, host: '127.0.0.1', allowHalfOpen: true });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    await once(s, 'end');
    expect(sha256Hex(Buffer.concat(chunks))).toBe(expectedSha256(200_000));
    const after = deterministicBytes(70_000);
    s.end(after);
    const report = await server.nextReport(5_000);
    expect(report).toEqual({ sent: 200_000, received: 70_000, receivedAfterEnd: 70_000, sha256: sha256Hex(after), clean: true });
    s.destroy();
  });
});

describe('UDP echo server', () => {
  it('echoes each datagram to its sender', async () => {
    const server = await started(startUdpEchoServer());
    const client = dgram.createSocket('udp4');
    const got: Buffer[] = [];
    client.on('message', (m) => got.push(m));
    client.bind(0, '127.0.0.1');
    await once(client, 'listening');
    const sent = [1, 512, 8000, 65_507].map((n) => deterministicBytes(n));
    for (const d of sent) client.send(d, server.port, '127.0.0.1');
    const start = Date.now();
    while (got.length < sent.length && Date.now() - start < 5_000) await new Promise((r) => setTimeout(r, 10));
    client.close();
    expect(got.map((g) => g.length).sort((a, b) => a - b)).toEqual([1, 512, 8000, 65_507]);
    for (const d of sent) expect(got.some((g) => g.equals(d))).toBe(true);
    expect(server.echoed).toBe(4);
  });
});
