// WebSocket masking for ws (node-host/relay/ws-masking.ts): the word-at-a-time XOR equals the
// byte-at-a-time definition at every alignment and length, and ws finds a fast implementation.
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import { maskWords, unmaskWords, wsMasking } from '../../node-host/relay/ws-masking';

function byteMask(b: Uint8Array, mask: Uint8Array): Uint8Array {
  return b.map((x, i) => x ^ mask[i & 3]);
}

describe('ws masking', () => {
  it('unmasks and masks like the byte-at-a-time definition at any offset and length', () => {
    const mask = Uint8Array.of(0x12, 0x34, 0x56, 0x78);
    const base = Uint8Array.from({ length: 300 }, (_, i) => (i * 37 + 11) & 0xff);
    for (let offset = 0; offset < 8; offset++) {
      for (const length of [0, 1, 3, 4, 5, 7, 8, 9, 63, 64, 65, 200]) {
        const want = byteMask(base.subarray(offset, offset + length), mask);
        const inPlace = base.slice().subarray(offset, offset + length);
        unmaskWords(inPlace, mask);
        expect(inPlace).toEqual(want);
        const out = new Uint8Array(length + 13);
        maskWords(base.subarray(offset, offset + length + 2), mask, out, 13 - (offset % 4), length);
        expect(out.subarray(13 - (offset % 4), 13 - (offset % 4) + length)).toEqual(want);
      }
    }
  });

  it('gives ws a mask function on the http module', () => {
    const h = http as unknown as { websocketMask?: unknown; websocketUnmask?: unknown };
    expect(typeof h.websocketMask).toBe('function');
    expect(typeof h.websocketUnmask).toBe('function');
    expect(['node', 'bufferutil', 'words']).toContain(wsMasking);
  });
});
