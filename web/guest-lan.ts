// The page's LAN: every FramePort attached to a network is a port of a learning switch
// (core/link/learning-switch.ts) whose router port is the way to the worker, where weft's stack
// (router, DHCP, DNS) is — or, on a LAN shared by tabs, the worker's own switch with the other tabs
// behind it. Guest-to-guest unicast goes port to port here, in the page, and reaches no other port;
// broadcast and unknown destinations are flooded; frames from the worker reach only the port behind
// which their destination was seen.
//
// Frames: a port's frame may be a view into its emulator's memory, valid only during onFrame, and a
// port keeps what it is sent. The way to the worker copies what it takes (into a ring or a batch),
// so the frame a port sent is copied only when it goes to another port. With one port attached
// nothing is copied at all. A port whose guest does not take TCP segments longer than the MTU
// (FramePort.offloadSegments) gets any such segment split.

import { LearningSwitch, type SwitchPort } from '../core/link/learning-switch';
import { readMac, type MacAddress } from '../core/wire/address';
import { isOversizedTcpFrame, splitTcpFrame } from '../core/wire/tcp-segmentation';
import { monotonicClock } from '../platform/stack-timer';
import type { FramePort } from './frame-port';

/** MACs the page's switch holds, and for how long (a Linux bridge's default ageing time). */
const MAX_MACS = 1024;
const AGING_MS = 300_000;

export interface GuestLanOptions {
  mtu: number;
  /** weft's own MACs: always behind the worker. */
  routerMacs: readonly MacAddress[];
  /** Takes a frame for the worker, copying it (the frame is only borrowed). */
  toWorker: (frame: Uint8Array) => void;
  /** Called after each frame a port sent has been switched. */
  afterInput?: () => void;
  /** Told when "every attached port takes large TCP segments" changes. */
  onOffloadChange: () => void;
}

interface Member {
  port: SwitchPort;
  offload: boolean;
  /** The source MAC of the guest's latest frame: whose lease is this page's. */
  lastSource: MacAddress | undefined;
}

export class GuestLan {
  private readonly sw = new LearningSwitch({ maxMacs: MAX_MACS, agingMs: AGING_MS, now: () => monotonicClock.now() });
  private readonly router: SwitchPort;
  private readonly members = new Map<FramePort, Member>();
  /** The frame a port is sending now: a port that is handed it must get a copy. */
  private borrowed: Uint8Array | undefined;
  private nextPort = 1;
  /** What detached ports had dropped. */
  private readonly retiredDrops: Record<string, number> = {};

  constructor(private readonly opts: GuestLanOptions) {
    this.router = this.sw.addRouterPort(opts.routerMacs, opts.toWorker);
  }

  get size(): number {
    return this.members.size;
  }

  /** Whether every attached port takes TCP segments longer than the MTU (true with none attached). */
  get allOffload(): boolean {
    for (const m of this.members.values()) if (!m.offload) return false;
    return true;
  }

  /** Attaches `port`; returns the function that detaches it. */
  add(port: FramePort): () => void {
    if (this.members.has(port)) throw new TypeError('attach: this frame port is attached already');
    const { mtu } = this.opts;
    let attached = true;
    const member: Member = {
      offload: false,
      lastSource: undefined,
      port: this.sw.addPort(`guest${this.nextPort++}`, (frame) => {
        if (frame === this.borrowed) frame = frame.slice();
        if (!member.offload && isOversizedTcpFrame(frame, mtu)) {
          for (const piece of splitTcpFrame(frame, mtu)) port.send(piece);
        } else {
          port.send(frame);
        }
      }),
    };
    this.members.set(port, member);
    port.offloadSegments?.(mtu, (on) => {
      if (!attached || member.offload === on) return;
      member.offload = on;
      this.opts.onOffloadChange();
    });
    port.onFrame((frame) => {
      if (!attached) return;
      if (frame.length >= 14) member.lastSource = readMac(frame, 6);
      const outer = this.borrowed;
      this.borrowed = frame;
      try {
        member.port.input(frame);
      } finally {
        this.borrowed = outer;
      }
      this.opts.afterInput?.();
    });
    this.opts.onOffloadChange();
    return () => {
      if (!attached) return;
      attached = false;
      this.members.delete(port);
      this.addDrops(this.retiredDrops, member.port);
      member.port.remove();
      this.opts.onOffloadChange();
    };
  }

  /** A frame from the worker (the page's to give away). */
  fromWorker(frame: Uint8Array): void {
    this.router.input(frame);
  }

  /** Whether `mac` is the source of a guest attached in this page (its latest frame's). */
  isOwnGuest(mac: MacAddress): boolean {
    for (const m of this.members.values()) if (m.lastSource === mac) return true;
    return false;
  }

  stats(): { ports: number; macsLearned: number; drops: Record<string, number> } {
    const drops = { ...this.retiredDrops };
    for (const p of [this.router, ...[...this.members.values()].map((m) => m.port)]) this.addDrops(drops, p);
    return { ports: this.members.size, macsLearned: this.sw.macsLearned, drops };
  }

  private addDrops(into: Record<string, number>, port: SwitchPort): void {
    for (const [reason, n] of Object.entries(port.counters().drops)) into[reason] = (into[reason] ?? 0) + (n ?? 0);
  }
}
