// The frame path between a tab and the SharedWorker of a LAN shared by tabs: one MessagePort per
// tab, carrying batches of frames as transferred ArrayBuffers (frame-batch.ts) both ways, and the
// network's events towards the tab. A SharedWorker is another agent cluster than the page, so the
// SharedArrayBuffer rings of a dedicated worker cannot be used here.
//
// postMessage never pushes back, and a tab can stop reading (a frozen background tab, a page busy
// for seconds) while the other side keeps sending: each side acknowledges what it received, in
// steps of ACK_STEP_BYTES, and a sender with more than MAX_IN_FLIGHT_BYTES unacknowledged drops
// what it would send and counts it, so neither side's message queue grows without bound.
//
// Messages: an ArrayBuffer is a batch of frames; a number acknowledges that many bytes; an object
// `{ event }` is a NetworkEvent (worker → tab only). Anything else is counted and ignored.

import type { NetworkEvent } from './worker-api';
import { FrameBatcher, unpackFrames } from './frame-batch';

/** Bytes sent and not yet acknowledged past which a side drops what it would send. */
export const MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024;
/** A receiver acknowledges once it has taken this many bytes since its last acknowledgement. */
const ACK_STEP_BYTES = 256 * 1024;
/** What an event counts for against MAX_IN_FLIGHT_BYTES (its real size is not worth measuring). */
const EVENT_BYTES = 256;

export interface LanChannelHandlers {
  /** Each frame received (a view into its batch, which nobody else uses). */
  frame(frame: Uint8Array): void;
  /** After each batch: the frames of one burst are in. */
  batchEnd?(): void;
  /** An event from the worker (on the tab's side). */
  event?(e: NetworkEvent): void;
  /** Runs the handling of each batch (the worker measures its busy time with it). */
  around?(work: () => void): void;
}

export interface LanChannelCounters {
  framesSent: number;
  framesReceived: number;
  /** Frames dropped because the other side had MAX_IN_FLIGHT_BYTES unacknowledged. */
  framesDropped: number;
  eventsDropped: number;
  /** Messages that were none of the three kinds. */
  badMessages: number;
}

export class LanChannel {
  private readonly batcher: FrameBatcher;
  private inFlight = 0;
  private unacked = 0;
  private closed = false;
  private readonly stats: LanChannelCounters = { framesSent: 0, framesReceived: 0, framesDropped: 0, eventsDropped: 0, badMessages: 0 };

  constructor(
    private readonly port: MessagePort,
    private readonly handlers: LanChannelHandlers,
  ) {
    this.batcher = new FrameBatcher(
      (batch, count) => this.sendBatch(batch, count),
      (fn) => queueMicrotask(fn),
    );
    port.onmessage = (e: MessageEvent) => this.receive(e.data);
    port.start();
  }

  /** Queues a copy of `frame` for the other side (sent at the end of this task, batched). */
  push(frame: Uint8Array): void {
    if (!this.closed) this.batcher.push(frame);
  }

  /** Sends an event (worker → tab). */
  event(e: NetworkEvent): void {
    if (this.closed) return;
    if (this.inFlight + EVENT_BYTES > MAX_IN_FLIGHT_BYTES) {
      this.stats.eventsDropped++;
      return;
    }
    this.inFlight += EVENT_BYTES;
    this.port.postMessage({ event: e });
  }

  counters(): LanChannelCounters {
    return { ...this.stats };
  }

  close(): void {
    this.closed = true;
    this.port.onmessage = null;
    this.port.close();
  }

  private sendBatch(batch: ArrayBuffer, count: number): void {
    if (this.closed) return;
    if (this.inFlight + batch.byteLength > MAX_IN_FLIGHT_BYTES) {
      this.stats.framesDropped += count;
      return;
    }
    this.inFlight += batch.byteLength;
    this.stats.framesSent += count;
    this.port.postMessage(batch, [batch]);
  }

  private receive(data: unknown): void {
    if (this.closed) return;
    if (data instanceof ArrayBuffer) {
      const work = () => {
        this.stats.framesReceived += unpackFrames(data, this.handlers.frame);
        this.handlers.batchEnd?.();
      };
      if (this.handlers.around) this.handlers.around(work);
      else work();
      this.took(data.byteLength);
    } else if (typeof data === 'number') {
      if (Number.isFinite(data) && data > 0) this.inFlight = Math.max(0, this.inFlight - data);
      else this.stats.badMessages++;
    } else if (isEventMessage(data) && this.handlers.event) {
      this.took(EVENT_BYTES);
      this.handlers.event(data.event);
    } else {
      this.stats.badMessages++;
    }
  }

  private took(bytes: number): void {
    this.unacked += bytes;
    if (this.unacked < ACK_STEP_BYTES) return;
    this.port.postMessage(this.unacked);
    this.unacked = 0;
  }
}

function isEventMessage(data: unknown): data is { event: NetworkEvent } {
  const event = (data as { event?: unknown } | null)?.event;
  return typeof event === 'object' && event !== null && typeof (event as { type?: unknown }).type === 'string';
}
