import { describe, expect, it } from 'vitest';
import { finishChecksum, internetChecksum, pseudoHeaderSum, sumBytes } from '../../core/wire/checksum';
import { seededRandom } from '../support/frames';

/** The textbook definition, one 16-bit word at a time, as the reference. */
function reference(buf: Uint8Array): number {
  let sum = 0;
  for (let i = 0; i < buf.length; i += 2) {
    sum += (buf[i] << 8) | (i + 1 < buf.length ? buf[i + 1] : 0);
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  return ~sum & 0xffff;
}

describe('internet checksum', () => {
  it('matches the RFC 1071 example', () => {
    const buf = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    expect(internetChecksum(buf)).toBe(~0xddf2 & 0xffff);
  });

  it('agrees with the reference for every length up to 300 at every alignment (word and byte paths)', () => {
    const rng = seededRandom(42);
    const backing = new Uint8Array(400);
    for (let base = 0; base < 4; base++) {
      for (let off = 0; off < 4; off++) {
        for (let len = 0; len < 300; len++) {
          const buf = backing.subarray(base, base + off + len);
          rng.fill(buf);
          expect(internetChecksum(buf, off, len), `base ${base} off ${off} len ${len}`).toBe(reference(buf.subarray(off)));
        }
      }
    }
  });

  it('handles all-0xff jumbo buffers without losing carries', () => {
    const buf = new Uint8Array(65536).fill(0xff);
    expect(internetChecksum(buf)).toBe(reference(buf));
  });

  it('agrees with the reference for 64 KiB frames at odd and even offsets: zeros, all 0xff and random', () => {
    const rng = seededRandom(7);
    const backing = new Uint8Array(65536 + 8);
    for (const content of ['zero', 'ff', 'random'] as const) {
      for (let off = 0; off < 4; off++) {
        const buf = backing.subarray(off, off + 65493);
        if (content === 'random') rng.fill(buf);
        else buf.fill(content === 'zero' ? 0 : 0xff);
        expect(internetChecksum(buf), `${content} at offset ${off}`).toBe(reference(buf));
        // With a partial sum before it (a pseudo-header), as TCP and UDP chain it.
        const chained = finishChecksum(sumBytes(buf, 0, buf.length, 0x1234));
        const withHeader = new Uint8Array(2 + buf.length);
        withHeader.set([0x12, 0x34]);
        withHeader.set(buf, 2);
        expect(chained, `${content} at offset ${off}, chained`).toBe(reference(withHeader));
      }
    }
  });

  it('chains partial sums (pseudo-header then data)', () => {
    const data = new Uint8Array([1, 2, 3, 4, 5]);
    const whole = finishChecksum(sumBytes(data, 0, 5, pseudoHeaderSum(0x0a00020f, 0x0a000202, 17, 5)));
    const bytes = new Uint8Array([10, 0, 2, 15, 10, 0, 2, 2, 0, 17, 0, 5, 1, 2, 3, 4, 5]);
    expect(whole).toBe(reference(bytes));
  });
});
