// WebSocket masking at native speed for the `ws` package. A client masks every frame it sends and a
// server unmasks every frame it receives (RFC 6455 §5.3): the relay XORs each uploaded byte once,
// `weft vm --upstream wisp` each byte it sends. ws does that with the optional native addon
// `bufferutil`, but inside weft's esbuild bundle the addon cannot be loaded (it is found through
// __dirname) and ws falls back to a byte-at-a-time loop, ~0.3 GB/s: a quarter of weft relay's CPU
// in the relay benchmark's uploads went there. ws first looks for `websocketMask` and
// `websocketUnmask` on Node's http module (which newer Node versions may provide), so this module
// puts them there before ws loads, unless they exist: bufferutil's functions when it can be loaded
// at run time (from the package's node_modules, as an optional extra), else a word-at-a-time XOR
// (~4x faster than ws's loop). ws itself still masks frames under 24 bytes.
//
// Import this module before 'ws' in every module that imports ws (ES modules run in import order).

import http from 'node:http';
import { createRequire } from 'node:module';

type MaskFn = (source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number) => void;
type UnmaskFn = (buffer: Uint8Array, mask: Uint8Array) => void;

const key = new Uint8Array(4);
const keyWord = new Int32Array(key.buffer);

/** XORs `b` in place with the 4-byte `mask`, mask byte 0 at b[0]. */
export function unmaskWords(b: Uint8Array, mask: Uint8Array): void {
  const length = b.length;
  let i = 0;
  for (const head = Math.min(length, (4 - (b.byteOffset & 3)) & 3); i < head; i++) b[i] ^= mask[i & 3];
  const words = (length - i) >>> 2;
  if (words > 0) {
    // The mask rotated to start at byte i, as one word in this machine's byte order.
    for (let j = 0; j < 4; j++) key[j] = mask[(i + j) & 3];
    const k = keyWord[0];
    const w = new Int32Array(b.buffer, b.byteOffset + i, words);
    for (let j = 0; j < words; j++) w[j] ^= k;
    i += words * 4;
  }
  for (; i < length; i++) b[i] ^= mask[i & 3];
}

/** output[offset + i] = source[i] ^ mask[i & 3] for i < length. */
export function maskWords(source: Uint8Array, mask: Uint8Array, output: Uint8Array, offset: number, length: number): void {
  output.set(length === source.length ? source : source.subarray(0, length), offset);
  unmaskWords(output.subarray(offset, offset + length), mask);
}

function nativeBufferUtil(): { mask: MaskFn; unmask: UnmaskFn } | undefined {
  if (process.env.WS_NO_BUFFER_UTIL) return undefined;
  try {
    const b = createRequire(import.meta.url)('bufferutil') as { mask?: MaskFn; unmask?: UnmaskFn };
    return typeof b.mask === 'function' && typeof b.unmask === 'function' ? { mask: b.mask, unmask: b.unmask } : undefined;
  } catch {
    return undefined;
  }
}

/** Which implementation ws masks with (for logs and tests). */
export let wsMasking: 'node' | 'bufferutil' | 'words' = 'node';

const httpModule = http as unknown as { websocketMask?: MaskFn; websocketUnmask?: UnmaskFn };
if (typeof httpModule.websocketMask !== 'function' || typeof httpModule.websocketUnmask !== 'function') {
  const native = nativeBufferUtil();
  httpModule.websocketMask = native?.mask ?? maskWords;
  httpModule.websocketUnmask = native?.unmask ?? unmaskWords;
  wsMasking = native ? 'bufferutil' : 'words';
}
