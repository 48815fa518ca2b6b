// Frames cross between page and worker in batches: many frames packed into one ArrayBuffer that is
// transferred (not copied) with one postMessage. Layout: repeated [u32 length (LE)][frame bytes],
// ended by the end of the buffer or by a zero length (the unused tail of a batch buffer).

/** Frames per batch and bytes per batch: bounds, so one burst cannot build an unbounded message. */
export const MAX_BATCH_FRAMES = 256;
export const MAX_BATCH_BYTES = 1 << 20;
/** A batch buffer starts this big and doubles as frames arrive (up to what MAX_BATCH_BYTES needs). */
const INITIAL_BATCH_BYTES = 16 * 1024;

export class FrameBatcher {
  private buf = new Uint8Array(INITIAL_BATCH_BYTES);
  private view = new DataView(this.buf.buffer);
  private bytes = 0;
  private count = 0;
  private scheduled = false;

  /** `flush` receives a packed batch; `schedule` runs a callback soon (end of the current task). */
  constructor(
    private readonly flush: (batch: ArrayBuffer, count: number) => void,
    private readonly schedule: (fn: () => void) => void,
  ) {}

  /** Copies `frame` into the pending batch at once: the caller may reuse its buffer afterwards. */
  push(frame: Uint8Array): void {
    if (frame.length === 0) return;
    const need = this.bytes + 4 + frame.length;
    if (need > this.buf.length) this.grow(need);
    this.view.setUint32(this.bytes, frame.length, true);
    this.buf.set(frame, this.bytes + 4);
    this.bytes = need;
    this.count++;
    if (this.count >= MAX_BATCH_FRAMES || this.bytes >= MAX_BATCH_BYTES) {
      this.send();
      return;
    }
    if (!this.scheduled) {
      this.scheduled = true;
      this.schedule(() => {
        this.scheduled = false;
        this.send();
      });
    }
  }

  /** Sends what is pending now (also called by the scheduled callback). */
  send(): void {
    if (this.count === 0) return;
    // The whole buffer goes: its unused tail is zeros, and a zero length ends a batch.
    const out = this.buf.buffer;
    const count = this.count;
    this.buf = new Uint8Array(INITIAL_BATCH_BYTES);
    this.view = new DataView(this.buf.buffer);
    this.bytes = 0;
    this.count = 0;
    this.flush(out, count);
  }

  private grow(need: number): void {
    let size = this.buf.length * 2;
    while (size < need) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.bytes));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
}

/** Calls `onFrame` with a view of each frame in a packed batch; stops at the first malformed entry. */
export function unpackFrames(batch: ArrayBuffer, onFrame: (frame: Uint8Array) => void): number {
  const bytes = new Uint8Array(batch);
  const view = new DataView(batch);
  let off = 0;
  let n = 0;
  while (off + 4 <= bytes.length) {
    const len = view.getUint32(off, true);
    if (len === 0 || off + 4 + len > bytes.length) break;
    onFrame(bytes.subarray(off + 4, off + 4 + len));
    off += 4 + len;
    n++;
  }
  return n;
}
