// What the page and the weft worker say to each other (through comlink), and the events the
// network reports. Types only: web/ imports these, worker/ implements them.

import type { FlowEvent, StackCounters } from '../core/stack';

export interface NetworkSettings {
  /** ws:// or wss:// URL of a Wisp endpoint (weft relay: ws://HOST:PORT/wisp/). Without one, only DNS over HTTPS and local services work. */
  relayUrl?: string;
  /** The virtual network: defaults 10.0.2.0/24, gateway .2, DNS .3, first lease .15. */
  network?: { network?: string; prefixLength?: number; gateway?: string; dns?: string; firstLease?: string };
  mtu?: number;
  /** DNS over HTTPS endpoint (RFC 8484), used when there is no relay. */
  dohUrl?: string;
  /** Extra local DNS names → IPv4 addresses. */
  dnsRecords?: Record<string, string>;
  /** Let the gateway address reach the relay host's loopback (the relay must allow loopback too). */
  allowHostLoopback?: boolean;
  /** Wisp v2 password extension credentials. */
  password?: { username: string; password: string };
}

export type RelayState = 'none' | 'connecting' | 'connected' | 'reconnecting' | 'failed';

export type NetworkEvent =
  | { type: 'relay'; state: RelayState; url?: string; message?: string }
  | { type: 'lease'; mac: string; ip: string; hostname?: string }
  | { type: 'flow-open'; flow: FlowSummary }
  | { type: 'flow-close'; flow: FlowSummary }
  | { type: 'drops'; drops: Record<string, number> }
  | { type: 'error'; message: string };

/** A flow as the page shows it (addresses formatted). */
export interface FlowSummary {
  id: string;
  protocol: 'tcp' | 'udp';
  guest: string;
  target: string;
  state?: string;
  bytesFromGuest: number;
  bytesToGuest: number;
  openedAt: number;
  reason?: string;
}

export interface NetworkStats extends StackCounters {
  relay: RelayState;
  framesToPage: number;
  framesFromPage: number;
  /**
   * Milliseconds the worker spent working (frames from the page, timers, relay messages), a close
   * measure of its CPU time (a browser gives a worker no CPU clock).
   */
  workerBusyMs: number;
  /**
   * How frames cross between the page and the worker: 'sab' through SharedArrayBuffer rings (the
   * page is cross-origin isolated), 'transfer' as batches of transferred ArrayBuffers.
   */
  framePath: FramePath;
  /**
   * Whether new TCP connections send the guest segments of up to 64 KiB, which its card takes whole
   * (every attached port said so: FramePort.offloadSegments).
   */
  segmentationOffload: boolean;
  /** Frames the rings dropped because they were full (page → worker and worker → page); 0 on 'transfer'. */
  ringDrops: { toWorker: number; toPage: number };
}

export type FramePath = 'sab' | 'transfer';

/** The shared buffers of the two frame rings (made by FrameRing.allocate). */
export interface FrameRingBuffers {
  toWorker: SharedArrayBuffer;
  toPage: SharedArrayBuffer;
}

/** The message on the frame port that says "the ring you read has frames" (see FrameRingWriter). */
export const RING_DOORBELL = 'ring';

/** The worker's control API. */
export interface WeftWorkerApi {
  /**
   * Starts the stack. Frames flow over `framePort` as packed batches (see frame-batch.ts) or, with
   * `rings`, through the two SharedArrayBuffer rings (see frame-ring.ts), the port then carrying
   * only doorbells (RING_DOORBELL) for a reader without Atomics.waitAsync.
   */
  start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void>;
  stop(): Promise<void>;
  /** Segmentation offload towards the guest for connections opened from now on (see NetworkStats.segmentationOffload). */
  setSegmentationOffload(on: boolean): Promise<void>;
  stats(): Promise<NetworkStats>;
  flows(): Promise<FlowSummary[]>;
  startCapture(): Promise<void>;
  /** Stops capturing and returns the pcap file's bytes. */
  stopCapture(): Promise<Uint8Array>;
}

export function summarizeFlow(e: FlowEvent, format: (ip: number) => string): FlowSummary {
  const guest = `${format(e.guest.ip)}:${e.guest.port}`;
  const target = `${format(e.target.ip)}:${e.target.port}`;
  return {
    id: `${e.protocol} ${guest}>${target}@${e.openedAt}`,
    protocol: e.protocol,
    guest,
    target,
    ...('state' in e ? { state: e.state } : {}),
    bytesFromGuest: e.bytesFromGuest,
    bytesToGuest: e.bytesToGuest,
    openedAt: e.openedAt,
    ...(e.reason === undefined ? {} : { reason: e.reason }),
  };
}
