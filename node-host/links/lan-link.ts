// Several links on one LAN (`weft vm --tap-fd 3 --tap-fd 4 …`): each link is a port of a learning
// switch (core/link/learning-switch.ts), and the stack is the switch's router port. Guests reach
// each other port to port, and weft's DHCP, DNS and router through it, as on one Ethernet segment.
// To the stack it is one FrameLink.

import { monotonicClock } from '../../platform/stack-timer';
import { LearningSwitch, type SwitchPort } from '../../core/link/learning-switch';
import type { MacAddress } from '../../core/wire/address';
import { FrameLinkBase, type FrameLink } from './frame-link';

/** MACs the switch remembers, and for how long (a Linux bridge's default ageing time). */
const MAX_MACS = 4096;
const AGING_MS = 300_000;

export class LanLink extends FrameLinkBase implements FrameLink {
  readonly description: Record<string, unknown>;
  private readonly sw: LearningSwitch;
  private readonly router: SwitchPort;
  private readonly ports: SwitchPort[];

  constructor(
    private readonly links: readonly FrameLink[],
    routerMac: MacAddress,
  ) {
    super();
    this.description = { link: 'lan', ports: links.map((l) => l.description) };
    this.sw = new LearningSwitch({ maxMacs: MAX_MACS, agingMs: AGING_MS, now: () => monotonicClock.now() });
    // The frames the switch hands the router are copies or frames no port keeps: the stack may parse them in place.
    this.router = this.sw.addRouterPort([routerMac], (frame) => this.frameListener(frame));
    this.ports = links.map((link, i) => {
      // A frame for a guest leaves through that guest's link (which takes it over).
      const port = this.sw.addPort(`port${i}`, (frame) => link.send(frame));
      // A link may reuse its receive buffer after onFrame returns, and the switch may pass the
      // frame on to another port that keeps it: the switch gets its own copy.
      link.onFrame((frame) => port.input(frame.slice()));
      link.onBatchEnd(() => this.batchEndListener());
      link.on('log', (event, fields) => this.log(event, { port: i, ...fields }));
      link.on('fatal', (e) => this.fail(e));
      return port;
    });
  }

  send(frame: Uint8Array): void {
    this.router.input(frame);
  }

  override drops(): Record<string, number> {
    const out: Record<string, number> = {};
    const add = (reason: string, n: number) => (out[reason] = (out[reason] ?? 0) + n);
    this.links.forEach((l, i) => {
      for (const [reason, n] of Object.entries(l.drops())) add(`port${i}-${reason}`, n);
    });
    for (const [i, p] of [this.router, ...this.ports].entries()) {
      for (const [reason, n] of Object.entries(p.counters().drops)) add(i === 0 ? `router-${reason}` : `port${i - 1}-${reason}`, n ?? 0);
    }
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.links.map((l) => l.close()));
  }
}
