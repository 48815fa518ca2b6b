// The Wisp upstream in Node: core's WispUpstream with Node's timers, clock and randomness.
import { randomFillSync } from 'node:crypto';
import { WispUpstream as CoreWispUpstream, type WispUpstreamOptions } from '../core/wisp/wisp-upstream';
import { nodeScheduler } from './node-scheduler';
import { monotonicClock } from '../platform/stack-timer';

export type { WispTransport, WispTransportFactory, WispUpstreamOptions } from '../core/wisp/wisp-upstream';
export { upstreamErrorKind } from '../core/wisp/wisp-flows';

export type NodeWispUpstreamOptions = Omit<WispUpstreamOptions, 'scheduler' | 'clock' | 'random'> &
  Partial<Pick<WispUpstreamOptions, 'scheduler' | 'clock' | 'random'>>;

export class WispUpstream extends CoreWispUpstream {
  constructor(options: NodeWispUpstreamOptions) {
    super({ scheduler: nodeScheduler, clock: monotonicClock, random: (out) => randomFillSync(out), allocate: (n) => Buffer.allocUnsafe(n), ...options });
  }
}
