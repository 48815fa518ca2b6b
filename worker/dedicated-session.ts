// The dedicated worker's one page: starts a StackHost for it and carries its frames — through two
// SharedArrayBuffer rings when the page is cross-origin isolated, else as packed, transferred batches
// over a MessagePort — and its events, through comlink.

import { FrameBatcher, unpackFrames } from './frame-batch';
import { FrameRingReader, FrameRingWriter } from './frame-ring';
import { StackHost } from './stack-host';
import { StackSession } from './stack-session';
import {
  RING_DOORBELL,
  type FramePath,
  type FrameRingBuffers,
  type NetworkEvent,
  type NetworkSettings,
  type WeftWorkerApi,
  type WorkerStats,
} from './worker-api';

export class DedicatedSession extends StackSession implements WeftWorkerApi {
  private port: MessagePort | undefined;
  private framesToPage = 0;
  private framesFromPage = 0;
  private framePath: FramePath = 'transfer';
  private rings: { fromPage: FrameRingReader; toPage: FrameRingWriter } | undefined;

  async start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void> {
    if (this.host || this.port) throw new Error('the network is already started');
    this.port = framePort;
    let output: (frame: Uint8Array) => void;
    let host: StackHost | undefined;
    if (rings) {
      this.framePath = 'sab';
      const toPage = new FrameRingWriter(rings.toPage, () => framePort.postMessage(RING_DOORBELL));
      this.rings = { fromPage: new FrameRingReader(rings.toWorker), toPage };
      output = (frame) => {
        if (toPage.push(frame)) this.framesToPage++;
        else host?.countDrop('frame-ring-full', 1);
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
    host = new StackHost(settings, output, onEvent);
    this.open(host);
    const { stack } = host;
    const fromPage = this.rings?.fromPage;
    framePort.onmessage = (e: MessageEvent) => {
      const batch: unknown = e.data;
      if (batch === RING_DOORBELL) {
        fromPage?.ring();
        return;
      }
      if (!(batch instanceof ArrayBuffer)) return;
      host.measured(() => {
        this.framesFromPage += unpackFrames(batch, (frame) => stack.input(frame));
        host.inputDone();
      });
    };
    framePort.start();
    fromPage?.start(
      (frame) => {
        this.framesFromPage++;
        stack.input(frame);
      },
      () => host.inputDone(),
      host.measured,
    );
  }

  async stop(): Promise<void> {
    const host = this.host;
    this.rings?.fromPage.close();
    await this.release();
    host?.stop();
    this.port?.close();
    this.port = undefined;
  }

  async setSegmentationOffload(on: boolean): Promise<void> {
    this.host?.setSegmentationOffload(on);
  }

  async stats(): Promise<WorkerStats> {
    return {
      ...this.runningHost().stats(),
      framesToPage: this.framesToPage,
      framesFromPage: this.framesFromPage,
      framePath: this.framePath,
      ringDrops: this.ringDrops(),
    };
  }

  /** Frames the rings dropped (full, or a frame too long for them), both directions; zeros without rings. */
  private ringDrops(): WorkerStats['ringDrops'] {
    const dropped = (c: { droppedFull: number; droppedOversized: number } | undefined) => (c ? c.droppedFull + c.droppedOversized : 0);
    return { toWorker: dropped(this.rings?.fromPage.counters()), toPage: dropped(this.rings?.toPage.counters()) };
  }
}
