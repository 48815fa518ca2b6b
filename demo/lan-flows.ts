// Guest-to-guest traffic for the flow table. Frames between two VMs of this page are switched in
// the page, port to port, and never reach weft's router, so network.flows() does not list them: the
// demo sees them through its frame taps instead. A frame a guest sends to another guest's address
// is counted under its connection (TCP and UDP by ports, ping by its identifier); the reverse
// direction counts as bytes to the first guest. Reads only: every offset is checked first.

import type { FlowSummary } from '../web/index';
import { ip, u16 } from './frame-summary';

/** A row of the flow table in the shape of the stack's flows (which are never ICMP). */
export interface LanFlow extends Omit<FlowSummary, 'protocol'> {
  protocol: FlowSummary['protocol'] | 'icmp';
  /** Switched between two guests of this page, not routed by weft. */
  lan: true;
}

/** Connections kept at most (the oldest goes first). */
const MAX_FLOWS = 200;
/** A connection with no frame for this long is shown as closed. */
const IDLE_MS = 60_000;

interface Tracked {
  flow: LanFlow;
  lastSeen: number;
  finFromGuest: boolean;
  finFromTarget: boolean;
  closed: boolean;
}

export class LanFlows {
  /** By connection key (protocol and both ends, as the opening guest sent it). */
  private readonly flows = new Map<string, Tracked>();
  private readonly guestIps = new Set<string>();

  constructor(
    private readonly onOpen: (flow: LanFlow) => void,
    private readonly onClose: (flow: LanFlow) => void,
    private readonly now: () => number = Date.now,
  ) {}

  /** An address one of this page's VMs leased. */
  addGuest(address: string): void {
    this.guestIps.add(address);
  }

  /** A frame a VM sent (only the sending side is shown each frame, so nothing is counted twice). */
  fromGuest(frame: Uint8Array): void {
    if (frame.length < 34 || u16(frame, 12) !== 0x0800 || frame[14] >> 4 !== 4) return;
    const ihl = (frame[14] & 0x0f) * 4;
    const l4 = 14 + ihl;
    const src = ip(frame, 26);
    const dst = ip(frame, 30);
    if (src === dst || !this.guestIps.has(src) || !this.guestIps.has(dst)) return;
    const length = Math.max(0, u16(frame, 16) - ihl);
    // Only a first fragment has the ports.
    if ((u16(frame, 20) & 0x1fff) !== 0) return;
    let protocol: LanFlow['protocol'];
    let sport: number;
    let dport: number;
    let flags = 0;
    switch (frame[23]) {
      case 6:
        if (frame.length < l4 + 14) return;
        protocol = 'tcp';
        sport = u16(frame, l4);
        dport = u16(frame, l4 + 2);
        flags = frame[l4 + 13];
        break;
      case 17:
        if (frame.length < l4 + 4) return;
        protocol = 'udp';
        sport = u16(frame, l4);
        dport = u16(frame, l4 + 2);
        break;
      case 1: {
        if (frame.length < l4 + 8) return;
        const type = frame[l4];
        if (type !== 8 && type !== 0) return;
        protocol = 'icmp';
        // An echo request and its reply share the identifier: the requester is the "guest".
        const id = u16(frame, l4 + 4);
        sport = dport = id;
        if (type === 0) return this.count(`icmp ${dst}#${id} ${src}#${id}`, undefined, length, true, 0);
        break;
      }
      default:
        return;
    }
    const forward = `${protocol} ${src}#${sport} ${dst}#${dport}`;
    if (this.flows.has(forward)) return this.count(forward, undefined, length, false, flags);
    const reverse = `${protocol} ${dst}#${dport} ${src}#${sport}`;
    if (this.flows.has(reverse)) return this.count(reverse, undefined, length, true, flags);
    // A TCP connection is shown from its SYN; other frames of one opened before are left out.
    if (protocol === 'tcp' && (flags & 0x12) !== 0x02) return;
    this.count(forward, { protocol, guest: `${src}:${sport}`, target: protocol === 'icmp' ? dst : `${dst}:${dport}` }, length, false, flags);
  }

  /** Shows connections idle for a minute as closed; call once a second. */
  sweep(): void {
    const now = this.now();
    for (const [key, t] of this.flows) {
      if (t.closed) {
        this.flows.delete(key);
      } else if (now - t.lastSeen > IDLE_MS) {
        this.close(key, t, t.flow.protocol === 'tcp' ? 'idle' : 'closed');
      }
    }
  }

  /** The connections open now, with fresh byte counts. */
  live(): LanFlow[] {
    return [...this.flows.values()].filter((t) => !t.closed).map((t) => ({ ...t.flow }));
  }

  private count(key: string, opening: Pick<LanFlow, 'protocol' | 'guest' | 'target'> | undefined, bytes: number, toGuest: boolean, tcpFlags: number): void {
    let t = this.flows.get(key);
    if (!t) {
      if (!opening) return;
      if (this.flows.size >= MAX_FLOWS) {
        const [oldestKey, oldest] = this.flows.entries().next().value as [string, Tracked];
        this.close(oldestKey, oldest, 'evicted');
        this.flows.delete(oldestKey);
      }
      t = {
        flow: { id: `lan ${key}`, ...opening, state: 'LAN', bytesFromGuest: 0, bytesToGuest: 0, openedAt: this.now(), lan: true },
        lastSeen: this.now(),
        finFromGuest: false,
        finFromTarget: false,
        closed: false,
      };
      this.flows.set(key, t);
      this.onOpen({ ...t.flow });
    }
    if (t.closed) return;
    t.lastSeen = this.now();
    if (toGuest) t.flow.bytesToGuest += bytes;
    else t.flow.bytesFromGuest += bytes;
    if (t.flow.protocol !== 'tcp') return;
    if (tcpFlags & 0x04) return this.close(key, t, 'reset');
    if (tcpFlags & 0x01) {
      if (toGuest) t.finFromTarget = true;
      else t.finFromGuest = true;
      if (t.finFromGuest && t.finFromTarget) this.close(key, t, 'closed');
    }
  }

  private close(_key: string, t: Tracked, reason: string): void {
    if (t.closed) return;
    t.closed = true;
    this.onClose({ ...t.flow, reason });
  }
}
