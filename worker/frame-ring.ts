// Frames between the page and the worker through shared memory, when the page is cross-origin
// isolated (SharedArrayBuffer exists): one bounded single-producer, single-consumer ring per
// direction. The writer never waits — a frame that does not fit is dropped and counted (the link
// is lossy like a wire; TCP recovers) — so the page's main thread never blocks. The reader sleeps
// when the ring is empty and the writer wakes it: with Atomics.waitAsync where the reader has it,
// otherwise with a doorbell (a tiny postMessage the caller sends).
//
// Layout: a header of Int32 slots, then the data area (a power of two bytes). Records are
// [u32 length][frame bytes] padded to 4 bytes; a record never straddles the end of the data area:
// where it would, the writer leaves a WRAP marker and starts over at offset 0. HEAD (written only by
// the producer) and TAIL (only by the consumer) are byte positions that count up modulo 2^32, so
// `HEAD - TAIL` is the bytes in use, padding included.

const HEAD = 0;
const TAIL = 1;
/** Frames dropped because the ring was full. */
const DROPS_FULL = 2;
/** Frames dropped because they can never fit (longer than maxFrameBytes). */
const DROPS_OVERSIZED = 3;
/** 1 while the reader sleeps and wants to be woken; the writer swaps it to 0 and wakes it. */
const SLEEPING = 4;
/** Bumped (and Atomics.notify'd) by the writer on each wake-up. */
const SIGNAL = 5;
/** How the reader wants to be woken: WAKE_WAIT_ASYNC (it waits on SIGNAL) or WAKE_DOORBELL. */
const WAKE_MODE = 6;
/** Frames written so far (modulo 2^32). */
const FRAMES = 7;
const HEADER_SLOTS = 16;
const HEADER_BYTES = HEADER_SLOTS * 4;

const WAKE_WAIT_ASYNC = 0;
const WAKE_DOORBELL = 1;
/** A length field with this value sends the reader back to offset 0. */
const WRAP = 0xffffffff;

/** Default data area: 4 MiB (64 frames of the largest MTU, or ~2,700 of 1,514 bytes). */
export const DEFAULT_RING_BYTES = 4 * 1024 * 1024;

const align4 = (n: number) => (n + 3) & ~3;

export interface FrameRingCounters {
  /** Frames written into the ring. */
  frames: number;
  /** Frames dropped because the ring was full. */
  droppedFull: number;
  /** Frames dropped because they are longer than the ring takes. */
  droppedOversized: number;
  /** Bytes in use now (frames not yet read, and padding). */
  usedBytes: number;
}

/** Shared by both ends: the buffer and how to read its header. */
export class FrameRing {
  protected readonly header: Int32Array;
  protected readonly data: Uint8Array;
  protected readonly dataView: DataView;
  protected readonly capacity: number;
  protected readonly mask: number;
  /** The longest frame the ring takes: a quarter of it, so a full-size frame always fits once the reader catches up. */
  readonly maxFrameBytes: number;

  constructor(readonly buffer: SharedArrayBuffer) {
    const capacity = buffer.byteLength - HEADER_BYTES;
    if (capacity < 64 || (capacity & (capacity - 1)) !== 0) {
      throw new RangeError(`a frame ring's buffer must be ${HEADER_BYTES} bytes of header plus a power of two ≥ 64 bytes, got ${buffer.byteLength}`);
    }
    this.header = new Int32Array(buffer, 0, HEADER_SLOTS);
    this.data = new Uint8Array(buffer, HEADER_BYTES, capacity);
    this.dataView = new DataView(buffer, HEADER_BYTES, capacity);
    this.capacity = capacity;
    this.mask = capacity - 1;
    this.maxFrameBytes = capacity / 4 - 4;
  }

  /**
   * A buffer for a ring holding `dataBytes` (rounded up to a power of two). `startAt` sets where
   * the positions begin (tests use it to cross the 2^32 wrap of the counters).
   */
  static allocate(dataBytes = DEFAULT_RING_BYTES, startAt = 0): SharedArrayBuffer {
    let capacity = 64;
    while (capacity < dataBytes) capacity *= 2;
    const buffer = new SharedArrayBuffer(HEADER_BYTES + capacity);
    const header = new Int32Array(buffer, 0, HEADER_SLOTS);
    header[HEAD] = header[TAIL] = startAt | 0;
    return buffer;
  }

  counters(): FrameRingCounters {
    return {
      frames: Atomics.load(this.header, FRAMES) >>> 0,
      droppedFull: Atomics.load(this.header, DROPS_FULL) >>> 0,
      droppedOversized: Atomics.load(this.header, DROPS_OVERSIZED) >>> 0,
      usedBytes: (Atomics.load(this.header, HEAD) - Atomics.load(this.header, TAIL)) >>> 0,
    };
  }
}

/** The producer's end. Exactly one thread writes into a ring. */
export class FrameRingWriter extends FrameRing {
  /** HEAD as this writer last published it (only this side changes it). */
  private head: number;
  private wakePending = false;

  /**
   * `doorbell` wakes a reader that sleeps without Atomics.waitAsync (e.g. posts a message it
   * listens for); `schedule` (default: queueMicrotask) defers the doorbell to the end of the current
   * burst of writes, so a burst costs one message. A reader that waits with Atomics.waitAsync is
   * woken at once instead (Atomics.notify is cheap), so it can work while this thread goes on.
   */
  constructor(
    buffer: SharedArrayBuffer,
    private readonly doorbell: () => void = () => {},
    private readonly schedule: (fn: () => void) => void = queueMicrotask,
  ) {
    super(buffer);
    this.head = Atomics.load(this.header, HEAD) >>> 0;
  }

  /**
   * Copies `frame` into the ring. Returns false, and counts the drop, when it is longer than
   * maxFrameBytes or the ring has no room for it now. Never blocks.
   */
  push(frame: Uint8Array): boolean {
    const len = frame.length;
    if (len === 0) return true;
    if (len > this.maxFrameBytes) {
      Atomics.add(this.header, DROPS_OVERSIZED, 1);
      return false;
    }
    const record = 4 + align4(len);
    let head = this.head;
    const tail = Atomics.load(this.header, TAIL) >>> 0;
    let pos = head & this.mask;
    const toEnd = this.capacity - pos;
    const need = record <= toEnd ? record : toEnd + record;
    if (this.capacity - ((head - tail) >>> 0) < need) {
      Atomics.add(this.header, DROPS_FULL, 1);
      return false;
    }
    if (record > toEnd) {
      // toEnd ≥ 4: positions and records are multiples of 4.
      this.dataView.setUint32(pos, WRAP, true);
      head = (head + toEnd) >>> 0;
      pos = 0;
    }
    this.dataView.setUint32(pos, len, true);
    this.data.set(frame, pos + 4);
    head = (head + record) >>> 0;
    this.head = head;
    // The store publishes the bytes above to the reader (Atomics are sequentially consistent).
    Atomics.store(this.header, HEAD, head | 0);
    Atomics.add(this.header, FRAMES, 1);
    if (!this.wakePending && Atomics.load(this.header, SLEEPING) === 1) {
      if (Atomics.load(this.header, WAKE_MODE) === WAKE_WAIT_ASYNC) {
        this.wake();
      } else {
        this.wakePending = true;
        this.schedule(() => this.wake());
      }
    }
    return true;
  }

  /** Wakes the reader if it sleeps (push schedules this itself; call it to wake at once). */
  wake(): void {
    this.wakePending = false;
    if (Atomics.compareExchange(this.header, SLEEPING, 1, 0) !== 1) return;
    Atomics.add(this.header, SIGNAL, 1);
    if (Atomics.load(this.header, WAKE_MODE) === WAKE_DOORBELL) this.doorbell();
    else Atomics.notify(this.header, SIGNAL);
  }
}

type WaitAsync = (typedArray: Int32Array, index: number, value: number) => { async: boolean; value: Promise<'ok' | 'timed-out'> | 'not-equal' | 'timed-out' };

/** The consumer's end. Exactly one thread reads a ring. */
export class FrameRingReader extends FrameRing {
  private tail: number;
  private readonly waitAsync: WaitAsync | undefined;
  private running = false;
  private onFrame: (frame: Uint8Array) => void = () => {};
  private onBatch: () => void = () => {};
  private run: (work: () => void) => void = (work) => work();

  /**
   * `useWaitAsync` (default: when this thread has Atomics.waitAsync) picks how the writer wakes this
   * reader; without it, the caller must call `ring()` when the writer's doorbell rings.
   */
  constructor(buffer: SharedArrayBuffer, useWaitAsync = typeof (Atomics as { waitAsync?: unknown }).waitAsync === 'function') {
    super(buffer);
    this.tail = Atomics.load(this.header, TAIL) >>> 0;
    this.waitAsync = useWaitAsync ? (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync.bind(Atomics) : undefined;
    Atomics.store(this.header, WAKE_MODE, useWaitAsync ? WAKE_WAIT_ASYNC : WAKE_DOORBELL);
  }

  /** Whether the writer wakes this reader with a doorbell (see FrameRingWriter's constructor). */
  get needsDoorbell(): boolean {
    return this.waitAsync === undefined;
  }

  /**
   * Calls `onFrame` with each frame in the ring, oldest first, and frees its room. The frame is a
   * fresh copy (not shared memory): the callee may keep it. Returns the number of frames read.
   */
  drain(onFrame: (frame: Uint8Array) => void, maxFrames = Infinity): number {
    let tail = this.tail;
    let n = 0;
    try {
      while (n < maxFrames) {
        const head = Atomics.load(this.header, HEAD) >>> 0;
        if (tail === head) break;
        const pos = tail & this.mask;
        const len = this.dataView.getUint32(pos, true);
        if (len === WRAP) {
          tail = (tail + this.capacity - pos) >>> 0;
          continue;
        }
        if (len === 0 || len > this.maxFrameBytes || align4(len) + 4 > (head - tail) >>> 0) {
          throw new Error(`frame ring corrupted: a record of ${len} bytes at ${pos} (${(head - tail) >>> 0} bytes in use)`);
        }
        const frame = this.data.slice(pos + 4, pos + 4 + len);
        tail = (tail + 4 + align4(len)) >>> 0;
        // Free the room before handing the frame on: the callee may take its time.
        this.tail = tail;
        Atomics.store(this.header, TAIL, tail | 0);
        n++;
        onFrame(frame);
      }
    } finally {
      this.tail = tail;
      Atomics.store(this.header, TAIL, tail | 0);
    }
    return n;
  }

  /**
   * Reads frames as they come until close(): drains, then sleeps until the writer wakes it (through
   * Atomics.waitAsync, or a call to ring() when the doorbell rings). `onBatch` runs after each
   * drain that read something; `run` wraps each wake-up's work (e.g. to time it).
   */
  start(onFrame: (frame: Uint8Array) => void, onBatch: () => void = () => {}, run: (work: () => void) => void = (work) => work()): void {
    if (this.running) throw new Error('this frame ring reader is already running');
    this.running = true;
    this.onFrame = onFrame;
    this.onBatch = onBatch;
    this.run = run;
    this.ring();
  }

  /** The writer's doorbell rang (or anything suggests there is work): drain, then sleep again. */
  ring(): void {
    if (this.running) this.run(this.drainAndSleep);
  }

  private readonly drainAndSleep = (): void => {
    for (;;) {
      if (this.drain(this.onFrame) > 0) this.onBatch();
      if (!this.running) return;
      // Read SIGNAL before saying we sleep: a wake-up after this changes it, so the wait below
      // returns at once instead of missing it.
      const signal = Atomics.load(this.header, SIGNAL);
      Atomics.store(this.header, SLEEPING, 1);
      if (Atomics.load(this.header, HEAD) >>> 0 === this.tail) {
        this.sleep(signal);
        return;
      }
      // Frames came meanwhile: take back the sleep flag (unless the writer took it) and go on.
      Atomics.compareExchange(this.header, SLEEPING, 1, 0);
    }
  };

  private sleep(signal: number): void {
    if (!this.waitAsync) return; // the doorbell calls ring()
    const r = this.waitAsync(this.header, SIGNAL, signal);
    if (r.async) void (r.value as Promise<unknown>).then(() => this.ring());
    else queueMicrotask(() => this.ring());
  }

  /** Stops reading; a pending wait is released. */
  close(): void {
    if (!this.running) return;
    this.running = false;
    Atomics.store(this.header, SLEEPING, 0);
    Atomics.add(this.header, SIGNAL, 1);
    Atomics.notify(this.header, SIGNAL);
  }
}
