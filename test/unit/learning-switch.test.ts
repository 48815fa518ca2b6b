// The LAN's learning switch at frame level: unicast port to port and nowhere else, flooding of
// broadcast and unknown destinations, learning with aging and a bounded table, the router's MACs
// fixed to its port, per-port counters and drops.
import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { LearningSwitch } from '../../core/link/learning-switch';
import { BROADCAST_MAC, mac, parseIpv4, writeIpv4, type Ipv4Address, type MacAddress } from '../../core/wire/address';
import { emitEthernetHeader, ETHERTYPE_ARP, ETHERTYPE_IPV4 } from '../../core/wire/ethernet';

const ROUTER = mac(0x5255_0a00_0202);
const A = mac(0x5254_0000_000a);
const B = mac(0x5254_0000_000b);
const C = mac(0x5254_0000_000c);
const GATEWAY_IP = parseIpv4('10.0.2.2');
const DNS_IP = parseIpv4('10.0.2.3');

function frame(dst: MacAddress, src: MacAddress, tag: number): Uint8Array {
  const f = new Uint8Array(60);
  emitEthernetHeader(f, 0, dst, src, ETHERTYPE_IPV4);
  f[14] = tag;
  return f;
}

/** An ARP frame (sender IP at 28) or an IPv4 one (source at 26) from `src` claiming `ip`; byte 14 tags it. */
function claim(kind: 'arp' | 'ipv4', dst: MacAddress, src: MacAddress, ip: Ipv4Address, tag: number): Uint8Array {
  const f = new Uint8Array(60);
  emitEthernetHeader(f, 0, dst, src, kind === 'arp' ? ETHERTYPE_ARP : ETHERTYPE_IPV4);
  f[14] = tag;
  writeIpv4(f, kind === 'arp' ? 28 : 26, ip);
  return f;
}

function lan(opts: { maxMacs?: number; maxMacsPerPort?: number; agingMs?: number } = {}) {
  let now = 1000;
  const sw = new LearningSwitch({
    maxMacs: opts.maxMacs ?? 64,
    maxMacsPerPort: opts.maxMacsPerPort,
    agingMs: opts.agingMs ?? 300_000,
    now: () => instant(now),
    onDrop: (port, reason) => dropped.push(`${port}:${reason}`),
  });
  const dropped: string[] = [];
  const got: Record<string, number[]> = { router: [], a: [], b: [], c: [] };
  const router = sw.addRouterPort([ROUTER], (f) => got.router.push(f[14]), [GATEWAY_IP, DNS_IP]);
  const a = sw.addPort('a', (f) => got.a.push(f[14]));
  const b = sw.addPort('b', (f) => got.b.push(f[14]));
  const c = sw.addPort('c', (f) => got.c.push(f[14]));
  return { sw, got, dropped, router, a, b, c, advance: (ms: number) => (now += ms) };
}

describe('LearningSwitch', () => {
  it('floods broadcast and unknown unicast to every other port, then delivers learned unicast to one port only', () => {
    const l = lan();
    l.a.input(frame(BROADCAST_MAC, A, 1));
    expect(l.got).toEqual({ router: [1], a: [], b: [1], c: [1] });
    l.b.input(frame(A, B, 2)); // A is known: only a gets it
    expect(l.got.a).toEqual([2]);
    expect(l.got.c).toEqual([1]);
    l.a.input(frame(B, A, 3)); // B was learned from its frame
    expect(l.got.b).toEqual([1, 3]);
    expect(l.got.router).toEqual([1]);
    l.a.input(frame(C, A, 4)); // C never spoke: flooded
    expect([l.got.router, l.got.b, l.got.c]).toEqual([
      [1, 4],
      [1, 3, 4],
      [1, 4],
    ]);
  });

  it("sends frames for the router only to the router port, and drops a guest that uses the router's MAC", () => {
    const l = lan();
    l.a.input(frame(ROUTER, A, 1));
    expect(l.got).toEqual({ router: [1], a: [], b: [], c: [] });
    l.b.input(frame(BROADCAST_MAC, ROUTER, 2));
    l.b.input(frame(A, ROUTER, 3));
    expect(l.got).toEqual({ router: [1], a: [], b: [], c: [] });
    expect(l.b.counters().drops).toEqual({ 'switch-spoofed-router-mac': 2 });
    // Each drop is also told as it happens (a relay's /metrics counts it live).
    expect(l.dropped).toEqual(['b:switch-spoofed-router-mac', 'b:switch-spoofed-router-mac']);
    // The router's own frames still go where they should.
    l.router.input(frame(A, ROUTER, 4));
    expect(l.got.a).toEqual([4]);
  });

  it('moves a MAC to the port it is seen on now, and forgets it after the aging time', () => {
    const l = lan({ agingMs: 10_000 });
    l.a.input(frame(BROADCAST_MAC, A, 1));
    l.c.input(frame(BROADCAST_MAC, A, 2)); // A moved to c (a VM re-attached elsewhere)
    l.b.input(frame(A, B, 3));
    expect(l.got.c).toEqual([1, 3]);
    expect(l.got.a).toEqual([2]);
    l.advance(10_000);
    l.b.input(frame(A, B, 4)); // aged out: flooded again
    expect([l.got.a, l.got.c, l.got.router]).toEqual([
      [2, 4],
      [1, 3, 4],
      [1, 2, 4],
    ]);
  });

  it('holds at most maxMacs, evicting the least recently seen; a MAC flood cannot grow it', () => {
    const l = lan({ maxMacs: 4 });
    for (let i = 0; i < 1000; i++) l.a.input(frame(ROUTER, mac(0x0200_0000_0000 + i), 0));
    expect(l.sw.macsLearned).toBe(4);
    l.b.input(frame(BROADCAST_MAC, B, 1));
    expect(l.sw.macsLearned).toBe(4);
    l.a.input(frame(B, A, 2));
    expect(l.got.b).toEqual([2]); // B, learned last, is still known
  });

  it("drops a guest's ARP or IPv4 frame that speaks for the router's addresses, to everyone; the router's own pass", () => {
    const l = lan();
    l.a.input(claim('arp', BROADCAST_MAC, A, GATEWAY_IP, 1)); // a gratuitous ARP for the gateway
    l.a.input(claim('arp', B, A, DNS_IP, 2)); // an ARP reply to B for the DNS address
    l.a.input(claim('ipv4', B, A, DNS_IP, 3)); // a "DNS answer" to B from 10.0.2.3
    expect(l.got).toEqual({ router: [], a: [], b: [], c: [] });
    expect(l.a.counters().drops).toEqual({ 'switch-spoofed-router-ip': 3 });
    // Its own address is fine; and the router speaks for its addresses.
    l.a.input(claim('arp', BROADCAST_MAC, A, parseIpv4('10.0.2.15'), 4));
    l.router.input(claim('arp', BROADCAST_MAC, ROUTER, GATEWAY_IP, 5));
    l.router.input(claim('ipv4', A, ROUTER, DNS_IP, 6));
    expect(l.got).toEqual({ router: [4], a: [5, 6], b: [4, 5], c: [4, 5] });
  });

  it("keeps a guest's claim on another's leased address from the other guests: only the router hears it", () => {
    const l = lan();
    const ipA = parseIpv4('10.0.2.15');
    const ipC = parseIpv4('10.0.2.17');
    l.sw.guardLeases((ip) => (ip === ipA ? A : undefined));
    l.b.input(frame(BROADCAST_MAC, B, 0)); // B is known
    l.c.input(frame(BROADCAST_MAC, C, 0)); // C is known
    l.got.a.length = l.got.b.length = l.got.c.length = l.got.router.length = 0;
    l.c.input(claim('arp', BROADCAST_MAC, C, ipA, 1)); // a gratuitous ARP for A's address
    l.c.input(claim('arp', B, C, ipA, 2)); // an ARP reply to B: "A's address is at C"
    l.c.input(claim('ipv4', B, C, ipA, 3)); // a packet to B from A's address
    l.c.input(claim('ipv4', ROUTER, C, ipA, 4)); // to the router: it counts and drops it itself
    expect(l.got).toEqual({ router: [1, 4], a: [], b: [], c: [] });
    expect(l.c.counters().drops).toEqual({ 'switch-lease-conflict': 3 });
    // A speaks for its own address; C for its own, which nobody leased, and for none at all (a probe).
    l.a.input(claim('arp', BROADCAST_MAC, A, ipA, 5));
    l.c.input(claim('arp', B, C, ipC, 6));
    l.c.input(claim('arp', BROADCAST_MAC, C, parseIpv4('0.0.0.0'), 7));
    expect(l.got).toEqual({ router: [1, 4, 5, 7], a: [7], b: [5, 6, 7], c: [5] });
  });

  it("holds at most maxMacsPerPort per port: a MAC flood from one guest evicts only that guest's own MACs", () => {
    const l = lan({ maxMacs: 64, maxMacsPerPort: 8 });
    l.b.input(frame(BROADCAST_MAC, B, 1));
    l.c.input(frame(BROADCAST_MAC, C, 2));
    for (let i = 0; i < 1000; i++) {
      l.advance(1);
      l.a.input(frame(ROUTER, mac(0x0200_0000_0000 + i), 0));
    }
    expect(l.sw.macsLearned).toBe(10);
    expect(l.sw.macsEvicted).toBe(1000 - 8);
    // B and C are still known: a frame for B reaches b alone, not the flooding port.
    l.c.input(frame(B, C, 3));
    expect(l.got.b).toEqual([2, 3]);
    expect(l.got.a).toEqual([1, 2]);
    // The flood's newest MACs are the ones kept.
    l.router.input(frame(mac(0x0200_0000_0000 + 999), ROUTER, 4));
    expect(l.got.a).toEqual([1, 2, 4]);
    expect(l.got.b).toEqual([2, 3]);
  });

  it('drops runts, group source addresses and frames back to their own port, and counts per port', () => {
    const l = lan();
    l.a.input(new Uint8Array(10));
    l.a.input(frame(BROADCAST_MAC, BROADCAST_MAC, 1));
    l.a.input(frame(BROADCAST_MAC, A, 2));
    l.a.input(frame(A, A, 3));
    expect(l.a.counters()).toMatchObject({
      framesIn: 3,
      drops: { 'switch-runt': 1, 'switch-bad-source': 1, 'switch-same-port': 1 },
    });
    expect(l.b.counters()).toMatchObject({ framesOut: 1, bytesOut: 60 });
  });

  it('gives each flooded port its own copy (a port may keep or transfer what it gets), and a removed port gets nothing', () => {
    let now = 0;
    const sw = new LearningSwitch({ maxMacs: 8, agingMs: 1000, now: () => instant(now) });
    const seen: Uint8Array[] = [];
    const p1 = sw.addPort('1', (f) => seen.push(f));
    sw.addPort('2', (f) => seen.push(f));
    const p3 = sw.addPort('3', (f) => seen.push(f));
    p1.input(frame(BROADCAST_MAC, A, 1));
    expect(seen).toHaveLength(2);
    expect(seen[0]).not.toBe(seen[1]);
    p3.remove();
    now += 1;
    p1.input(frame(BROADCAST_MAC, A, 2));
    expect(seen).toHaveLength(3);
    p3.input(frame(BROADCAST_MAC, B, 3));
    expect(seen).toHaveLength(3);
  });
});
