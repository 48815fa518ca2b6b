// web/v86-internals.ts against the pinned v86 itself (node_modules/v86), not a fake: both builds the
// package ships (libv86.mjs, which the demo and examples import, and libv86.js, which the e2e pages
// load) run in Node with the wasm from build/ — a V86 with autostart false, no BIOS and no disk
// loads its devices and never runs a guest. First every internal the module reads is checked by
// name (a v86 upgrade that renames or reshapes one fails here, naming it); then the module's
// functions are used on the real cards, with this test playing the guest's driver through the
// card's I/O ports and the guest's memory — how a driver would post receive buffers, take
// features, acknowledge interrupts — and checking what lands in the guest's memory. Last, attachV86
// on a real emulator. The Chromium e2e tests (test/e2e/weft-browser.test.ts) run it with a booted guest.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { V86, V86Options } from 'v86';
import type { FramePort } from '../../web/frame-port';
import { attachV86 } from '../../web/v86-adapter';
import { findNetCard, type V86Ne2kCard, type V86VirtioNetCard } from '../../web/v86-internals';
import { REPO_ROOT } from '../harness/repo-root';
import { seededRandom, tcpToGuestFrame } from '../support/frames';

const BUILD_DIR = join(REPO_ROOT, 'node_modules', 'v86', 'build');

type V86Constructor = new (options: V86Options) => V86;

/** The builds v86's package ships, loaded as a page would: the module, and the classic script. */
const BUILDS: Array<[string, () => Promise<V86Constructor>]> = [
  ['libv86.mjs', async () => (await import('v86')).V86 as V86Constructor],
  [
    'libv86.js',
    async () => {
      // The classic script exports through `module.exports` when there is one, and reads its wasm
      // with require('fs') (its import() fallback does not work from code vitest runs this way).
      const module: { exports: { V86?: V86Constructor } } = { exports: {} };
      new Function('module', 'require', readFileSync(join(BUILD_DIR, 'libv86.js'), 'utf8')).call(globalThis, module, createRequire(import.meta.url));
      if (!module.exports.V86) throw new Error('libv86.js exported no V86');
      return module.exports.V86;
    },
  ],
];

/** What this test itself reaches into, as the guest's driver would act: I/O ports and memory. */
interface Machine extends V86 {
  bus: { send(event: string, data: unknown): void };
  v86: { cpu: { devices: { net?: unknown; virtio_net?: unknown }; io: PortIo } };
  read_memory(offset: number, length: number): Uint8Array;
  write_memory(blob: Uint8Array, offset: number): void;
}

interface PortIo {
  port_write8(port: number, value: number): void;
  port_write16(port: number, value: number): void;
  port_write32(port: number, value: number): void;
  port_read8(port: number): number;
  port_read32(port: number): number;
}

const machines: Machine[] = [];

async function machine(V86: V86Constructor, nic: 'ne2k' | 'virtio'): Promise<Machine> {
  const emulator = new V86({
    wasm_path: join(BUILD_DIR, 'v86.wasm'),
    autostart: false,
    memory_size: 16 * 1024 * 1024,
    vga_memory_size: 2 * 1024 * 1024,
    net_device: { type: nic },
  }) as Machine;
  machines.push(emulator);
  await new Promise<void>((resolve) => emulator.add_listener('emulator-loaded', () => resolve()));
  return emulator;
}

afterEach(async () => {
  for (const m of machines.splice(0)) await m.destroy();
});

/** 'number', 'Uint32Array', 'function/N' (N parameters), 'object', or 'missing'. */
function shape(value: unknown): string {
  if (value === undefined || value === null) return 'missing';
  if (typeof value === 'function') return `function/${value.length}`;
  if (value instanceof Uint32Array) return 'Uint32Array';
  return typeof value;
}

/** The internals whose shape differs from what web/v86-internals.ts expects, named. */
function mismatches(expected: Record<string, [unknown, string]>): string[] {
  return Object.entries(expected)
    .filter(([, [value, want]]) => shape(value) !== want)
    .map(([name, [value, want]]) => `v86 internal ${name}: expected ${want}, found ${shape(value)}`);
}

/** Guest memory, little-endian (read_memory gives a view into v86's memory, hence byteOffset). */
const view = (m: Machine, addr: number, length: number) => {
  const bytes = m.read_memory(addr, length);
  return new DataView(bytes.buffer, bytes.byteOffset, length);
};
const u16 = (m: Machine, addr: number) => view(m, addr, 2).getUint16(0, true);
const u32 = (m: Machine, addr: number) => view(m, addr, 4).getUint32(0, true);
const le = (bytes: number, value: number) => {
  const b = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) b[i] = (value / 2 ** (8 * i)) & 0xff;
  return b;
};

// ---------------------------------------------------------------------------------------------
// virtio-net, as its guest driver sees it: the common configuration (virtio 1.x §4.1.4.3) at
// v86's I/O port for virtio-net, and the split virtqueue (§2.7) in guest memory.

const COMMON = 0xc800;
const ISR_PORT = 0xc700;
const DESC = 0x10_0000;
const AVAIL = 0x10_8000;
const USED = 0x11_0000;
const BUFFERS = 0x20_0000;
const QUEUE_SIZE = 16;
const GUEST_CSUM = 1 << 1;
const GUEST_TSO4 = 1 << 7;

/** The guest's driver reads the features the card offers (word 0). */
function offered(m: Machine): number {
  m.v86.cpu.io.port_write32(COMMON + 0x00, 0);
  return m.v86.cpu.io.port_read32(COMMON + 0x04) >>> 0;
}

/** The guest's driver takes `features` (word 0, masked by v86 to what is offered) and starts. */
function startDriver(m: Machine, features: number): void {
  const io = m.v86.cpu.io;
  io.port_write32(COMMON + 0x08, 0);
  io.port_write32(COMMON + 0x0c, features);
  io.port_write8(COMMON + 0x14, 15); // ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK
}

/** The driver sets up receive queue 0 and posts `count` buffers of `bytes` each. */
function postReceiveBuffers(m: Machine, count: number, bytes: number): (i: number) => number {
  const io = m.v86.cpu.io;
  io.port_write16(COMMON + 0x16, 0); // queue_select
  io.port_write16(COMMON + 0x18, QUEUE_SIZE);
  io.port_write32(COMMON + 0x20, DESC);
  io.port_write32(COMMON + 0x28, AVAIL);
  io.port_write32(COMMON + 0x30, USED);
  io.port_write16(COMMON + 0x1c, 1); // queue_enable
  const address = (i: number) => BUFFERS + i * 0x1_1000;
  for (let i = 0; i < count; i++) {
    // struct virtq_desc { le64 addr; le32 len; le16 flags (2: device writes); le16 next }
    m.write_memory(Uint8Array.of(...le(8, address(i)), ...le(4, bytes), ...le(2, 2), ...le(2, 0)), DESC + 16 * i);
    m.write_memory(le(2, i), AVAIL + 4 + 2 * i);
  }
  m.write_memory(le(2, count), AVAIL + 2);
  return address;
}

/** The used ring: how many buffers the device returned, and each one's descriptor and length written. */
function used(m: Machine): { idx: number; entries: Array<{ id: number; len: number }> } {
  const idx = u16(m, USED + 2);
  return { idx, entries: Array.from({ length: idx }, (_, i) => ({ id: u32(m, USED + 4 + 8 * i), len: u32(m, USED + 8 + 8 * i) })) };
}

function virtioCard(m: Machine): V86VirtioNetCard {
  const card = findNetCard(m, 0);
  if (card?.kind !== 'virtio') throw new Error(`findNetCard: expected the virtio-net card, found ${card?.kind}`);
  return card;
}

// ---------------------------------------------------------------------------------------------
// ne2k, at v86's I/O port for net0 (DP8390 registers: page 0 CR 0, BNRY 3, ISR 7, RCR 0xc; page 1 CURR 7)

const NE2K = 0x300;

function ne2kCard(m: Machine): V86Ne2kCard {
  const card = findNetCard(m, 0);
  if (card?.kind !== 'ne2k') throw new Error(`findNetCard: expected the ne2k card, found ${card?.kind}`);
  return card;
}

describe.each(BUILDS)('v86 internals in the pinned v86 (%s)', (_name, load) => {
  it('virtio-net: every internal web/v86-internals.ts uses is there, with the shape it expects', async () => {
    const m = await machine(await load(), 'virtio');
    const card = m.v86.cpu.devices.virtio_net as { virtio?: Record<string, unknown> & { queues?: Array<Record<string, unknown>> } } | undefined;
    const virtio = card?.virtio;
    const rx = virtio?.queues?.[0];
    expect(
      mismatches({
        'cpu.devices.virtio_net': [card, 'object'],
        'VirtioNet.virtio': [virtio, 'object'],
        'VirtIO.queues[0]': [rx, 'object'],
        'VirtQueue.has_request()': [rx?.has_request, 'function/0'],
        'VirtQueue.pop_request()': [rx?.pop_request, 'function/0'],
        'VirtQueue.push_reply(chain)': [rx?.push_reply, 'function/1'],
        'VirtQueue.flush_replies()': [rx?.flush_replies, 'function/0'],
        'VirtIO.device_status': [virtio?.device_status, 'number'],
        'VirtIO.device_feature': [virtio?.device_feature, 'Uint32Array'],
        'VirtIO.driver_feature': [virtio?.driver_feature, 'Uint32Array'],
      }),
    ).toEqual([]);
    // A buffer chain exists only once the guest posted a buffer.
    postReceiveBuffers(m, 1, 2048);
    const chain = (rx as unknown as { pop_request(): Record<string, unknown> }).pop_request();
    expect(
      mismatches({
        'VirtQueueBufferChain.length_writable': [chain.length_writable, 'number'],
        'VirtQueueBufferChain.set_next_blob(data)': [chain.set_next_blob, 'function/1'],
      }),
    ).toEqual([]);
    expect(chain.length_writable).toBe(2048);
  });

  it('virtio-net: the module finds the card, and the features it offers are what the guest reads and may take', async () => {
    const m = await machine(await load(), 'virtio');
    const card = virtioCard(m);
    expect(card.receiveQueue(), 'receiveQueue(): v86 has pop_request/push_reply/flush_replies').toBeDefined();
    expect(card.deviceStatus()).toBe(0);
    const before = offered(m);
    expect(before & (GUEST_CSUM | GUEST_TSO4), 'v86 offers no receive offload of its own').toBe(0);
    expect(card.driverFeatures(), "before the driver writes its own, the offered set (v86's reset)").toBe(before);
    expect(card.offerFeatures(GUEST_CSUM | GUEST_TSO4)).toBe(true);
    expect(offered(m)).toBe((before | GUEST_CSUM | GUEST_TSO4) >>> 0);
    // The driver takes the offload (v86 accepts only features it offers).
    startDriver(m, GUEST_CSUM | GUEST_TSO4);
    expect(card.driverFeatures()).toBe(GUEST_CSUM | GUEST_TSO4);
    expect(card.deviceStatus()).toBe(15);
  });

  it('virtio-net: a frame written through the receive queue lands where v86’s own net0-receive puts one', async () => {
    const m = await machine(await load(), 'virtio');
    const card = virtioCard(m);
    const address = postReceiveBuffers(m, 2, 2048);
    expect(card.hasReceiveBuffer()).toBe(true);
    const frame = new Uint8Array(1000);
    seededRandom(3).fill(frame);
    const header = Uint8Array.of(2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0); // DATA_VALID, num_buffers 1

    const rx = card.receiveQueue()!;
    const buffer = rx.next();
    expect(buffer.writable).toBe(2048);
    buffer.fill(header, frame);
    expect(used(m).idx, 'staged, not yet announced').toBe(0);
    rx.flush();
    expect(used(m)).toEqual({ idx: 1, entries: [{ id: 0, len: 12 + frame.length }] });
    expect([...m.read_memory(address(0), 12)]).toEqual([...header]);
    expect(Buffer.from(m.read_memory(address(0) + 12, frame.length)).equals(Buffer.from(frame))).toBe(true);
    expect(m.v86.cpu.io.port_read8(ISR_PORT) & 1, 'the flush raised the queue interrupt').toBe(1);

    // v86's own path, into the next buffer: the same frame at the same place, the same length used.
    m.bus.send('net0-receive', frame);
    expect(used(m).entries[1]).toEqual({ id: 1, len: 12 + frame.length });
    expect(Buffer.from(m.read_memory(address(1) + 12, frame.length)).equals(Buffer.from(frame))).toBe(true);
    expect(m.read_memory(address(1), 1)[0], 'v86 sets no header flags').toBe(0);
    expect(card.hasReceiveBuffer()).toBe(false);
  });

  it('virtio-net: attachV86 on the real card offers offload, writes frames into posted buffers and large segments whole', async () => {
    const m = await machine(await load(), 'virtio');
    let port: FramePort | undefined;
    const offload: boolean[] = [];
    const attachment = attachV86(m, {
      attach(p) {
        port = p;
        p.offloadSegments?.(1500, (on) => offload.push(on));
        return () => (port = undefined);
      },
    });
    expect(offered(m) & (GUEST_CSUM | GUEST_TSO4), 'offered before the driver starts').toBe(GUEST_CSUM | GUEST_TSO4);
    startDriver(m, offered(m));
    const address = postReceiveBuffers(m, 2, 12 + 65_550);
    // The guest sends a frame (as the card's transmit queue announces one, on v86's device side of
    // the bus): the adapter looks at what its driver took.
    (m.v86.cpu.devices.virtio_net as { bus: Machine['bus'] }).bus.send('net0-send', new Uint8Array(60));
    expect(offload).toEqual([true]);

    port!.send(Uint8Array.of(1, 2, 3));
    const payload = new Uint8Array(60_000);
    seededRandom(7).fill(payload);
    const big = tcpToGuestFrame(payload, { partial: true });
    port!.send(big);
    port!.send(Uint8Array.of(4)); // no buffer left: waits
    expect(attachment).toMatchObject({ pacing: 'virtio-queue', delivered: 2, queued: 1, dropped: 0 });
    expect(used(m).entries.map((e) => e.len)).toEqual([12 + 3, 12 + big.length]);
    expect([...m.read_memory(address(0), 15)]).toEqual([2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 2, 3]);
    const gso = m.read_memory(address(1), 12);
    expect([gso[0], gso[1]], 'NEEDS_CSUM, GSO_TCPV4').toEqual([1, 1]);
    expect(Buffer.from(m.read_memory(address(1) + 12, big.length)).equals(Buffer.from(big))).toBe(true);
    attachment.detach();
  });

  it('ne2k: every internal web/v86-internals.ts uses is there, with the shape it expects', async () => {
    const m = await machine(await load(), 'ne2k');
    const card = m.v86.cpu.devices.net as Record<string, unknown> | undefined;
    const isr = card && Object.getOwnPropertyDescriptor(card, 'isr');
    expect(
      mismatches({
        'cpu.devices.net': [card, 'object'],
        'Ne2k.cr': [card?.cr, 'number'],
        'Ne2k.isr': [card?.isr, 'number'],
        'Ne2k.curpg': [card?.curpg, 'number'],
        'Ne2k.boundary': [card?.boundary, 'number'],
        'Ne2k.pstart': [card?.pstart, 'number'],
        'Ne2k.pstop': [card?.pstop, 'number'],
        'Ne2k.do_interrupt(mask)': [card?.do_interrupt, 'function/1'],
        'Ne2k.isr as a configurable data property (watched by turning it into an accessor)': [isr?.configurable && 'value' in isr ? 0 : undefined, 'number'],
      }),
    ).toEqual([]);
  });

  it('ne2k: ring room as v86 counts it, the driver’s acknowledgement seen, the interrupt raised again', async () => {
    const m = await machine(await load(), 'ne2k');
    const io = m.v86.cpu.io;
    const raw = m.v86.cpu.devices.net as { curpg: number };
    const card = ne2kCard(m);
    expect(card.stopped(), 'v86 starts the card stopped').toBe(true);
    // As Linux's 8390 driver sets the ring up: CURR one page past BOUNDARY, at PSTART.
    const pstart = (m.v86.cpu.devices.net as { pstart: number }).pstart;
    io.port_write8(NE2K, 0x61); // CR: page 1, stopped
    io.port_write8(NE2K + 0x07, pstart + 1); // CURR
    io.port_write8(NE2K, 0x21); // CR: page 0
    io.port_write8(NE2K + 0x03, pstart); // BNRY
    io.port_write8(NE2K + 0x0c, 0x10); // RCR: promiscuous
    io.port_write8(NE2K, 0x22); // CR: start
    expect(card.stopped()).toBe(false);
    expect(card.hasUntakenFrames()).toBe(false);

    // Fill the ring while the module says there is room; v86 then drops the next frame.
    const frame = new Uint8Array(1514).fill(0xff);
    let taken = 0;
    while (card.hasRoomFor(frame.length) && taken < 100) {
      const before = raw.curpg;
      m.bus.send('net0-receive', frame);
      expect(raw.curpg, 'v86 took a frame the module said fits').not.toBe(before);
      taken++;
    }
    expect(taken).toBeGreaterThan(5);
    const full = raw.curpg;
    m.bus.send('net0-receive', frame);
    expect(raw.curpg, 'v86 dropped the frame the module said does not fit').toBe(full);
    expect(card.receivePending()).toBe(true);
    expect(card.hasUntakenFrames()).toBe(true);

    // The driver takes one frame (BOUNDARY) and acknowledges RX (ISR) through the ports: the watch sees it.
    let writes = 0;
    const unwatch = card.watchInterruptStatus(() => writes++);
    expect(unwatch, 'isr can be watched').toBeDefined();
    const boundary = card.boundary();
    io.port_write8(NE2K + 0x03, boundary + 6);
    expect(card.boundary()).toBe(boundary + 6);
    io.port_write8(NE2K + 0x07, 0x01);
    expect(writes).toBe(1);
    expect(card.receivePending()).toBe(false);
    card.raiseReceive();
    expect(card.receivePending()).toBe(true);
    expect(writes, 'v86 wrote ISR again').toBe(2);
    unwatch!();
    expect(Object.getOwnPropertyDescriptor(raw, 'isr')).toHaveProperty('value', 0x01);
    io.port_write8(NE2K + 0x07, 0x01);
    expect(card.receivePending()).toBe(false);
    expect(writes, 'unwatched').toBe(2);
  });
});
