// A million random and mutated frames into one Stack: nothing may escape input(), no internal
// error may be hit, memory must stay within the limits, and drops must be counted by reason.
import { describe, expect, it } from 'vitest';
import { Stack } from '../../core/stack';
import { ARP_REQUEST } from '../../core/wire/arp';
import { ipv4, parseIpv4, ZERO_MAC } from '../../core/wire/address';
import {
  arpFrame,
  dhcpFrame,
  fragmentFrames,
  GATEWAY_IP,
  GUEST_IP,
  GUEST_MAC,
  icmpEcho,
  IPPROTO_ICMP,
  IPPROTO_UDP,
  ipv4Frame,
  pingFrame,
  seededRandom,
  udpPayload,
} from '../support/frames';
import { instant } from '../../core/clock';

const FRAMES = Number(process.env.WEFT_HOSTILE_FRAMES ?? 1_000_000);

function seeds(): Uint8Array[] {
  const list: Uint8Array[] = [
    arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: GATEWAY_IP }),
    pingFrame(GATEWAY_IP, 56),
    pingFrame(GATEWAY_IP, 1400),
    dhcpFrame(1),
    dhcpFrame(3, GUEST_MAC, 7, [50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2]),
    dhcpFrame(8),
    ipv4Frame({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_UDP, id: 3 }, udpPayload(GUEST_IP, GATEWAY_IP, 1000, 53, new Uint8Array(40))),
    ipv4Frame({ src: GUEST_IP, dst: parseIpv4('93.184.216.34'), protocol: 6, id: 4 }, new Uint8Array(40)),
  ];
  list.push(...fragmentFrames({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_ICMP, id: 77 }, icmpEcho(1, 1, new Uint8Array(3000)), 1480));
  return list;
}

describe('Stack under hostile input', () => {
  it(`survives ${FRAMES.toLocaleString()} random and mutated frames with bounded memory`, () => {
    const rng = seededRandom(0xdecafbad);
    const int = (n: number) => Math.floor(rng.next() * n);
    let now = 0;
    let outBytes = 0;
    const stack = new Stack({
      clock: { now: () => instant(now) },
      random: rng.fill,
      output: (f) => (outBytes += f.length),
      limits: { reassemblyBytesTotal: 256 * 1024, reassemblyBytesPerSource: 64 * 1024 },
    });
    const base = seeds();
    const heapBefore = process.memoryUsage().heapUsed;
    let maxHeld = 0;

    for (let i = 0; i < FRAMES; i++) {
      const kind = int(10);
      let f: Uint8Array;
      const seed = base[int(base.length)];
      if (kind === 0) {
        f = new Uint8Array(int(1600)); // pure noise
        rng.fill(f);
      } else if (kind === 1) {
        f = seed.subarray(0, int(seed.length + 1)); // truncation
      } else if (kind <= 5) {
        f = seed.slice(); // bit flips anywhere
        for (let k = 1 + int(4); k > 0; k--) f[int(f.length)] ^= 1 << int(8);
      } else if (kind === 6) {
        f = seed.slice(); // bad length/offset fields in the IP header, checksum recomputed half the time
        f[14 + 2 + int(2)] = int(256);
        f[14 + 6 + int(2)] = int(256);
        if (rng.next() < 0.5) fixIpChecksum(f);
      } else if (kind === 7) {
        // Fragment flood from many sources: random ids and offsets, valid checksums.
        f = pingFrame(GATEWAY_IP, 8 * (1 + int(180)), i & 0xffff, ipv4(0x0a000200 | int(256)));
        f[14 + 6] = 0x20 | int(32);
        f[14 + 7] = int(256);
        fixIpChecksum(f);
      } else if (kind === 8) {
        // DHCP option overruns: random option lengths after the cookie.
        f = dhcpFrame(1 + int(8));
        const optStart = 14 + 20 + 8 + 240;
        for (let k = 0; k < 8; k++) f[optStart + int(60)] = int(256);
        f[14 + 20 + 6] = 0; // no UDP checksum (legal over IPv4), so the DHCP parser sees the damage
        f[14 + 20 + 7] = 0;
      } else {
        f = seed.slice();
        f[14 + int(Math.max(1, f.length - 14))] = int(256);
      }
      stack.input(f);
      if ((i & 1023) === 0) {
        now += 250;
        stack.poll();
        maxHeld = Math.max(maxHeld, stack.counters().reassemblyBytesHeld);
      }
    }

    const c = stack.counters();
    if (process.env.WEFT_PRINT_DROPS) console.log(c);
    expect(c.drops['internal-error'] ?? 0).toBe(0);
    expect(c.framesIn).toBe(FRAMES);
    expect(maxHeld).toBeLessThanOrEqual(256 * 1024);
    expect(c.arpCacheEntries).toBeLessThanOrEqual(stack.limits.arpCacheEntries);
    const reasons = Object.keys(c.drops);
    for (const r of ['eth-truncated', 'ipv4-bad-checksum', 'ipv4-truncated', 'icmp-bad-checksum', 'udp-bad-checksum', 'arp-truncated', 'dhcp-option-overrun']) {
      expect(reasons, r).toContain(r);
    }
    expect(reasons.some((r) => r.startsWith('dhcp-'))).toBe(true);
    expect(reasons.some((r) => r.startsWith('ipv4-fragment') || r.startsWith('ipv4-reassembly'))).toBe(true);
    // Drops + replies account for most frames: nothing vanishes wholesale.
    const dropped = Object.values(c.drops).reduce((a, b) => a + b, 0);
    expect(dropped + c.framesOut).toBeGreaterThan(FRAMES * 0.5);
    // After time passes, everything held for reassembly is released.
    now += 60_000;
    stack.poll();
    expect(stack.counters().reassemblyBytesHeld).toBe(0);
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    expect(heapGrowth).toBeLessThan(64 * 1024 * 1024);
    expect(outBytes).toBeGreaterThan(0);
  }, 120_000);
});

function fixIpChecksum(f: Uint8Array): void {
  const hl = (f[14] & 0x0f) * 4;
  if (hl < 20 || 14 + hl > f.length) return;
  f[14 + 10] = 0;
  f[14 + 11] = 0;
  let sum = 0;
  for (let i = 0; i < hl; i += 2) sum += (f[14 + i] << 8) | f[14 + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  sum = ~sum & 0xffff;
  f[14 + 10] = sum >>> 8;
  f[14 + 11] = sum & 0xff;
}
