// One page's frames in a dedicated worker, both ways: through two SharedArrayBuffer rings when the
// page is cross-origin isolated, else as packed, transferred batches over a MessagePort.

import { FrameBatcher, unpackFrames } from './frame-batch';
import { FrameRingReader, FrameRingWriter } from './frame-ring';
import { RING_DOORBELL, type FramePath, type FrameRingBuffers, type WorkerStats } from './worker-api';

export class PageFrames {
  readonly path: FramePath;
  framesToPage = 0;
  framesFromPage = 0;
  private readonly rings: { fromPage: FrameRingReader; toPage: FrameRingWriter } | undefined;
  /** Sends one frame to the page (copied into the ring or the batch). */
  readonly send: (frame: Uint8Array) => void;

  /** `ringFull` counts a frame the page's ring had no room for. */
  constructor(
    private readonly port: MessagePort,
    rings: FrameRingBuffers | undefined,
    ringFull: () => void,
  ) {
    if (rings) {
      this.path = 'sab';
      const toPage = new FrameRingWriter(rings.toPage, () => port.postMessage(RING_DOORBELL));
      this.rings = { fromPage: new FrameRingReader(rings.toWorker), toPage };
      this.send = (frame) => {
        if (toPage.push(frame)) this.framesToPage++;
        else ringFull();
      };
    } else {
      this.path = 'transfer';
      const batcher = new FrameBatcher(
        (batch, count) => {
          this.framesToPage += count;
          port.postMessage(batch, [batch]);
        },
        (fn) => queueMicrotask(fn),
      );
      this.send = (frame) => batcher.push(frame);
    }
  }

  /**
   * Starts taking the page's frames: `input` for each, `done` after each batch, both inside
   * `around` (which measures the worker's busy time).
   */
  receive(input: (frame: Uint8Array) => void, done: () => void, around: (fn: () => void) => void): void {
    const fromPage = this.rings?.fromPage;
    this.port.onmessage = (e: MessageEvent) => {
      const batch: unknown = e.data;
      if (batch === RING_DOORBELL) {
        fromPage?.ring();
        return;
      }
      if (!(batch instanceof ArrayBuffer)) return;
      around(() => {
        this.framesFromPage += unpackFrames(batch, input);
        done();
      });
    };
    this.port.start();
    fromPage?.start(
      (frame) => {
        this.framesFromPage++;
        input(frame);
      },
      done,
      around,
    );
  }

  /** Frames the rings dropped (full, or a frame too long for them), both directions; zeros without rings. */
  ringDrops(): WorkerStats['ringDrops'] {
    const dropped = (c: { droppedFull: number; droppedOversized: number } | undefined) => (c ? c.droppedFull + c.droppedOversized : 0);
    return { toWorker: dropped(this.rings?.fromPage.counters()), toPage: dropped(this.rings?.toPage.counters()) };
  }

  /** Stops reading the page's ring (frames sent to the page still go). */
  stopReceiving(): void {
    this.rings?.fromPage.close();
  }

  /** Closes the port: nothing more crosses. */
  close(): void {
    this.stopReceiving();
    this.port.close();
  }
}
