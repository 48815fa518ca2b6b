// The one place weft reaches past v86's public API (v86.d.ts: the `net0-receive` / `net0-send` bus
// events, add_listener, bus.send) into the emulator's own objects. attachV86 works on the public
// bus alone; what it takes from here only makes it faster, and every function below feature-detects
// what it reads and says "not available" (undefined, false) when this v86 lacks it, so the adapter
// falls back to the bus. test/unit/v86-internals.test.ts checks each internal against the pinned v86
// (node_modules/v86), so an upgrade that renames one fails there, naming it.
//
// What is used, why, and what happens without it:
//
// - `emulator.v86.cpu.devices.net` (an ne2k, or a virtio-net card when it is the only card) and
//   `.virtio_net`: where the card of net0 lives. Missing: no card, so frames go over `net0-receive`
//   at a paced byte rate (V86AttachOptions.bytesPerMs), which cannot know when the card has room.
//
// - ne2k registers `cr`, `isr`, `curpg`, `boundary`, `pstart`, `pstop`, and `do_interrupt(mask)`:
//   v86 drops a frame its receive ring has no room for and says nothing, so the adapter hands a frame
//   over only when the ring has room (v86's own test), and refills the ring inside the emulator's
//   slice, each time the driver acknowledges a receive interrupt — it watches `isr` by turning it
//   into an accessor (the only way to hear a register write). Refilling only between slices capped a
//   download at a ring (~10 frames) per slice, well under 1 MB/s. `do_interrupt` raises the receive
//   interrupt again for frames the driver left in the ring. Missing registers: rate pacing, as above;
//   `isr` not a configurable data property: the ring is refilled only by the 1 ms retry timer;
//   no `do_interrupt`: frames left in the ring wait for the next arrival.
//
// - virtio-net `virtio.queues[0]` with `has_request()`: whether the guest posted a receive buffer
//   (v86 drops a frame when it has none). Missing: rate pacing.
//
// - the receive queue's `pop_request()` → chain with `length_writable` and `set_next_blob(data)`,
//   `push_reply(chain)`, `flush_replies()`: weft writes each frame into the guest's buffer itself, as
//   v86's `net0-receive` handler does, but with DATA_VALID in the virtio-net header — weft computed
//   the checksums, so the guest does not sum every byte again — and with one used-ring update (at
//   most one interrupt) for all the frames of a pass instead of one per frame. In the browser
//   benchmark (README) a guest fed through `net0-receive` by v86's own network adapter spends ~40% of
//   its CPU in softirq; fed by weft this way, with the offload below, 5–10% (and, with weft's TCP,
//   ~9 MB/s where v86's adapter reaches ~2). Missing: `net0-receive` (v86 writes the header, without
//   DATA_VALID), and segments longer than the MTU are cut to it (GSO needs the header).
//
// - `virtio.device_status`, `virtio.device_feature` / `virtio.driver_feature` (Uint32Array words):
//   v86 offers no receive offload of its own; adding GUEST_CSUM and GUEST_TSO4 to the offered word
//   before the driver starts lets a Linux guest take 64 KiB TCP segments whole (one buffer, one pass
//   through its receive path and one ACK where there were ~45 frames and ~22 ACKs). Missing: no
//   offload; frames are cut to the MTU.

/** The emulator object as far as this module reads it (a V86 instance; `v86` is not in v86.d.ts). */
export interface V86Machine {
  v86?: { cpu?: { devices?: { net?: unknown; virtio_net?: unknown } } };
}

/** A network card of a v86 emulator, by kind. */
export type V86NetCard = V86Ne2kCard | V86VirtioNetCard;

/** An ne2k card: its receive ring and interrupt status. */
export interface V86Ne2kCard {
  readonly kind: 'ne2k';
  /** Whether the card is stopped (CR.STP): it drops every frame. */
  stopped(): boolean;
  /** Whether the receive ring has room for a frame of `length` bytes (v86's own test). */
  hasRoomFor(length: number): boolean;
  /** Whether a receive interrupt is pending (ISR.PRX). */
  receivePending(): boolean;
  /** The BOUNDARY register: the last ring page the driver has taken. */
  boundary(): number;
  /** Whether the ring holds frames the driver has not taken (BOUNDARY trails them by a page). */
  hasUntakenFrames(): boolean;
  /** Raises the receive interrupt (does nothing where v86 has no do_interrupt). */
  raiseReceive(): void;
  /**
   * Calls `onWrite` after every write of the interrupt status register; returns what undoes it, or
   * undefined when the register cannot be watched.
   */
  watchInterruptStatus(onWrite: () => void): (() => void) | undefined;
}

/** A virtio-net card: its receive queue and feature words. */
export interface V86VirtioNetCard {
  readonly kind: 'virtio';
  /** Whether the guest posted a receive buffer. */
  hasReceiveBuffer(): boolean;
  /** The receive queue, for writing frames into the guest's buffers; undefined where v86 lacks its API. */
  receiveQueue(): V86VirtioReceiveQueue | undefined;
  /** The device status register (0 until the guest's driver starts), if readable. */
  deviceStatus(): number | undefined;
  /** Bits 0–31 of the features the driver took (the offered set until it writes its own), if readable. */
  driverFeatures(): number | undefined;
  /**
   * Adds `bits` to features 0–31 the card offers; false (nothing done) where the feature words are
   * not what this module knows. Call only before the driver starts (device status 0).
   */
  offerFeatures(bits: number): boolean;
}

/** A virtio receive queue that frames can be written into directly. */
export interface V86VirtioReceiveQueue {
  /** The next buffer the guest posted (only when hasReceiveBuffer()). */
  next(): V86VirtioReceiveBuffer;
  /** Announces the buffers filled since the last flush: one used-ring update, at most one interrupt. */
  flush(): void;
}

/** One receive buffer the guest posted. */
export interface V86VirtioReceiveBuffer {
  /** Bytes it can take (0 where v86 does not say). */
  readonly writable: number;
  /** Writes `header` then `frame` into it and stages it for the guest (announced at flush). */
  fill(header: Uint8Array, frame: Uint8Array): void;
}

/**
 * The card behind `net{adapter}` of `emulator`, when this v86 exposes one this module knows; only
 * net0's card can be found (v86 keeps no table from card number to device).
 */
export function findNetCard(emulator: V86Machine, adapter: number): V86NetCard | undefined {
  if (adapter !== 0) return undefined;
  const devices = emulator.v86?.cpu?.devices;
  const raw = devices?.net ?? devices?.virtio_net;
  if (typeof raw !== 'object' || raw === null) return undefined;
  let card = cards.get(raw);
  if (card === undefined) {
    card = isNe2k(raw) ? ne2kCard(raw) : isVirtioNet(raw) ? virtioNetCard(raw) : undefined;
    if (card !== undefined) cards.set(raw, card);
  }
  return card;
}

/** One wrapper per v86 device object (a card found once per frame must not cost an allocation). */
const cards = new WeakMap<object, V86NetCard>();

// ---------------------------------------------------------------------------------------------
// ne2k (v86 src/ne2k.js)

interface Ne2kRegisters {
  cr: number;
  isr: number;
  curpg: number;
  boundary: number;
  pstart: number;
  pstop: number;
  do_interrupt?(mask: number): void;
}

/** ISR and do_interrupt's bit: packet received. */
const ENISR_RX = 0x01;

function isNe2k(raw: object): raw is Ne2kRegisters {
  const c = raw as Partial<Ne2kRegisters>;
  return (
    typeof c.curpg === 'number' && typeof c.boundary === 'number' && typeof c.pstart === 'number' && typeof c.pstop === 'number' && typeof c.isr === 'number'
  );
}

function ne2kCard(c: Ne2kRegisters): V86Ne2kCard {
  return {
    kind: 'ne2k',
    stopped: () => (c.cr & 1) !== 0,
    hasRoomFor(length) {
      // v86's receive(): the frame plus a 4-byte header, in 256-byte pages; BOUNDARY 0 (never set) accepts all.
      const needed = 1 + ((Math.max(60, length) + 4) >> 8);
      const available = c.boundary > c.curpg ? c.boundary - c.curpg : c.pstop - c.curpg + c.boundary - c.pstart;
      return available >= needed || c.boundary === 0;
    },
    receivePending: () => (c.isr & ENISR_RX) !== 0,
    boundary: () => c.boundary,
    hasUntakenFrames() {
      let next = c.boundary + 1;
      if (next >= c.pstop) next = c.pstart;
      return next !== c.curpg;
    },
    raiseReceive: () => c.do_interrupt?.(ENISR_RX),
    watchInterruptStatus: (onWrite) => watchProperty(c, 'isr', onWrite),
  };
}

/**
 * Calls `onWrite` after every assignment to `obj[key]` (a plain data property), by turning it into
 * an accessor; returns the function that turns it back. Does nothing if the property is not a
 * configurable data property.
 */
function watchProperty<T extends object>(obj: T, key: keyof T & string, onWrite: () => void): (() => void) | undefined {
  const desc = Object.getOwnPropertyDescriptor(obj, key);
  if (!desc?.configurable || !('value' in desc)) return undefined;
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

// ---------------------------------------------------------------------------------------------
// virtio-net (v86 src/virtio_net.js, src/virtio.js)

interface VirtQueueChain {
  length_writable?: number;
  set_next_blob(data: Uint8Array): unknown;
}

interface VirtQueue {
  has_request(): boolean;
  pop_request?(): VirtQueueChain;
  push_reply?(chain: VirtQueueChain): void;
  flush_replies?(): void;
}

interface VirtioNet {
  virtio: { queues: VirtQueue[]; device_feature?: unknown; driver_feature?: unknown; device_status?: unknown };
}

function isVirtioNet(raw: object): raw is VirtioNet {
  return typeof (raw as Partial<VirtioNet>).virtio?.queues?.[0]?.has_request === 'function';
}

function virtioNetCard(c: VirtioNet): V86VirtioNetCard {
  /** Read again each time: v86 could replace a queue (a restored state), and a fake might. */
  const rx = () => c.virtio.queues[0];
  return {
    kind: 'virtio',
    hasReceiveBuffer: () => rx().has_request(),
    receiveQueue() {
      const q = rx();
      return typeof q.pop_request === 'function' && typeof q.push_reply === 'function' && typeof q.flush_replies === 'function'
        ? receiveQueue(q as Required<VirtQueue>)
        : undefined;
    },
    deviceStatus() {
      const s = c.virtio.device_status;
      return typeof s === 'number' ? s : undefined;
    },
    driverFeatures() {
      const f = c.virtio.driver_feature;
      return f instanceof Uint32Array ? f[0] : undefined;
    },
    offerFeatures(bits) {
      const { device_feature: device, driver_feature: driver } = c.virtio;
      if (!(device instanceof Uint32Array) || !(driver instanceof Uint32Array)) return false;
      device[0] |= bits;
      // As v86's reset leaves it: the offered set until the driver writes its own. v86 keeps the
      // offered set across a device reset.
      driver[0] |= bits;
      return true;
    },
  };
}

/** One per queue object, as for cards. */
const queues = new WeakMap<object, V86VirtioReceiveQueue>();

function receiveQueue(q: Required<VirtQueue>): V86VirtioReceiveQueue {
  let rq = queues.get(q);
  if (rq === undefined) {
    rq = {
      next() {
        const chain = q.pop_request();
        return {
          writable: chain.length_writable ?? 0,
          fill(header, frame) {
            chain.set_next_blob(header);
            chain.set_next_blob(frame);
            q.push_reply(chain);
          },
        };
      },
      flush: () => q.flush_replies(),
    };
    queues.set(q, rq);
  }
  return rq;
}
