// Connects a v86 emulator's network card to a weft network. v86 drops a received frame silently
// when the card has no room (ne2k: its receive ring; virtio-net: no posted receive buffer), and it
// gives no back-pressure signal, so frames for the guest wait in a bounded queue here and are
// handed over only when the card can take them — read from the card's own registers when this v86
// exposes them, otherwise at a paced rate.
//
// The ne2k ring holds about ten full-size frames, and v86 runs the guest in slices of several
// milliseconds during which no timer of ours can fire: refilling the ring only between slices caps
// a download at a ring per slice (well under 1 MB/s). So the adapter watches the card's interrupt
// status register and refills the ring inside the slice, each time the driver acknowledges a receive
// interrupt (Linux's 8390 driver does so after emptying the ring): a frame that lands then raises
// the interrupt again, as one arriving from a wire would. Refilling earlier — when the driver moves
// BOUNDARY — would race with that acknowledgement and leave frames in the ring with no interrupt.

import type { FramePort } from './frame-port';

interface Ne2kLike {
  cr: number;
  isr: number;
  imr: number;
  do_interrupt?(mask: number): void;
  curpg: number;
  boundary: number;
  pstart: number;
  pstop: number;
}

interface VirtQueueLike {
  has_request(): boolean;
  pop_request?(): { set_next_blob(data: Uint8Array): unknown };
  push_reply?(chain: unknown): void;
  flush_replies?(): void;
}

interface VirtioNetLike {
  virtio?: { queues?: VirtQueueLike[] };
}

/**
 * The parts of a v86 `V86` instance this adapter uses. `bus` exists at run time but is missing from
 * v86's own typings, hence optional here (so a typed `V86` can be passed as it is).
 */
export interface V86Emulator {
  // Typed for net0 as v86.d.ts knows only that one; other cards' events have the same shape.
  add_listener(event: 'net0-send', listener: (data: Uint8Array) => void): void;
  remove_listener(event: 'net0-send', listener: (data: Uint8Array) => void): void;
  bus?: { send(event: string, data: unknown): void };
  v86?: { cpu?: { devices?: { net?: unknown; virtio_net?: unknown } } };
}

export interface V86AttachOptions {
  /** Which card: 0 for net0 (default). */
  adapter?: number;
  /** Frames waiting for the card before the oldest are dropped (default 1024). */
  maxQueuedFrames?: number;
  /** Without card introspection: bytes handed over per millisecond (default 256 KiB/ms). */
  bytesPerMs?: number;
  /**
   * virtio-net: mark the frames weft hands the guest as checksum-verified (the header's DATA_VALID
   * flag), as a host with receive checksum offload does, so the guest does not sum every byte it
   * receives again. weft computed those checksums itself (default true).
   */
  virtioDataValid?: boolean;
}

export interface NetworkAttachable {
  attach(port: FramePort): () => void;
}

/** How frames are paced into the card: by its receive ring, its receive queue, or by a byte rate. */
export type V86Pacing = 'ne2k-ring' | 'virtio-queue' | 'rate';

export interface V86Attachment {
  /** Detaches from the emulator and drops what is queued. */
  detach(): void;
  /** Frames dropped because the queue for the card was full. */
  readonly dropped: number;
  /** Frames waiting for the card right now. */
  readonly queued: number;
  /** Frames handed to the card so far. */
  readonly delivered: number;
  /** How delivery is paced (known once the first frame has gone to the card). */
  readonly pacing: V86Pacing | undefined;
}

/** Wires `net{N}-send` / `net{N}-receive` of `emulator` to `network`. */
export function attachV86(emulator: V86Emulator, network: NetworkAttachable, options: V86AttachOptions = {}): V86Attachment {
  const bus = emulator.bus;
  if (bus === undefined) throw new TypeError('attachV86: this object has no v86 bus (pass the V86 instance, after `new V86(...)`)');
  const receiveEvent = `net${options.adapter ?? 0}-receive`;
  const dataValid = options.virtioDataValid ?? true;
  /** Receive buffers filled directly (virtio, see intoVirtQueue) and not yet announced to the guest. */
  let staged: VirtQueueLike | undefined;
  const toCard = (frame: Uint8Array) => {
    const rx = pacing === 'virtio-queue' && dataValid ? directQueue(card()) : undefined;
    if (!rx) {
      bus.send(receiveEvent, frame);
      return;
    }
    intoVirtQueue(rx, frame);
    staged = rx;
    bus.send('eth-receive-end', [frame.length]);
  };
  const id = options.adapter ?? 0;
  const maxQueued = options.maxQueuedFrames ?? 1024;
  const bytesPerMs = options.bytesPerMs ?? 256 * 1024;
  const queue: Uint8Array[] = [];
  let head = 0;
  let dropped = 0;
  let delivered = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let budget = 0;
  let budgetAt = performance.now();
  let detached = false;
  let pumping = false;
  let pacing: V86Pacing | undefined;
  let unwatch: (() => void) | undefined;
  /** BOUNDARY when the adapter last raised a receive interrupt for frames left in the ne2k ring. */
  let reraisedAt = -1;
  let listener: ((frame: Uint8Array) => void) | undefined;

  // The network copies what it keeps (ne2k hands out a view into its own memory).
  const onSend = (data: Uint8Array) => listener?.(data);
  const sendEvent = `net${id}-send` as 'net0-send';
  emulator.add_listener(sendEvent, onSend);

  const card = (): unknown => {
    const devices = emulator.v86?.cpu?.devices;
    return id === 0 ? devices?.net ?? devices?.virtio_net : undefined;
  };

  const room = (frame: Uint8Array): boolean => {
    const c = card();
    if (isNe2k(c)) {
      if (pacing !== 'ne2k-ring') {
        pacing = 'ne2k-ring';
        unwatch = watchProperty(c, 'isr', () => afterIsrWrite(c));
      }
      if (c.cr & 1) return true; // stopped: it drops everything anyway
      // v86's own test (ne2k.js receive): the frame plus a 4-byte header, in 256-byte pages.
      const needed = 1 + ((Math.max(60, frame.length) + 4) >> 8);
      const available = c.boundary > c.curpg ? c.boundary - c.curpg : c.pstop - c.curpg + c.boundary - c.pstart;
      return available >= needed || c.boundary === 0;
    }
    const rx = isVirtioNet(c) ? c.virtio?.queues?.[0] : undefined;
    if (rx) {
      pacing = 'virtio-queue';
      return rx.has_request();
    }
    // No introspection: a byte budget that refills with time.
    pacing = 'rate';
    const now = performance.now();
    budget = Math.min(bytesPerMs * 4, budget + (now - budgetAt) * bytesPerMs);
    budgetAt = now;
    if (budget < frame.length) return false;
    budget -= frame.length;
    return true;
  };

  function pump(): void {
    // Re-entry: delivering a frame can make the guest write the register that calls this.
    if (detached || pumping) return;
    pumping = true;
    try {
      while (head < queue.length && room(queue[head])) {
        const frame = queue[head];
        queue[head++] = EMPTY;
        delivered++;
        toCard(frame);
      }
    } finally {
      pumping = false;
      // One used-ring update (and at most one interrupt) for all the buffers filled in this pass.
      const rx = staged;
      staged = undefined;
      rx?.flush_replies?.();
    }
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    } else if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    // The guest frees room as its driver runs; look again shortly (the register watch, where there
    // is one, usually comes first).
    if (head < queue.length && timer === undefined) {
      timer = setTimeout(() => {
        timer = undefined;
        pump();
      }, 1);
    }
  }

  /** The ne2k's interrupt status changed: refill the ring once no receive interrupt is pending. */
  function afterIsrWrite(c: Ne2kLike): void {
    if (pumping || detached || c.isr & ENISR_RX) return;
    pump();
    // Linux's driver takes at most ten frames per pass and then acknowledges; frames left in the
    // ring (small ones fit dozens) would wait for the next arrival, which may never come. Raise the
    // interrupt again for them — but only while the driver makes progress (moves BOUNDARY), so a
    // driver that reads the ring differently cannot be driven into an interrupt storm.
    if (!(c.isr & ENISR_RX) && !(c.cr & 1) && c.boundary !== reraisedAt && ne2kRingHasFrames(c)) {
      reraisedAt = c.boundary;
      c.do_interrupt?.(ENISR_RX);
    }
  }

  const detachNetwork = network.attach({
    send(frame) {
      if (detached) return;
      if (queue.length - head >= maxQueued) {
        queue[head++] = EMPTY; // drop the oldest: TCP recovers a loss; a stale frame is worth less than a new one
        dropped++;
      }
      queue.push(frame);
      pump();
    },
    onFrame(cb) {
      listener = cb;
    },
  });

  return {
    detach() {
      if (detached) return;
      detached = true;
      if (timer !== undefined) clearTimeout(timer);
      unwatch?.();
      emulator.remove_listener(sendEvent, onSend);
      detachNetwork();
      queue.length = 0;
      head = 0;
    },
    get dropped() {
      return dropped;
    },
    get queued() {
      return queue.length - head;
    },
    get delivered() {
      return delivered;
    },
    get pacing() {
      return pacing;
    },
  };
}

const EMPTY = new Uint8Array(0);
/** ne2k ISR bit: packet received. */
const ENISR_RX = 0x01;

/** Whether the ne2k ring holds frames the driver has not taken (BOUNDARY trails them by a page). */
function ne2kRingHasFrames(c: Ne2kLike): boolean {
  let next = c.boundary + 1;
  if (next >= c.pstop) next = c.pstart;
  return next !== c.curpg;
}

/**
 * Calls `onWrite` after every assignment to `obj[key]` (a plain data property), by turning it into
 * an accessor; returns the function that turns it back. Does nothing if the property is not a
 * configurable data property.
 */
function watchProperty<T extends object>(obj: T, key: keyof T & string, onWrite: () => void): (() => void) | undefined {
  const desc = Object.getOwnPropertyDescriptor(obj, key);
  if (!desc || !desc.configurable || !('value' in desc)) return undefined;
  let value: unknown = desc.value;
  Object.defineProperty(obj, key, {
    configurable: true,
    enumerable: desc.enumerable,
    get: () => value,
    set: (v: unknown) => {
      value = v;
      onWrite();
    },
  });
  return () => Object.defineProperty(obj, key, { configurable: true, enumerable: desc.enumerable, writable: true, value });
}

function isNe2k(card: unknown): card is Ne2kLike {
  const c = card as Partial<Ne2kLike> | undefined;
  return typeof c?.curpg === 'number' && typeof c.boundary === 'number' && typeof c.pstart === 'number' && typeof c.pstop === 'number' && typeof c.isr === 'number';
}

/** VIRTIO_NET_HDR_F_DATA_VALID: the packet's checksums are known good. */
const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** struct virtio_net_hdr_mrg_rxbuf (what a VIRTIO_F_VERSION_1 device prefixes each frame with). */
const VIRTIO_NET_HDR_BYTES = 12;

/** The card's receive queue when frames can be written into it directly (v86's VirtQueue API). */
function directQueue(card: unknown): VirtQueueLike | undefined {
  const rx = isVirtioNet(card) ? card.virtio?.queues?.[0] : undefined;
  return rx && typeof rx.pop_request === 'function' && typeof rx.push_reply === 'function' && typeof rx.flush_replies === 'function' ? rx : undefined;
}

/**
 * Writes `frame` into the next receive buffer the guest posted, as v86's virtio-net does for
 * `net0-receive`, but with DATA_VALID set in the header; the caller flushes the replies.
 */
function intoVirtQueue(rx: VirtQueueLike, frame: Uint8Array): void {
  const withHeader = new Uint8Array(VIRTIO_NET_HDR_BYTES + frame.length);
  withHeader[0] = VIRTIO_NET_HDR_F_DATA_VALID;
  withHeader[10] = 1; // num_buffers (little-endian): the frame fits one buffer chain
  withHeader.set(frame, VIRTIO_NET_HDR_BYTES);
  const chain = rx.pop_request!();
  chain.set_next_blob(withHeader);
  rx.push_reply!(chain);
}

function isVirtioNet(card: unknown): card is VirtioNetLike {
  return typeof (card as VirtioNetLike | undefined)?.virtio?.queues?.[0]?.has_request === 'function';
}
