// A LAN shared by tabs, in Node: the shared worker's LanHost with a real StackHost (no relay), and
// tabs played by Node's MessageChannels speaking the LanChannel protocol as a page does. One stack
// for every tab, frames between tabs switched without it, events to every tab, settings that must
// match, a bound on tabs, a tab that goes away leaving, the stack stopping with the last tab; and
// the channel's own bounds (a side that stops acknowledging, messages of no known kind).

import { afterEach, describe, expect, it } from 'vitest';
import { LanChannel, MAX_IN_FLIGHT_BYTES } from '../../worker/lan-channel';
import { LanHost, LanTab, MAX_LAN_TABS } from '../../worker/lan-host';
import type { NetworkEvent, NetworkSettings } from '../../worker/worker-api';
import { dhcpFrame, GATEWAY_IP, GUEST_MAC, pingFrame } from '../support/frames';

const LAN = 'unit';

/** A tab: its control session in the worker, and the page's end of its frame channel. */
interface Tab {
  session: LanTab;
  channel: LanChannel;
  port: MessagePort;
  frames: Uint8Array[];
  events: NetworkEvent[];
}

const opened: Tab[] = [];

async function join(lan: LanHost, settings: NetworkSettings = {}): Promise<Tab & { joined: Awaited<ReturnType<LanTab['join']>> }> {
  const { port1, port2 } = new MessageChannel();
  const frames: Uint8Array[] = [];
  const events: NetworkEvent[] = [];
  const channel = new LanChannel(port1, { frame: (f) => void frames.push(f.slice()), event: (e) => void events.push(e) });
  const session = new LanTab(lan);
  const joined = await session.join(LAN, settings, port2, undefined);
  const tab = { session, channel, port: port1, frames, events, joined };
  opened.push(tab);
  return tab;
}

/** Resolves once `check` passes (polling), or rejects with its last failure after 5 s. */
async function until(check: () => void): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    try {
      check();
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** ICMP echo replies (type 0) among `frames`. */
const echoReplies = (frames: Uint8Array[]) => frames.filter((f) => f[12] === 0x08 && f[13] === 0 && f[23] === 1 && f[34] === 0);

afterEach(async () => {
  for (const t of opened.splice(0)) {
    await t.session.stop();
    t.channel.close();
  }
});

describe('a LAN shared by tabs (LanHost)', () => {
  it("runs one stack for every tab: a ping is answered to its tab alone, and a frame for another tab's guest goes tab to tab without the stack", async () => {
    const lan = new LanHost();
    const a = await join(lan);
    const b = await join(lan);
    expect(a.joined).toEqual({ ok: true, relay: 'none' });
    expect(b.joined.ok).toBe(true);
    a.channel.push(pingFrame(GATEWAY_IP, 32, 1));
    await until(() => expect(echoReplies(a.frames)).toHaveLength(1));
    expect(echoReplies(b.frames)).toHaveLength(0);

    const framesIn = (await a.session.stats()).framesIn;
    // b's guest sends to a's guest (whose MAC the LAN's switch learned from the ping): only a gets it.
    const toA = new Uint8Array(60);
    toA.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 0); // GUEST_MAC, the ping's source
    toA.set([0x02, 0, 0, 0, 0, 0x0b], 6);
    toA[12] = 0x08;
    toA[14] = 0x77;
    b.channel.push(toA);
    await until(() => expect(a.frames.some((f) => f[14] === 0x77)).toBe(true));
    const stats = await a.session.stats();
    expect(stats.framesIn, 'frames the stack took').toBe(framesIn);
    expect(stats.sharedLan).toEqual({ name: LAN, tabs: 2, drops: {} });
    expect(b.frames.some((f) => f[14] === 0x77)).toBe(false);
  });

  it('reports events to every tab: a lease taken from one tab reaches both, and a tab that joins later', async () => {
    const lan = new LanHost();
    const a = await join(lan);
    const b = await join(lan);
    a.channel.push(dhcpFrame(1, GUEST_MAC));
    await until(() => expect(a.frames.length).toBeGreaterThan(0)); // the OFFER
    a.channel.push(dhcpFrame(3, GUEST_MAC, 0x1234, [50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2]));
    for (const t of [a, b]) await until(() => expect(t.events).toContainEqual({ type: 'lease', mac: '52:54:00:12:34:56', ip: '10.0.2.15' }));

    // A tab that joins later hears the leases already held, once, as the first tabs did.
    const c = await join(lan);
    await until(() => expect(c.events).toContainEqual({ type: 'lease', mac: '52:54:00:12:34:56', ip: '10.0.2.15' }));
    await new Promise((r) => setTimeout(r, 50));
    expect(c.events.filter((e) => e.type === 'lease')).toHaveLength(1);
    expect(a.events.filter((e) => e.type === 'lease')).toHaveLength(1);
  });

  it('refuses a tab whose settings differ (ERR_WEFT_LAN_MISMATCH), naming the setting but not its value', async () => {
    const lan = new LanHost();
    await join(lan, { mtu: 1500, password: { username: 'u', password: 'secret' } });
    // The same settings in another order join.
    expect((await join(lan, { password: { password: 'secret', username: 'u' }, mtu: 1500 })).joined.ok).toBe(true);
    const refused = (await join(lan, { mtu: 1500, password: { username: 'u', password: 'other' } })).joined;
    expect(refused).toMatchObject({ ok: false, code: 'ERR_WEFT_LAN_MISMATCH' });
    expect(!refused.ok && refused.message).toMatch(/password differ/);
    expect(!refused.ok && refused.message).not.toMatch(/"other"|secret/);
  });

  it(`takes at most ${MAX_LAN_TABS} tabs (ERR_WEFT_LAN_FULL)`, async () => {
    const lan = new LanHost();
    for (let i = 0; i < MAX_LAN_TABS; i++) expect((await join(lan)).joined.ok).toBe(true);
    expect((await join(lan)).joined).toMatchObject({ ok: false, code: 'ERR_WEFT_LAN_FULL' });
    expect(lan.tabs).toBe(MAX_LAN_TABS);
  });

  it('a tab whose port closes leaves; when the last tab left the stack stops, and the next tab starts it with its own settings', async () => {
    const lan = new LanHost();
    const a = await join(lan);
    const b = await join(lan);
    a.port.close(); // as when a tab is gone: its end of the channel closes
    await until(() => expect(lan.tabs).toBe(1));
    expect((await b.session.stats()).sharedLan?.tabs).toBe(1);
    await b.session.stop();
    expect(lan.tabs).toBe(0);
    await expect(b.session.stats()).rejects.toThrow(/not started/);
    const c = await join(lan, { mtu: 1400 });
    expect(c.joined.ok).toBe(true);
  });
});

describe('the frame channel between a tab and the LAN (LanChannel)', () => {
  it('a side that stops acknowledging gets at most MAX_IN_FLIGHT_BYTES: the rest is dropped and counted, and sending resumes on an acknowledgement', async () => {
    const { port1, port2 } = new MessageChannel();
    const sender = new LanChannel(port1, { frame: () => undefined });
    let received = 0;
    port2.onmessage = (e: MessageEvent) => {
      if (e.data instanceof ArrayBuffer) received += e.data.byteLength;
    };
    const frame = new Uint8Array(1500);
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 200; i++) sender.push(frame);
      await new Promise((r) => setTimeout(r, 0));
    }
    await until(() => expect(sender.counters().framesDropped).toBeGreaterThan(0));
    expect(received).toBeLessThanOrEqual(MAX_IN_FLIGHT_BYTES);
    const sent = sender.counters().framesSent;
    expect(sent + sender.counters().framesDropped).toBe(40 * 200);
    port2.postMessage(received);
    await new Promise((r) => setTimeout(r, 20));
    sender.push(frame);
    await until(() => expect(sender.counters().framesSent).toBe(sent + 1));
    sender.close();
    port2.close();
  });

  it('counts messages of no known kind and goes on', async () => {
    const { port1, port2 } = new MessageChannel();
    const frames: number[] = [];
    const channel = new LanChannel(port1, { frame: (f) => void frames.push(f.length) });
    port2.postMessage('hello');
    port2.postMessage({ event: 5 });
    port2.postMessage({ event: { type: 'lease' } }); // an event, but this side takes none
    port2.postMessage(-1);
    const peer = new LanChannel(port2, { frame: () => undefined });
    peer.push(new Uint8Array(60));
    await until(() => expect(frames).toEqual([60]));
    expect(channel.counters().badMessages).toBe(4);
    channel.close();
    peer.close();
  });
});
