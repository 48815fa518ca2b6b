// Connects a v86 emulator's network card to a weft network. v86 drops a received frame silently
// when the card has no room (ne2k: its receive ring; virtio-net: no posted receive buffer), and it
// gives no back-pressure signal, so frames for the guest wait in a bounded queue here and are
// handed over only when the card can take them — read from the card's own registers when this v86
// exposes them, otherwise at a paced rate. Those registers, the virtio queue and feature words are
// v86's internals, not its public API: they are read and written only through web/v86-internals.ts
// (why each is used, what happens without it), which is tested against the pinned v86; this file
// keeps to the public bus (`net0-send`, `net0-receive`, `eth-receive-end`, `emulator-loaded`).
//
// The ne2k ring holds about ten full-size frames, and v86 runs the guest in slices of several
// milliseconds during which no timer of ours can fire: refilling the ring only between slices caps
// a download at a ring per slice (well under 1 MB/s). So the adapter watches the card's interrupt
// status register and refills the ring inside the slice, each time the driver acknowledges a receive
// interrupt (Linux's 8390 driver does so after emptying the ring): a frame that lands then raises
// the interrupt again, as one arriving from a wire would. Refilling earlier — when the driver moves
// BOUNDARY — would race with that acknowledgement and leave frames in the ring with no interrupt.
//
// A virtio-net card is also offered receive segmentation offload (GUEST_CSUM and GUEST_TSO4, as
// QEMU's card offers a guest whose host does TSO) when the adapter is attached before the guest's
// driver starts. A guest that takes it is handed TCP segments of up to 64 KiB: one buffer, one
// pass through its receive path, and one ACK where there were some 45 frames and ~22 ACKs — at an
// MTU of 1500 the guest's emulated CPU, not weft, is what limits a download.

import { isOversizedTcpFrame, splitTcpFrame, tcpGsoFields } from '../core/wire/tcp-segmentation';
import type { FramePort } from './frame-port';
import { findNetCard, type V86Ne2kCard, type V86VirtioReceiveQueue } from './v86-internals';

/**
 * The parts of a v86 `V86` instance this adapter uses. `bus` exists at run time but is missing from
 * v86's own typings, hence optional here (so a typed `V86` can be passed as it is); so is `v86`, the
 * emulator's internals, which only web/v86-internals.ts reads.
 */
export interface V86Emulator {
  // Typed for net0 as v86.d.ts knows only that one; other cards' events have the same shape.
  add_listener(event: 'net0-send', listener: (data: Uint8Array) => void): void;
  add_listener(event: 'emulator-loaded', listener: () => void): void;
  remove_listener(event: 'net0-send', listener: (data: Uint8Array) => void): void;
  remove_listener(event: 'emulator-loaded', listener: () => void): void;
  bus?: { send(event: string, data: unknown): void };
  v86?: { cpu?: { devices?: { net?: unknown; virtio_net?: unknown } } };
}

export interface V86AttachOptions {
  /** Which network card of the emulator: N for netN (default 0, net0; only net0's card can be read for pacing). */
  adapter?: number;
  /**
   * Frames waiting for the card before the oldest are dropped (default 1024). v86 drops a frame the
   * card has no room for, so frames wait here; a drop is counted in V86Attachment.dropped.
   */
  maxQueuedFrames?: number;
  /**
   * Bytes handed to the card per millisecond when its receive ring or queue cannot be read (a card
   * other than net0, or a v86 build whose card this adapter does not know); default 256 KiB/ms.
   */
  bytesPerMs?: number;
  /**
   * virtio-net: mark the frames weft hands the guest as checksum-verified (the header's DATA_VALID
   * flag), as a host with receive checksum offload does, so the guest does not sum every byte it
   * receives again. weft computed those checksums itself (default true).
   */
  virtioDataValid?: boolean;
  /**
   * virtio-net: offer the guest receive segmentation offload (GUEST_CSUM, GUEST_TSO4) when its
   * driver has not started yet, and hand a guest that takes it TCP segments of up to 64 KiB
   * (default true; needs virtioDataValid). A guest restored from a saved state keeps what its
   * driver negotiated before the state was saved.
   */
  virtioSegmentationOffload?: boolean;
  /**
   * Detaches when aborted, as V86Attachment.detach() does (default: none). With an already aborted
   * signal nothing is attached: the attachment returned is detached from the start.
   */
  signal?: AbortSignal;
}

/** What attachV86 attaches to: a WeftNetwork, or anything that takes a FramePort as one does. */
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
  /** Times frames written straight into virtio buffers were announced to the guest (one interrupt at most each). */
  readonly batches: number;
  /** How delivery is paced (known once the first frame has gone to the card). */
  readonly pacing: V86Pacing | undefined;
}

/** Wires `net{N}-send` / `net{N}-receive` of `emulator` to `network`. */
export function attachV86(emulator: V86Emulator, network: NetworkAttachable, options: V86AttachOptions = {}): V86Attachment {
  const bus = emulator.bus;
  if (bus === undefined) throw new TypeError('attachV86: this object has no v86 bus (pass the V86 instance, after `new V86(...)`)');
  const signal = options.signal;
  if (signal?.aborted) return DETACHED;
  const receiveEvent = `net${options.adapter ?? 0}-receive`;
  const dataValid = options.virtioDataValid ?? true;
  const offerOffload = dataValid && (options.virtioSegmentationOffload ?? true);
  /** Receive buffers filled directly (virtio, see intoVirtQueue) and not yet announced to the guest. */
  let staged: V86VirtioReceiveQueue | undefined;
  /** The link MTU and the network's callback, from FramePort.offloadSegments. */
  let linkMtu: number | undefined;
  let offloadAccepts: ((on: boolean) => void) | undefined;
  /** Whether the guest's driver took segmentation offload (last told to the network). */
  let guestOffload = false;
  /** Hands `frame` to the card; returns pieces of it still to deliver (a buffer too small for it). */
  const toCard = (frame: Uint8Array): Uint8Array[] | undefined => {
    const rx = pacing === 'virtio-queue' && dataValid ? directQueue() : undefined;
    if (!rx) {
      bus.send(receiveEvent, frame);
      return undefined;
    }
    const rest = intoVirtQueue(rx, frame, guestOffload ? linkMtu : undefined);
    staged = rx;
    bus.send('eth-receive-end', [frame.length]);
    return rest;
  };
  /** Tells the network when the guest's driver starts or stops taking large segments. */
  const checkOffload = () => {
    if (!offerOffload || !offloadAccepts) return;
    const now = takesLargeSegments();
    if (now === guestOffload) return;
    guestOffload = now;
    offloadAccepts(now);
  };
  const id = options.adapter ?? 0;
  const maxQueued = options.maxQueuedFrames ?? 1024;
  const bytesPerMs = options.bytesPerMs ?? 256 * 1024;
  const queue: Uint8Array[] = [];
  let head = 0;
  let dropped = 0;
  let delivered = 0;
  let batches = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let budget = 0;
  let budgetAt = performance.now();
  let detached = false;
  let pumping = false;
  let pacing: V86Pacing | undefined;
  let unwatch: (() => void) | undefined;
  /** BOUNDARY when the adapter last raised a receive interrupt for frames left in the ne2k ring. */
  let reraisedAt = -1;
  /** Since when the ne2k ring has held frames with no receive interrupt pending (nudgeNe2k). */
  let stuckSince: number | undefined;
  let listener: ((frame: Uint8Array) => void) | undefined;

  // The network copies what it keeps (ne2k hands out a view into its own memory).
  const onSend = (data: Uint8Array) => {
    checkOffload();
    listener?.(data);
  };
  const sendEvent = `net${id}-send` as 'net0-send';
  emulator.add_listener(sendEvent, onSend);

  // The card, where this v86 lets it be read (web/v86-internals.ts); else only the bus is used.
  const card = () => findNetCard(emulator, id);
  /** The card's receive queue when frames can be written into it directly. */
  const directQueue = (): V86VirtioReceiveQueue | undefined => {
    const c = card();
    return c?.kind === 'virtio' ? c.receiveQueue() : undefined;
  };
  /** Whether the card's running driver took receive segmentation offload. */
  const takesLargeSegments = (): boolean => {
    const c = card();
    if (c?.kind !== 'virtio' || !((c.deviceStatus() ?? 0) & VIRTIO_STATUS_DRIVER_OK)) return false;
    const features = c.driverFeatures();
    return features !== undefined && (features & RECEIVE_OFFLOAD) === RECEIVE_OFFLOAD;
  };
  // The card exists once v86 has loaded; its features must be offered before the guest's driver
  // reads them (status 0: not yet read).
  const onLoaded = () => {
    const c = card();
    if (offerOffload && c?.kind === 'virtio' && c.deviceStatus() === 0) c.offerFeatures(RECEIVE_OFFLOAD);
  };
  if (card()) onLoaded();
  else emulator.add_listener('emulator-loaded', onLoaded);

  const room = (frame: Uint8Array): boolean => {
    const c = card();
    if (c?.kind === 'ne2k') {
      if (pacing !== 'ne2k-ring') {
        pacing = 'ne2k-ring';
        unwatch = c.watchInterruptStatus(() => afterIsrWrite(c));
      }
      if (c.stopped()) return true; // it drops everything anyway
      return c.hasRoomFor(frame.length);
    }
    if (c?.kind === 'virtio') {
      pacing = 'virtio-queue';
      return c.hasReceiveBuffer();
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
      while (head < queue.length) {
        // A segment longer than the MTU goes whole only to a guest that takes it (and only directly into its buffers).
        if (linkMtu !== undefined && isOversizedTcpFrame(queue[head], linkMtu) && !(guestOffload && directQueue())) {
          queue.splice(head, 1, ...splitTcpFrame(queue[head], linkMtu));
        }
        if (!room(queue[head])) break;
        const frame = queue[head];
        queue[head++] = EMPTY;
        delivered++;
        const rest = toCard(frame);
        if (rest) queue.splice(head, 0, ...rest);
      }
    } finally {
      pumping = false;
      // One used-ring update (and at most one interrupt) for all the buffers filled in this pass.
      const rx = staged;
      staged = undefined;
      if (rx) {
        batches++;
        rx.flush();
      }
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
        nudgeNe2k();
      }, 1);
    }
  }

  /** The ne2k's interrupt status changed: refill the ring once no receive interrupt is pending. */
  function afterIsrWrite(c: V86Ne2kCard): void {
    if (pumping || detached || c.receivePending()) return;
    pump();
    // Linux's driver takes at most ten frames per pass and then acknowledges; frames left in the
    // ring (small ones fit dozens) would wait for the next arrival, which may never come. Raise the
    // interrupt again for them — but only while the driver makes progress (moves BOUNDARY), so a
    // driver that reads the ring differently cannot be driven into an interrupt storm.
    if (!c.receivePending() && !c.stopped() && c.boundary() !== reraisedAt && c.hasUntakenFrames()) {
      reraisedAt = c.boundary();
      c.raiseReceive();
    }
  }

  /**
   * The last resort for the ne2k ring: frames wait in it and here, and no receive interrupt is
   * pending. No arrival can raise one (nothing of ours fits) and afterIsrWrite raises it again only
   * once BOUNDARY has moved, so after 100 ms of that it is raised anyway: at most ten times a second,
   * and a ring the guest does not read still drops nothing.
   */
  function nudgeNe2k(): void {
    const c = card();
    if (detached || c?.kind !== 'ne2k' || head === queue.length || c.stopped() || c.receivePending() || !c.hasUntakenFrames()) {
      stuckSince = undefined;
      return;
    }
    const now = performance.now();
    if (stuckSince === undefined) stuckSince = now;
    else if (now - stuckSince >= 100) {
      stuckSince = undefined;
      c.raiseReceive();
    }
  }

  const port: FramePort = {
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
    offloadSegments(mtu, accepts) {
      linkMtu = mtu;
      offloadAccepts = accepts;
      checkOffload();
    },
  };
  let detachNetwork: () => void;
  try {
    detachNetwork = network.attach(port);
  } catch (e) {
    // A closed network (WeftError ERR_WEFT_CLOSED): take the listeners back.
    emulator.remove_listener(sendEvent, onSend);
    emulator.remove_listener('emulator-loaded', onLoaded);
    throw e;
  }

  const attachment: V86Attachment = {
    detach() {
      if (detached) return;
      detached = true;
      signal?.removeEventListener('abort', attachment.detach);
      if (timer !== undefined) clearTimeout(timer);
      unwatch?.();
      emulator.remove_listener(sendEvent, onSend);
      emulator.remove_listener('emulator-loaded', onLoaded);
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
    get batches() {
      return batches;
    },
    get pacing() {
      return pacing;
    },
  };
  signal?.addEventListener('abort', attachment.detach, { once: true });
  return attachment;
}

/** What attachV86 returns for an already aborted signal. */
const DETACHED: V86Attachment = Object.freeze({ detach: () => undefined, dropped: 0, queued: 0, delivered: 0, batches: 0, pacing: undefined });

const EMPTY = new Uint8Array(0);
/** virtio_net_hdr flags: the TCP checksum holds only the pseudo-header sum; the packet's checksums are known good. */
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1;
const VIRTIO_NET_HDR_F_DATA_VALID = 2;
/** virtio_net_hdr gso_type: a TCP/IPv4 segment the guest takes whole. */
const VIRTIO_NET_HDR_GSO_TCPV4 = 1;
/** virtio-net feature bits (virtio 1.x §5.1.3): the driver takes partial checksums, and TCP/IPv4 segments longer than its MTU. */
const VIRTIO_NET_F_GUEST_CSUM = 1 << 1;
const VIRTIO_NET_F_GUEST_TSO4 = 1 << 7;
const RECEIVE_OFFLOAD = VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4;
/** virtio device status bit: the driver is set up and running. */
const VIRTIO_STATUS_DRIVER_OK = 4;

/** struct virtio_net_hdr_mrg_rxbuf (what a VIRTIO_F_VERSION_1 device prefixes each frame with). */
const VIRTIO_NET_HDR_BYTES = 12;

/**
 * Writes `frame` into the next receive buffer the guest posted, as v86's virtio-net does for
 * `net0-receive`, but with DATA_VALID set in the header — or, for a TCP segment longer than `mtu`
 * (given when the guest took segmentation offload), as one GSO packet. The caller flushes the
 * replies. A buffer too small for a large segment gets its first MTU-sized piece; the other pieces
 * are returned for the next buffers.
 */
function intoVirtQueue(rx: V86VirtioReceiveQueue, frame: Uint8Array, mtu: number | undefined): Uint8Array[] | undefined {
  const buffer = rx.next();
  let rest: Uint8Array[] | undefined;
  const header = new Uint8Array(VIRTIO_NET_HDR_BYTES);
  header[10] = 1; // num_buffers (little-endian): the frame fits one buffer chain
  if (mtu !== undefined && isOversizedTcpFrame(frame, mtu)) {
    if (buffer.writable >= VIRTIO_NET_HDR_BYTES + frame.length && fillGsoHeader(header, frame, mtu)) {
      buffer.fill(header, frame);
      return undefined;
    }
    [frame, ...rest] = splitTcpFrame(frame, mtu);
  }
  header[0] = VIRTIO_NET_HDR_F_DATA_VALID;
  buffer.fill(header, frame);
  return rest && rest.length > 0 ? rest : undefined;
}

/**
 * The virtio_net_hdr of a TCP/IPv4 segment longer than `mtu` that the guest takes whole: GSO with
 * gso_size the MTU's payload and the checksum left partial (the stack wrote the pseudo-header sum).
 * False when the frame's headers do not allow it.
 */
function fillGsoHeader(header: Uint8Array, frame: Uint8Array, mtu: number): boolean {
  const gso = tcpGsoFields(frame, mtu);
  if (!gso) return false;
  const view = new DataView(header.buffer);
  header[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
  header[1] = VIRTIO_NET_HDR_GSO_TCPV4;
  view.setUint16(2, gso.headerLength, true);
  view.setUint16(4, gso.segmentSize, true);
  view.setUint16(6, gso.checksumStart, true);
  view.setUint16(8, gso.checksumOffset, true);
  return true;
}
