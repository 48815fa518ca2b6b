// Running the sans-I/O stack in Node: its clock, its randomness, one timer kept at its next
// deadline, and a frame link wired to it. `weft vm` and weft-net/node embedders use the same code.

import { randomFillSync } from 'node:crypto';
import { Stack, type StackOptions } from '../core/stack';
import type { FrameLink } from './links/frame-link';

/** setTimeout's longest delay; a later deadline is re-armed when this fires. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * The stack's clock: monotonic milliseconds with a fraction (on the epoch's scale, as the browser
 * worker's). Date.now()'s whole milliseconds are coarser than a local link's round trip, and wall
 * time jumps when NTP steps it.
 */
export const nodeClock = { now: (): number => performance.timeOrigin + performance.now() };

export const nodeRandom = (out: Uint8Array): void => {
  randomFillSync(out);
};

/** Keeps exactly one timer armed at the stack's next deadline. */
export class StackTimer {
  private timer: NodeJS.Timeout | undefined;
  private armedFor: number | undefined;
  private stopped = false;

  constructor(private readonly stack: Stack) {}

  rearm(): void {
    if (this.stopped) return;
    const deadline = this.stack.nextDeadline();
    if (deadline === this.armedFor && this.timer) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.armedFor = deadline;
    if (deadline === undefined) return;
    const delay = Math.min(MAX_TIMER_MS, Math.max(0, Math.ceil(deadline - nodeClock.now())));
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.armedFor = undefined;
      this.stack.poll(nodeClock.now());
      this.rearm();
    }, delay);
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}

export type NodeStackOptions = Omit<StackOptions, 'clock' | 'random' | 'output' | 'wake' | 'batchAcks' | 'segmentationOffload'> & Partial<Pick<StackOptions, 'clock' | 'random'>>;

export interface RunningStack {
  readonly stack: Stack;
  /** Stops the timer and the stack and closes the link (the upstream is yours to close). */
  close(): Promise<void>;
}

/**
 * Runs a stack on a link: frames from the link go in (ACKs coalesced per burst), frames out go to
 * the link, and one timer serves the stack's deadlines.
 */
export function runStack(link: FrameLink, options: NodeStackOptions): RunningStack {
  let timer: StackTimer | undefined;
  const stack = new Stack({
    clock: nodeClock,
    random: nodeRandom,
    ...options,
    batchAcks: true,
    segmentationOffload: link.segmentationOffload === true,
    wake: () => timer?.rearm(),
    output: (frame) => link.send(frame),
  });
  timer = new StackTimer(stack);
  link.onFrame((frame, checksumTrusted) => stack.input(frame, checksumTrusted));
  link.onBatchEnd(() => {
    stack.flush();
    timer?.rearm();
  });
  timer.rearm();
  return {
    stack,
    async close() {
      timer?.stop();
      stack.shutdown();
      await link.close();
    },
  };
}
