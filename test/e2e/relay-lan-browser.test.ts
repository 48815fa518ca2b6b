// A LAN across browsers through the relay (issue 19, item 5): two Chromium processes ("two
// browsers"), each with a v86 guest — real Linux, restored from one saved state and given a MAC and a
// DHCP hostname of its own — and createNetwork({ relayUrl, lan: { room, key } }) against a real
// `weft relay --lan --token …`. The relay hosts the room's router: the guests lease distinct
// addresses from it, ping each other (by address and by <hostname>.weft.internal), move a few MiB
// over TCP with busybox nc (sha256 on both ends), and reach an HTTP server on this host through the
// room's router (the relay's --allow-loopback lets the gateway reach it). What needs a stack in the
// page is refused with ERR_WEFT_ROOM_UNSUPPORTED, and a wrong key with ERR_WEFT_ROOM_REFUSED.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectedSha256, startHttpTestServer, type TestServer } from '../support/test-servers';
import {
  bootV86Snapshot,
  chromiumMissing,
  guestImageFor,
  launchChromium,
  serveStatic,
  v86ServeOptions,
  type ChromiumSession,
  type GuestImage,
  type StaticServer,
  type V86Guest,
} from './v86-harness';
import { attachWeft, startRelay, waitForWeftEvent, webBundleDir, weftEvents, weftStats, WEB_MOUNT, type RelayHandle } from './weft-page';

const SUITE = 'a LAN room across two browsers through weft relay --lan';
const missing = process.platform !== 'linux' ? 'needs Linux' : chromiumMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

const TOKEN = 'relay-lan-browser-token';
const ROOM = 'e2e-room';
const KEY = 'a key only these two browsers know';
/** Bytes moved guest to guest over TCP. */
const TCP_BYTES = 4 * 1024 * 1024;
const NC_PORT = 9100;

/** Gives the guest its own MAC (both start from one saved state) and leases an address from the room, announcing `hostname`. */
async function lease(guest: V86Guest, mac: string, hostname: string): Promise<string> {
  const from = guest.serial.length;
  const r = await guest.run(`ip link set dev eth0 address ${mac} && weft-dhcp -x hostname:${hostname}`, 60_000);
  expect(r.status, r.output).toBe(0);
  return (await guest.waitForLease(5_000, from)).ip;
}

describe.skipIf(missing !== undefined)(SUITE, () => {
  let image: GuestImage | undefined;
  let skipReason: string | undefined;
  let server: StaticServer | undefined;
  const sessions: ChromiumSession[] = [];
  const guests: V86Guest[] = [];
  const ips: string[] = [];
  let relay: RelayHandle | undefined;
  let http: TestServer | undefined;

  beforeAll(async () => {
    const built = await guestImageFor(SUITE);
    if (built.skipReason !== undefined) {
      skipReason = built.skipReason;
      return;
    }
    image = built.image;
    server = await serveStatic(v86ServeOptions(image, { mounts: { [WEB_MOUNT]: webBundleDir() } }));
    http = await startHttpTestServer();
    relay = await startRelay(['--token', TOKEN, '--lan', '--allow-loopback']);
    const relayUrl = `${relay.wisp}?token=${TOKEN}`;
    const t0 = performance.now();
    for (const i of [0, 1]) {
      // Two Chromium processes with profiles of their own: as far apart as two browsers on one host get.
      sessions.push(await launchChromium());
      const { guest } = await bootV86Snapshot(sessions[i], server, image, {
        nic: 'virtio',
        stateTag: 'weft',
        beforeRun: (g) => attachWeft(g, { relayUrl, lan: { room: ROOM, key: KEY } }),
      });
      guests.push(guest);
      await waitForWeftEvent(guest, (e) => e.type === 'relay' && e.state === 'connected', 'in the room', 10_000);
    }
    ips.push(await lease(guests[0], '52:54:00:e2:00:0a', 'alpha'));
    ips.push(await lease(guests[1], '52:54:00:e2:00:0b', 'bravo'));
    console.log(`[relay-lan-browser] two browsers in room ${ROOM}, leased ${ips.join(' and ')} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  }, 300_000);

  afterAll(async () => {
    for (const g of guests) {
      await g.page.evaluate(() => window.weftNet?.close()).catch(() => undefined);
      await g.close();
    }
    for (const s of sessions) await s.close();
    await server?.close();
    await relay?.stop();
    await http?.close();
  });

  it('the room’s router gave the guests distinct leases, and the relay holds one room with two members', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    expect(ips[0]).toMatch(/^10\.0\.2\.\d+$/);
    expect(ips[1]).toMatch(/^10\.0\.2\.\d+$/);
    expect(ips[0]).not.toBe(ips[1]);
    const m = await (await fetch(`http://127.0.0.1:${relay!.port}/metrics`)).text();
    expect(m).toMatch(/^weft_relay_lan_rooms 1$/m);
    expect(m).toMatch(/^weft_relay_lan_members 2$/m);
    const leases = relay!.proc.events.filter((e) => e.event === 'lan-lease' && e.room === ROOM).map((e) => e.ip);
    expect(leases).toEqual(expect.arrayContaining(ips));
    // Each page hears its own guest's lease (the relay tells the member whose guest it is).
    for (const i of [0, 1]) {
      const own = await weftEvents(guests[i], 'lease');
      expect(own.map((e) => [e.ip, e.hostname])).toEqual([[ips[i], ['alpha', 'bravo'][i]]]);
    }
  });

  it('the guests ping each other, by address and by DHCP hostname, and the room’s router', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const ab = await guests[0].run(`ping -c 3 -W 2 ${ips[1]}`, 30_000);
    expect(ab.status, ab.output).toBe(0);
    expect(ab.output).toMatch(/3 packets received/);
    console.log(`[relay-lan-browser] ping: ${/round-trip.*$/m.exec(ab.output)?.[0] ?? ab.output}`);
    // The room's router, in the relay, answers too.
    const gw = await guests[0].run('ping -c 2 -W 2 10.0.2.2', 30_000);
    expect(gw.status, gw.output).toBe(0);
    const ba = await guests[1].run('ping -c 2 -W 2 alpha.weft.internal', 30_000);
    expect(ba.status, ba.output).toBe(0);
    expect(ba.output).toContain(ips[0]);
  });

  it(`moves ${TCP_BYTES / 2 ** 20} MiB over TCP from one browser’s guest to the other’s, sha256 intact`, { timeout: 150_000 }, async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const [from, to] = guests;
    const listen = await to.run(`(nc -l -p ${NC_PORT} -e sha256sum > /dev/null 2>&1 &)`, 10_000);
    expect(listen.status, listen.output).toBe(0);
    const made = await from.run(`dd if=/dev/urandom of=/tmp/out bs=65536 count=${TCP_BYTES / 65536} 2>/dev/null && sha256sum /tmp/out`, 30_000);
    expect(made.status, made.output).toBe(0);
    const t0 = performance.now();
    const r = await from.run(`nc ${ips[1]} ${NC_PORT} < /tmp/out`, 120_000);
    const seconds = (performance.now() - t0) / 1000;
    expect(r.status, r.output).toBe(0);
    const digest = (text: string) => /\b([0-9a-f]{64})\b/.exec(text)?.[1] ?? `no digest in ${JSON.stringify(text)}`;
    const drops = await Promise.all(guests.map((g) => weftStats(g)));
    const relayDrops = (await (await fetch(`http://127.0.0.1:${relay!.port}/metrics`)).text()).split('\n').filter((l) => l.startsWith('weft_relay_lan_frames'));
    console.log(
      `[relay-lan-browser] ${TCP_BYTES / 2 ** 20} MiB guest to guest through the relay in ${seconds.toFixed(1)} s; page drops ${JSON.stringify(drops.map((d) => ({ ...d.stats.drops, ring: d.stats.ringDrops, attachment: d.attachmentDropped, lan: d.stats.lan.drops })))}; relay ${relayDrops.join('; ')}`,
    );
    expect(digest(r.output)).toBe(digest(made.output));
  });

  it('a guest reaches an HTTP server on this host through the room’s router', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const r = await guests[1].run(`wget -q -O - http://10.0.2.2:${http!.port}/bytes/100000 | sha256sum`, 60_000);
    expect(r.output.split(/\s/)[0]).toBe(expectedSha256(100_000));
  });

  it('what needs a stack in the page is refused with ERR_WEFT_ROOM_UNSUPPORTED; a wrong key with ERR_WEFT_ROOM_REFUSED', async ({ skip }) => {
    if (skipReason) skip(skipReason);
    const r = await guests[0].page.evaluate(
      async ({ relayUrl, room }) => {
        const code = (e: unknown) => (e as { code?: string; cause?: { code?: string } }).code ?? (e as { cause?: { code?: string } }).cause?.code;
        const net = window.weftNet;
        const connect = await net.connectTcp(80).then(() => 'connected', code);
        const fetched = await net.fetch('http://guest:80/').then(() => 'fetched', code);
        const published = await net.publish(80).then(() => 'published', code);
        // A third page-level network with the wrong key: refused, and it says so.
        const load = new Function('u', 'return import(u)') as (u: string) => Promise<typeof import('../../web/index')>;
        const weft = await load('/dist/web/weft.mjs');
        const wrong = weft.createNetwork({ relayUrl, lan: { room, key: 'not the key of this room' } });
        const refused = await new Promise<{ code?: string; message: string }>((resolve) => wrong.on('error', (e) => resolve(e)));
        const state = wrong.relayState;
        await wrong.close();
        // A key too short to be one: the network does not start, and says why.
        const short = weft.createNetwork({ relayUrl, lan: { room, key: 'short' } });
        const startError = await short.ready.then(
          () => 'started',
          (e: { code?: string; message: string }) => `${e.code}: ${e.message}`,
        );
        await short.close();
        return { connect, fetched, published, refused, state, startError };
      },
      { relayUrl: `${relay!.wisp}?token=${TOKEN}`, room: ROOM },
    );
    expect(r.connect).toBe('ERR_WEFT_ROOM_UNSUPPORTED');
    expect(r.fetched).toBe('ERR_WEFT_ROOM_UNSUPPORTED');
    expect(r.published).toBe('ERR_WEFT_ROOM_UNSUPPORTED');
    expect(r.refused.code).toBe('ERR_WEFT_ROOM_REFUSED');
    expect(r.refused.message).toContain(`wrong key for room ${ROOM}`);
    expect(r.state).toBe('failed');
    expect(r.startError).toMatch(/^ERR_WEFT_START_FAILED: .*lan\.key must be 8–256 bytes/);
  });
});
