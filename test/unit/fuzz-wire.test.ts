// Property-based fuzzing of the link, network and transport codecs: every parser returns a value
// or a drop reason for any bytes (never throws), and what an emitter writes parses back to the
// same value. Fixed seeds keep CI stable; `npm run fuzz` (WEFT_FUZZ_RUNS) runs many more cases.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ARP_REPLY, ARP_REQUEST, emitArp, parseArp } from '../../core/wire/arp';
import { internetChecksum } from '../../core/wire/checksum';
import { emitEthernetHeader, ETHERNET_HEADER_LENGTH, parseEthernet } from '../../core/wire/ethernet';
import { emitIcmp, parseIcmp } from '../../core/wire/icmpv4';
import { emitIpv4Header, IPV4_HEADER_LENGTH, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { emitTcp, parseTcp, tcpHeaderLength, verifyTcpChecksum, type TcpOptions, type TcpRepr } from '../../core/wire/tcp';
import { emitUdp, parseUdp } from '../../core/wire/udp';
import { ipv4, mac as toMac } from '../../core/wire/address';
import { runs } from '../support/fuzz';

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const mac = fc.integer({ min: 0, max: 2 ** 48 - 1 }).map(toMac);
const addr = u32.map(ipv4);
const bytes = (maxLength: number) => fc.uint8Array({ maxLength });
/** Arbitrary bytes, sometimes as a view at an odd offset of a larger buffer (parsers must honour byteOffset). */
const anyBytes = fc.tuple(bytes(1600), fc.integer({ min: 0, max: 7 })).map(([b, off]) => {
  const big = new Uint8Array(b.length + off);
  big.set(b, off);
  return big.subarray(off);
});

const noThrow = (parse: (b: Uint8Array) => unknown) =>
  fc.property(anyBytes, (b) => {
    parse(b);
  });

describe('wire codecs never throw on arbitrary bytes', () => {
  it('ethernet', () => fc.assert(noThrow(parseEthernet), runs(101, 2000)));
  it('arp', () => fc.assert(noThrow(parseArp), runs(102, 2000)));
  it('ipv4', () => fc.assert(noThrow(parseIpv4Packet), runs(103, 2000)));
  it('icmpv4', () => fc.assert(noThrow(parseIcmp), runs(104, 2000)));
  it('udp', () =>
    fc.assert(
      fc.property(anyBytes, addr, addr, (b, s, d) => void parseUdp(b, s, d)),
      runs(105, 2000),
    ));
  it('tcp', () =>
    fc.assert(
      fc.property(anyBytes, addr, addr, (b, s, d) => {
        parseTcp(b);
        verifyTcpChecksum(b, s, d);
      }),
      runs(106, 2000),
    ));
  it('tcp with a valid header and random option bytes', () => {
    // Random option areas exercise the option walker far more than random headers do.
    const seg = fc.tuple(fc.integer({ min: 5, max: 15 }), bytes(40), bytes(64)).map(([words, opts, tail]) => {
      const b = new Uint8Array(20 + opts.length + tail.length);
      b[12] = words << 4;
      b.set(opts, 20);
      b.set(tail, 20 + opts.length);
      return b;
    });
    fc.assert(
      fc.property(seg, (b) => {
        const r = parseTcp(b);
        if (!isDrop(r)) expect(r.dataOffset * 4).toBeLessThanOrEqual(b.length);
      }),
      runs(107, 3000),
    );
  });
});

describe('wire codecs round-trip', () => {
  it('ethernet', () => {
    fc.assert(
      fc.property(mac, mac, fc.integer({ min: 0x600, max: 0xffff }), bytes(100), (dst, src, ethertype, payload) => {
        const f = new Uint8Array(ETHERNET_HEADER_LENGTH + payload.length);
        emitEthernetHeader(f, 0, dst, src, ethertype);
        f.set(payload, ETHERNET_HEADER_LENGTH);
        const e = parseEthernet(f);
        expect(e).toEqual({ dst, src, ethertype, payload });
      }),
      runs(111, 1000),
    );
  });

  it('arp', () => {
    const arp = fc.record({ operation: fc.constantFrom(ARP_REQUEST, ARP_REPLY), senderMac: mac, senderIp: addr, targetMac: mac, targetIp: addr });
    fc.assert(
      fc.property(arp, (p) => {
        const b = new Uint8Array(28);
        emitArp(p, b, 0);
        expect(parseArp(b)).toEqual(p);
      }),
      runs(112, 1000),
    );
  });

  it('ipv4 (and any single bit flip in the header is refused)', () => {
    const header = fc.record({
      src: addr,
      dst: addr,
      protocol: u8,
      id: u16,
      ttl: u8,
      tos: u8,
      dontFragment: fc.boolean(),
      moreFragments: fc.boolean(),
      fragmentOffset: fc.integer({ min: 0, max: 0x1fff }).map((n) => n * 8),
    });
    fc.assert(
      fc.property(header, bytes(200), fc.nat(IPV4_HEADER_LENGTH * 8 - 1), (h, payload, bit) => {
        const b = new Uint8Array(IPV4_HEADER_LENGTH + payload.length);
        emitIpv4Header({ ...h, payloadLength: payload.length }, b, 0);
        b.set(payload, IPV4_HEADER_LENGTH);
        const p = parseIpv4Packet(b);
        if (isDrop(p)) throw new Error(p);
        expect(p).toMatchObject({ ...h, headerLength: 20, totalLength: b.length });
        expect(p.payload).toEqual(payload);
        b[bit >>> 3] ^= 1 << (bit & 7);
        expect(isDrop(parseIpv4Packet(b))).toBe(true);
      }),
      runs(113, 1000),
    );
  });

  it('icmpv4', () => {
    fc.assert(
      fc.property(u8, u8, u32, bytes(200), (type, code, restOfHeader, data) => {
        const b = new Uint8Array(8 + data.length);
        emitIcmp({ type, code, restOfHeader, data }, b, 0);
        expect(parseIcmp(b)).toEqual({ type, code, restOfHeader, data });
      }),
      runs(114, 1000),
    );
  });

  it('udp', () => {
    fc.assert(
      fc.property(u16, u16, bytes(300), addr, addr, (srcPort, dstPort, payload, src, dst) => {
        const b = new Uint8Array(8 + payload.length);
        emitUdp({ srcPort, dstPort, payload }, src, dst, b, 0);
        expect(parseUdp(b, src, dst)).toEqual({ srcPort, dstPort, payload });
      }),
      runs(115, 1000),
    );
  });

  it('tcp (and any single bit flip fails the checksum)', () => {
    const options: fc.Arbitrary<TcpOptions> = fc.record(
      {
        mss: u16,
        windowScale: fc.integer({ min: 0, max: 14 }),
        sackPermitted: fc.constant(true),
        sack: fc.array(fc.tuple(u32, u32), { minLength: 1, maxLength: 4 }),
        timestamp: fc.record({ value: u32, echo: u32 }),
      },
      { requiredKeys: [] },
    );
    const repr = fc.record({
      srcPort: u16,
      dstPort: u16,
      seq: u32,
      ack: u32,
      flags: fc.integer({ min: 0, max: 0x1ff }),
      window: u16,
      urgent: u16,
      options,
      payload: bytes(100),
    });
    fc.assert(
      fc.property(repr, addr, addr, fc.nat(), (r: Required<TcpRepr>, src, dst, flip) => {
        const len = tcpHeaderLength(r.options) + r.payload.length;
        const b = new Uint8Array(len);
        expect(emitTcp(r, b, 0, src, dst)).toBe(len);
        expect(verifyTcpChecksum(b, src, dst)).toBe(true);
        const s = parseTcp(b);
        if (isDrop(s)) throw new Error(s);
        const { sack, ...rest } = r.options;
        expect(s).toMatchObject({ srcPort: r.srcPort, dstPort: r.dstPort, seq: r.seq, ack: r.ack, flags: r.flags, window: r.window, urgent: r.urgent });
        expect(s.dataOffset * 4).toBe(tcpHeaderLength(r.options));
        expect(s.payload).toEqual(r.payload);
        const { sack: gotSack, ...gotRest } = s.options;
        expect(gotRest).toEqual(rest);
        // SACK blocks that fit beside the other options are sent, in order; the rest are left out.
        if (sack) expect(sack.slice(0, gotSack?.length ?? 0)).toEqual(gotSack ?? []);
        const bit = flip % (len * 8);
        b[bit >>> 3] ^= 1 << (bit & 7);
        expect(verifyTcpChecksum(b, src, dst)).toBe(false);
      }),
      runs(116, 1000),
    );
  });

  it('checksum: the word-at-a-time path agrees with a plain sum at every offset and length', () => {
    const naive = (b: Uint8Array, off: number, len: number) => {
      let sum = 0;
      for (let i = 0; i < len; i += 2) sum += (b[off + i] << 8) | (i + 1 < len ? b[off + i + 1] : 0);
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      return ~sum & 0xffff;
    };
    fc.assert(
      fc.property(bytes(3000), fc.nat(8), fc.nat(), fc.nat(), (data, viewOffset, a, c) => {
        const big = new Uint8Array(data.length + viewOffset);
        big.set(data, viewOffset);
        const view = big.subarray(viewOffset);
        const off = data.length === 0 ? 0 : a % data.length;
        const len = data.length === 0 ? 0 : c % (data.length - off + 1);
        expect(internetChecksum(view, off, len)).toBe(naive(view, off, len));
      }),
      runs(117, 2000),
    );
  });
});
