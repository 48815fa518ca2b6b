// The dedicated worker's one page: starts a StackHost for it and carries its frames — through two
// SharedArrayBuffer rings when the page is cross-origin isolated, else as packed, transferred batches
// over a MessagePort — and its events, through comlink.

import { PageFrames } from './page-frames';
import { StackHost } from './stack-host';
import { StackSession } from './stack-session';
import type { FrameRingBuffers, NetworkEvent, NetworkSettings, WeftWorkerApi, WorkerStats } from './worker-api';

export class DedicatedSession extends StackSession implements WeftWorkerApi {
  private frames: PageFrames | undefined;

  async start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void> {
    if (this.host || this.frames) throw new Error('the network is already started');
    let host: StackHost | undefined;
    const frames = new PageFrames(framePort, rings, () => host?.countDrop('frame-ring-full', 1));
    this.frames = frames;
    host = new StackHost(settings, frames.send, onEvent);
    this.open(host);
    const { stack } = host;
    frames.receive(
      (frame) => stack.input(frame),
      () => host.inputDone(),
      host.measured,
    );
  }

  async stop(): Promise<void> {
    const host = this.host;
    this.frames?.stopReceiving();
    await this.release();
    host?.stop();
    this.frames?.close();
    this.frames = undefined;
  }

  async setSegmentationOffload(on: boolean): Promise<void> {
    this.host?.setSegmentationOffload(on);
  }

  async stats(): Promise<WorkerStats> {
    const frames = this.frames;
    return {
      ...this.runningHost().stats(),
      framesToPage: frames?.framesToPage ?? 0,
      framesFromPage: frames?.framesFromPage ?? 0,
      framePath: frames?.path ?? 'transfer',
      ringDrops: frames?.ringDrops() ?? { toWorker: 0, toPage: 0 },
    };
  }
}
