// attachV86 writing frames straight into a virtio-net receive queue shaped like v86's VirtQueue
// (pop_request / set_next_blob / push_reply / flush_replies): the header says DATA_VALID, one
// flush per pass, and the `net0-receive` event is the fallback when asked or when the queue lacks
// that API. Segmentation offload: the card is offered GUEST_CSUM and GUEST_TSO4 before its driver
// starts; a guest that took them gets large TCP segments whole as GSO packets, any other guest (or
// a buffer too small) gets them split.
import { describe, expect, it } from 'vitest';
import { parseIpv4Packet } from '../../core/wire/ipv4';
import { parseTcp, verifyTcpChecksum } from '../../core/wire/tcp';
import type { FramePort } from '../../web/frame-port';
import { attachV86, type V86Emulator } from '../../web/v86-adapter';
import { seededRandom, tcpToGuestFrame } from '../support/frames';

/** A posted receive buffer: what set_next_blob wrote into it, in order. */
class FakeChain {
  private readonly parts: Uint8Array[] = [];
  constructor(readonly length_writable: number) {}
  set_next_blob(data: Uint8Array): number {
    const room = this.length_writable - this.bytes().length;
    this.parts.push(data.slice(0, Math.max(0, room)));
    return Math.min(room, data.length);
  }
  bytes(): Uint8Array {
    return Uint8Array.from(this.parts.flatMap((p) => [...p]));
  }
}

class FakeVirtQueue {
  posted: number;
  written: Uint8Array[] = [];
  staged = 0;
  flushes = 0;
  constructor(
    buffers: number,
    readonly bufferBytes = 1526,
  ) {
    this.posted = buffers;
  }
  has_request(): boolean {
    return this.posted > 0;
  }
  pop_request() {
    this.posted--;
    return new FakeChain(this.bufferBytes);
  }
  push_reply(chain: FakeChain): void {
    this.written.push(chain.bytes());
    this.staged++;
  }
  flush_replies(): void {
    this.flushes++;
    this.staged = 0;
  }
}

/** v86's VirtIO fields the adapter reads: feature words and the device status. */
interface FakeVirtio {
  queues: FakeVirtQueue[];
  device_feature: Uint32Array;
  driver_feature: Uint32Array;
  device_status: number;
}

const GUEST_CSUM = 1 << 1;
const GUEST_TSO4 = 1 << 7;
const V86_FEATURES = (1 << 5) | (1 << 16) | (1 << 3); // what v86's card offers in word 0

function setup(queue: FakeVirtQueue, dataValid?: boolean, virtio: Partial<FakeVirtio> = {}) {
  const busReceived: Uint8Array[] = [];
  const card: FakeVirtio = {
    queues: [queue],
    device_feature: Uint32Array.of(V86_FEATURES, 1),
    driver_feature: Uint32Array.of(V86_FEATURES, 1),
    device_status: 0,
    ...virtio,
  };
  const sendListeners: Array<(f: Uint8Array) => void> = [];
  const emulator: V86Emulator = {
    add_listener: (event: string, l: (f: Uint8Array) => void) => void (event === 'net0-send' && sendListeners.push(l)),
    remove_listener: () => {},
    bus: { send: (event: string, data: unknown) => void (event === 'net0-receive' && busReceived.push(data as Uint8Array)) },
    v86: { cpu: { devices: { virtio_net: { virtio: card } } } },
  } as V86Emulator;
  let port: FramePort | undefined;
  const offload: boolean[] = [];
  const attachment = attachV86(
    emulator,
    {
      attach: (p) => {
        port = p;
        p.offloadSegments?.(1500, (on) => offload.push(on));
        return () => {};
      },
    },
    dataValid === undefined ? {} : { virtioDataValid: dataValid },
  );
  return {
    attachment,
    busReceived,
    card,
    offload,
    deliver: (f: Uint8Array) => port!.send(f),
    guestSends: (f: Uint8Array) => {
      for (const l of sendListeners) l(f);
    },
  };
}

/** The card after the guest's driver took receive offload and started. */
const negotiated = (): Partial<FakeVirtio> => ({
  device_feature: Uint32Array.of(V86_FEATURES | GUEST_CSUM | GUEST_TSO4, 1),
  driver_feature: Uint32Array.of(V86_FEATURES | GUEST_CSUM | GUEST_TSO4, 1),
  device_status: 15,
});

function parseFrame(frame: Uint8Array) {
  const ip = parseIpv4Packet(frame.subarray(14));
  if (typeof ip === 'string') throw new Error(ip);
  const tcp = parseTcp(ip.payload);
  if (typeof tcp === 'string') throw new Error(tcp);
  return { ip, tcp, checksumOk: verifyTcpChecksum(ip.payload, ip.src, ip.dst) };
}

describe('attachV86 with v86-style virtio queues', () => {
  it('writes a 12-byte header with DATA_VALID and the frame into posted buffers, one flush per pass', () => {
    const q = new FakeVirtQueue(2);
    const { attachment, busReceived, deliver } = setup(q);
    deliver(Uint8Array.of(1, 2, 3));
    expect(q.written).toHaveLength(1);
    expect([...q.written[0]]).toEqual([2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3]);
    expect(q.flushes).toBe(1);
    expect(busReceived).toHaveLength(0);
    deliver(Uint8Array.of(4)); // the last posted buffer
    deliver(Uint8Array.of(5)); // waits for the guest to post more
    expect(q.written.map((w) => w[12])).toEqual([1, 4]);
    expect(attachment.queued).toBe(1);
    expect(attachment.pacing).toBe('virtio-queue');
    attachment.detach();
  });

  it('uses net0-receive (v86 builds the header) when DATA_VALID is turned off', () => {
    const q = new FakeVirtQueue(4);
    const { attachment, busReceived, deliver } = setup(q, false);
    deliver(Uint8Array.of(7));
    expect(busReceived.map((f) => [...f])).toEqual([[7]]);
    expect(q.written).toHaveLength(0);
    attachment.detach();
  });
});

describe('attachV86: segmentation offload towards a virtio guest', () => {
  it('offers GUEST_CSUM and GUEST_TSO4 to a card whose driver has not started, and to no other', () => {
    const fresh = setup(new FakeVirtQueue(1));
    expect(fresh.card.device_feature[0]).toBe(V86_FEATURES | GUEST_CSUM | GUEST_TSO4);
    expect(fresh.card.device_feature[1]).toBe(1);
    const running = setup(new FakeVirtQueue(1), undefined, { device_status: 15 });
    expect(running.card.device_feature[0]).toBe(V86_FEATURES);
    const off = setup(new FakeVirtQueue(1), false);
    expect(off.card.device_feature[0]).toBe(V86_FEATURES);
  });

  it('tells the network once the driver runs with offload, and writes a large segment whole as a GSO packet', () => {
    const q = new FakeVirtQueue(4, 65_562 + 12);
    const { attachment, card, offload, deliver, guestSends } = setup(q);
    expect(offload).toEqual([]); // offered, not yet taken
    card.driver_feature[0] = V86_FEATURES | GUEST_CSUM | GUEST_TSO4; // the driver's choice
    card.device_status = 15;
    guestSends(new Uint8Array(60));
    expect(offload).toEqual([true]);
    const payload = new Uint8Array(60_000);
    seededRandom(5).fill(payload);
    const big = tcpToGuestFrame(payload, { partial: true });
    deliver(big);
    expect(q.written).toHaveLength(1);
    const w = q.written[0];
    const dv = new DataView(w.buffer);
    expect(w[0]).toBe(1); // NEEDS_CSUM
    expect(w[1]).toBe(1); // GSO_TCPV4
    expect(dv.getUint16(2, true)).toBe(14 + 20 + 32); // hdr_len
    expect(dv.getUint16(4, true)).toBe(1500 - 20 - 32); // gso_size
    expect(dv.getUint16(6, true)).toBe(34); // csum_start
    expect(dv.getUint16(8, true)).toBe(16); // csum_offset
    expect(Buffer.from(w.subarray(12)).equals(Buffer.from(big))).toBe(true);
    // The guest's driver stops (reset, reload without offload): the network hears it.
    card.device_status = 0;
    guestSends(new Uint8Array(60));
    expect(offload).toEqual([true, false]);
    attachment.detach();
  });

  it('splits a large segment for a guest without offload, and for a buffer too small for it', () => {
    const payload = new Uint8Array(5000);
    seededRandom(9).fill(payload);
    const big = tcpToGuestFrame(payload, { partial: true });
    for (const { virtio, bufferBytes } of [
      { virtio: {}, bufferBytes: 1526 }, // offered, never taken
      { virtio: negotiated(), bufferBytes: 1526 }, // taken, but small buffers posted
    ]) {
      const q = new FakeVirtQueue(8, bufferBytes);
      const { attachment, deliver } = setup(q, undefined, virtio);
      deliver(big);
      expect(q.written).toHaveLength(4);
      const joined: number[] = [];
      for (const w of q.written) {
        expect(w[0]).toBe(2); // DATA_VALID, no GSO
        expect(w.length).toBeLessThanOrEqual(12 + 1514);
        const { tcp, checksumOk } = parseFrame(w.subarray(12));
        expect(checksumOk).toBe(true);
        joined.push(...tcp.payload);
      }
      expect(Buffer.from(joined).equals(Buffer.from(payload))).toBe(true);
      expect(attachment.queued).toBe(0);
      attachment.detach();
    }
  });
});
