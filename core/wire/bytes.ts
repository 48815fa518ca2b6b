/**
 * A copy of `view` (or of [start, end) of it) that owns its memory. Not `view.slice()`: on a Node
 * Buffer — which links hand us — slice() returns a view that shares memory, and the link reuses
 * its read buffer for the next frame.
 */
export function copyBytes(view: Uint8Array, start = 0, end = view.length): Uint8Array {
  return Uint8Array.prototype.slice.call(view, start, end);
}

/**
 * A plain Uint8Array over `length` bytes of `view` from `start`, sharing its memory (no copy). Not
 * `view.subarray()`: on a Node Buffer that returns a Buffer, and the stack's header code, seeing
 * both kinds of array, is deoptimised by V8 at each switch; links hand the stack these instead.
 */
export function bytesView(view: Uint8Array, start: number, length: number): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset + start, length);
}

/** Big-endian (network order) integer access; every codec reads its fields through these. */
export function readU16(b: Uint8Array, off: number): number {
  return (b[off] << 8) | b[off + 1];
}

export function readU32(b: Uint8Array, off: number): number {
  return ((b[off] << 24) | (b[off + 1] << 16) | (b[off + 2] << 8) | b[off + 3]) >>> 0;
}

export function writeU16(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 8) & 0xff;
  b[off + 1] = v & 0xff;
}

export function writeU32(b: Uint8Array, off: number, v: number): void {
  b[off] = (v >>> 24) & 0xff;
  b[off + 1] = (v >>> 16) & 0xff;
  b[off + 2] = (v >>> 8) & 0xff;
  b[off + 3] = v & 0xff;
}

/** Little-endian u32 (Wisp's byte order). */
export function readU32LE(b: Uint8Array, off: number): number {
  return (b[off] | (b[off + 1] << 8) | (b[off + 2] << 16) | (b[off + 3] << 24)) >>> 0;
}

export function writeU32LE(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}
