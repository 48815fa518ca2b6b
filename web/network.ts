// createNetwork(): a weft network for a page. The stack runs in a Web Worker; this handle starts it,
// carries frames to and from emulators, and reports what happens as typed events. One network can
// serve several frame ports (all on one virtual link). Frames cross through two SharedArrayBuffer
// rings when the page is cross-origin isolated (no message per batch, no allocation per batch, and
// the worker can start on a frame while the emulator still runs), otherwise in batches of
// transferred ArrayBuffers.

import * as Comlink from 'comlink';
import { DEFAULT_NETWORK } from '../core/config';
import { isOversizedTcpFrame, splitTcpFrame } from '../core/wire/tcp-segmentation';
import { FrameBatcher, unpackFrames } from '../worker/frame-batch';
import { DEFAULT_RING_BYTES, FrameRing, FrameRingReader, FrameRingWriter } from '../worker/frame-ring';
import { RING_DOORBELL, type FlowSummary, type FramePath, type FrameRingBuffers, type NetworkEvent, type NetworkSettings, type NetworkStats, type RelayState, type WeftWorkerApi } from '../worker/worker-api';
import type { FramePort } from './frame-port';

export type { FlowSummary, FramePath, NetworkEvent, NetworkSettings, NetworkStats, RelayState };

export interface NetworkOptions extends NetworkSettings {
  /** Where the worker script is (default: weft-worker.js beside this module). */
  workerUrl?: string | URL;
  /**
   * How frames cross to the worker: 'sab' (SharedArrayBuffer rings; needs a cross-origin isolated
   * page), 'transfer' (batches of transferred buffers), or 'auto' (default: 'sab' where it can).
   */
  framePath?: FramePath | 'auto';
  /** Bytes per ring (each direction) on the 'sab' path (default 4 MiB); a full ring drops frames and counts them. */
  ringBytes?: number;
}

type EventOf<T extends NetworkEvent['type']> = Extract<NetworkEvent, { type: T }>;

export interface WeftNetwork {
  /** Subscribes to one kind of event; returns the unsubscribe function. */
  on<T extends NetworkEvent['type']>(type: T, listener: (e: EventOf<T>) => void): () => void;
  /** Connects an emulator (or anything that speaks Ethernet frames); returns the detach function. */
  attach(port: FramePort): () => void;
  /** Resolves once the worker runs the stack (rejects with the reason if it cannot start). */
  readonly ready: Promise<void>;
  /** How frames cross between this page and the worker. */
  readonly framePath: FramePath;
  readonly relayState: RelayState;
  stats(): Promise<NetworkStats>;
  flows(): Promise<FlowSummary[]>;
  startCapture(): Promise<void>;
  /** Stops the capture and returns it as a pcap file. */
  stopCapture(): Promise<Blob>;
  /** Stops the stack and the worker. */
  close(): Promise<void>;
}

/** Whether this page can share memory with a worker (cross-origin isolated, SharedArrayBuffer present). */
function canShareMemory(): boolean {
  return (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
}

export function createNetwork(options: NetworkOptions = {}): WeftNetwork {
  const { workerUrl, framePath: wantedPath = 'auto', ringBytes = DEFAULT_RING_BYTES, ...settings } = options;
  if (wantedPath === 'sab' && !canShareMemory()) {
    throw new Error("createNetwork: framePath 'sab' needs a cross-origin isolated page (serve it with COOP: same-origin and COEP: require-corp)");
  }
  const framePath: FramePath = wantedPath === 'transfer' || !canShareMemory() ? 'transfer' : 'sab';
  const worker = new Worker(workerUrl ?? new URL('./weft-worker.js', import.meta.url), { type: 'module', name: 'weft' });
  const api = Comlink.wrap<WeftWorkerApi>(worker);
  const channel = new MessageChannel();
  const listeners = new Map<string, Set<(e: NetworkEvent) => void>>();
  const ports = new Set<FramePort>();
  const mtu = settings.mtu ?? DEFAULT_NETWORK.mtu;
  /** Ports whose guest takes TCP segments longer than the MTU whole (FramePort.offloadSegments). */
  const offloading = new Set<FramePort>();
  let offload = false;
  const updateOffload = () => {
    const on = ports.size > 0 && offloading.size === ports.size;
    if (on === offload || closed) return;
    offload = on;
    api.setSegmentationOffload(on).catch(() => undefined);
  };
  let relayState: RelayState = 'none';
  let closed = false;

  const emit = (e: NetworkEvent) => {
    if (e.type === 'relay') relayState = e.state;
    for (const l of listeners.get(e.type) ?? []) {
      try {
        l(e);
      } catch (err) {
        console.error('weft: an event listener threw', err);
      }
    }
  };

  // Frames from the worker go to every attached port (there is one virtual link). A segment longer
  // than the MTU, sent while every port took them, is split for a port that no longer does.
  const deliver = (frame: Uint8Array) => {
    for (const p of ports) {
      if (!offloading.has(p) && isOversizedTcpFrame(frame, mtu)) {
        for (const piece of splitTcpFrame(frame, mtu)) p.send(piece);
      } else {
        p.send(ports.size === 1 ? frame : frame.slice());
      }
    }
  };
  let toWorker: { push(frame: Uint8Array): unknown };
  let rings: FrameRingBuffers | undefined;
  let fromWorker: FrameRingReader | undefined;
  if (framePath === 'sab') {
    rings = { toWorker: FrameRing.allocate(ringBytes), toPage: FrameRing.allocate(ringBytes) };
    // A full ring drops the frame (the worker reports the count in stats().ringDrops).
    toWorker = new FrameRingWriter(rings.toWorker, () => channel.port1.postMessage(RING_DOORBELL));
    const reader = new FrameRingReader(rings.toPage);
    fromWorker = reader;
    channel.port1.onmessage = (e: MessageEvent) => {
      if (e.data === RING_DOORBELL) reader.ring();
    };
  } else {
    channel.port1.onmessage = (e: MessageEvent) => {
      if (e.data instanceof ArrayBuffer) unpackFrames(e.data, deliver);
    };
    toWorker = new FrameBatcher(
      (batch) => channel.port1.postMessage(batch, [batch]),
      (fn) => queueMicrotask(fn),
    );
  }

  const port2 = Comlink.transfer(channel.port2, [channel.port2]);
  const ready = rings ? api.start(settings, port2, Comlink.proxy(emit), rings) : api.start(settings, port2, Comlink.proxy(emit));
  // Read from the start; as on the transfer path, frames that come before a port is attached are dropped.
  fromWorker?.start(deliver);
  ready.catch((e: unknown) => emit({ type: 'error', message: `weft could not start: ${(e as Error).message}` }));

  return {
    on(type, listener) {
      let set = listeners.get(type);
      if (!set) listeners.set(type, (set = new Set()));
      set.add(listener as (e: NetworkEvent) => void);
      return () => set.delete(listener as (e: NetworkEvent) => void);
    },
    attach(port) {
      if (closed) throw new Error('this weft network is closed');
      ports.add(port);
      let attached = true;
      port.offloadSegments?.(mtu, (on) => {
        if (!attached) return;
        if (on) offloading.add(port);
        else offloading.delete(port);
        updateOffload();
      });
      updateOffload();
      // The batcher copies each frame at once (ne2k hands out a view into its own memory).
      port.onFrame((frame) => {
        if (!attached || closed) return;
        toWorker.push(frame);
        // With shared rings, take what the worker has written meanwhile at once: an emulator sends
        // frames (e.g. ACKs) while it runs a time slice, and the frames for it can then reach its
        // card within that slice instead of after it (reading an empty ring is one atomic load).
        fromWorker?.drain(deliver);
      });
      return () => {
        attached = false;
        ports.delete(port);
        offloading.delete(port);
        updateOffload();
      };
    },
    ready,
    framePath,
    get relayState() {
      return relayState;
    },
    stats: () => api.stats(),
    flows: () => api.flows(),
    startCapture: () => api.startCapture(),
    async stopCapture() {
      const bytes = await api.stopCapture();
      return new Blob([bytes as BlobPart], { type: 'application/vnd.tcpdump.pcap' });
    },
    async close() {
      if (closed) return;
      closed = true;
      ports.clear();
      fromWorker?.close();
      try {
        await api.stop();
      } finally {
        api[Comlink.releaseProxy]();
        channel.port1.close();
        worker.terminate();
      }
    },
  };
}
