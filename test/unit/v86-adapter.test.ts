// attachV86 against fake v86 cards: an ne2k whose receive() follows v86's ne2k.js (ring of 256-byte
// pages, drop when full, RX interrupt bit), driven by a fake driver that behaves like Linux's 8390
// (at most ten frames per pass, then acknowledge RX); and a virtio-net receive queue. The same
// adapter on the real v86's cards: v86-internals.test.ts.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { attachV86, type V86Emulator } from '../../web/v86-adapter';
import type { FramePort } from '../../web/frame-port';
import { WeftError } from '../../web/weft-error';

const RX = 0x01;

class FakeNe2k {
  cr = 0x22; // started
  isr = 0;
  imr = 0xff;
  pstart = 0x46;
  pstop = 0x80;
  curpg = 0x47;
  boundary = 0x46;
  /** Frames in the ring, oldest first, with the page each starts at. */
  ring: Array<{ page: number; frame: Uint8Array; next: number }> = [];
  dropped = 0;
  interrupts = 0;

  receive(data: Uint8Array): void {
    if (this.cr & 1) return;
    const total = Math.max(60, data.length) + 4;
    const needed = 1 + (total >> 8);
    const available = this.boundary > this.curpg ? this.boundary - this.curpg : this.pstop - this.curpg + this.boundary - this.pstart;
    if (available < needed && this.boundary !== 0) {
      this.dropped++;
      return;
    }
    let next = this.curpg + 1 + (total >> 8);
    if (next >= this.pstop) next += this.pstart - this.pstop;
    this.ring.push({ page: this.curpg, frame: data, next });
    this.curpg = next;
    this.do_interrupt(RX);
  }

  do_interrupt(mask: number): void {
    this.isr |= mask;
    if (this.imr & this.isr) this.interrupts++;
  }

  /** Linux's ei_receive: up to ten frames, BOUNDARY after each, then acknowledge RX. */
  driverReceive(budget = 10): Uint8Array[] {
    const got: Uint8Array[] = [];
    for (let n = 0; n < budget && this.ring.length > 0; n++) {
      const f = this.ring.shift()!;
      got.push(f.frame);
      this.boundary = f.next - 1 < this.pstart ? this.pstop - 1 : f.next - 1;
    }
    this.isr &= ~RX;
    return got;
  }
}

function fakeEmulator(card: object): V86Emulator & { sendListeners: Array<(d: Uint8Array) => void> } {
  const sendListeners: Array<(d: Uint8Array) => void> = [];
  return {
    sendListeners,
    add_listener: (_e, l) => void sendListeners.push(l),
    remove_listener: (_e, l) => void sendListeners.splice(sendListeners.indexOf(l), 1),
    bus: {
      send(event: string, data: unknown) {
        if (event !== 'net0-receive') return;
        const c = card as { receive?(d: Uint8Array): void };
        c.receive?.(data as Uint8Array);
      },
    },
    v86: { cpu: { devices: card instanceof FakeNe2k ? { net: card } : { virtio_net: card } } },
  };
}

/** A network with one port: `deliver` plays the worker sending frames to the guest. */
function fakeNetwork() {
  let port: FramePort | undefined;
  const fromGuest: Uint8Array[] = [];
  return {
    fromGuest,
    get attached() {
      return port !== undefined;
    },
    attach(p: FramePort) {
      port = p;
      p.onFrame((f) => fromGuest.push(f.slice()));
      return () => (port = undefined);
    },
    deliver(frames: Uint8Array[]) {
      for (const f of frames) port?.send(f);
    },
  };
}

const frame = (i: number, length = 1514) => new Uint8Array(length).fill(i & 0xff);

describe('attachV86 with an ne2k card', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('never overruns the ring: what does not fit waits in the adapter', () => {
    const card = new FakeNe2k();
    const net = fakeNetwork();
    const a = attachV86(fakeEmulator(card), net);
    net.deliver(Array.from({ length: 40 }, (_, i) => frame(i)));
    expect(card.dropped).toBe(0);
    expect(card.ring.length).toBeGreaterThan(5);
    expect(a.queued).toBe(40 - card.ring.length);
    expect(a.pacing).toBe('ne2k-ring');
  });

  it('refills the ring when the driver acknowledges RX, within the same slice (no timer needed)', () => {
    const card = new FakeNe2k();
    const net = fakeNetwork();
    const a = attachV86(fakeEmulator(card), net);
    const frames = Array.from({ length: 100 }, (_, i) => frame(i));
    net.deliver(frames);
    const received: Uint8Array[] = [];
    // The driver keeps servicing while RX is pending, as Linux's interrupt loop does.
    for (let pass = 0; pass < 200 && card.isr & RX; pass++) received.push(...card.driverReceive());
    expect(received.length).toBe(frames.length);
    expect(
      received.every((f, i) => f === frames[i]),
      'the same frames, in order',
    ).toBe(true);
    expect(card.dropped).toBe(0);
    expect(a.queued).toBe(0);
    expect(a.delivered).toBe(100);
  });

  it('raises RX again for frames the driver left in the ring, but not while it makes no progress', () => {
    const card = new FakeNe2k();
    const net = fakeNetwork();
    attachV86(fakeEmulator(card), net);
    // Small frames: 30 fit in the ring, more than one ten-frame pass takes.
    net.deliver(Array.from({ length: 30 }, (_, i) => frame(i, 60)));
    expect(card.ring.length).toBe(30);
    card.driverReceive();
    expect(card.ring.length).toBe(20);
    expect(card.isr & RX, 'raised again for the 20 left').toBe(RX);
    // A driver that acknowledges without taking anything (BOUNDARY unchanged) gets no new interrupt.
    card.driverReceive(0);
    expect(card.isr & RX).toBe(0);
  });

  it('raises RX after 100 ms for a full ring that no interrupt announces, and not more often', () => {
    const card = new FakeNe2k();
    const net = fakeNetwork();
    const a = attachV86(fakeEmulator(card), net);
    net.deliver(Array.from({ length: 20 }, (_, i) => frame(i)));
    expect(a.queued, 'the ring is full, the rest wait').toBeGreaterThan(0);
    // The driver acknowledges without taking anything (BOUNDARY unchanged): raised again once, and
    // after the second such acknowledgement nothing raises RX.
    card.driverReceive(0);
    expect(card.isr & RX).toBe(RX);
    card.driverReceive(0);
    expect(card.isr & RX).toBe(0);
    vi.advanceTimersByTime(50);
    expect(card.isr & RX, 'not before 100 ms').toBe(0);
    vi.advanceTimersByTime(60);
    expect(card.isr & RX, 'raised after 100 ms').toBe(RX);
    const interrupts = card.interrupts;
    // Acknowledged again without progress: the next nudge comes no sooner than 100 ms later.
    card.driverReceive(0);
    vi.advanceTimersByTime(90);
    expect(card.interrupts).toBe(interrupts);
    vi.advanceTimersByTime(20);
    expect(card.interrupts).toBe(interrupts + 1);
    // A driver that reads again empties the ring and the queue.
    for (let pass = 0; pass < 50 && (card.ring.length > 0 || a.queued > 0); pass++) {
      card.driverReceive();
      vi.advanceTimersByTime(2);
    }
    expect(a.queued).toBe(0);
    expect(a.delivered).toBe(20);
    expect(card.dropped).toBe(0);
  });

  it('drops the oldest queued frame past maxQueuedFrames and counts it', () => {
    const card = new FakeNe2k();
    card.cr = 0x22;
    const net = fakeNetwork();
    const a = attachV86(fakeEmulator(card), net, { maxQueuedFrames: 4 });
    net.deliver(Array.from({ length: 30 }, (_, i) => frame(i)));
    const inRing = card.ring.length;
    expect(a.queued).toBe(4);
    expect(a.dropped).toBe(30 - inRing - 4);
    expect(card.dropped).toBe(0);
  });

  it('hands the network each frame the guest sends, and detaches cleanly', () => {
    const card = new FakeNe2k();
    const emulator = fakeEmulator(card);
    const net = fakeNetwork();
    const a = attachV86(emulator, net);
    net.deliver(Array.from({ length: 20 }, (_, i) => frame(i)));
    for (const l of emulator.sendListeners) l(Uint8Array.of(1, 2, 3));
    expect(net.fromGuest).toEqual([Uint8Array.of(1, 2, 3)]);
    a.detach();
    expect(emulator.sendListeners).toHaveLength(0);
    expect(a.queued).toBe(0);
    // The register watch is gone: the property is a plain value again.
    expect(Object.getOwnPropertyDescriptor(card, 'isr')).toHaveProperty('value');
  });
});

describe('attachV86 with a virtio-net card', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('hands over one frame per posted receive buffer and waits for more buffers', () => {
    let buffers = 3;
    const got: Uint8Array[] = [];
    const card = {
      virtio: { queues: [{ has_request: () => buffers > 0 }] },
      receive(d: Uint8Array) {
        buffers--;
        got.push(d);
      },
    };
    const net = fakeNetwork();
    const a = attachV86(fakeEmulator(card), net);
    net.deliver(Array.from({ length: 5 }, (_, i) => frame(i)));
    expect(got).toHaveLength(3);
    expect(a.queued).toBe(2);
    expect(a.pacing).toBe('virtio-queue');
    buffers = 10;
    vi.advanceTimersByTime(5);
    expect(got).toHaveLength(5);
    expect(a.queued).toBe(0);
  });
});

describe('attachV86 with an AbortSignal', () => {
  it('aborting detaches, as detach() does', () => {
    const card = new FakeNe2k();
    const emulator = fakeEmulator(card);
    const net = fakeNetwork();
    const controller = new AbortController();
    const a = attachV86(emulator, net, { signal: controller.signal });
    net.deliver(Array.from({ length: 20 }, (_, i) => frame(i)));
    expect(a.queued).toBeGreaterThan(0);
    controller.abort();
    expect(net.attached).toBe(false);
    expect(emulator.sendListeners).toHaveLength(0);
    expect(a.queued).toBe(0);
    expect(Object.getOwnPropertyDescriptor(card, 'isr')).toHaveProperty('value');
    expect(() => a.detach()).not.toThrow();
  });

  it('an already aborted signal attaches nothing', () => {
    const emulator = fakeEmulator(new FakeNe2k());
    const attach = vi.fn();
    const a = attachV86(emulator, { attach }, { signal: AbortSignal.abort() });
    expect(attach).not.toHaveBeenCalled();
    expect(emulator.sendListeners).toHaveLength(0);
    expect(a).toMatchObject({ queued: 0, delivered: 0, dropped: 0, pacing: undefined });
    expect(() => a.detach()).not.toThrow();
  });

  it('a closed network throws ERR_WEFT_CLOSED, and the emulator keeps no listener of the adapter', () => {
    const emulator = fakeEmulator(new FakeNe2k());
    const closed = {
      attach(): () => void {
        throw new WeftError('ERR_WEFT_CLOSED', 'attach: this weft network is closed');
      },
    };
    expect(() => attachV86(emulator, closed)).toThrowError(expect.objectContaining({ code: 'ERR_WEFT_CLOSED' }));
    expect(emulator.sendListeners).toHaveLength(0);
  });
});
