// Several links on one LAN (`weft vm --tap-fd 3 --tap-fd 4 …`): each link is a port of a learning
// switch (core/link/learning-switch.ts), and the stack is the switch's router port. Guests reach
// each other port to port, and weft's DHCP, DNS and router through it, as on one Ethernet segment.
// To the stack it is one FrameLink.

import type { LearningSwitch, SwitchPort } from '../../core/link/learning-switch';
import type { Ipv4Address, MacAddress } from '../../core/wire/address';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { lanSwitch, switchStats, type RouterAddresses } from './lan-switch';

export class LanLink extends FrameLinkBase implements FrameLink {
  readonly description: Record<string, unknown>;
  private readonly sw: LearningSwitch;
  private readonly router: SwitchPort;
  private readonly ports: SwitchPort[];

  constructor(
    private readonly links: readonly FrameLink[],
    router: RouterAddresses,
  ) {
    super();
    this.description = { link: 'lan', ports: links.map((l) => l.description) };
    this.sw = lanSwitch();
    // The frames the switch hands the router are copies or frames no port keeps: the stack may parse them in place.
    this.router = this.sw.addRouterPort([router.mac], (frame) => this.frameListener(frame), router.ips);
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

  guardLeases(holder: (ip: Ipv4Address) => MacAddress | undefined): void {
    this.sw.guardLeases(holder);
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

  stats(): Record<string, number> {
    const out = switchStats(this.sw);
    this.ports.forEach((p, i) => {
      const c = p.counters();
      out[`port${i}-framesOut`] = c.framesOut;
      out[`port${i}-bytesOut`] = c.bytesOut;
    });
    // A port that is itself a LAN (a --qemu socket with several clients) has a table of its own.
    this.links.forEach((l, i) => {
      for (const [k, v] of Object.entries(l.stats?.() ?? {})) out[`port${i}-${k}`] = v;
    });
    return out;
  }

  async close(): Promise<void> {
    await Promise.all(this.links.map((l) => l.close()));
  }
}
