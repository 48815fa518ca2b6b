// `weft relay` as an operator and an attacker see it: /healthz, /metrics, SIGTERM drain, admission
// (token, origin, max clients), limits (rate, streams, idle, bandwidth) and hostile clients, each of
// which is closed with a reason while a well-behaved client on the same relay keeps working.

import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { FlowMeta } from '../../core/upstream';
import { parseIpv4 } from '../../core/wire/address';
import { encodeConnect, encodeData, type WispPacket } from '../../core/wisp/wisp-codec';
import { WispUpstream } from '../../node-host/wisp-upstream';
import { connectWsTransport } from '../../node-host/ws-transport';
import { RawWispClient, startRelay, tcpServer, udpEchoServer, wispJsConnect, wispJsRoundTrip, type RunningRelay, type TestServer } from './relay-support';

let echo: TestServer;
let stall: TestServer;
beforeAll(async () => {
  echo = await tcpServer('echo');
  stall = await tcpServer('stall');
});
afterAll(async () => {
  await echo.close();
  await stall.close();
});

async function until(ok: () => boolean, what: string, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ok()) {
    if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const isClose = (id: number) => (p: WispPacket) => p.type === 'close' && p.streamId === id;

/** Proves the relay still serves a well-behaved wisp-js client. */
async function healthyRoundTrip(relay: RunningRelay): Promise<void> {
  const conn = await wispJsConnect(relay.wisp, { wisp_version: 2 });
  const r = await wispJsRoundTrip(conn, '127.0.0.1', echo.port, Buffer.from('still here'));
  expect('data' in r && Buffer.from(r.data).toString()).toBe('still here');
  conn.close();
}

describe('operations', () => {
  let relay: RunningRelay;
  beforeAll(async () => {
    relay = await startRelay(['--allow-loopback']);
  });
  afterAll(() => relay.stop());

  it('answers /healthz and documents the endpoint', async () => {
    const r = await fetch(`${relay.http}/healthz`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('ok\n');
    expect((await fetch(`${relay.http}/wisp/`)).status).toBe(426);
    expect((await fetch(`${relay.http}/nope`)).status).toBe(404);
  });

  it('exports clients, streams, bytes, refusals and connect latency at /metrics', async () => {
    const client = await RawWispClient.open(relay.wisp);
    client.send(encodeConnect(1, 1, echo.port, '127.0.0.1'));
    client.send(encodeData(1, new Uint8Array(1000)));
    await client.waitFor((p) => p.type === 'data' && p.streamId === 1, 'echo');
    client.send(encodeConnect(2, 1, 80, '10.0.0.1'));
    await client.waitFor(isClose(2), 'refusal');
    const text = await (await fetch(`${relay.http}/metrics`)).text();
    expect(text).toMatch(/^weft_relay_clients 1$/m);
    expect(text).toMatch(/^weft_relay_open_streams\{type="tcp"\} 1$/m);
    expect(text).toMatch(/^weft_relay_open_streams\{type="udp"\} 0$/m);
    expect(Number(/^weft_relay_bytes_total\{direction="upload"\} (\d+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1000);
    expect(Number(/^weft_relay_bytes_total\{direction="download"\} (\d+)$/m.exec(text)?.[1])).toBeGreaterThanOrEqual(1000);
    expect(text).toMatch(/^weft_relay_refusals_total\{reason="blocked"\} 1$/m);
    expect(text).toMatch(/^weft_relay_connect_seconds_count [1-9]/m);
    expect(text).toMatch(/^# TYPE weft_relay_connect_seconds histogram$/m);
    // The process's own pressure gauges, as /proc sees them.
    const rss = Number(/^weft_relay_process_resident_memory_bytes (\d+)$/m.exec(text)?.[1]);
    const statusRss = Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${relay.proc.pid}/status`, 'utf8'))?.[1]) * 1024;
    expect(rss).toBeGreaterThan(statusRss / 2);
    expect(rss).toBeLessThan(statusRss * 2);
    expect(Number(/^weft_relay_process_heap_used_bytes (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(1_000_000);
    expect(Number(/^weft_relay_process_open_fds (\d+)$/m.exec(text)?.[1])).toBeGreaterThan(5);
    expect(Number(/^weft_relay_process_cpu_seconds_total ([\d.]+)$/m.exec(text)?.[1])).toBeGreaterThan(0);
    expect(text).toMatch(/^weft_relay_event_loop_lag_seconds\{stat="max"\} [\d.e-]+$/m);
    client.close();
  });
});

describe('--demo', () => {
  it('serves a page at / (a placeholder until the demo is built) and nothing outside it', async () => {
    const relay = await startRelay(['--demo']);
    try {
      const page = await fetch(`${relay.http}/`);
      expect(page.status).toBe(200);
      expect(page.headers.get('content-type')).toMatch(/text\/html/);
      expect(await page.text()).toMatch(/weft/);
      expect((await fetch(`${relay.http}/..%2f..%2fpackage.json`)).status).toBe(404);
      expect((await fetch(`${relay.http}/healthz`)).status).toBe(200);
    } finally {
      await relay.stop();
    }
  });

  it('takes WebSockets only from its own page unless --origin says otherwise (no other site may use it)', async () => {
    const relay = await startRelay(['--demo']);
    try {
      const own = `http://127.0.0.1:${relay.port}`;
      await expect(RawWispClient.open(relay.wisp, [], { origin: 'https://evil.example' })).rejects.toMatchObject({ status: 403 });
      // A name rebound to 127.0.0.1 is "same origin" by Host, but not the demo's own page.
      const rebound = `rebound.example:${relay.port}`;
      await expect(RawWispClient.open(relay.wisp, [], { origin: `http://${rebound}`, host: rebound })).rejects.toMatchObject({ status: 403 });
      (await RawWispClient.open(relay.wisp, [], { origin: own })).close();
      (await RawWispClient.open(relay.wisp)).close(); // no Origin: not a page (weft vm, say)
    } finally {
      await relay.stop();
    }
    const open = await startRelay(['--demo', '--origin', '*']);
    try {
      (await RawWispClient.open(open.wisp, [], { origin: 'https://elsewhere.example' })).close();
    } finally {
      await open.stop();
    }
  });

  it('serves nothing through a symlink that leaves its folder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-guest-'));
    writeFileSync(join(dir, 'inside.txt'), 'inside\n');
    writeFileSync(join(dir, '..', `${basename(dir)}-secret.txt`), 'secret\n');
    symlinkSync(join(dir, '..', `${basename(dir)}-secret.txt`), join(dir, 'link.txt'));
    const relay = await startRelay(['--demo'], { WEFT_GUEST_DIR: dir });
    try {
      expect(await (await fetch(`${relay.http}/guest/inside.txt`)).text()).toBe('inside\n');
      expect((await fetch(`${relay.http}/guest/link.txt`)).status).toBe(404);
      expect(relay.proc.exit).toBeUndefined();
    } finally {
      await relay.stop();
      rmSync(join(dir, '..', `${basename(dir)}-secret.txt`), { force: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the demo's static files", () => {
  it('answers Range requests (disk images are read in pieces) and revalidates with ETag and 304', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-guest-'));
    const image = randomBytes(3 * 1024 * 1024 + 17);
    writeFileSync(join(dir, 'disk.img'), image);
    const relay = await startRelay(['--demo'], { WEFT_GUEST_DIR: dir });
    try {
      const url = `${relay.http}/guest/disk.img`;
      const whole = await fetch(url);
      expect(whole.status).toBe(200);
      expect(whole.headers.get('accept-ranges')).toBe('bytes');
      expect(Buffer.from(await whole.arrayBuffer()).equals(image)).toBe(true);
      const etag = whole.headers.get('etag') as string;
      expect(etag).toMatch(/^"[0-9a-f]+-[0-9a-f]+"$/);

      const part = await fetch(url, { headers: { range: 'bytes=1048576-1114111' } });
      expect(part.status).toBe(206);
      expect(part.headers.get('content-range')).toBe(`bytes 1048576-1114111/${image.length}`);
      expect(Buffer.from(await part.arrayBuffer()).equals(image.subarray(1048576, 1114112))).toBe(true);
      const tail = await fetch(url, { headers: { range: 'bytes=-10' } });
      expect(Buffer.from(await tail.arrayBuffer()).equals(image.subarray(image.length - 10))).toBe(true);
      const past = await fetch(url, { headers: { range: `bytes=${image.length}-` } });
      expect(past.status).toBe(416);
      expect(past.headers.get('content-range')).toBe(`bytes */${image.length}`);
      // If-Range with another copy's validator: the whole (new) file, not a piece of it.
      const stale = await fetch(url, { headers: { range: 'bytes=0-9', 'if-range': '"0-0"' } });
      expect(stale.status).toBe(200);
      await stale.arrayBuffer();

      const revalidated = await fetch(url, { headers: { 'if-none-match': etag } });
      expect(revalidated.status).toBe(304);
      writeFileSync(join(dir, 'disk.img'), image.subarray(0, 100));
      const changed = await fetch(url, { headers: { 'if-none-match': etag } });
      expect(changed.status).toBe(200);
      expect((await changed.arrayBuffer()).byteLength).toBe(100);
    } finally {
      await relay.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('SIGTERM', () => {
  it('closes open streams with 0x02 and exits within 5 s, even with a stalled destination', async () => {
    const relay = await startRelay(['--allow-loopback']);
    const client = await RawWispClient.open(relay.wisp);
    client.send(encodeConnect(1, 1, echo.port, '127.0.0.1'));
    client.send(encodeData(1, Buffer.from('x')));
    await client.waitFor((p) => p.type === 'data' && p.streamId === 1, 'echo');
    client.send(encodeConnect(2, 1, stall.port, '127.0.0.1'));
    for (let i = 0; i < 100; i++) client.send(encodeData(2, new Uint8Array(32 * 1024)));
    await new Promise((r) => setTimeout(r, 200));
    const started = performance.now();
    relay.proc.kill('SIGTERM');
    expect(await client.waitFor(isClose(1), 'CLOSE on stream 1')).toMatchObject({ reason: 0x02 });
    expect(await client.waitFor(isClose(2), 'CLOSE on stream 2')).toMatchObject({ reason: 0x02 });
    expect(await client.waitForClose()).toBe(1001);
    const exit = await relay.proc.waitForExit(5000);
    // The hard deadline is 4.5 s; a drain that needs it (something left open) fails here.
    expect(performance.now() - started).toBeLessThan(4000);
    expect(relay.proc.events.find((e) => e.event === 'stopped')?.forced).toBeUndefined();
    expect(exit.code).toBe(0);
    await expect(fetch(`${relay.http}/healthz`)).rejects.toThrow();
  });
});

describe('admission', () => {
  it('--token: refuses upgrades without it, accepts the query parameter and the header', async () => {
    const relay = await startRelay(['--allow-loopback', '--token', 'tok3n']);
    try {
      await expect(RawWispClient.open(relay.wisp)).rejects.toMatchObject({ status: 401 });
      await expect(RawWispClient.open(`${relay.wisp}?token=wrong`)).rejects.toMatchObject({ status: 401 });
      (await RawWispClient.open(`${relay.wisp}?token=tok3n`)).close();
      const c = await RawWispClient.open(relay.wisp, [], { authorization: 'Bearer tok3n' });
      await c.waitFor((p) => p.type === 'continue' && p.streamId === 0, 'initial CONTINUE');
      c.close();
    } finally {
      await relay.stop();
    }
  });

  it('--origin and --max-clients', async () => {
    const relay = await startRelay(['--origin', 'https://good.example', '--max-clients', '1']);
    try {
      await expect(RawWispClient.open(relay.wisp, [], { origin: 'https://evil.example' })).rejects.toMatchObject({ status: 403 });
      const first = await RawWispClient.open(relay.wisp, [], { origin: 'https://good.example' });
      await expect(RawWispClient.open(relay.wisp, [], { origin: 'https://good.example' })).rejects.toMatchObject({ status: 503 });
      first.close();
    } finally {
      await relay.stop();
    }
  });

  it('--max-clients-per-ip: one address cannot take every slot; others still get in', async () => {
    const relay = await startRelay(['--max-clients-per-ip', '2']);
    /** Opens a WebSocket from `localAddress`; resolves with it, or with the refusal's status. */
    const open = (localAddress: string) =>
      new Promise<WebSocket | number>((resolve, reject) => {
        const ws = new WebSocket(relay.wisp, { localAddress });
        ws.once('open', () => resolve(ws));
        ws.once('unexpected-response', (_req, res) => {
          resolve(res.statusCode ?? 0);
          ws.terminate();
        });
        ws.once('error', reject);
      });
    try {
      const a = await open('127.0.0.1');
      const b = await open('127.0.0.1');
      expect(typeof a).toBe('object');
      expect(typeof b).toBe('object');
      expect(await open('127.0.0.1')).toBe(503);
      const other = await open('127.0.0.2');
      expect(typeof other).toBe('object');
      // A slot comes back when its WebSocket closes.
      const closed = new Promise((r) => (a as WebSocket).once('close', r));
      (a as WebSocket).close();
      await closed;
      await new Promise((r) => setTimeout(r, 100));
      const again = await open('127.0.0.1');
      expect(typeof again).toBe('object');
      for (const ws of [b, other, again]) (ws as WebSocket).terminate();
      expect(relay.proc.events.some((e) => e.event === 'upgrade-rejected' && e.cause === 'max-clients-per-ip')).toBe(true);
    } finally {
      await relay.stop();
    }
  });
});

describe('limits', () => {
  it('--max-streams-per-client and --rate throttle with 0x49', async () => {
    const relay = await startRelay(['--allow-loopback', '--max-streams-per-client', '5', '--rate', '20']);
    try {
      const client = await RawWispClient.open(relay.wisp);
      for (let id = 1; id <= 8; id++) client.send(encodeConnect(id, 1, stall.port, '127.0.0.1'));
      expect(await client.waitFor(isClose(6), 'stream 6')).toMatchObject({ reason: 0x49 });
      client.close();
      // A burst of 2000 CONNECTs: beyond the rate every one is throttled, and the relay is fine.
      const flood = await RawWispClient.open(relay.wisp);
      for (let id = 1; id <= 2000; id++) {
        flood.send(encodeConnect(id, 1, echo.port, '127.0.0.1'));
        flood.send(encodeData(id, Buffer.from('x')));
        flood.send(new Uint8Array([4, id & 0xff, id >> 8, 0, 0, 2]));
      }
      await flood.waitFor(isClose(2000), 'the last CONNECT answered', 10_000);
      expect(flood.packets.filter((p) => p.type === 'close' && p.reason === 0x49).length).toBeGreaterThan(1900);
      flood.close();
      await new Promise((r) => setTimeout(r, 1000)); // let the bucket refill for the next client
      await healthyRoundTrip(relay);
    } finally {
      await relay.stop();
    }
  });

  it('--first-stream-timeout frees the slot of a WebSocket that opens nothing; weft reconnects when it next needs the relay', async () => {
    const relay = await startRelay(['--allow-loopback', '--first-stream-timeout', '400ms']);
    try {
      const idle = await RawWispClient.open(relay.wisp);
      const busy = await RawWispClient.open(relay.wisp);
      busy.send(encodeConnect(1, 1, stall.port, '127.0.0.1'));
      const started = performance.now();
      expect(await idle.waitForClose()).toBe(4000);
      expect(performance.now() - started).toBeGreaterThanOrEqual(300);
      await relay.proc.waitForEvent('client-idle');
      await new Promise((r) => setTimeout(r, 400));
      expect(busy.closeCode, 'a client that opened a stream stays').toBeUndefined();
      busy.close();

      // weft's own client: closed while idle, it does not reconnect by itself (no churn every
      // timeout), and a flow that needs the relay later brings the connection back.
      const logs: Array<{ event: string }> = [];
      const up = new WispUpstream({ url: relay.wisp, connect: connectWsTransport, log: (e) => logs.push(e as { event: string }) });
      try {
        await until(() => logs.some((e) => e.event === 'wisp-idle'), 'the relay closing the idle upstream', 5000);
        await new Promise((r) => setTimeout(r, 1500));
        expect(up.connections, 'no reconnect while nothing needs the relay').toBe(1);
        expect(logs.filter((e) => e.event === 'wisp-disconnected')).toEqual([]);
        const loopback = parseIpv4('127.0.0.1');
        const reply = await new Promise<string>((resolve, reject) => {
          const meta: FlowMeta = { protocol: 'tcp', guest: { ip: parseIpv4('10.0.2.15'), port: 40000 }, target: { ip: loopback, port: echo.port } };
          const stream = up.openTcp({ ip: loopback, port: echo.port }, meta, {
            onConnect: () => stream.write(Buffer.from('back again')),
            onData: (d) => resolve(Buffer.from(d).toString()),
            onEnd: () => {},
            onDrain: () => {},
            onClose: (e) => reject(new Error(`closed: ${e?.kind ?? 'cleanly'}`)),
          });
        });
        expect(reply).toBe('back again');
        expect(up.connections).toBe(2);
      } finally {
        up.close();
      }
    } finally {
      await relay.stop();
    }
  });

  it('refusal log lines are throttled per client IP and the rest counted', async () => {
    const relay = await startRelay(['--allow-loopback', '--rate', '0', '--ports', '1-1000']);
    try {
      const flood = await RawWispClient.open(relay.wisp);
      for (let id = 1; id <= 2000; id++) flood.send(encodeConnect(id, 1, 2000 + (id % 1000), '127.0.0.1'));
      await flood.waitFor(isClose(2000), 'the last CONNECT refused', 10_000);
      expect(flood.packets.filter((p) => p.type === 'close' && p.reason === 0x48).length).toBe(2000);
      await new Promise((r) => setTimeout(r, 300));
      const lines = relay.proc.events.filter((e) => e.event === 'stream-close' && e.closeReason === 0x48).length;
      expect(lines).toBeGreaterThan(10);
      expect(lines).toBeLessThan(200);
      const text = await (await fetch(`${relay.http}/metrics`)).text();
      const suppressed = Number(/^weft_relay_log_lines_suppressed_total (\d+)$/m.exec(text)?.[1]);
      expect(suppressed + lines).toBe(2000);
      // After a pause, the next line says how many were skipped since the line before it: over all
      // lines, every refusal is accounted for (on a slow machine the budget refills mid-flood, and
      // lines written then carry their own counts).
      await new Promise((r) => setTimeout(r, 1000));
      flood.send(encodeConnect(3000, 1, 2000, '127.0.0.1'));
      const next = await relay.proc.waitForEvent('stream-close', (e) => e.stream === 3000);
      expect(next.suppressed).toBeGreaterThan(0);
      const reported = relay.proc.events
        .filter((e) => e.event === 'stream-close')
        .reduce((n, e) => n + (typeof e.suppressed === 'number' ? e.suppressed : 0), 0);
      expect(reported).toBe(suppressed);
      flood.close();
    } finally {
      await relay.stop();
    }
  });

  it('--idle-timeout closes quiet streams with 0x47', async () => {
    const relay = await startRelay(['--allow-loopback', '--idle-timeout', '300ms']);
    try {
      const client = await RawWispClient.open(relay.wisp);
      client.send(encodeConnect(1, 1, stall.port, '127.0.0.1'));
      const started = performance.now();
      expect(await client.waitFor(isClose(1), 'idle close')).toMatchObject({ reason: 0x47 });
      expect(performance.now() - started).toBeGreaterThanOrEqual(250);
      client.close();
    } finally {
      await relay.stop();
    }
  });

  it('--bandwidth paces a client', async () => {
    const relay = await startRelay(['--allow-loopback', '--bandwidth', '256K']);
    try {
      const conn = await wispJsConnect(relay.wisp, { wisp_version: 1 });
      const payload = randomBytes(640 * 1024);
      const started = performance.now();
      const r = await wispJsRoundTrip(conn, '127.0.0.1', echo.port, payload);
      const seconds = (performance.now() - started) / 1000;
      expect('data' in r && r.data.length).toBe(payload.length);
      // 640 KiB at 256 KiB/s, less a 64 KiB burst: at least ~2 s (unpaced, it takes milliseconds).
      expect(seconds).toBeGreaterThan(1.8);
      conn.close();
    } finally {
      await relay.stop();
    }
  });

  it('--bandwidth holds UDP too (datagrams over the budget are dropped), and no datagram is larger than UDP allows', async () => {
    const relay = await startRelay(['--allow-loopback', '--bandwidth', '100K']);
    const udpEcho = await udpEchoServer();
    const client = await RawWispClient.open(relay.wisp);
    try {
      client.send(encodeConnect(1, 2, udpEcho.port, '127.0.0.1'));
      const datagram = new Uint8Array(1000).fill(9);
      // 2 s of datagrams as fast as they go (~tens of MB unpaced).
      const started = performance.now();
      let sent = 0;
      while (performance.now() - started < 2000) {
        for (let i = 0; i < 200; i++) client.send(encodeData(1, datagram));
        sent += 200 * datagram.length;
        await new Promise((r) => setTimeout(r, 1));
      }
      await new Promise((r) => setTimeout(r, 500));
      const echoed = client.packets.filter((p) => p.type === 'data' && p.streamId === 1).reduce((n, p) => n + (p.type === 'data' ? p.payload.length : 0), 0);
      // 100 KiB/s each way for ~2.5 s plus a 64 KiB burst: well under 1 MB, of several MB offered.
      expect(sent).toBeGreaterThan(4_000_000);
      expect(echoed).toBeGreaterThan(0);
      expect(echoed).toBeLessThan(600_000);
      // A 100 KiB "datagram" cannot exist: dropped, not sent in pieces.
      const before = echoed;
      await new Promise((r) => setTimeout(r, 1500)); // let the budget refill
      client.send(encodeData(1, new Uint8Array(100 * 1024)));
      await new Promise((r) => setTimeout(r, 300));
      const after = client.packets.filter((p) => p.type === 'data' && p.streamId === 1).reduce((n, p) => n + (p.type === 'data' ? p.payload.length : 0), 0);
      expect(after).toBe(before);
    } finally {
      client.close();
      await udpEcho.close();
      await relay.stop();
    }
  });
});

describe('hostile clients', () => {
  let relay: RunningRelay;
  beforeAll(async () => {
    relay = await startRelay(['--allow-loopback', '--rate', '0']);
  });
  afterAll(() => relay.stop());

  it('closes a client that sends DATA beyond its credits (1008) while another keeps working', async () => {
    const good = await wispJsConnect(relay.wisp, { wisp_version: 2 });
    // The well-behaved client pushes just as hard at a destination that never reads, within credits.
    const goodStall = good.create_stream('127.0.0.1', stall.port);
    for (let i = 0; i < 600; i++) goodStall.send(new Uint8Array(64 * 1024 - 5));
    const bad = await RawWispClient.open(relay.wisp);
    const initial = (await bad.waitFor((p) => p.type === 'continue' && p.streamId === 0, 'initial CONTINUE')) as { bufferRemaining: number };
    expect(initial.bufferRemaining).toBe(128);
    bad.send(encodeConnect(1, 1, stall.port, '127.0.0.1'));
    // The destination never reads: once the kernel's socket buffers are full nothing is released,
    // no credit comes back, and a client that keeps sending has broken the rule.
    const packet = encodeData(1, new Uint8Array(64 * 1024 - 5));
    for (let i = 0; i < 600 && bad.closeCode === undefined; i++) {
      bad.send(packet);
      if (i % 50 === 0) await new Promise((r) => setTimeout(r, 5));
    }
    expect(await bad.waitForClose()).toBe(1008);
    await relay.proc.waitForEvent('client-error', (e) => e.code === 'credit-overrun');
    const r = await wispJsRoundTrip(good, '127.0.0.1', echo.port, Buffer.from('unaffected'));
    expect('data' in r && Buffer.from(r.data).toString()).toBe('unaffected');
    good.close();
  });

  it('closes a client whose 1 MB packets, within its credits, pile up at one stalled destination (1008), having taken < 32 MiB', async () => {
    const bad = await RawWispClient.open(relay.wisp);
    await bad.waitFor((p) => p.type === 'continue' && p.streamId === 0, 'initial CONTINUE');
    bad.send(encodeConnect(1, 1, stall.port, '127.0.0.1'));
    // 128 credits of up to 1 MiB each: 128 MB allowed by the packet count alone.
    const megabyte = encodeData(1, new Uint8Array(1e6));
    for (let i = 0; i < 128 && bad.closeCode === undefined; i++) {
      bad.send(megabyte);
      while (bad.ws.bufferedAmount > 8e6 && bad.closeCode === undefined) await new Promise((r) => setTimeout(r, 5));
    }
    expect(await bad.waitForClose()).toBe(1008);
    const error = await relay.proc.waitForEvent('client-error', (e) => e.code === 'upload-overrun');
    expect(String(error.message)).toMatch(/waiting for one destination/);
    const closed = await relay.proc.waitForEvent('stream-close', (e) => e.client === error.client);
    // Past 20 MiB waiting on the stream, plus what the sockets took: not the 64 MiB of all streams.
    expect(closed.bytesUp).toBeGreaterThan(20 * 2 ** 20);
    expect(closed.bytesUp).toBeLessThan(32 * 2 ** 20);
    await healthyRoundTrip(relay);
  });

  it('closes a client that sends an oversized message (1009)', async () => {
    const bad = await RawWispClient.open(relay.wisp);
    bad.send(encodeData(1, new Uint8Array(2 * 1024 * 1024)));
    expect(await bad.waitForClose()).toBe(1009);
    await healthyRoundTrip(relay);
  });

  it('closes a client that sends a message shorter than the header (1002)', async () => {
    const bad = await RawWispClient.open(relay.wisp);
    bad.send(new Uint8Array([2, 0, 0]));
    expect(await bad.waitForClose()).toBe(1002);
  });

  it('ignores unknown types, DATA for unknown streams and text frames; refuses empty hosts and port 0', async () => {
    const c = await RawWispClient.open(relay.wisp);
    c.send(new Uint8Array([0x7e, 1, 0, 0, 0, 9]));
    c.send(encodeData(99, Buffer.from('nobody')));
    c.ws.send('text frame');
    c.send(encodeConnect(1, 1, echo.port, ''));
    c.send(encodeConnect(2, 1, 0, '127.0.0.1'));
    c.send(encodeConnect(3, 7, echo.port, '127.0.0.1'));
    expect(await c.waitFor(isClose(1), 'empty host')).toMatchObject({ reason: 0x41 });
    expect(await c.waitFor(isClose(2), 'port 0')).toMatchObject({ reason: 0x41 });
    expect(await c.waitFor(isClose(3), 'stream type 7')).toMatchObject({ reason: 0x41 });
    c.send(encodeConnect(4, 1, echo.port, '127.0.0.1'));
    c.send(encodeData(4, Buffer.from('fine')));
    expect(await c.waitFor((p) => p.type === 'data' && p.streamId === 4, 'echo on the same connection')).toBeTruthy();
    expect(c.closeCode).toBeUndefined();
    c.close();
  });
});
