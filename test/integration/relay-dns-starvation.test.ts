// Names whose DNS never answers must not stall anyone else's lookups. The relay used to resolve with
// getaddrinfo, which holds one of libuv's four pool threads for the whole lookup: 20 CONNECTs to such
// names and every other client's CONNECT by name failed for ~40 s. It now resolves with c-ares (and
// reads /etc/hosts itself), so a hanging name costs a timer, not a thread.
//
// The relay runs in a private mount namespace whose /etc/resolv.conf names a DNS server of this test
// (on 127.0.0.77:53, this machine's loopback) that answers one name and stays silent for the rest,
// and whose /etc/hosts lists one more name. Nothing leaves the machine.

import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeConnect, encodeData, type WispPacket } from '../../core/wisp/wisp-codec';
import { requireRoot } from '../harness/netns';
import { weftBundle } from '../harness/weft-bundle';
import { spawnWrappedWeft, type WeftProcess } from '../harness/weft-process';
import { RawWispClient, tcpServer, type TestServer } from './relay-support';

const TITLE = 'relay DNS: hanging names do not starve other lookups';
const root = requireRoot(TITLE);
const DNS_ADDRESS = '127.0.0.77';
const ANSWERED = 'good.weft-starve.test';
const LISTED = 'listed.weft-starve.test';
const HANGING = 24;

/** A DNS server that answers A for ANSWERED (127.0.0.1), AAAA with no data, and nothing else at all. */
async function startSilentDns(): Promise<{ hanging: number; close(): Promise<void> }> {
  const socket = dgram.createSocket('udp4');
  const state = { hanging: 0, close: () => new Promise<void>((r) => socket.close(() => r())) };
  socket.on('message', (q, rinfo) => {
    // Question name: labels from offset 12.
    const labels: string[] = [];
    let at = 12;
    while (at < q.length && q[at] !== 0) {
      labels.push(q.subarray(at + 1, at + 1 + q[at]).toString('latin1'));
      at += 1 + q[at];
    }
    const name = labels.join('.').toLowerCase();
    const type = q.readUInt16BE(at + 1);
    if (name !== ANSWERED) {
      state.hanging++;
      return; // silent
    }
    const question = q.subarray(12, at + 5);
    const header = Buffer.from([q[0], q[1], 0x81, 0x80, 0, 1, 0, type === 1 ? 1 : 0, 0, 0, 0, 0]);
    const answer = type === 1 ? Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1]) : Buffer.alloc(0);
    socket.send(Buffer.concat([header, question, answer]), rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(53, DNS_ADDRESS, () => resolve());
  });
  return state;
}

describe.skipIf(!root.ok)(TITLE, () => {
  let dir: string;
  let dns: Awaited<ReturnType<typeof startSilentDns>>;
  let echo: TestServer;
  let relay: WeftProcess;
  let url: string;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-dns-starve-'));
    writeFileSync(join(dir, 'resolv.conf'), `nameserver ${DNS_ADDRESS}\n`);
    writeFileSync(join(dir, 'hosts'), `127.0.0.1 localhost\n127.0.0.1 ${LISTED}\n`);
    dns = await startSilentDns();
    echo = await tcpServer('echo');
    // unshare execs sh, which execs node: the PID is the relay's.
    const script = 'mount --make-rprivate / && mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"';
    relay = spawnWrappedWeft('unshare', [
      '-m',
      '--',
      'sh',
      '-c',
      script,
      'sh',
      join(dir, 'resolv.conf'),
      join(dir, 'hosts'),
      process.execPath,
      weftBundle(),
      'relay',
      '--listen',
      '127.0.0.1:0',
      '--allow-loopback',
      '--rate',
      '0',
      '--connect-timeout',
      '30s',
    ]);
    const ready = await relay.waitForEvent('ready');
    url = `ws://127.0.0.1:${ready.port as number}/wisp/`;
  });
  afterAll(async () => {
    relay?.kill('SIGTERM');
    await relay?.waitForExit(6000).catch(() => relay.kill('SIGKILL'));
    await dns?.close();
    await echo?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Opens stream `id` to host and resolves with 'open' once data echoes, or the CLOSE reason. */
  async function outcome(client: RawWispClient, id: number, host: string): Promise<number | 'open'> {
    client.send(encodeConnect(id, 1, echo.port, host));
    client.send(encodeData(id, Buffer.from('ping')));
    const p = await client.waitFor((q: WispPacket) => q.streamId === id && (q.type === 'close' || q.type === 'data'), `stream ${id} to ${host}`, 3000);
    return p.type === 'close' ? p.reason : 'open';
  }

  it(`other clients resolve at once while ${HANGING} lookups hang`, { timeout: 60_000 }, async () => {
    const abusers = await Promise.all(Array.from({ length: 4 }, () => RawWispClient.open(url)));
    for (let i = 0; i < HANGING; i++) abusers[i % abusers.length].send(encodeConnect(i + 1, 1, echo.port, `n${i}.hang.weft-starve.test`));
    // Every hanging name has reached the DNS server: the lookups are under way.
    const deadline = performance.now() + 5000;
    while (dns.hanging < HANGING && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(dns.hanging, 'every hanging lookup is under way at once (getaddrinfo runs 4 at a time)').toBeGreaterThanOrEqual(HANGING);

    const good = await RawWispClient.open(url);
    const started = performance.now();
    expect(await outcome(good, 1, ANSWERED)).toBe('open');
    expect(await outcome(good, 2, LISTED), '/etc/hosts is read').toBe('open');
    expect(performance.now() - started).toBeLessThan(2000);
    // The hanging names are still hanging: nothing was answered for them in the meantime.
    for (const a of abusers) expect(a.packets.filter((p) => p.type === 'close' && p.streamId > 0)).toEqual([]);
    good.close();
    for (const a of abusers) a.close();
  });
});
