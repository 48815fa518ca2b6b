// createNetwork(): a weft network for a page. The stack runs in a Web Worker; this handle starts it,
// carries frames to and from emulators (batched and transferred), and reports what happens as typed
// events. One network can serve several frame ports (all on one virtual link).

import * as Comlink from 'comlink';
import { FrameBatcher, unpackFrames } from '../worker/frame-batch';
import type { FlowSummary, NetworkEvent, NetworkSettings, NetworkStats, RelayState, WeftWorkerApi } from '../worker/worker-api';
import type { FramePort } from './frame-port';

export type { FlowSummary, NetworkEvent, NetworkSettings, NetworkStats, RelayState };

export interface NetworkOptions extends NetworkSettings {
  /** Where the worker script is (default: weft-worker.js beside this module). */
  workerUrl?: string | URL;
}

type EventOf<T extends NetworkEvent['type']> = Extract<NetworkEvent, { type: T }>;

export interface WeftNetwork {
  /** Subscribes to one kind of event; returns the unsubscribe function. */
  on<T extends NetworkEvent['type']>(type: T, listener: (e: EventOf<T>) => void): () => void;
  /** Connects an emulator (or anything that speaks Ethernet frames); returns the detach function. */
  attach(port: FramePort): () => void;
  /** Resolves once the worker runs the stack (rejects with the reason if it cannot start). */
  readonly ready: Promise<void>;
  readonly relayState: RelayState;
  stats(): Promise<NetworkStats>;
  flows(): Promise<FlowSummary[]>;
  startCapture(): Promise<void>;
  /** Stops the capture and returns it as a pcap file. */
  stopCapture(): Promise<Blob>;
  /** Stops the stack and the worker. */
  close(): Promise<void>;
}

export function createNetwork(options: NetworkOptions = {}): WeftNetwork {
  const { workerUrl, ...settings } = options;
  const worker = new Worker(workerUrl ?? new URL('./weft-worker.js', import.meta.url), { type: 'module', name: 'weft' });
  const api = Comlink.wrap<WeftWorkerApi>(worker);
  const channel = new MessageChannel();
  const listeners = new Map<string, Set<(e: NetworkEvent) => void>>();
  const ports = new Set<FramePort>();
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

  // Frames from the worker go to every attached port (there is one virtual link).
  channel.port1.onmessage = (e: MessageEvent) => {
    if (!(e.data instanceof ArrayBuffer)) return;
    unpackFrames(e.data, (frame) => {
      for (const p of ports) p.send(ports.size === 1 ? frame : frame.slice());
    });
  };
  const toWorker = new FrameBatcher(
    (batch) => channel.port1.postMessage(batch, [batch]),
    (fn) => queueMicrotask(fn),
  );

  const ready = api.start(settings, Comlink.transfer(channel.port2, [channel.port2]), Comlink.proxy(emit));
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
      // The batcher copies each frame at once (ne2k hands out a view into its own memory).
      port.onFrame((frame) => {
        if (attached && !closed) toWorker.push(frame);
      });
      return () => {
        attached = false;
        ports.delete(port);
      };
    },
    ready,
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
