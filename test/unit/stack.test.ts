import { describe, expect, it } from 'vitest';
import { Stack } from '../../core/stack';
import { ARP_REPLY, ARP_REQUEST, parseArp } from '../../core/wire/arp';
import { ETHERTYPE_ARP, parseEthernet } from '../../core/wire/ethernet';
import { ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_UNREACH_PORT, parseIcmp } from '../../core/wire/icmpv4';
import { IPPROTO_ICMP, parseIpv4Packet } from '../../core/wire/ipv4';
import { DROP_REASONS, isDrop, type Parsed } from '../../core/wire/parse-result';
import { parseIpv4, readIpv4, ZERO_MAC } from '../../core/wire/address';
import {
  arpFrame,
  DNS_IP,
  fragmentFrames,
  GATEWAY_IP,
  GATEWAY_MAC,
  GUEST_IP,
  GUEST_MAC,
  icmpEcho,
  ipv4Frame,
  pingFrame,
  seededRandom,
  udpPayload,
  IPPROTO_UDP,
} from '../support/frames';
import { instant } from '../../core/clock';

function makeStack() {
  let now = 1_000_000;
  const out: Uint8Array[] = [];
  const rng = seededRandom(1);
  const stack = new Stack({ clock: { now: () => instant(now) }, random: rng.fill, output: (f) => out.push(f) });
  return { stack, out, advance: (ms: number) => (now += ms), now: () => now };
}

function ok<T>(v: Parsed<T>): T {
  if (isDrop(v)) throw new Error(`parse failed: ${v}`);
  return v;
}

describe('Stack: ARP', () => {
  for (const target of [GATEWAY_IP, DNS_IP]) {
    it(`answers who-has for ${target === GATEWAY_IP ? 'the gateway' : 'the DNS address'}`, () => {
      const { stack, out } = makeStack();
      stack.input(arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: target }));
      expect(out).toHaveLength(1);
      expect(out[0].length).toBe(60); // padded to Ethernet's minimum
      const eth = ok(parseEthernet(out[0]));
      expect(eth).toMatchObject({ dst: GUEST_MAC, src: GATEWAY_MAC, ethertype: ETHERTYPE_ARP });
      expect(ok(parseArp(eth.payload))).toEqual({
        operation: ARP_REPLY,
        senderMac: GATEWAY_MAC,
        senderIp: target,
        targetMac: GUEST_MAC,
        targetIp: GUEST_IP,
      });
    });
  }

  it('ignores requests for other addresses and gratuitous announcements, counting only the former', () => {
    const { stack, out } = makeStack();
    stack.input(arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: parseIpv4('10.0.2.99') }));
    stack.input(arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: GUEST_IP }));
    expect(out).toHaveLength(0);
    expect(stack.counters().drops).toEqual({ 'arp-not-for-us': 1 });
    expect(stack.counters().arpCacheEntries).toBe(1);
  });

  it('refuses a guest claiming the gateway address', () => {
    const { stack, out } = makeStack();
    stack.input(arpFrame({ operation: ARP_REPLY, senderMac: GUEST_MAC, senderIp: GATEWAY_IP, targetMac: ZERO_MAC, targetIp: GATEWAY_IP }));
    expect(out).toHaveLength(0);
    expect(stack.counters().drops['arp-address-conflict']).toBe(1);
  });
});

describe('Stack: ICMP echo', () => {
  it('replies to ping of the gateway with the same id, sequence and data', () => {
    const { stack, out } = makeStack();
    const data = new Uint8Array(56).map((_, i) => i);
    stack.input(ipv4Frame({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_ICMP, id: 7 }, icmpEcho(0xbeef, 3, data)));
    expect(out).toHaveLength(1);
    const eth = ok(parseEthernet(out[0]));
    expect(eth.dst).toBe(GUEST_MAC);
    const ip = ok(parseIpv4Packet(eth.payload));
    expect(ip).toMatchObject({ src: GATEWAY_IP, dst: GUEST_IP, protocol: IPPROTO_ICMP });
    const icmp = ok(parseIcmp(ip.payload));
    expect(icmp.type).toBe(ICMP_ECHO_REPLY);
    expect(icmp.restOfHeader).toBe(((0xbeef << 16) | 3) >>> 0);
    expect(Array.from(icmp.data)).toEqual(Array.from(data));
  });

  it('reassembles a fragmented 3000-byte ping and fragments the reply to the MTU', () => {
    const { stack, out } = makeStack();
    const data = new Uint8Array(3000).map((_, i) => (i * 7) & 0xff);
    const frags = fragmentFrames({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_ICMP, id: 99 }, icmpEcho(1, 1, data), 1480);
    expect(frags).toHaveLength(3);
    for (const f of [frags[2], frags[0], frags[1]]) stack.input(f); // out of order
    expect(out.length).toBe(3);
    const parts = out.map((f) => ok(parseIpv4Packet(ok(parseEthernet(f)).payload)));
    for (const p of parts) expect(p.totalLength).toBeLessThanOrEqual(1500);
    expect(new Set(parts.map((p) => p.id)).size).toBe(1);
    const whole = new Uint8Array(parts.reduce((n, p) => n + p.payload.length, 0));
    for (const p of parts) whole.set(p.payload, p.fragmentOffset);
    const icmp = ok(parseIcmp(whole));
    expect(icmp.type).toBe(ICMP_ECHO_REPLY);
    expect(Buffer.from(icmp.data).equals(Buffer.from(data))).toBe(true);
    expect(stack.counters().datagramsReassembled).toBe(1);
  });

  it('copies what it keeps: fragments read into one reused Node Buffer still reassemble', () => {
    const { stack, out } = makeStack();
    const data = new Uint8Array(3000).map((_, i) => (i * 13) & 0xff);
    const frags = fragmentFrames({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_ICMP, id: 42 }, icmpEcho(2, 2, data), 1480);
    const reused = Buffer.alloc(2000); // a link's read buffer: Buffer.slice() would share it
    for (const f of frags) {
      reused.fill(0xaa);
      reused.set(f);
      stack.input(reused.subarray(0, f.length));
    }
    const parts = out.map((f) => ok(parseIpv4Packet(ok(parseEthernet(f)).payload)));
    const whole = new Uint8Array(parts.reduce((n, p) => n + p.payload.length, 0));
    for (const p of parts) whole.set(p.payload, p.fragmentOffset);
    expect(Buffer.from(ok(parseIcmp(whole)).data).equals(Buffer.from(data))).toBe(true);
  });

  it('drops a packet with a bad header checksum and counts it', () => {
    const { stack, out } = makeStack();
    const f = pingFrame(GATEWAY_IP, 32);
    f[14 + 10] ^= 0xff;
    stack.input(f);
    expect(out).toHaveLength(0);
    expect(stack.counters().drops['ipv4-bad-checksum']).toBe(1);
  });

  it('expires an incomplete datagram after 30 s and frees its memory', () => {
    const { stack, advance } = makeStack();
    const [first] = fragmentFrames({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_ICMP, id: 5 }, icmpEcho(1, 1, new Uint8Array(2000)), 1480);
    stack.input(first);
    expect(stack.counters().reassemblyBytesHeld).toBeGreaterThan(0);
    const deadline = stack.nextDeadline();
    expect(deadline).toBeDefined();
    advance(29_999);
    stack.poll();
    expect(stack.counters().drops['ipv4-reassembly-timeout']).toBeUndefined();
    advance(1);
    stack.poll();
    expect(stack.counters().drops['ipv4-reassembly-timeout']).toBe(1);
    expect(stack.counters().reassemblyBytesHeld).toBe(0);
    expect(stack.nextDeadline()).toBeUndefined();
  });
});

describe('Stack: UDP into the guest (openGuestUdp)', () => {
  it("sends from a gateway port to the guest port, takes only that guest port's answers, and lets go on close", () => {
    const { stack, out } = makeStack();
    // The guest must be known by MAC for the frame to leave without an ARP request first.
    stack.input(arpFrame({ operation: ARP_REQUEST, senderMac: GUEST_MAC, senderIp: GUEST_IP, targetMac: ZERO_MAC, targetIp: GATEWAY_IP }));
    out.length = 0;
    const got: number[][] = [];
    const sock = stack.openGuestUdp(5353, { onDatagram: (p) => got.push([...p]) }, GUEST_IP)!;
    expect(sock.localPort).toBeGreaterThanOrEqual(49152);
    sock.send(Uint8Array.of(7, 8));
    expect(out).toHaveLength(1);
    const ip = ok(parseIpv4Packet(ok(parseEthernet(out[0])).payload));
    expect([ip.src, ip.dst, ip.protocol]).toEqual([GATEWAY_IP, GUEST_IP, IPPROTO_UDP]);
    const srcPort = (ip.payload[0] << 8) | ip.payload[1];
    const dstPort = (ip.payload[2] << 8) | ip.payload[3];
    expect([srcPort, dstPort, ...ip.payload.subarray(8)]).toEqual([sock.localPort, 5353, 7, 8]);
    // The guest's answer from 5353 reaches the socket; one from another port does not.
    stack.input(
      ipv4Frame({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_UDP, id: 2 }, udpPayload(GUEST_IP, GATEWAY_IP, 5353, sock.localPort, Uint8Array.of(9))),
    );
    stack.input(
      ipv4Frame({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_UDP, id: 3 }, udpPayload(GUEST_IP, GATEWAY_IP, 5354, sock.localPort, Uint8Array.of(10))),
    );
    expect(got).toEqual([[9]]);
    sock.close();
    stack.input(
      ipv4Frame({ src: GUEST_IP, dst: GATEWAY_IP, protocol: IPPROTO_UDP, id: 4 }, udpPayload(GUEST_IP, GATEWAY_IP, 5353, sock.localPort, Uint8Array.of(11))),
    );
    expect(got).toEqual([[9]]);
  });
});

describe('Stack: UDP to weft addresses', () => {
  it('answers a closed port with ICMP port unreachable quoting the datagram', () => {
    const { stack, out } = makeStack();
    const udp = udpPayload(GUEST_IP, DNS_IP, 40000, 9999, new Uint8Array([1, 2, 3]));
    stack.input(ipv4Frame({ src: GUEST_IP, dst: DNS_IP, protocol: IPPROTO_UDP, id: 1 }, udp));
    expect(out).toHaveLength(1);
    const ip = ok(parseIpv4Packet(ok(parseEthernet(out[0])).payload));
    const icmp = ok(parseIcmp(ip.payload));
    expect([icmp.type, icmp.code]).toEqual([ICMP_DEST_UNREACHABLE, ICMP_UNREACH_PORT]);
    // The quote is the original header (its total length intact) plus the first 8 bytes of UDP.
    const q = icmp.data;
    expect(q.length).toBe(28);
    expect([readIpv4(q, 12), readIpv4(q, 16), q[9], (q[2] << 8) | q[3]]).toEqual([GUEST_IP, DNS_IP, IPPROTO_UDP, 20 + udp.length]);
    expect(Array.from(q.subarray(20))).toEqual(Array.from(udp.subarray(0, 8)));
  });
});

describe('Stack: counters', () => {
  it('counts frames and bytes both ways and ignores frames for other MACs', () => {
    const { stack, out } = makeStack();
    stack.input(pingFrame(GATEWAY_IP, 10));
    const other = pingFrame(GATEWAY_IP, 10);
    other[0] = 0x02; // a unicast MAC that is not ours
    stack.input(other);
    const c = stack.counters();
    expect(c.framesIn).toBe(2);
    expect(c.framesOut).toBe(1);
    expect(c.bytesOut).toBe(out[0].length);
    expect(c.drops['eth-not-for-us']).toBe(1);
  });
});

describe('drop reasons', () => {
  it('are listed once each, kebab-case, named by their layer', () => {
    expect(new Set(DROP_REASONS).size).toBe(DROP_REASONS.length);
    for (const r of DROP_REASONS) expect(r).toMatch(/^(eth|arp|ipv4|ipv6|icmp|udp|tcp|dhcp|dns|wisp|internal)-[a-z0-9]+(-[a-z0-9]+)*$/);
  });
});
