/**
 * A copy of `view` (or of [start, end) of it) that owns its memory. Not `view.slice()`: on a Node
 * Buffer — which links hand us — slice() returns a view that shares memory, and the link reuses
 * its read buffer for the next frame.
 */
export function copyBytes(view: Uint8Array, start = 0, end = view.length): Uint8Array {
  return Uint8Array.prototype.slice.call(view, start, end);
}
