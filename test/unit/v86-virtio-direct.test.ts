// attachV86 writing frames straight into a virtio-net receive queue shaped like v86's VirtQueue
// (pop_request / set_next_blob / push_reply / flush_replies): the header says DATA_VALID, one
// flush per pass, and the `net0-receive` event is the fallback when asked or when the queue lacks
// that API.
import { describe, expect, it } from 'vitest';
import type { FramePort } from '../../web/frame-port';
import { attachV86, type V86Emulator } from '../../web/v86-adapter';

class FakeVirtQueue {
  posted: number;
  written: Uint8Array[] = [];
  staged = 0;
  flushes = 0;
  constructor(buffers: number) {
    this.posted = buffers;
  }
  has_request(): boolean {
    return this.posted > 0;
  }
  pop_request() {
    this.posted--;
    return { set_next_blob: (data: Uint8Array) => void this.written.push(data.slice()) };
  }
  push_reply(): void {
    this.staged++;
  }
  flush_replies(): void {
    this.flushes++;
    this.staged = 0;
  }
}

function setup(queue: FakeVirtQueue, dataValid?: boolean) {
  const busReceived: Uint8Array[] = [];
  const emulator: V86Emulator = {
    add_listener: () => {},
    remove_listener: () => {},
    bus: { send: (event: string, data: unknown) => void (event === 'net0-receive' && busReceived.push(data as Uint8Array)) },
    v86: { cpu: { devices: { virtio_net: { virtio: { queues: [queue] } } } } },
  };
  let port: FramePort | undefined;
  const attachment = attachV86(emulator, { attach: (p) => ((port = p), () => {}) }, dataValid === undefined ? {} : { virtioDataValid: dataValid });
  return { attachment, busReceived, deliver: (f: Uint8Array) => port!.send(f) };
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
