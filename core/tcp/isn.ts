// Initial sequence numbers per RFC 6528: ISN = M + F(4-tuple, secret), where M is a 4 µs clock and
// F a keyed hash, so ISNs are unpredictable to an outsider yet increase for a reused 4-tuple. F is
// HalfSipHash-2-4 (32-bit SipHash): a real keyed PRF that needs only 32-bit adds, rotates and xors.

import { toSeq, type SeqNum } from './seq';

function rotl(x: number, b: number): number {
  return ((x << b) | (x >>> (32 - b))) >>> 0;
}

export class IsnGenerator {
  private readonly k0: number;
  private readonly k1: number;

  constructor(secret: Uint8Array) {
    if (secret.length < 8) throw new RangeError('the ISN secret needs 8 random bytes');
    const v = new DataView(secret.buffer, secret.byteOffset, 8);
    this.k0 = v.getUint32(0, true);
    this.k1 = v.getUint32(4, true);
  }

  /** ISN for a connection, at time `nowMs`. */
  isn(localIp: number, localPort: number, remoteIp: number, remotePort: number, nowMs: number): SeqNum {
    const f = this.hash(localIp, remoteIp, ((localPort << 16) | remotePort) >>> 0);
    return toSeq(f + Math.floor(nowMs * 250));
  }

  private hash(a: number, b: number, c: number): number {
    let v0 = this.k0;
    let v1 = this.k1;
    let v2 = (0x6c796765 ^ this.k0) >>> 0;
    let v3 = (0x74656462 ^ this.k1) >>> 0;
    const round = () => {
      v0 = (v0 + v1) >>> 0;
      v1 = rotl(v1, 5);
      v1 = (v1 ^ v0) >>> 0;
      v0 = rotl(v0, 16);
      v2 = (v2 + v3) >>> 0;
      v3 = rotl(v3, 8);
      v3 = (v3 ^ v2) >>> 0;
      v0 = (v0 + v3) >>> 0;
      v3 = rotl(v3, 7);
      v3 = (v3 ^ v0) >>> 0;
      v2 = (v2 + v1) >>> 0;
      v1 = rotl(v1, 13);
      v1 = (v1 ^ v2) >>> 0;
      v2 = rotl(v2, 16);
    };
    for (const m of [a, b, c, (12 << 24) >>> 0]) {
      v3 = (v3 ^ m) >>> 0;
      round();
      round();
      v0 = (v0 ^ m) >>> 0;
    }
    v2 = (v2 ^ 0xff) >>> 0;
    round();
    round();
    round();
    round();
    return (v1 ^ v3) >>> 0;
  }
}
