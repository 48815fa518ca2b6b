// Running the sans-I/O stack in Node: its clock, its randomness, the shared timer driver
// (platform/stack-timer.ts, which the browser worker uses too), and a frame link wired to it.
// `weft vm` and weft-net/node embedders use the same code.

import { randomFillSync } from 'node:crypto';
import { Stack } from '../core/stack';
import type { StackOptions } from '../core/stack-options';
import type { FrameLink } from './links/frame-link';
import { monotonicClock, StackTimer } from '../platform/stack-timer';

/** The stack's clock in Node: monotonic, with a fraction (see platform/stack-timer.ts). */
export const nodeClock = monotonicClock;

export const nodeRandom = (out: Uint8Array): void => {
  randomFillSync(out);
};

export { StackTimer };

export type NodeStackOptions = Omit<
  StackOptions,
  'clock' | 'random' | 'output' | 'outputGathered' | 'allocFrame' | 'wake' | 'batchAcks' | 'segmentationOffload'
> &
  Partial<Pick<StackOptions, 'clock' | 'random'>>;

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
    ...(link.allocFrame ? { allocFrame: link.allocFrame.bind(link) } : {}),
    ...(link.sendGathered ? { outputGathered: link.sendGathered.bind(link) } : {}),
  });
  timer = new StackTimer(stack, options.clock ?? nodeClock);
  link.guardLeases?.((ip) => stack.leaseHolderOf(ip));
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
