// Connects a v86 emulator's network card to a weft network. v86 drops a received frame silently
// when the card has no room (ne2k: its receive ring; virtio-net: no posted receive buffer), and it
// gives no back-pressure signal, so frames for the guest wait in a bounded queue here and are
// handed over only when the card can take them — read from the card's own registers when this v86
// exposes them, otherwise at a paced rate.

import type { FramePort } from './frame-port';

interface Ne2kLike {
  cr: number;
  curpg: number;
  boundary: number;
  pstart: number;
  pstop: number;
}

interface VirtioNetLike {
  virtio?: { queues?: Array<{ has_request(): boolean }> };
}

/** The parts of a v86 `V86` instance this adapter uses. */
export interface V86Emulator {
  add_listener(event: string, listener: (data: Uint8Array) => void): void;
  remove_listener(event: string, listener: (data: Uint8Array) => void): void;
  bus: { send(event: string, data: unknown): void };
  v86?: { cpu?: { devices?: { net?: unknown; virtio_net?: unknown } } };
}

export interface V86AttachOptions {
  /** Which card: 0 for net0 (default). */
  adapter?: number;
  /** Frames waiting for the card before the oldest are dropped (default 1024). */
  maxQueuedFrames?: number;
  /** Without card introspection: bytes handed over per millisecond (default 256 KiB/ms). */
  bytesPerMs?: number;
}

export interface NetworkAttachable {
  attach(port: FramePort): () => void;
}

export interface V86Attachment {
  /** Detaches from the emulator and drops what is queued. */
  detach(): void;
  /** Frames dropped because the queue for the card was full. */
  readonly dropped: number;
  /** Frames waiting for the card right now. */
  readonly queued: number;
}

/** Wires `net{N}-send` / `net{N}-receive` of `emulator` to `network`. */
export function attachV86(emulator: V86Emulator, network: NetworkAttachable, options: V86AttachOptions = {}): V86Attachment {
  const id = options.adapter ?? 0;
  const maxQueued = options.maxQueuedFrames ?? 1024;
  const bytesPerMs = options.bytesPerMs ?? 256 * 1024;
  const queue: Uint8Array[] = [];
  let head = 0;
  let dropped = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let budget = 0;
  let budgetAt = performance.now();
  let detached = false;
  let listener: ((frame: Uint8Array) => void) | undefined;

  const onSend = (data: Uint8Array) => {
    // ne2k hands out a view into its own memory: copy before it changes.
    if (listener) listener(new Uint8Array(data));
  };
  emulator.add_listener(`net${id}-send`, onSend);

  const room = (frame: Uint8Array): boolean => {
    const devices = emulator.v86?.cpu?.devices;
    const card = id === 0 ? devices?.net ?? devices?.virtio_net : undefined;
    if (isNe2k(card)) {
      if (card.cr & 1) return true; // stopped: it drops everything anyway
      const needed = 1 + ((Math.max(60, frame.length) + 4) >> 8);
      const available = card.boundary > card.curpg ? card.boundary - card.curpg : card.pstop - card.curpg + card.boundary - card.pstart;
      return available >= needed || card.boundary === 0;
    }
    const rx = isVirtioNet(card) ? card.virtio?.queues?.[0] : undefined;
    if (rx) return rx.has_request();
    // No introspection: a byte budget that refills with time.
    const now = performance.now();
    budget = Math.min(bytesPerMs * 4, budget + (now - budgetAt) * bytesPerMs);
    budgetAt = now;
    if (budget < frame.length) return false;
    budget -= frame.length;
    return true;
  };

  const pump = () => {
    timer = undefined;
    if (detached) return;
    while (head < queue.length && room(queue[head])) {
      emulator.bus.send(`net${id}-receive`, queue[head]);
      head++;
    }
    if (head > 256 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
    // The guest frees room as its driver runs; look again shortly.
    if (head < queue.length && timer === undefined) timer = setTimeout(pump, 1);
  };

  const detachNetwork = network.attach({
    send(frame) {
      if (detached) return;
      if (queue.length - head >= maxQueued) {
        head++; // drop the oldest: TCP recovers a loss; a stale frame is worth less than a new one
        dropped++;
      }
      queue.push(frame);
      if (timer === undefined) pump();
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
      emulator.remove_listener(`net${id}-send`, onSend);
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
  };
}

function isNe2k(card: unknown): card is Ne2kLike {
  const c = card as Partial<Ne2kLike> | undefined;
  return typeof c?.curpg === 'number' && typeof c.boundary === 'number' && typeof c.pstart === 'number' && typeof c.pstop === 'number';
}

function isVirtioNet(card: unknown): card is VirtioNetLike {
  return typeof (card as VirtioNetLike | undefined)?.virtio?.queues?.[0]?.has_request === 'function';
}
