// Segmentation and checksum offload in the stack (what `weft vm --tap-vnet-hdr` turns on): data to
// the guest goes out in segments larger than the MTU, and frames the link vouches for skip the
// checksum check — only those.
import { describe, expect, it } from 'vitest';
import { Stack } from '../../core/stack';
import { parseIpv4 } from '../../core/wire/address';
import { parseEthernet } from '../../core/wire/ethernet';
import { IPPROTO_TCP, IPPROTO_UDP, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { pseudoHeaderSum } from '../../core/wire/checksum';
import { ACK, emitTcp, parseTcp, SYN, tcpHeaderLength, verifyTcpChecksum, type TcpSegment } from '../../core/wire/tcp';
import { emitUdp } from '../../core/wire/udp';
import { FakeUpstream } from '../support/fake-upstream';
import { GUEST_IP, ipv4Frame, seededRandom } from '../support/frames';
import { instant } from '../../core/clock';

const DST = parseIpv4('93.184.216.34');

function setup(segmentationOffload: boolean) {
  const now = 5_000;
  const out: Array<{ totalLength: number; seg: TcpSegment; checksumOk: boolean; checksumPartial: boolean }> = [];
  const upstream = new FakeUpstream();
  const stack = new Stack({
    clock: { now: () => instant(now) },
    random: seededRandom(3).fill,
    upstream,
    segmentationOffload,
    output: (f) => {
      const eth = parseEthernet(f);
      if (isDrop(eth)) throw new Error(eth);
      const ip = parseIpv4Packet(eth.payload);
      if (isDrop(ip) || ip.protocol !== IPPROTO_TCP) return;
      const seg = parseTcp(ip.payload);
      if (isDrop(seg)) throw new Error(seg);
      let partial = pseudoHeaderSum(ip.src, ip.dst, IPPROTO_TCP, ip.payload.length);
      while (partial > 0xffff) partial = (partial & 0xffff) + (partial >>> 16);
      out.push({
        totalLength: 20 + ip.payload.length,
        seg,
        checksumOk: verifyTcpChecksum(ip.payload, ip.src, ip.dst),
        checksumPartial: ((ip.payload[16] << 8) | ip.payload[17]) === partial,
      });
    },
  });
  const tcpFrame = (flags: number, seq: number, ack: number, corrupt = false, options?: { mss: number }) => {
    const seg = new Uint8Array(tcpHeaderLength(options));
    emitTcp({ srcPort: 40000, dstPort: 80, seq, ack, flags, window: 65535, options, payload: new Uint8Array(0) }, seg, 0, GUEST_IP, DST);
    if (corrupt) seg[16] ^= 0x55;
    return ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_TCP, id: 1 }, seg);
  };
  return { stack, out, upstream, tcpFrame };
}

describe('segmentation offload', () => {
  it.each([true, false])('offload %s: data from the upstream goes out in segments larger than the MTU only with offload', (offload) => {
    const t = setup(offload);
    t.stack.input(t.tcpFrame(SYN, 999, 0, false, { mss: 1460 }));
    t.upstream.tcp[0].connect();
    const synAck = t.out.shift()!.seg;
    // The guest offers 65,535 bytes; the first flight is the initial congestion window (~14.6 KB).
    t.stack.input(t.tcpFrame(ACK, 1000, (synAck.seq + 1) >>> 0));
    t.upstream.tcp[0].send(new Uint8Array(200_000).fill(7));
    const data = t.out.filter((o) => o.seg.payload.length > 0);
    expect(data.length).toBeGreaterThan(0);
    const largest = Math.max(...data.map((o) => o.totalLength));
    if (offload) expect(largest).toBeGreaterThan(1500);
    else expect(largest).toBeLessThanOrEqual(1500);
    for (const o of t.out) {
      expect(o.totalLength).toBeLessThanOrEqual(65535);
      // Offloaded segments carry the partial (pseudo-header) checksum; every other one a full one.
      if (o.totalLength > 1500) expect(o.checksumPartial).toBe(true);
      else expect(o.checksumOk).toBe(true);
    }
  });
});

describe('checksum offload on input', () => {
  it('drops a corrupt TCP checksum unless the link vouches for the frame', () => {
    const t = setup(true);
    t.stack.input(t.tcpFrame(SYN, 999, 0, true, { mss: 1460 }));
    expect(t.stack.counters().drops['tcp-bad-checksum']).toBe(1);
    expect(t.upstream.tcp.length).toBe(0);
    t.stack.input(t.tcpFrame(SYN, 999, 0, true, { mss: 1460 }), true);
    expect(t.stack.counters().drops['tcp-bad-checksum']).toBe(1);
    expect(t.upstream.tcp.length).toBe(1);
  });

  it('does the same for UDP', () => {
    const t = setup(true);
    const udp = (trusted: boolean) => {
      const payload = new Uint8Array([1, 2, 3, 4]);
      const dgram = new Uint8Array(8 + payload.length);
      emitUdp({ srcPort: 40001, dstPort: 9, payload }, GUEST_IP, DST, dgram, 0);
      dgram[6] ^= 0x5a;
      t.stack.input(ipv4Frame({ src: GUEST_IP, dst: DST, protocol: IPPROTO_UDP, id: 2 }, dgram), trusted);
    };
    udp(false);
    expect(t.stack.counters().drops['udp-bad-checksum']).toBe(1);
    expect(t.upstream.udp.length).toBe(0);
    udp(true);
    expect(t.stack.counters().drops['udp-bad-checksum']).toBe(1);
    expect(t.upstream.udp.length).toBe(1);
  });
});
