// A page on a LAN room of `weft relay --lan` (createNetwork({ relayUrl, lan: { room, key } })): the
// dedicated worker runs no stack then — the room's router (DHCP, DNS, NAT) is in the relay — and
// only bridges the page's guests to the room: frames from the page (rings or batches, as for a
// stack) go to the room's WebSocket (room-link.ts), and the room's frames go to the page. What needs
// weft's own stack in the page — connections into a guest (connectTcp, fetch, the preview) and
// publishing — is refused with ERR_WEFT_ROOM_UNSUPPORTED; a guest of another member reaches it instead.

import * as Comlink from 'comlink';
import { emptyDnsCounters } from '../core/services/dns-server';
import { ROOM_KEY_MAX_BYTES, ROOM_KEY_MIN_BYTES, ROOM_NAME } from '../core/wire/room-protocol';
import type { StackCounters } from '../core/stack-events';
import { monotonicClock } from '../platform/stack-timer';
import { DedicatedSession } from './dedicated-session';
import { DropReports } from './drop-reports';
import { PageFrames } from './page-frames';
import { checksumPath } from '../core/wire/checksum-simd';
import { PcapCapture } from './pcap-capture';
import { RoomLink, roomUrl } from './room-link';
import type {
  FlowSummary,
  FrameRingBuffers,
  GuestConnectRequest,
  GuestConnectResult,
  GuestTcpEnd,
  NetworkEvent,
  NetworkSettings,
  PublishEvent,
  RelayState,
  WeftWorkerApi,
  WorkerStats,
} from './worker-api';

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
  private frames: PageFrames | undefined;
  private relay: RelayState = 'none';
  private busyMs = 0;
  private emit: (e: NetworkEvent) => void = () => {};
  private readonly drops: Record<string, number> = {};
  private readonly dropReports = new DropReports((drops) => this.emit({ type: 'drops', drops }));
  private capture: PcapCapture | undefined;

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
    const frames = new PageFrames(framePort, rings, () => this.countDrop('frame-ring-full'));
    this.frames = frames;
    const url = roomUrl(room.relayUrl, room.room);
    const link = new RoomLink({
      relayUrl: room.relayUrl,
      room: room.room,
      key: room.key,
      ...(settings.password ? { password: settings.password } : {}),
      onFrame: (frame) => {
        this.captureFrame(frame);
        frames.send(frame);
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
    frames.receive(
      (frame) => {
        this.captureFrame(frame);
        link.send(frame);
      },
      () => undefined,
      this.measured,
    );
  }

  async stop(): Promise<void> {
    this.frames?.stopReceiving();
    this.link?.close();
    this.link = undefined;
    this.dropReports.stop();
    this.frames?.close();
    this.frames = undefined;
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
      framesGathered: 0,
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
      // No stack here: the room's DNS server is the relay's.
      dns: emptyDnsCounters(),
    };
    const frames = this.frames;
    return {
      ...counters,
      relay: this.relay,
      workerBusyMs: this.busyMs,
      segmentationOffload: false,
      checksum: checksumPath(),
      framesToPage: frames?.framesToPage ?? 0,
      framesFromPage: frames?.framesFromPage ?? 0,
      framePath: frames?.path ?? 'transfer',
      ringDrops: frames?.ringDrops() ?? { toWorker: 0, toPage: 0 },
    };
  }

  async flows(): Promise<FlowSummary[]> {
    // The room's flows are its router's, in the relay.
    return [];
  }

  async startCapture(): Promise<void> {
    this.capture = new PcapCapture();
  }

  async stopCapture(): Promise<Uint8Array> {
    const c = this.capture;
    this.capture = undefined;
    if (!c) throw new Error('no capture is running');
    const out = c.file();
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
    this.capture?.write(frame, monotonicClock.now());
  }

  private countDrop(reason: string): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
    this.dropReports.count(reason);
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
