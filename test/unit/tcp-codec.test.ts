import { describe, expect, it } from 'vitest';
import { parseIpv4 } from '../../core/wire/address';
import { isDrop } from '../../core/wire/parse-result';
import {
  ACK,
  AE,
  CWR,
  ECE,
  FIN,
  PSH,
  RST,
  SYN,
  URG,
  emitTcp,
  parseTcp,
  tcpHeaderLength,
  verifyTcpChecksum,
  type TcpRepr,
  type TcpSegment,
} from '../../core/wire/tcp';
import { seededRandom } from '../support/frames';

const hex = (s: string) => Uint8Array.from(s.match(/../g)!.map((b) => parseInt(b, 16)));
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');

function parsed(b: Uint8Array): TcpSegment {
  const r = parseTcp(b);
  if (isDrop(r)) throw new Error(`unexpected drop ${r}`);
  return r;
}

const LO = parseIpv4('127.0.0.1');
const GUEST = parseIpv4('10.0.2.15');
const REMOTE = parseIpv4('93.184.216.34');

// A SYN captured from Linux 6.x connecting over a 1500-MTU loopback (34584 → 5555). The capture
// held a partial (offloaded) checksum; 0xa805 is the full one, computed independently.
const LINUX_SYN = hex('871815b39d5f9e4900000000a002faf0a8050000020405b40402080af777d71a0000000001030307');

describe('parseTcp', () => {
  it('reads a Linux SYN with MSS, SACK_PERM, TS, NOP, WS 7', () => {
    const s = parsed(LINUX_SYN);
    expect(s).toMatchObject({ srcPort: 34584, dstPort: 5555, seq: 0x9d5f9e49, ack: 0, dataOffset: 10, flags: SYN, window: 64240, checksum: 0xa805, urgent: 0 });
    expect(s.options).toEqual({ mss: 1460, sackPermitted: true, timestamp: { value: 0xf777d71a, echo: 0 }, windowScale: 7 });
    expect(s.payload.length).toBe(0);
    expect(verifyTcpChecksum(LINUX_SYN, LO, LO)).toBe(true);
  });

  it('returns the payload as a view, not a copy', () => {
    const buf = new Uint8Array(64);
    const n = emitTcp({ srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: ACK | PSH, window: 5, payload: hex('deadbeef') }, buf, 0, GUEST, REMOTE);
    const s = parsed(buf.subarray(0, n));
    expect(s.payload.buffer).toBe(buf.buffer);
    expect(toHex(s.payload)).toBe('deadbeef');
  });

  it('skips unknown options, stops at EOL, ignores known options of the wrong length', () => {
    // 36-byte header: unknown kind 30 len 4, MSS with len 3, NOP, WS shift 20 (→ 14), EOL, then garbage
    const b = new Uint8Array(36);
    b[12] = 9 << 4;
    b.set([30, 4, 9, 9, 2, 3, 5, 1, 3, 3, 20, 0, 2, 4, 0, 1], 20);
    const s = parsed(b);
    expect(s.options).toEqual({ windowScale: 14 });
  });

  it('ignores malformed SACK and timestamp options', () => {
    const b = new Uint8Array(40);
    b[12] = 10 << 4;
    b.set([5, 6, 1, 2, 3, 4, 8, 9, 1, 2, 3, 4, 5, 6, 7, 4, 2], 20);
    expect(parsed(b).options).toEqual({ sackPermitted: true });
  });

  it('reports every drop reason', () => {
    expect(parseTcp(new Uint8Array(19))).toBe('tcp-truncated');
    const b = new Uint8Array(24);
    b[12] = 4 << 4;
    expect(parseTcp(b)).toBe('tcp-bad-data-offset');
    b[12] = 7 << 4;
    expect(parseTcp(b)).toBe('tcp-truncated'); // header runs past the segment
    b[12] = 6 << 4;
    b.set([2, 1, 0, 0], 20); // length < 2
    expect(parseTcp(b)).toBe('tcp-option-overrun');
    b.set([2, 6, 0, 0], 20); // runs past the header
    expect(parseTcp(b)).toBe('tcp-option-overrun');
    b.set([1, 1, 1, 2], 20); // kind in the last byte, no room for its length
    expect(parseTcp(b)).toBe('tcp-option-overrun');
  });

  it('returns a drop reason for every truncation of a segment with options', () => {
    const buf = new Uint8Array(100);
    const n = emitTcp(
      {
        srcPort: 80,
        dstPort: 1234,
        seq: 1,
        ack: 2,
        flags: ACK,
        window: 3,
        options: { timestamp: { value: 1, echo: 2 }, sack: [[1, 2]] },
        payload: new Uint8Array(10),
      },
      buf,
      0,
      GUEST,
      REMOTE,
    );
    const header = tcpHeaderLength({ timestamp: { value: 1, echo: 2 }, sack: [[1, 2]] });
    for (let len = 0; len <= n; len++) {
      const r = parseTcp(buf.subarray(0, len));
      if (len < header) expect(isDrop(r)).toBe(true);
      else expect((r as TcpSegment).payload.length).toBe(len - header);
    }
  });

  it('never throws on 20,000 random inputs', () => {
    const rand = seededRandom(0x7c9).next;
    for (let k = 0; k < 20_000; k++) {
      const b = new Uint8Array(Math.floor(rand() * 80));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand() * 256);
      // Bias towards plausible data offsets and option kinds so the option walker gets exercised.
      if (b.length > 12 && rand() < 0.7) b[12] = (5 + Math.floor(rand() * 11)) << 4;
      for (let i = 20; i < b.length; i++) if (rand() < 0.3) b[i] = Math.floor(rand() * 10);
      const r = parseTcp(b);
      if (!isDrop(r)) expect(r.payload.length).toBe(b.length - r.dataOffset * 4);
      verifyTcpChecksum(b, GUEST, REMOTE);
    }
  });
});

describe('verifyTcpChecksum', () => {
  it('rejects a flipped bit, a wrong address, and accepts an odd-length segment', () => {
    const bad = LINUX_SYN.slice();
    bad[25] ^= 0x10;
    expect(verifyTcpChecksum(bad, LO, LO)).toBe(false);
    expect(verifyTcpChecksum(LINUX_SYN, LO, GUEST)).toBe(false);
    const buf = new Uint8Array(64);
    const n = emitTcp({ srcPort: 1, dstPort: 2, seq: 3, ack: 4, flags: ACK, window: 5, payload: hex('010203') }, buf, 0, GUEST, REMOTE);
    expect(n).toBe(23);
    expect(verifyTcpChecksum(buf.subarray(0, n), GUEST, REMOTE)).toBe(true);
    expect(verifyTcpChecksum(buf.subarray(0, n), REMOTE, GUEST)).toBe(true); // the pseudo-header sum is symmetric
  });
});

describe('emitTcp', () => {
  it('reproduces the Linux SYN byte for byte', () => {
    const repr: TcpRepr = {
      srcPort: 34584,
      dstPort: 5555,
      seq: 0x9d5f9e49,
      ack: 0,
      flags: SYN,
      window: 64240,
      options: { mss: 1460, sackPermitted: true, timestamp: { value: 0xf777d71a, echo: 0 }, windowScale: 7 },
    };
    expect(tcpHeaderLength(repr.options)).toBe(40);
    const out = new Uint8Array(40);
    expect(emitTcp(repr, out, 0, LO, LO)).toBe(40);
    expect(toHex(out)).toBe(toHex(LINUX_SYN));
  });

  it('lays out options as Linux does', () => {
    const out = new Uint8Array(60);
    const at = (options: TcpRepr['options']) => {
      const n = emitTcp({ srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: ACK, window: 0, options }, out, 0, GUEST, REMOTE);
      return toHex(out.subarray(20, n));
    };
    expect(at({})).toBe('');
    expect(at({ sackPermitted: true })).toBe('01010402');
    expect(at({ timestamp: { value: 1, echo: 2 } })).toBe('0101080a0000000100000002');
    expect(at({ mss: 536, windowScale: 0 })).toBe('0204021801030300');
    expect(at({ timestamp: { value: 1, echo: 2 }, sack: [[10, 20]] })).toBe('0101080a00000001000000020101050a0000000a00000014');
  });

  it('caps SACK blocks at 4, 3 with timestamps, and to what fits', () => {
    const blocks: Array<[number, number]> = [
      [1, 2],
      [3, 4],
      [5, 6],
      [7, 8],
      [9, 10],
    ];
    expect(tcpHeaderLength({ sack: blocks })).toBe(20 + 4 + 32);
    expect(tcpHeaderLength({ sack: blocks, timestamp: { value: 0, echo: 0 } })).toBe(20 + 12 + 4 + 24);
    expect(tcpHeaderLength({ sack: blocks, timestamp: { value: 0, echo: 0 }, mss: 1460, windowScale: 7 })).toBe(20 + 20 + 4 + 16);
    const out = new Uint8Array(60);
    const n = emitTcp(
      { srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: ACK, window: 0, options: { sack: blocks, timestamp: { value: 0, echo: 0 } } },
      out,
      0,
      GUEST,
      REMOTE,
    );
    expect(parsed(out.subarray(0, n)).options.sack).toEqual(blocks.slice(0, 3));
  });

  it('round-trips every field, at an offset, with all flags', () => {
    const repr: TcpRepr = {
      srcPort: 65535,
      dstPort: 443,
      seq: 0xffff_fffe,
      ack: 0x8000_0001,
      flags: FIN | SYN | RST | PSH | ACK | URG | ECE | CWR | AE,
      window: 0xabcd,
      urgent: 0x1234,
      options: { mss: 1400, sackPermitted: true, windowScale: 14, timestamp: { value: 0xffffffff, echo: 7 }, sack: [[0xfffffff0, 5]] },
      payload: Uint8Array.from({ length: 101 }, (_, i) => i),
    };
    const out = new Uint8Array(300).fill(0xee);
    const n = emitTcp(repr, out, 17, GUEST, REMOTE);
    expect(out[16]).toBe(0xee);
    expect(out[17 + n]).toBe(0xee);
    const seg = out.subarray(17, 17 + n);
    expect(verifyTcpChecksum(seg, GUEST, REMOTE)).toBe(true);
    const s = parsed(seg);
    expect({ ...s, payload: Array.from(s.payload), checksum: 0, dataOffset: 0 }).toEqual({
      ...repr,
      payload: Array.from(repr.payload!),
      checksum: 0,
      dataOffset: 0,
      options: { ...repr.options, sack: [[0xfffffff0, 5]] },
    });
  });

  it('throws RangeError rather than writing past the buffer', () => {
    const repr: TcpRepr = { srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: ACK, window: 0, payload: new Uint8Array(10) };
    expect(() => emitTcp(repr, new Uint8Array(29), 0, GUEST, REMOTE)).toThrow(RangeError);
    expect(() => emitTcp(repr, new Uint8Array(30), 1, GUEST, REMOTE)).toThrow(RangeError);
    expect(emitTcp(repr, new Uint8Array(30), 0, GUEST, REMOTE)).toBe(30);
  });
});
