// The worker a network's stack runs in, seen from the page: a dedicated Worker of its own (frames
// through SharedArrayBuffer rings or transferred batches), or the SharedWorker of a LAN shared by
// tabs (frames and events over a LanChannel; the tab holds a Web Lock while it lives, which is how
// the LAN learns that a tab went away without close()). network.ts uses either the same way.

import * as Comlink from 'comlink';
import { FrameBatcher, unpackFrames } from '../worker/frame-batch';
import { FrameRing, FrameRingReader, FrameRingWriter } from '../worker/frame-ring';
import { LanChannel } from '../worker/lan-channel';
import {
  RING_DOORBELL,
  type FramePath,
  type FrameRingBuffers,
  type LanWorkerApi,
  type NetworkEvent,
  type NetworkSettings,
  type StackControlApi,
  type WeftWorkerApi,
} from '../worker/worker-api';
import { WeftError } from './weft-error';

export interface StackWorker {
  readonly framePath: FramePath;
  readonly api: Comlink.Remote<StackControlApi>;
  /**
   * Resolves when the worker fires 'error' (a script that did not load, or an error it threw and
   * nothing caught), with the error's message when there is one.
   */
  readonly failed: Promise<string | undefined>;
  /** Starts the stack (or joins the LAN's); rejects with a WeftError when a LAN refuses the tab. */
  start(settings: NetworkSettings, onEvent: (e: NetworkEvent) => void): Promise<void>;
  /** Queues a copy of a frame for the stack. */
  push(frame: Uint8Array): void;
  /** Takes the frames the worker has written meanwhile, now (rings only; nothing otherwise). */
  drain(): void;
  /** Frames this page dropped on the way to the worker (a LAN's backlog was full). */
  droppedToWorker(): number;
  /** Leaves: stops the stack (a LAN's when this was its last tab) and lets go of the worker. */
  end(): Promise<void>;
}

export interface StackWorkerOptions {
  url: string | URL;
  /** Takes each frame from the worker (the page's to give away). */
  deliver: (frame: Uint8Array) => void;
}

function startFailed(what: string, url: string | URL, e: unknown): WeftError {
  return new WeftError('ERR_WEFT_START_FAILED', `createNetwork: the browser would not start the ${what} ${String(url)}: ${messageOf(e)}`, { cause: e });
}

/** Resolves on the worker's first 'error' event. */
function firstError(target: EventTarget): Promise<string | undefined> {
  return new Promise((resolve) => target.addEventListener('error', (ev) => resolve((ev as Partial<ErrorEvent>).message || undefined), { once: true }));
}

/** A dedicated Worker for one page's stack. */
export class DedicatedStackWorker implements StackWorker {
  readonly api: Comlink.Remote<WeftWorkerApi>;
  readonly failed: Promise<string | undefined>;
  private readonly worker: Worker;
  private readonly channel = new MessageChannel();
  private readonly toWorker: { push(frame: Uint8Array): unknown };
  private readonly fromWorker: FrameRingReader | undefined;
  private readonly rings: FrameRingBuffers | undefined;

  constructor(
    readonly framePath: FramePath,
    ringBytes: number,
    private readonly opts: StackWorkerOptions,
  ) {
    try {
      this.worker = new Worker(opts.url, { type: 'module', name: 'weft' });
    } catch (e) {
      throw startFailed('worker', opts.url, e);
    }
    this.failed = firstError(this.worker);
    this.api = Comlink.wrap<WeftWorkerApi>(this.worker);
    const port1 = this.channel.port1;
    if (framePath === 'sab') {
      this.rings = { toWorker: FrameRing.allocate(ringBytes), toPage: FrameRing.allocate(ringBytes) };
      // A full ring drops the frame (the worker reports the count in stats().ringDrops).
      this.toWorker = new FrameRingWriter(this.rings.toWorker, () => port1.postMessage(RING_DOORBELL));
      const reader = new FrameRingReader(this.rings.toPage);
      this.fromWorker = reader;
      port1.onmessage = (e: MessageEvent) => {
        if (e.data === RING_DOORBELL) reader.ring();
      };
    } else {
      port1.onmessage = (e: MessageEvent) => {
        if (e.data instanceof ArrayBuffer) unpackFrames(e.data, opts.deliver);
      };
      this.toWorker = new FrameBatcher(
        (batch) => port1.postMessage(batch, [batch]),
        (fn) => queueMicrotask(fn),
      );
    }
  }

  start(settings: NetworkSettings, onEvent: (e: NetworkEvent) => void): Promise<void> {
    const port2 = Comlink.transfer(this.channel.port2, [this.channel.port2]);
    const started = this.rings ? this.api.start(settings, port2, Comlink.proxy(onEvent), this.rings) : this.api.start(settings, port2, Comlink.proxy(onEvent));
    // Read from the start; as on the transfer path, frames that come before a port is attached are dropped.
    this.fromWorker?.start(this.opts.deliver);
    return started;
  }

  push(frame: Uint8Array): void {
    this.toWorker.push(frame);
  }

  drain(): void {
    this.fromWorker?.drain(this.opts.deliver);
  }

  droppedToWorker(): number {
    return 0;
  }

  async end(): Promise<void> {
    this.fromWorker?.close();
    try {
      // A worker whose script never loaded would never answer.
      await Promise.race([this.api.stop(), this.failed]);
    } finally {
      this.api[Comlink.releaseProxy]();
      this.channel.port1.close();
      this.worker.terminate();
    }
  }
}

/** Names the SharedWorker of LAN `name` (one per LAN and origin). */
export const lanWorkerName = (name: string) => `weft-lan:${name}`;

/** The SharedWorker of a LAN shared by tabs; this page is one of its tabs. */
export class LanStackWorker implements StackWorker {
  readonly framePath: FramePath = 'transfer';
  readonly api: Comlink.Remote<LanWorkerApi>;
  readonly failed: Promise<string | undefined>;
  private readonly worker: SharedWorker;
  private readonly channel = new MessageChannel();
  private readonly link: LanChannel;
  private onEvent: (e: NetworkEvent) => void = () => {};
  /** Lets go of the tab's Web Lock (set once it is held). */
  private releaseLock: (() => void) | undefined;
  private ended = false;

  constructor(
    private readonly name: string,
    opts: StackWorkerOptions,
  ) {
    if (typeof SharedWorker !== 'function') {
      throw new WeftError(
        'ERR_WEFT_LAN_UNAVAILABLE',
        `createNetwork({ lan: '${name}' }): this browser has no SharedWorker, which a LAN shared by tabs needs (Chrome on Android has none); create a network of this page's own instead`,
      );
    }
    try {
      this.worker = new SharedWorker(opts.url, { type: 'module', name: lanWorkerName(name) });
    } catch (e) {
      throw startFailed('shared worker', opts.url, e);
    }
    this.failed = firstError(this.worker);
    this.api = Comlink.wrap<LanWorkerApi>(this.worker.port);
    this.link = new LanChannel(this.channel.port1, { frame: opts.deliver, event: (e) => this.onEvent(e) });
  }

  async start(settings: NetworkSettings, onEvent: (e: NetworkEvent) => void): Promise<void> {
    this.onEvent = onEvent;
    const lock = await this.holdLock();
    if (this.ended) throw new WeftError('ERR_WEFT_CLOSED', 'this weft network is closed');
    const port2 = Comlink.transfer(this.channel.port2, [this.channel.port2]);
    const joined = await this.api.join(this.name, settings, port2, lock);
    if (!joined.ok) throw new WeftError(joined.code, `createNetwork({ lan: '${this.name}' }): ${joined.message}`);
  }

  push(frame: Uint8Array): void {
    this.link.push(frame);
  }

  drain(): void {}

  droppedToWorker(): number {
    return this.link.counters().framesDropped;
  }

  async end(): Promise<void> {
    this.ended = true;
    try {
      await Promise.race([this.api.stop(), this.failed]);
    } finally {
      this.api[Comlink.releaseProxy]();
      this.link.close();
      this.releaseLock?.();
      this.worker.port.close();
    }
  }

  /**
   * Takes a Web Lock of this tab's own, held until end() or until the tab is gone; resolves with
   * its name once held (undefined where the page has no Web Locks: an insecure context).
   */
  private holdLock(): Promise<string | undefined> {
    const locks = (navigator as Partial<Navigator>).locks;
    if (!locks) return Promise.resolve(undefined);
    const id = Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
    const lock = `${lanWorkerName(this.name)}:tab:${id}`;
    return new Promise((held, failed) => {
      locks
        .request(lock, () => {
          held(lock);
          if (this.ended) return undefined;
          return new Promise<void>((release) => (this.releaseLock = release));
        })
        .catch(failed);
    });
  }
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
