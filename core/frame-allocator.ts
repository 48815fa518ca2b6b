// Output frames are carved from large zeroed blocks: allocating a typed array per frame costs an
// ArrayBuffer (with its own backing store and GC bookkeeping) each time, which shows up at hundreds
// of thousands of frames per second. A frame is a view; its bytes are never reused once handed out.

const BLOCK_BYTES = 256 * 1024;
/** Frames above this get their own buffer, so one big frame cannot waste most of a block. */
const LARGE_FRAME = 16 * 1024;

export class FrameAllocator {
  private block = new Uint8Array(0);
  private used = 0;

  /** A zero-filled view of `length` bytes. */
  alloc(length: number): Uint8Array {
    if (length > LARGE_FRAME) return new Uint8Array(length);
    if (this.used + length > this.block.length) {
      this.block = new Uint8Array(BLOCK_BYTES);
      this.used = 0;
    }
    const frame = this.block.subarray(this.used, this.used + length);
    // Keep every frame 8-byte aligned, so checksum loops can read whole words.
    this.used += (length + 7) & ~7;
    return frame;
  }
}
