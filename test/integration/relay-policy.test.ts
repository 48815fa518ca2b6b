// Destination policy end to end: `weft relay` resolves and checks before connecting, and refusals
// come back as CLOSE 0x48. Every refused destination here is refused before any socket is opened,
// so no packet leaves this machine; the allowed ones are loopback echo servers.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeConnect, encodeData, type WispPacket } from '../../core/wisp/wisp-codec';
import { RawWispClient, startRelay, tcpServer, type RunningRelay, type TestServer } from './relay-support';

let echo: TestServer;
beforeAll(async () => {
  echo = await tcpServer('echo');
});
afterAll(() => echo.close());

/** Opens stream `id` to host:port and resolves with the CLOSE reason, or 'open' if data echoes back. */
async function outcome(client: RawWispClient, id: number, host: string, port: number): Promise<number | 'open'> {
  client.send(encodeConnect(id, 1, port, host));
  client.send(encodeData(id, Buffer.from('probe')));
  const p = await client.waitFor((q: WispPacket) => q.streamId === id && (q.type === 'close' || q.type === 'data'), `stream ${id} to ${host}`);
  return p.type === 'close' ? p.reason : 'open';
}

describe('default policy', () => {
  let relay: RunningRelay;
  let client: RawWispClient;
  beforeAll(async () => {
    relay = await startRelay(['--rate', '0']);
    client = await RawWispClient.open(relay.wisp);
  });
  afterAll(async () => {
    client.close();
    await relay.stop();
  });

  const denied = [
    '127.0.0.1',
    '127.255.255.254',
    'localhost',
    '0.0.0.0',
    '0x7f.1',
    '2130706433',
    '10.1.2.3',
    '172.16.0.1',
    '192.168.1.1',
    '100.64.0.1',
    '169.254.169.254',
    '224.0.0.1',
    '255.255.255.255',
    '::1',
    '[::1]',
    '::',
    'fe80::1',
    'fc00::1',
    'fd12::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '::ffff:169.254.169.254',
    '64:ff9b::7f00:1',
    'ff02::1',
  ];
  it.each(denied.map((h, i) => [h, i + 1] as const))('refuses %s with 0x48', async (host, id) => {
    expect(await outcome(client, id, host, echo.port)).toBe(0x48);
  });

  it('logs the refusal with the resolved address and why', async () => {
    const e = await relay.proc.waitForEvent('stream-close', (ev) => ev.destination === `localhost:${echo.port}`);
    expect(e).toMatchObject({ reason: 'blocked', closeReason: 0x48, bytesDown: 0, client: expect.stringMatching(/^127\.0\.0\.1:\d+$/) });
    expect(e.bytesUp).toBeTypeOf('number');
    expect(String(e.why)).toMatch(/127\.0\.0\.1 is loopback/);
  });

  it('refuses a name that does not resolve with 0x42', async () => {
    expect(await outcome(client, 100, 'no-such-host.invalid', 80)).toBe(0x42);
  });
});

describe('allow flags open exactly what they name', () => {
  it('--allow-loopback opens 127/8 but not private ranges', async () => {
    const relay = await startRelay(['--allow-loopback']);
    const client = await RawWispClient.open(relay.wisp);
    try {
      expect(await outcome(client, 1, '127.0.0.1', echo.port)).toBe('open');
      expect(await outcome(client, 2, 'localhost', echo.port)).toBe('open');
      expect(await outcome(client, 3, '10.0.0.1', echo.port)).toBe(0x48);
      expect(await outcome(client, 4, '169.254.169.254', 80)).toBe(0x48);
    } finally {
      client.close();
      await relay.stop();
    }
  });

  it('--allow CIDR opens that range only; --deny wins; --ports limits ports', async () => {
    const relay = await startRelay(['--allow', '127.0.0.0/8', '--deny', '127.0.0.2', '--ports', `${echo.port},1-2`]);
    const client = await RawWispClient.open(relay.wisp);
    try {
      expect(await outcome(client, 1, '127.0.0.1', echo.port)).toBe('open');
      // Allowed, so the relay really tried: nothing listens on 127.0.0.3 → refused (0x44).
      expect(await outcome(client, 2, '127.0.0.3', echo.port)).toBe(0x44);
      expect(await outcome(client, 3, '127.0.0.2', echo.port)).toBe(0x48); // --deny wins over --allow
      expect(await outcome(client, 4, '10.0.0.1', echo.port)).toBe(0x48); // not named
      expect(await outcome(client, 5, '127.0.0.1', echo.port === 65535 ? 65534 : echo.port + 1)).toBe(0x48); // --ports
    } finally {
      client.close();
      await relay.stop();
    }
  });

  it('--allow HOST opens that name wherever it resolves', async () => {
    const relay = await startRelay(['--allow', 'localhost']);
    const client = await RawWispClient.open(relay.wisp);
    try {
      expect(await outcome(client, 1, 'localhost', echo.port)).toBe('open');
      expect(await outcome(client, 2, '127.0.0.1', echo.port)).toBe(0x48);
    } finally {
      client.close();
      await relay.stop();
    }
  });

  it('admits only its first resolver past the policy (port 53), as its help says', async () => {
    // Two --dns-server entries; neither listens here. The second's address is loopback like any other.
    const relay = await startRelay(['--dns-server', '127.0.0.1:5399', '--dns-server', '127.0.0.2']);
    const client = await RawWispClient.open(relay.wisp);
    try {
      expect(await outcome(client, 1, '127.0.0.2', 53)).toBe(0x48);
    } finally {
      client.close();
      await relay.stop();
    }
  });

  it('matches rules and resolves one spelling: a NUL, a space or a control byte is refused with 0x41, case and a trailing dot are the same name', async () => {
    // With `.example.com` allowed, `localhost\0.example.com` once matched the rule while the system
    // resolver stopped at the NUL and looked up localhost: the stream reached 127.0.0.1.
    const relay = await startRelay(['--allow', '.example.com', '--deny', 'localhost', '--allow-loopback']);
    const client = await RawWispClient.open(relay.wisp);
    try {
      expect(await outcome(client, 1, 'localhost\0.example.com', echo.port)).toBe(0x41);
      expect(await outcome(client, 2, 'localhost .example.com', echo.port)).toBe(0x41);
      expect(await outcome(client, 3, 'localhost\t.example.com', echo.port)).toBe(0x41);
      // The deny rule holds for every spelling of the denied name.
      expect(await outcome(client, 4, 'LOCALHOST.', echo.port)).toBe(0x48);
      expect(await outcome(client, 5, 'ｌｏｃａｌｈｏｓｔ', echo.port)).toBe(0x48);
      expect(await outcome(client, 6, '127.0.0.1', echo.port)).toBe('open');
    } finally {
      client.close();
      await relay.stop();
    }
  });
});
