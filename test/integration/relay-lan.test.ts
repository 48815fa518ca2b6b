// `weft relay --lan` with real sockets: members on WebSockets that speak the room protocol, and
// hand-made guests behind them sending real DHCP, ARP, ICMP, UDP and DNS frames to the room's
// router (a weft stack in the relay) and to each other. The browser test (e2e/relay-lan-browser)
// does the same with v86 guests in two Chromium contexts; this one checks the protocol and each
// bound: auth, wrong keys, caps on members, rooms and rooms per IP, a flooding member, a member
// that does not read, and --workers 2 routing a room's members to one worker.

import dgram from 'node:dgram';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { mac } from '../../core/wire/address';
import { ROOM_CLOSE } from '../../core/wire/room-protocol';
import { GATEWAY, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, RoomMember, SimGuest } from './relay-lan-support';
import { startRelay, type RunningRelay } from './relay-support';
import { spawnWeft } from '../harness/weft-process';
import { missingCommands } from '../harness/guest-tools';
import { startNginxSite, type NginxSite } from '../harness/nginx-site';
import { formatIpv4, writeMac } from '../../core/wire/address';
import { GATEWAY_MAC } from '../support/frames';

const TOKEN = 'lan-test-token';
const KEY = 'correct horse battery';

async function metrics(relay: RunningRelay): Promise<string> {
  return (await fetch(`${relay.http}/metrics`)).text();
}

/** A sample's value (summed over workers when they label it), or 0. */
function sample(text: string, name: string, labels = ''): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const rest = line.slice(name.length);
    if (labels && !rest.includes(labels)) continue;
    sum += Number(line.split(' ').pop());
  }
  return sum;
}

const members: RoomMember[] = [];
async function join(relay: RunningRelay, room: string, key = KEY, options: Parameters<typeof RoomMember.open>[3] = {}): Promise<RoomMember> {
  const m = await RoomMember.join(relay.port, room, key, { token: TOKEN, ...options });
  members.push(m);
  return m;
}
async function open(relay: RunningRelay, room: string, key = KEY, options: Parameters<typeof RoomMember.open>[3] = {}): Promise<RoomMember> {
  const m = await RoomMember.open(relay.port, room, key, { token: TOKEN, ...options });
  members.push(m);
  return m;
}
afterEach(() => {
  for (const m of members.splice(0)) m.terminate();
});

describe('weft relay --lan: the flag', () => {
  it('refuses to start without --token or --password, and LAN flags without --lan', async () => {
    for (const [args, text] of [
      [['--lan'], '--lan needs --token or --password'],
      [['--lan-max-members', '4'], '--lan-max-members needs --lan'],
    ] as const) {
      const p = spawnWeft(['relay', '--listen', '127.0.0.1:0', ...args]);
      const exit = await p.waitForExit(5000);
      expect(exit.code).toBe(2);
      expect(p.stderr).toContain(text);
    }
  });
});

describe('weft relay --lan: one room', () => {
  let relay: RunningRelay;
  let echo: dgram.Socket;
  let echoPort: number;

  beforeAll(async () => {
    relay = await startRelay(['--token', TOKEN, '--lan', '--lan-max-members', '3', '--allow-loopback', '--lan-frame-rate', '2000', '--lan-bandwidth', '16M']);
    echo = dgram.createSocket('udp4');
    echo.on('message', (m, r) => echo.send(Buffer.concat([Buffer.from('echo:'), m]), r.port, r.address));
    await new Promise<void>((r) => echo.bind(0, '127.0.0.1', r));
    echoPort = echo.address().port;
  });
  afterAll(async () => {
    await relay?.stop();
    echo?.close();
  });

  it('refuses a room without the token (401) and a bad room name (400), and answers 426 to plain GET', async () => {
    await expect(RoomMember.open(relay.port, 'r0', KEY)).rejects.toMatchObject({ status: 401 });
    await expect(RoomMember.open(relay.port, 'bad name!', KEY, { token: TOKEN })).rejects.toMatchObject({ status: 400 });
    expect((await fetch(`${relay.http}/wisp/lan/r0`)).status).toBe(426);
  });

  it('two members get distinct leases, see each other by ARP, ping each other port to port (a third member sees none of it), resolve each other by name and reach the host through the router', async () => {
    const a = await join(relay, 'r1');
    expect(a.joined).toMatchObject({ type: 'joined', room: 'r1', mtu: 1500, members: 1, created: true, frameRate: 2000 });
    const b = await join(relay, 'r1');
    expect(b.joined).toMatchObject({ members: 2, created: false });
    const c = await join(relay, 'r1');
    const ga = new SimGuest(a, mac(0x52540000aa01));
    const gb = new SimGuest(b, mac(0x52540000bb02));
    const gc = new SimGuest(c, mac(0x52540000cc03));
    const la = await ga.dhcp('alpha');
    const lb = await gb.dhcp('bravo');
    await gc.dhcp();
    expect(formatIpv4(la.ip)).toMatch(/^10\.0\.2\.\d+$/);
    // Each member is told its own guests' leases (a page reports them as 'lease' events), not the others'.
    expect(a.notices).toEqual([{ type: 'lease', mac: '52:54:00:00:aa:01', ip: formatIpv4(la.ip), hostname: 'alpha' }]);
    expect(b.notices).toEqual([{ type: 'lease', mac: '52:54:00:00:bb:02', ip: formatIpv4(lb.ip), hostname: 'bravo' }]);
    expect(lb.ip).not.toBe(la.ip);
    expect(gc.ip).not.toBe(la.ip);
    expect(gc.ip).not.toBe(lb.ip);
    // The router: answers ARP and ping for the gateway.
    expect(await ga.arp(GATEWAY)).toBe(GATEWAY_MAC);

    // ARP between guests: the request is flooded (b answers it), the reply comes port to port.
    const bFrom = b.frames.length;
    const arp = ga.arp(gb.ip);
    await b.until(() => gb.answerArp(bFrom) > 0, 'ARP request at b');
    expect(await arp).toBe(gb.mac);

    // Ping a → b and back, switched between the two members only.
    const cFrom = c.frames.length;
    const bFrom2 = b.frames.length;
    const aFrom = a.frames.length;
    a.send(ga.echoRequest(gb.mac, gb.ip, 1, 1000));
    await gb.waitIcmp(ICMP_ECHO_REQUEST, 1, bFrom2);
    expect(gb.answerEchoes(bFrom2)).toBe(1);
    expect(await ga.waitIcmp(ICMP_ECHO_REPLY, 1, aFrom)).toMatchObject({ src: gb.ip, srcMac: gb.mac });
    await new Promise((r) => setTimeout(r, 200));
    const unicastAtC = c.frames.slice(cFrom).filter((f) => f[0] !== 0xff && (f[0] & 1) === 0);
    expect(unicastAtC).toHaveLength(0);

    // Names: each guest's DHCP hostname resolves for the others.
    expect(await gb.resolve('alpha.weft.internal')).toEqual([formatIpv4(ga.ip)]);
    expect(await gc.resolve('bravo.weft.internal')).toEqual([formatIpv4(gb.ip)]);

    // Out through the room's router: UDP to the gateway reaches the host's loopback (--allow-loopback) and comes back.
    const from = a.frames.length;
    a.send(ga.udpFrame(GATEWAY, echoPort, 41000, Buffer.from('hi from the room')));
    const back = await ga.waitUdp(41000, from, 10_000);
    expect(Buffer.from(back.payload).toString()).toBe('echo:hi from the room');
    expect(back.src).toBe(GATEWAY);

    // The room's router counted as a Wisp client of the relay: its stream is in the metrics.
    const m = await metrics(relay);
    expect(sample(m, 'weft_relay_lan_rooms')).toBe(1);
    expect(sample(m, 'weft_relay_lan_members')).toBe(3);
    expect(sample(m, 'weft_relay_streams_total', 'type="udp"')).toBeGreaterThanOrEqual(1);
    expect(sample(m, 'weft_relay_lan_frames_total', 'direction="in"')).toBeGreaterThan(10);

    // A member posing as the router (its MAC as the source): the switch drops the frames, and
    // /metrics counts them while that member is still in the room, not only once it leaves.
    const spoofed = ga.udpFrame(GATEWAY, echoPort, 41001, Buffer.from('not the router'));
    writeMac(spoofed, 6, GATEWAY_MAC);
    const spoofBefore = sample(m, 'weft_relay_lan_frames_dropped_total', 'reason="switch-spoofed-router-mac"');
    a.send(spoofed, spoofed, spoofed);
    let spoofDrops = 0;
    for (let i = 0; i < 50 && spoofDrops < 3; i++) {
      await new Promise((r) => setTimeout(r, 40));
      spoofDrops = sample(await metrics(relay), 'weft_relay_lan_frames_dropped_total', 'reason="switch-spoofed-router-mac"') - spoofBefore;
    }
    expect(spoofDrops).toBe(3);
    expect(sample(await metrics(relay), 'weft_relay_lan_members')).toBe(3);
  });

  it('refuses a wrong key (4403, and past five a second, unchecked: 4429), a full room (4409) and a bad join (4400)', async () => {
    const a = await join(relay, 'r2');
    await join(relay, 'r2');
    const wrong = await open(relay, 'r2', 'not the right key', { localAddress: '127.0.0.21' });
    expect(await wrong.closed()).toMatchObject({ code: ROOM_CLOSE.WRONG_KEY, reason: 'wrong key for room r2' });
    for (let i = 0; i < 4; i++)
      expect((await (await open(relay, 'r2', `wrong key ${i}`, { localAddress: '127.0.0.21' })).closed()).code).toBe(ROOM_CLOSE.WRONG_KEY);
    const throttled = await open(relay, 'r2', KEY, { localAddress: '127.0.0.21' });
    expect((await throttled.closed()).code).toBe(ROOM_CLOSE.TOO_MANY);
    // Another address still joins with the right key; a fourth member is one too many (--lan-max-members 3).
    await join(relay, 'r2', KEY, { localAddress: '127.0.0.22' });
    const full = await open(relay, 'r2', KEY, { localAddress: '127.0.0.23' });
    expect(await full.closed()).toMatchObject({ code: ROOM_CLOSE.ROOM_FULL });
    const bad = await open(relay, 'r3', KEY, { join: '{"type":"join","v":1,"key":"short"}' });
    expect((await bad.closed()).code).toBe(ROOM_CLOSE.BAD_JOIN);
    expect((await bad.closed()).reason).toContain('8');
    // When the room's members are gone, the room is too: the next join makes it anew with its own key.
    a.end();
    for (const m of members.splice(0)) m.end();
    await new Promise((r) => setTimeout(r, 200));
    const fresh = await join(relay, 'r2', 'another key altogether');
    expect(fresh.joined?.created).toBe(true);
    const m = await metrics(relay);
    expect(sample(m, 'weft_relay_lan_refused_joins_total', 'cause="wrong-key"')).toBe(5);
    expect(sample(m, 'weft_relay_lan_refused_joins_total', 'cause="key-tries-throttled"')).toBe(1);
    expect(sample(m, 'weft_relay_lan_refused_joins_total', 'cause="room-full"')).toBe(1);
  });

  it('caps a flooding member (frames dropped and counted) while the others keep pinging each other', async () => {
    const flooder = await join(relay, 'r4');
    const b = await join(relay, 'r4');
    const c = await join(relay, 'r4');
    const gb = new SimGuest(b, mac(0x52540000bb04));
    const gc = new SimGuest(c, mac(0x52540000cc04));
    await gb.dhcp();
    await gc.dhcp();
    // 20,000 broadcast frames in a burst (--lan-frame-rate 2000): most must be dropped at the relay.
    const junk = new Uint8Array(600);
    junk.fill(0xff, 0, 6);
    junk.set([0x52, 0x54, 0, 0, 0xf1, 0x00], 6);
    junk.set([0x88, 0xb5], 12);
    const before = await metrics(relay);
    const flood = Array.from({ length: 200 }, () => Array.from({ length: 100 }, () => junk));
    const t0 = performance.now();
    let ok = 0;
    for (const batch of flood) {
      flooder.send(...batch);
      // Meanwhile b pings c every few batches and each one is answered.
      if (ok < 10 && flood.indexOf(batch) % 20 === 0) {
        const cFrom = c.frames.length;
        const bFrom = b.frames.length;
        b.send(gb.echoRequest(gc.mac, gc.ip, 100 + ok));
        await gc.waitIcmp(ICMP_ECHO_REQUEST, 100 + ok, cFrom);
        gc.answerEchoes(cFrom);
        await gb.waitIcmp(ICMP_ECHO_REPLY, 100 + ok, bFrom);
        ok++;
      }
    }
    await new Promise((r) => setTimeout(r, 300));
    const after = await metrics(relay);
    const dropped =
      sample(after, 'weft_relay_lan_frames_dropped_total', 'reason="frame-rate"') -
      sample(before, 'weft_relay_lan_frames_dropped_total', 'reason="frame-rate"');
    const seconds = (performance.now() - t0) / 1000;
    console.log(`[relay-lan] flood: 20000 frames in ${seconds.toFixed(2)} s, ${dropped} dropped for --lan-frame-rate 2000, ${ok} pings answered meanwhile`);
    expect(ok).toBe(10);
    // What passed is at most the burst plus the rate over the time taken.
    expect(20_000 - dropped).toBeLessThanOrEqual(500 + 2000 * (seconds + 0.5));
    expect(dropped).toBeGreaterThan(10_000);
  });
});

describe('weft relay --lan: a member that does not read', () => {
  let relay: RunningRelay;
  beforeAll(async () => {
    relay = await startRelay(['--token', TOKEN, '--lan', '--lan-frame-rate', '0', '--lan-bandwidth', '0']);
  });
  afterAll(async () => {
    await relay?.stop();
  });

  it('bounds what waits for it: frames for it are dropped and counted, the others are not disturbed', async () => {
    const sender = await join(relay, 'r5');
    const sleeper = await join(relay, 'r5');
    const other = await join(relay, 'r5');
    const gs = new SimGuest(sender, mac(0x52540000a005));
    const gz = new SimGuest(sleeper, mac(0x52540000b005));
    const go = new SimGuest(other, mac(0x52540000c005));
    await gs.dhcp();
    await gz.dhcp();
    await go.dhcp();
    // The sleeper stops reading its socket: what the relay sends it piles up in the relay, then is dropped.
    sleeper.ws.pause();
    const before = await metrics(relay);
    const frame = gs.echoRequest(gz.mac, gz.ip, 1, 1400);
    // 46 MB towards the sleeper, far more than its socket buffers and the relay's queue for it hold.
    for (let i = 0; i < 32; i++) {
      sender.send(...Array.from({ length: 1000 }, () => frame));
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 300));
    const after = await metrics(relay);
    const dropped =
      sample(after, 'weft_relay_lan_frames_dropped_total', 'reason="not-reading"') -
      sample(before, 'weft_relay_lan_frames_dropped_total', 'reason="not-reading"');
    const rssMiB = sample(after, 'weft_relay_process_resident_memory_bytes') / 2 ** 20;
    console.log(`[relay-lan] not reading: ${dropped} of 32000 frames for the sleeper dropped, relay RSS ${rssMiB.toFixed(0)} MiB`);
    expect(dropped).toBeGreaterThan(10_000);
    expect(rssMiB).toBeLessThan(400);
    // The others are unaffected.
    const oFrom = other.frames.length;
    const sFrom = sender.frames.length;
    sender.send(gs.echoRequest(go.mac, go.ip, 7));
    await go.waitIcmp(ICMP_ECHO_REQUEST, 7, oFrom);
    go.answerEchoes(oFrom);
    await gs.waitIcmp(ICMP_ECHO_REPLY, 7, sFrom);
    // Once it reads again it gets what was queued (bounded) and new frames.
    sleeper.ws.resume();
    await sleeper.until(() => sleeper.frames.length > 100, 'the sleeper reads again', 10_000);
  });
});

describe('weft relay --lan: rooms, rooms per IP, password', () => {
  it('caps rooms on the relay (4429) and rooms per client IP (4429), and takes a password in the join', async () => {
    const relay = await startRelay(['--password', 'user:pw', '--lan', '--lan-max-rooms', '3', '--lan-max-rooms-per-ip', '2']);
    try {
      const pw = { join: { username: 'user', password: 'pw' } };
      const noPw = await RoomMember.open(relay.port, 'p1', KEY);
      expect((await noPw.closed()).code).toBe(ROOM_CLOSE.UNAUTHORIZED);
      const badPw = await RoomMember.open(relay.port, 'p1', KEY, { join: { username: 'user', password: 'nope' } });
      expect((await badPw.closed()).code).toBe(ROOM_CLOSE.UNAUTHORIZED);
      const open = async (room: string, localAddress: string) => {
        const m = await RoomMember.open(relay.port, room, KEY, { ...pw, localAddress });
        members.push(m);
        await m.until(() => m.joined !== undefined, 'joined', 5000, true);
        return m;
      };
      expect((await open('p1', '127.0.0.31')).joined).toBeDefined();
      expect((await open('p2', '127.0.0.31')).joined).toBeDefined();
      // A third room from that address: over --lan-max-rooms-per-ip; joining one it is in already is fine.
      const third = await open('p3', '127.0.0.31');
      expect((await third.closed()).code).toBe(ROOM_CLOSE.TOO_MANY);
      expect((await open('p1', '127.0.0.31')).joined).toBeDefined();
      // Another address makes the third room; a fourth is over --lan-max-rooms.
      expect((await open('p3', '127.0.0.32')).joined).toBeDefined();
      const fourth = await open('p4', '127.0.0.33');
      expect(await fourth.closed()).toMatchObject({ code: ROOM_CLOSE.TOO_MANY, reason: 'this relay holds 3 rooms (--lan-max-rooms)' });
      const m = await metrics(relay);
      expect(sample(m, 'weft_relay_lan_rooms')).toBe(3);
      expect(sample(m, 'weft_relay_lan_refused_joins_total', 'cause="rooms-per-ip"')).toBe(1);
      expect(sample(m, 'weft_relay_lan_refused_joins_total', 'cause="max-rooms"')).toBe(1);
      // SIGTERM: members get 1001, their rooms close, and the relay is gone within 5 s.
      const live = members.filter((x) => x.joined && !x.close);
      const t0 = performance.now();
      relay.proc.kill('SIGTERM');
      for (const x of live) expect((await x.closed()).code).toBe(1001);
      await relay.proc.waitForExit(5000);
      expect(performance.now() - t0).toBeLessThan(5000);
      expect(relay.proc.events.filter((e) => e.event === 'lan-room-close')).toHaveLength(3);
    } finally {
      for (const m of members.splice(0)) m.terminate();
      await relay.stop();
    }
  });
});

describe('weft relay --lan --workers 2', () => {
  it('puts every member of a room in one worker whatever their addresses, and counts --lan-max-rooms over both workers', async () => {
    const relay = await startRelay(['--token', TOKEN, '--lan', '--workers', '2', '--lan-max-rooms', '4']);
    try {
      // Members from eight addresses (spread over both workers for Wisp) meet in room w1.
      const ms: RoomMember[] = [];
      for (let i = 0; i < 8; i++) ms.push(await join(relay, 'w1', KEY, { localAddress: `127.0.0.${40 + i}` }));
      expect(ms.map((m) => m.joined?.members)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      const ga = new SimGuest(ms[0], mac(0x52540000aa0a));
      const gh = new SimGuest(ms[7], mac(0x52540000bb0b));
      await ga.dhcp();
      await gh.dhcp();
      const hFrom = ms[7].frames.length;
      const aFrom = ms[0].frames.length;
      ms[0].send(ga.echoRequest(gh.mac, gh.ip, 3));
      await gh.waitIcmp(ICMP_ECHO_REQUEST, 3, hFrom);
      gh.answerEchoes(hFrom);
      await ga.waitIcmp(ICMP_ECHO_REPLY, 3, aFrom);
      const m = await metrics(relay);
      const perWorker = [0, 1].map((w) => sample(m, 'weft_relay_lan_members', `worker="${w}"`));
      expect(perWorker.sort()).toEqual([0, 8]);
      // Rooms over both workers: three more rooms fill --lan-max-rooms 4, the next is refused
      // whichever worker its name hashes to.
      for (const name of ['w2', 'w3', 'w4']) {
        await join(relay, name);
        await new Promise((r) => setTimeout(r, 100)); // the primary passes the counts round
      }
      const names = ['w5', 'w6', 'w7', 'w8'];
      for (const name of names) {
        const over = await open(relay, name);
        expect((await over.closed()).code).toBe(ROOM_CLOSE.TOO_MANY);
      }
      const m2 = await metrics(relay);
      const rooms = [0, 1].map((w) => sample(m2, 'weft_relay_lan_rooms', `worker="${w}"`));
      console.log(`[relay-lan] --workers 2: rooms per worker ${rooms.join(', ')}`);
      expect(rooms[0] + rooms[1]).toBe(4);
    } finally {
      for (const m of members.splice(0)) m.terminate();
      await relay.stop();
    }
  });

  it('counts --lan-max-rooms-per-ip over both workers: an address in two rooms is refused a third on either worker', async () => {
    const relay = await startRelay(['--token', TOKEN, '--lan', '--workers', '2', '--lan-max-rooms-per-ip', '2']);
    try {
      const from = { localAddress: '127.0.0.77' };
      for (const name of ['ip-a', 'ip-b']) {
        await join(relay, name, KEY, from);
        await new Promise((r) => setTimeout(r, 100)); // the primary passes the counts round
      }
      // Rooms live on the worker their names hash to: these land on both.
      for (const name of ['ip-c', 'ip-d', 'ip-e', 'ip-f', 'ip-g', 'ip-h', 'ip-i', 'ip-j']) {
        const over = await open(relay, name, KEY, from);
        expect((await over.closed()).code, name).toBe(ROOM_CLOSE.TOO_MANY);
      }
      // Another address is not affected.
      await join(relay, 'ip-c', KEY, { localAddress: '127.0.0.78' });
      const m = await metrics(relay);
      const refusedBy = [0, 1].map((w) =>
        m
          .split('\n')
          .filter((l) => l.startsWith('weft_relay_lan_refused_joins_total{') && l.includes('cause="rooms-per-ip"') && l.includes(`worker="${w}"`))
          .reduce((n, l) => n + Number(l.split(' ').pop()), 0),
      );
      console.log(`[relay-lan] --workers 2: rooms-per-ip refusals per worker ${refusedBy.join(', ')}`);
      expect(refusedBy[0] + refusedBy[1]).toBe(8);
      expect(Math.min(...refusedBy)).toBeGreaterThan(0);
    } finally {
      for (const m of members.splice(0)) m.terminate();
      await relay.stop();
    }
  });
});

const nginxMissing = missingCommands(['nginx', 'openssl']);
if (nginxMissing.length > 0) console.warn(`[skip] relay-lan behind nginx: missing ${nginxMissing.join(', ')} (apt-get install nginx openssl)`);

describe.skipIf(nginxMissing.length > 0)('weft relay --lan behind nginx (deploy/nginx/weft-relay.conf)', () => {
  it('hashes a room onto one instance whatever its members’ addresses', async () => {
    const relays = [await startRelay(['--token', TOKEN, '--lan']), await startRelay(['--token', TOKEN, '--lan'])];
    let nginx: NginxSite | undefined;
    try {
      nginx = await startNginxSite([relays[0].port, relays[1].port]);
      const base = `wss://127.0.0.1:${nginx.port}/wisp/`;
      // Two rooms, six members each from six addresses: every member of a room meets the others.
      for (const room of ['n1', 'n2']) {
        const counts: number[] = [];
        for (let i = 0; i < 6; i++) {
          const m = await RoomMember.join(0, room, KEY, { base, token: TOKEN, localAddress: `127.0.0.${60 + i}` });
          members.push(m);
          counts.push(m.joined?.members ?? 0);
        }
        expect(counts).toEqual([1, 2, 3, 4, 5, 6]);
      }
      const held = await Promise.all(relays.map(async (r) => sample(await metrics(r), 'weft_relay_lan_members')));
      console.log(`[relay-lan] behind nginx: members per instance ${held.join(', ')}`);
      expect(held[0] + held[1]).toBe(12);
    } finally {
      for (const m of members.splice(0)) m.terminate();
      await nginx?.stop();
      await Promise.all(relays.map((r) => r.stop()));
    }
  });
});
