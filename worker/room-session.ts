// A page on a LAN room of `weft relay --lan` (createNetwork({ relayUrl, lan: { room, key } })): the
// dedicated worker runs no stack then — the room's router (DHCP, DNS, NAT) is in the relay — and
// only bridges the page's guests to the room: frames from the page (rings or batches, as for a
// stack) go to the room's WebSocket (room-link.ts), and the room's frames go to the page. What needs
// weft's own stack in the page — connections into a guest (connectTcp, fetch, the preview) and
// publishing — is refused with ERR_WEFT_ROOM_UNSUPPORTED; a guest of another member reaches it instead.

import * as Comlink from 'comlink';
import { PcapWriter } from '../core/pcap-writer';
import { ROOM_KEY_MAX_BYTES, ROOM_KEY_MIN_BYTES, ROOM_NAME } from '../core/wire/room-protocol';
import type { StackCounters } from '../core/stack-events';
import { monotonicClock } from '../platform/stack-timer';
import { DedicatedSession } from './dedicated-session';
import { FrameBatcher, unpackFrames } from './frame-batch';
import { FrameRingReader, FrameRingWriter } from './frame-ring';
import { RoomLink, roomUrl } from './room-link';
import {
  RING_DOORBELL,
  type FlowSummary,
  type FramePath,
  type FrameRingBuffers,
  type GuestConnectRequest,
  type GuestConnectResult,
  type GuestTcpEnd,
  type NetworkEvent,
  type NetworkSettings,
  type PublishEvent,
  type RelayState,
  type WeftWorkerApi,
  type WorkerStats,
} from './worker-api';

/** Captures stop growing past this (the page can download and restart). */
const MAX_CAPTURE_BYTES = 64 * 1024 * 1024;
/** Drop counters are reported at most this often. */
const DROP_REPORT_MS = 1000;

const unsupported = (what: string) =>
  `${what} needs weft's stack in this page, and on a relay's LAN room (lan: { room, key }) the room's router runs in the relay: reach this guest from another guest on the room instead`;

/** The room of `settings`, or why it cannot be joined (undefined: not a room). */
export function roomOf(settings: NetworkSettings): { room: string; key: string; relayUrl: string } | { error: string } | undefined {
  const lan = settings.lan;
  if (typeof lan !== 'object' || lan === null) return undefined;
  if (!settings.relayUrl) return { error: 'lan: { room, key } is a LAN room of a relay: give its relayUrl (weft relay --lan)' };
  if (typeof lan.room !== 'string' || !ROOM_NAME.test(lan.room))
    return { error: `lan.room must be 1–64 letters, digits or . _ ~ -, got ${JSON.stringify(lan.room)}` };
  const keyBytes = typeof lan.key === 'string' ? new TextEncoder().encode(lan.key).length : 0;
  if (keyBytes < ROOM_KEY_MIN_BYTES || keyBytes > ROOM_KEY_MAX_BYTES) return { error: `lan.key must be ${ROOM_KEY_MIN_BYTES}–${ROOM_KEY_MAX_BYTES} bytes` };
  return { room: lan.room, key: lan.key, relayUrl: settings.relayUrl };
}

export class RoomSession implements WeftWorkerApi {
  private link: RoomLink | undefined;
  private port: MessagePort | undefined;
  private rings: { fromPage: FrameRingReader; toPage: FrameRingWriter } | undefined;
  private framePath: FramePath = 'transfer';
  private framesToPage = 0;
  private framesFromPage = 0;
  private relay: RelayState = 'none';
  private busyMs = 0;
  private emit: (e: NetworkEvent) => void = () => {};
  private readonly drops: Record<string, number> = {};
  private pendingDrops: Record<string, number> = {};
  private dropTimer: ReturnType<typeof setTimeout> | undefined;
  private capture: { chunks: Uint8Array[]; bytes: number; writer: PcapWriter } | undefined;

  private readonly measured = (fn: () => void): void => {
    const t0 = performance.now();
    try {
      fn();
    } finally {
      this.busyMs += performance.now() - t0;
    }
  };

  async start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void> {
    if (this.link) throw new Error('the network is already started');
    const room = roomOf(settings);
    if (!room) throw new Error('not a LAN room');
    if ('error' in room) throw new Error(`createNetwork: ${room.error}`);
    this.emit = onEvent;
    this.port = framePort;
    let output: (frame: Uint8Array) => void;
    if (rings) {
      this.framePath = 'sab';
      const toPage = new FrameRingWriter(rings.toPage, () => framePort.postMessage(RING_DOORBELL));
      this.rings = { fromPage: new FrameRingReader(rings.toWorker), toPage };
      output = (frame) => {
        if (toPage.push(frame)) this.framesToPage++;
        else this.countDrop('frame-ring-full');
      };
    } else {
      const batcher = new FrameBatcher(
        (batch, count) => {
          this.framesToPage += count;
          framePort.postMessage(batch, [batch]);
        },
        (fn) => queueMicrotask(fn),
      );
      output = (frame) => batcher.push(frame);
    }
    const url = roomUrl(room.relayUrl, room.room);
    const link = new RoomLink({
      relayUrl: room.relayUrl,
      room: room.room,
      key: room.key,
      ...(settings.password ? { password: settings.password } : {}),
      onFrame: (frame) => {
        this.captureFrame(frame);
        output(frame);
      },
      onBatchEnd: () => undefined,
      onState: (state, message) => {
        this.relay = state;
        this.emit({ type: 'relay', state, url, ...(message ? { message } : {}) });
      },
      onLease: (lease) => this.emit({ type: 'lease', mac: lease.mac, ip: lease.ip, ...(lease.hostname ? { hostname: lease.hostname } : {}) }),
      onRefused: (_code, message) =>
        this.emit({ type: 'error', code: 'ERR_WEFT_ROOM_REFUSED', message: `the relay refused to let this page into room ${room.room}: ${message}` }),
      onDrop: (reason) => this.countDrop(reason),
      around: this.measured,
    });
    this.link = link;
    const fromPage = (frame: Uint8Array) => {
      this.framesFromPage++;
      this.captureFrame(frame);
      link.send(frame);
    };
    framePort.onmessage = (e: MessageEvent) => {
      const batch: unknown = e.data;
      if (batch === RING_DOORBELL) {
        this.rings?.fromPage.ring();
        return;
      }
      if (batch instanceof ArrayBuffer) this.measured(() => unpackFrames(batch, fromPage));
    };
    framePort.start();
    this.rings?.fromPage.start(fromPage, () => undefined, this.measured);
  }

  async stop(): Promise<void> {
    this.rings?.fromPage.close();
    this.rings = undefined;
    this.link?.close();
    this.link = undefined;
    if (this.dropTimer) clearTimeout(this.dropTimer);
    this.dropTimer = undefined;
    this.port?.close();
    this.port = undefined;
  }

  async setSegmentationOffload(): Promise<void> {
    // Nothing here makes segments: the room's router, in the relay, sends frames of its MTU.
  }

  async stats(): Promise<WorkerStats> {
    const c = this.link?.counters ?? { framesOut: 0, bytesOut: 0, framesIn: 0, bytesIn: 0 };
    const counters: StackCounters = {
      // As a stack's: "in" is what the guests sent (here: on to the room), "out" what reached them.
      framesIn: c.framesOut,
      framesOut: c.framesIn,
      bytesIn: c.bytesOut,
      bytesOut: c.bytesIn,
      drops: { ...this.drops } as StackCounters['drops'],
      datagramsReassembled: 0,
      fragmentsSent: 0,
      arpCacheEntries: 0,
      reassemblyBytesHeld: 0,
      tcpConnections: {},
      tcpConnectionsOpened: 0,
      tcpBufferedBytes: 0,
      udpFlows: 0,
      dns: {
        queries: 0,
        answeredLocal: 0,
        answeredFromCache: 0,
        forwarded: 0,
        deduplicated: 0,
        answeredForwarded: 0,
        servfail: 0,
        formerr: 0,
        notimp: 0,
        refused: 0,
        truncated: 0,
        dropped: 0,
        cacheEntries: 0,
        cacheBytes: 0,
        pending: 0,
      },
    };
    const dropped = (r: { droppedFull: number; droppedOversized: number } | undefined) => (r ? r.droppedFull + r.droppedOversized : 0);
    return {
      ...counters,
      relay: this.relay,
      workerBusyMs: this.busyMs,
      segmentationOffload: false,
      framesToPage: this.framesToPage,
      framesFromPage: this.framesFromPage,
      framePath: this.framePath,
      ringDrops: { toWorker: dropped(this.rings?.fromPage.counters()), toPage: dropped(this.rings?.toPage.counters()) },
    };
  }

  async flows(): Promise<FlowSummary[]> {
    // The room's flows are its router's, in the relay.
    return [];
  }

  async startCapture(): Promise<void> {
    const chunks: Uint8Array[] = [];
    const capture = {
      chunks,
      bytes: 0,
      writer: new PcapWriter((c) => {
        chunks.push(c);
        capture.bytes += c.length;
      }),
    };
    capture.writer.start();
    this.capture = capture;
  }

  async stopCapture(): Promise<Uint8Array> {
    const c = this.capture;
    this.capture = undefined;
    if (!c) throw new Error('no capture is running');
    const out = new Uint8Array(c.bytes);
    let off = 0;
    for (const chunk of c.chunks) {
      out.set(chunk, off);
      off += chunk.length;
    }
    return Comlink.transfer(out, [out.buffer]);
  }

  async connectTcp(_request: GuestConnectRequest, onEnd: (end: GuestTcpEnd) => void): Promise<GuestConnectResult> {
    (onEnd as unknown as Comlink.Remote<unknown>)[Comlink.releaseProxy]?.();
    return { ok: false, code: 'ERR_WEFT_ROOM_UNSUPPORTED', message: unsupported('connectTcp (and fetch, servePreview)') };
  }

  async abortTcp(): Promise<void> {}

  async publish(_id: number, _guestPort: number, _relayPort: number, onEvent: (e: PublishEvent) => void): Promise<void> {
    onEvent({ type: 'refused', code: 'ERR_WEFT_ROOM_UNSUPPORTED', message: unsupported('publish') });
    (onEvent as unknown as Comlink.Remote<unknown>)[Comlink.releaseProxy]?.();
  }

  async unpublish(): Promise<void> {}

  private captureFrame(frame: Uint8Array): void {
    const c = this.capture;
    if (c && c.bytes < MAX_CAPTURE_BYTES) c.writer.write(frame, monotonicClock.now());
  }

  private countDrop(reason: string): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
    this.pendingDrops[reason] = (this.pendingDrops[reason] ?? 0) + 1;
    if (this.dropTimer) return;
    this.dropTimer = setTimeout(() => {
      this.dropTimer = undefined;
      const drops = this.pendingDrops;
      this.pendingDrops = {};
      this.emit({ type: 'drops', drops });
    }, DROP_REPORT_MS);
  }
}

/**
 * The dedicated worker's session, chosen when the page starts it: a LAN room's bridge for
 * `lan: { room, key }`, else a stack of the page's own (dedicated-session.ts).
 */
export class DedicatedOrRoomSession implements WeftWorkerApi {
  private session: WeftWorkerApi | undefined;

  start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void> {
    if (this.session) return Promise.reject(new Error('the network is already started'));
    this.session = roomOf(settings) ? new RoomSession() : new DedicatedSession();
    return rings ? this.session.start(settings, framePort, onEvent, rings) : this.session.start(settings, framePort, onEvent);
  }

  private get running(): WeftWorkerApi {
    if (!this.session) throw new Error('the network is not started');
    return this.session;
  }

  async stop(): Promise<void> {
    await this.session?.stop();
  }
  async setSegmentationOffload(on: boolean): Promise<void> {
    return this.running.setSegmentationOffload(on);
  }
  async stats(): Promise<WorkerStats> {
    return this.running.stats();
  }
  async flows(): Promise<FlowSummary[]> {
    return this.running.flows();
  }
  async startCapture(): Promise<void> {
    return this.running.startCapture();
  }
  async stopCapture(): Promise<Uint8Array> {
    return this.running.stopCapture();
  }
  async connectTcp(request: GuestConnectRequest, onEnd: (end: GuestTcpEnd) => void): Promise<GuestConnectResult> {
    return this.running.connectTcp(request, onEnd);
  }
  async abortTcp(id: number): Promise<void> {
    return this.running.abortTcp(id);
  }
  async publish(id: number, guestPort: number, relayPort: number, onEvent: (e: PublishEvent) => void): Promise<void> {
    return this.running.publish(id, guestPort, relayPort, onEvent);
  }
  async unpublish(id: number): Promise<void> {
    return this.running.unpublish(id);
  }
}
