// `weft relay --workers N` and `--trust-proxy`, as an operator runs them: connections spread over
// the workers by client IP, per-IP and total limits that do not multiply by N, /metrics and
// /healthz for the whole relay, a worker killed outright (its clients reconnect elsewhere, it is
// started again), and SIGTERM stopping everything within 5 s.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeConnect, encodeData, type WispPacket } from '../../core/wisp/wisp-codec';
import { RawWispClient, startRelay, tcpServer, type RunningRelay, type TestServer } from './relay-support';

let echo: TestServer;
beforeAll(async () => {
  echo = await tcpServer('echo');
});
afterAll(async () => {
  await echo.close();
});

const isData = (id: number) => (p: WispPacket) => p.type === 'data' && p.streamId === id;

/** Opens a WebSocket from `from` and echoes one message through the relay on stream 1. */
async function echoFrom(relay: RunningRelay, from: string, headers: Record<string, string> = {}): Promise<RawWispClient> {
  const c = await RawWispClient.open(relay.wisp, [], headers, from);
  c.send(encodeConnect(1, 1, echo.port, '127.0.0.1'));
  c.send(encodeData(1, Buffer.from(`hello from ${from}`)));
  const back = await c.waitFor(isData(1), `echo for ${from}`);
  expect(back.type === 'data' && Buffer.from(back.payload).toString()).toBe(`hello from ${from}`);
  return c;
}

/** The refusal status of an upgrade, or 101 when it was accepted (the socket is closed again). */
async function upgradeStatus(relay: RunningRelay, from: string, headers: Record<string, string> = {}): Promise<number> {
  try {
    const c = await RawWispClient.open(relay.wisp, [], headers, from);
    c.close();
    return 101;
  } catch (e) {
    return (e as { status?: number }).status ?? -1;
  }
}

async function metrics(relay: RunningRelay): Promise<string> {
  return (await fetch(`${relay.http}/metrics`)).text();
}

function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line === undefined ? undefined : Number(line.split(' ').pop());
}

async function until(ok: () => boolean | Promise<boolean>, what: string, ms: number): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await ok())) {
    if (performance.now() > deadline) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('--workers 2', () => {
  it('spreads clients over both workers by IP, answers /healthz and /metrics for all, and keeps per-IP and total limits exact', async () => {
    const relay = await startRelay(['--workers', '2', '--allow-loopback', '--max-clients-per-ip', '2', '--max-clients', '10']);
    const clients: RawWispClient[] = [];
    try {
      expect(relay.proc.events.find((e) => e.event === 'ready')?.workers).toBe(2);
      expect(relay.proc.events.filter((e) => e.event === 'worker-started')).toHaveLength(2);
      const health = await fetch(`${relay.http}/healthz`);
      expect(health.status).toBe(200);
      // Eight client addresses: a stable hash puts them on both workers.
      for (let i = 1; i <= 8; i++) clients.push(await echoFrom(relay, `127.0.0.${i + 10}`));
      const m = await metrics(relay);
      const w0 = sample(m, 'weft_relay_clients', 'worker="0"') ?? 0;
      const w1 = sample(m, 'weft_relay_clients', 'worker="1"') ?? 0;
      expect(w0 + w1).toBe(8);
      expect(w0).toBeGreaterThan(0);
      expect(w1).toBeGreaterThan(0);
      expect(sample(m, 'weft_relay_workers', 'worker="primary",state="ready"')).toBe(2);
      // Per IP: 2, whichever worker serves the address (with connection balancing it would be 2 × 2).
      clients.push(await echoFrom(relay, '127.0.0.50'));
      clients.push(await echoFrom(relay, '127.0.0.50'));
      for (let i = 0; i < 3; i++) expect(await upgradeStatus(relay, '127.0.0.50')).toBe(503);
      // In total: 10, counted over both workers.
      await until(async () => (await upgradeStatus(relay, '127.0.0.60')) === 503, 'the total limit', 5000);
      const after = await metrics(relay);
      expect(sample(after, 'weft_relay_rejected_upgrades_total', 'worker="primary",cause="max-clients"')).toBeGreaterThan(0);
      // A slot freed anywhere is free for everyone.
      clients.shift()!.close();
      await until(async () => (await upgradeStatus(relay, '127.0.0.60')) === 101, 'a freed slot', 5000);
    } finally {
      for (const c of clients) c.close();
      await relay.stop();
    }
  });

  it('a worker killed outright: its clients are cut, reconnect to the other, and it is started again', async () => {
    const relay = await startRelay(['--workers', '2', '--allow-loopback']);
    try {
      const started = relay.proc.events.filter((e) => e.event === 'worker-started');
      const first = await echoFrom(relay, '127.0.0.21');
      // Which worker serves this client: the one whose client count is 1.
      const m = await metrics(relay);
      const victim = sample(m, 'weft_relay_clients', 'worker="0"') === 1 ? 0 : 1;
      const pid = started.find((e) => e.worker === victim)?.pid as number;
      process.kill(pid, 'SIGKILL');
      expect(await first.waitForClose(5000)).toBeGreaterThan(0);
      // The same client comes straight back (the other worker takes it while its own restarts).
      const again = await echoFrom(relay, '127.0.0.21');
      again.close();
      await until(() => relay.proc.events.some((e) => e.event === 'worker-exit' && e.worker === victim), 'worker-exit', 5000);
      await until(() => relay.proc.events.filter((e) => e.event === 'worker-started').length === 3, 'the restart', 10_000);
      await until(async () => sample(await metrics(relay), 'weft_relay_workers', 'worker="primary",state="ready"') === 2, 'two ready workers', 10_000);
      expect(sample(await metrics(relay), 'weft_relay_worker_restarts_total', 'worker="primary"')).toBe(1);
    } finally {
      await relay.stop();
    }
  });

  it('SIGTERM: clients get 1001, every process is gone within 5 s', async () => {
    const relay = await startRelay(['--workers', '2', '--allow-loopback']);
    const pids = relay.proc.events.filter((e) => e.event === 'worker-started').map((e) => e.pid as number);
    const c = await echoFrom(relay, '127.0.0.31');
    const t0 = performance.now();
    relay.proc.kill('SIGTERM');
    expect(await c.waitForClose(5000)).toBe(1001);
    await relay.proc.waitForExit(5500);
    expect(performance.now() - t0).toBeLessThan(5500);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });
});

describe('--trust-proxy', () => {
  it('takes the client from X-Forwarded-For only when the peer is a trusted proxy', async () => {
    const trusting = await startRelay(['--trust-proxy', '127.0.0.1', '--max-clients-per-ip', '1', '--allow-loopback']);
    const plain = await startRelay(['--max-clients-per-ip', '1', '--allow-loopback']);
    const open: RawWispClient[] = [];
    try {
      // Behind the trusted proxy (127.0.0.1): two clients, one slot each.
      open.push(await echoFrom(trusting, '127.0.0.1', { 'x-forwarded-for': '203.0.113.5' }));
      open.push(await echoFrom(trusting, '127.0.0.1', { 'x-forwarded-for': '198.51.100.7, 203.0.113.6' }));
      expect(await upgradeStatus(trusting, '127.0.0.1', { 'x-forwarded-for': '203.0.113.5' })).toBe(503);
      // A client cannot escape its limit by writing the header itself: from an untrusted peer it is ignored.
      open.push(await echoFrom(trusting, '127.0.0.2', { 'x-forwarded-for': '203.0.113.9' }));
      expect(await upgradeStatus(trusting, '127.0.0.2', { 'x-forwarded-for': '203.0.113.10' })).toBe(503);
      // Nor by prepending an address before the proxy's own entry: the rightmost untrusted one counts.
      expect(await upgradeStatus(trusting, '127.0.0.1', { 'x-forwarded-for': '192.0.2.1, 203.0.113.5' })).toBe(503);
      // Without --trust-proxy the header means nothing.
      open.push(await echoFrom(plain, '127.0.0.1', { 'x-forwarded-for': '203.0.113.5' }));
      expect(await upgradeStatus(plain, '127.0.0.1', { 'x-forwarded-for': '203.0.113.6' })).toBe(503);
      const rejected = trusting.proc.events.filter((e) => e.event === 'upgrade-rejected').map((e) => e.client);
      expect(rejected).toEqual(['203.0.113.5', '127.0.0.2', '203.0.113.5']);
    } finally {
      for (const c of open) c.close();
      await trusting.stop();
      await plain.stop();
    }
  });
});
