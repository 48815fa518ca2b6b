// Software TCP segmentation: a segment longer than the MTU (as the stack emits it with offload,
// partial checksum) split into MTU-sized frames that a guest without offload accepts as they are.
import { describe, expect, it } from 'vitest';
import { parseIpv4Packet } from '../../core/wire/ipv4';
import { CWR, FIN, PSH, parseTcp, verifyTcpChecksum } from '../../core/wire/tcp';
import { internetChecksum } from '../../core/wire/checksum';
import { isOversizedTcpFrame, splitTcpFrame } from '../../core/wire/tcp-segmentation';
import { seededRandom, tcpToGuestFrame } from '../support/frames';

function parse(frame: Uint8Array) {
  const ip = parseIpv4Packet(frame.subarray(14));
  if (typeof ip === 'string') throw new Error(ip);
  const tcp = parseTcp(ip.payload);
  if (typeof tcp === 'string') throw new Error(tcp);
  return { ip, tcp };
}

describe('splitTcpFrame', () => {
  it('splits a 64 KiB segment into MTU-sized frames with complete checksums, in sequence', () => {
    const payload = new Uint8Array(65_000);
    seededRandom(3).fill(payload);
    const big = tcpToGuestFrame(payload, { seq: 0xffff_f000, flags: 0x18 | FIN | CWR, partial: true, id: 0xfffe });
    expect(isOversizedTcpFrame(big, 1500)).toBe(true);
    const pieces = splitTcpFrame(big, 1500);
    const mss = 1500 - 20 - 32; // timestamps option
    expect(pieces).toHaveLength(Math.ceil(payload.length / mss));
    const joined: number[] = [];
    pieces.forEach((p, i) => {
      expect(p.length).toBeLessThanOrEqual(1514);
      const { ip, tcp } = parse(p);
      expect(internetChecksum(p, 14, 20)).toBe(0);
      expect(verifyTcpChecksum(ip.payload, ip.src, ip.dst)).toBe(true);
      expect(ip.id).toBe((0xfffe + i) & 0xffff);
      expect(tcp.seq).toBe((0xffff_f000 + i * mss) >>> 0);
      expect(tcp.options.timestamp).toEqual({ value: 7, echo: 9 });
      const last = i === pieces.length - 1;
      expect((tcp.flags & (FIN | PSH)) !== 0).toBe(last);
      expect((tcp.flags & CWR) !== 0).toBe(i === 0);
      joined.push(...tcp.payload);
    });
    expect(Buffer.from(joined).equals(Buffer.from(payload))).toBe(true);
  });

  it('leaves frames that fit, non-TCP frames and malformed ones as they are', () => {
    const small = tcpToGuestFrame(new Uint8Array(100));
    expect(splitTcpFrame(small, 1500)).toEqual([small]);
    const big = tcpToGuestFrame(new Uint8Array(3000));
    const udp = big.slice();
    udp[23] = 17;
    expect(splitTcpFrame(udp, 1500)).toEqual([udp]);
    const lying = big.slice();
    lying[16] = 0xff; // IP total length past the frame's end
    lying[17] = 0xff;
    expect(splitTcpFrame(lying, 1500)).toEqual([lying]);
    const fragment = big.slice();
    fragment[20] = 0x20; // more fragments
    expect(splitTcpFrame(fragment, 1500)).toEqual([fragment]);
  });
});
