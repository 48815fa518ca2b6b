// Frames cross between page and worker in batches: many frames packed into one ArrayBuffer that is
// transferred (not copied) with one postMessage. Layout: repeated [u32 length (LE)][frame bytes].

/** Frames per batch and bytes per batch: bounds, so one burst cannot build an unbounded message. */
export const MAX_BATCH_FRAMES = 256;
export const MAX_BATCH_BYTES = 1 << 20;

export class FrameBatcher {
  private frames: Uint8Array[] = [];
  private bytes = 0;
  private scheduled = false;

  /** `flush` receives a packed batch; `schedule` runs a callback soon (end of the current task). */
  constructor(
    private readonly flush: (batch: ArrayBuffer, count: number) => void,
    private readonly schedule: (fn: () => void) => void,
  ) {}

  /** Queues a copy of `frame` (the caller may reuse its buffer). */
  push(frame: Uint8Array): void {
    this.frames.push(frame);
    this.bytes += 4 + frame.length;
    if (this.frames.length >= MAX_BATCH_FRAMES || this.bytes >= MAX_BATCH_BYTES) {
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

  private send(): void {
    if (this.frames.length === 0) return;
    const out = new Uint8Array(this.bytes);
    const view = new DataView(out.buffer);
    let off = 0;
    for (const f of this.frames) {
      view.setUint32(off, f.length, true);
      out.set(f, off + 4);
      off += 4 + f.length;
    }
    const count = this.frames.length;
    this.frames = [];
    this.bytes = 0;
    this.flush(out.buffer, count);
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
