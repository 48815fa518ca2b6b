// One weft stack, one simulated guest (SimGuestTcp) and two seeded FaultInjectors (one per link
// direction) on a simulated clock: time only moves when the harness jumps to the next deadline, so
// a run is exact and repeatable. For tests of weft's sending direction (upstream → guest) under
// loss and reordering (test/unit/tcp-loss-recovery.test.ts, test/unit/tcp-faults.test.ts). The
// guest is also the oracle: it throws OracleViolation out of run() when weft sends what no correct
// TCP would (data outside its windows or past the FIN, changed bytes, a moving FIN).

import { FaultInjector, type FaultConfig } from '../../core/link/fault-injector';
import { Stack } from '../../core/stack';
import type { TcpConfig } from '../../core/config';
import { parseIpv4 } from '../../core/wire/address';
import { parseEthernet } from '../../core/wire/ethernet';
import { IPPROTO_TCP, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { parseTcp, type TcpSegment } from '../../core/wire/tcp';
import { FakeUpstream, type FakeTcpStream } from './fake-upstream';
import { GATEWAY_MAC, GUEST_IP, GUEST_MAC, seededRandom } from './frames';
import { SimGuestTcp, type SimGuestOptions } from './sim-guest-tcp';
import { instant } from '../../core/clock';

export const REMOTE = { ip: parseIpv4('93.184.216.34'), port: 80 };

export interface TcpSimOptions {
  seed: number;
  /** Faults on both directions unless `toGuest` / `toStack` say otherwise. */
  faults?: Partial<FaultConfig>;
  toGuest?: Partial<FaultConfig>;
  toStack?: Partial<FaultConfig>;
  tcp?: Partial<TcpConfig>;
  guest?: Partial<SimGuestOptions>;
  /** Connect every upstream stream as soon as it opens (default true). */
  autoConnect?: boolean;
}

export interface SentSegment {
  at: number;
  seg: TcpSegment;
}

export class TcpSim {
  now = 10_000;
  readonly upstream = new FakeUpstream();
  readonly stack: Stack;
  readonly guest: SimGuestTcp;
  readonly toGuest: FaultInjector;
  readonly toStack: FaultInjector;
  /** Every TCP segment the stack sent (before the link's faults), with its time. */
  readonly sent: SentSegment[] = [];
  /** Return true to lose this stack segment before it reaches the link (a targeted loss). */
  dropFromStack?: (seg: TcpSegment) => boolean;
  /** Return true to lose this guest frame before it reaches the link (e.g. its ACKs). */
  dropFromGuest?: (frame: Uint8Array) => boolean;
  /** Called on every step: e.g. an upstream source feeding data while not paused. */
  pump?: () => void;
  private readonly guestInbox: Uint8Array[] = [];
  private readonly stackInbox: Uint8Array[] = [];
  private readonly connected = new Set<FakeTcpStream>();

  private readonly autoConnect: boolean;

  constructor(o: TcpSimOptions) {
    this.autoConnect = o.autoConnect ?? true;
    const rng = seededRandom(o.seed);
    const clock = { now: () => instant(this.now) };
    const base: Partial<FaultConfig> = { latencyMs: 5, corruptFromByte: 14, reorderHoldMs: 20, ...o.faults };
    this.toGuest = new FaultInjector((f) => this.guestInbox.push(f), rng.next, { ...base, ...o.toGuest });
    this.toStack = new FaultInjector((f) => this.stackInbox.push(f), rng.next, { ...base, ...o.toStack });
    this.stack = new Stack({
      clock,
      random: seededRandom(o.seed ^ 0x5eed).fill,
      upstream: this.upstream,
      tcp: o.tcp,
      output: (f) => {
        const seg = tcpOf(f);
        if (seg) {
          this.sent.push({ at: this.now, seg: { ...seg, payload: seg.payload.slice() } });
          if (this.dropFromStack?.(seg)) return;
        }
        this.toGuest.send(f, this.now);
      },
    });
    this.guest = new SimGuestTcp(
      {
        clock,
        mac: GUEST_MAC,
        ip: GUEST_IP,
        port: 40_000,
        gatewayMac: GATEWAY_MAC,
        remote: REMOTE,
        iss: 0xfffff000,
        mss: 1460,
        sackPermitted: true,
        timestamps: true,
        windowScale: 7,
        receiveBuffer: 256 * 1024,
        dsack: true,
        ...o.guest,
      },
      (f) => {
        if (!this.dropFromGuest?.(f)) this.toStack.send(f, this.now);
      },
    );
  }

  get stream(): FakeTcpStream {
    return this.upstream.tcp[this.upstream.tcp.length - 1];
  }

  /** Delivers what is in flight at this instant, until nothing moves. */
  private settle(): void {
    for (let rounds = 0; this.guestInbox.length > 0 || this.stackInbox.length > 0; rounds++) {
      if (rounds > 100_000) throw new Error('the simulation does not settle');
      for (const f of this.stackInbox.splice(0)) this.stack.input(f);
      for (const f of this.guestInbox.splice(0)) this.guest.input(f);
      if (this.autoConnect) {
        for (const s of this.upstream.tcp) {
          if (this.connected.has(s) || s.destroyed) continue;
          this.connected.add(s);
          s.connect();
        }
      }
      this.pump?.();
    }
  }

  /** Runs until `done()` holds or `limitMs` of simulated time pass; true if done. */
  run(done: () => boolean, limitMs: number): boolean {
    const end = this.now + limitMs;
    for (let steps = 0, at = this.now; ; steps++) {
      if (this.now !== at) [steps, at] = [0, this.now];
      if (steps > 10_000) throw new Error(`the simulation is stuck at t=${this.now}`);
      this.pump?.();
      this.settle();
      if (done()) return true;
      let next = end;
      for (const d of [this.stack.nextDeadline(), this.guest.nextDeadline(), this.toGuest.nextDeadline(), this.toStack.nextDeadline()]) {
        if (d !== undefined && d < next) next = d;
      }
      if (next >= end) {
        this.now = end;
        this.poll();
        this.settle();
        return done();
      }
      this.now = Math.max(this.now, next);
      this.poll();
    }
  }

  private poll(): void {
    this.toGuest.poll(this.now);
    this.toStack.poll(this.now);
    this.stack.poll();
    this.guest.poll(this.now);
  }

  /** Opens the connection; true once both ends call it established. */
  handshake(): boolean {
    this.guest.connect();
    return this.run(() => this.guest.state === 'open' && this.stack.counters().tcpConnections.established === 1, 60_000);
  }

  /** Upstream → guest: feeds `data` into the fake stream whenever the stack has not paused it, then ends it. */
  feedFromUpstream(data: Uint8Array, chunk = 16 * 1024): void {
    let off = 0;
    let ended = false;
    this.pump = () => {
      const s = this.stream;
      while (!s.paused && off < data.length && !s.destroyed) {
        const n = Math.min(chunk, data.length - off);
        s.send(data.slice(off, off + n));
        off += n;
      }
      if (off === data.length && !ended) {
        ended = true;
        s.finish();
      }
    };
  }

  /** Drops counted by the stack for frames that failed a checksum or a header check. */
  stackRejected(): number {
    let n = 0;
    for (const [reason, count] of Object.entries(this.stack.counters().drops)) {
      if (/^(ipv4|tcp)-(bad|truncated|option)/.test(reason)) n += count;
    }
    return n;
  }

  /** Data segments the stack sent (payload or FIN), in order. */
  dataSegments(from = 0): SentSegment[] {
    return this.sent.slice(from).filter((e) => e.seg.payload.length > 0);
  }

  /** Data segments whose sequence number had been sent before (retransmissions and probes). */
  retransmissions(from = 0): SentSegment[] {
    const seen = new Set<number>();
    const out: SentSegment[] = [];
    for (const e of this.dataSegments(from)) {
      if (seen.has(e.seg.seq)) out.push(e);
      seen.add(e.seg.seq);
    }
    return out;
  }
}

/** The TCP segment in a frame the stack sent (its payload a view into the frame). */
export function tcpOf(frame: Uint8Array): TcpSegment | undefined {
  const eth = parseEthernet(frame);
  if (isDrop(eth)) return undefined;
  const ip = parseIpv4Packet(eth.payload);
  if (isDrop(ip) || ip.protocol !== IPPROTO_TCP) return undefined;
  const seg = parseTcp(ip.payload);
  return isDrop(seg) ? undefined : seg;
}

export function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  seededRandom(seed).fill(out);
  return out;
}

export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}
