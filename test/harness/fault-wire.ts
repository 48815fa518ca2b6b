// A seeded, netem-like fault wire between a guest and weft, in user space: loss, duplication,
// corruption and delay-with-reordering, for each direction independently.
//
// Why in user space: this machine's kernel has no sch_netem (`tc qdisc add … netem` answers
// "Specified qdisc kind is unknown"; only htb, tbf, fifo and ingress/clsact are built in, no act_gact,
// no modules to load). ifb and mirred do work, so weft's frames could be redirected through an ifb,
// but there is no qdisc there to impair them with. So a small python wire stands in for netem. The
// guest's interface is a TAP owned by the wire (in the guest namespace); weft's TAP lives in a second
// namespace, where the wire reads and writes it with an AF_PACKET socket:
//
//   guest kernel ─ tap0 (guest ns) ═ fault wire (python, seeded) ═ tap0 (wire ns) ─ weft --tap-fd 3
//
// Semantics are netem's: loss, duplication, corruption (one random bit of one random byte of the
// frame), delay with a fraction that skips it (netem's "delay 10ms reorder 25%"). Losses the guest's
// kernel cannot see (unlike a drop in its own egress qdisc or netfilter hook), so its TCP has to
// detect and repair them like on a real wire. The wire counts, per direction, what it did to the
// frames, so a test can show that the faults really happened.
//
// One fault is not random: a tail drop (TailDrop below) loses, once, the first transmissions of the
// last segments of one TCP transfer and its FIN, so that nothing after them reveals the loss and
// only the sender's own timers (a tail loss probe, or the retransmission timeout) can. The wire
// knows the transfer by its server port and its length, takes its sequence numbers and segment size
// from the handshake, and reports what it dropped, how long the hole took to be retransmitted in
// full, and the order of the retransmissions; also, lost tail or not, any segment the sender sent
// past its FIN, and the connection's resets.
//
// Protocol with the test: one JSON command per line on stdin ({"set": {...}} replaces the faults and
// restarts the counters; {"stats": true} reads them), one JSON reply per line on stdout.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pythonExecutable } from './guest-tools';
import type { Netns } from './netns';

/**
 * Probabilities in [0, 1]; delayMs with reorder = the fraction that skips the delay. Unset = 0.
 * `tailDrop` (one sender's direction only) is decided before the random faults.
 */
export interface FaultConfig {
  loss?: number;
  duplicate?: number;
  corrupt?: number;
  reorder?: number;
  delayMs?: number;
  tailDrop?: TailDrop;
}

/**
 * Loses the tail of one TCP transfer once: the first transmission of every segment of the sender's
 * that reaches into the last `segments` × MSS bytes of the transfer, and of its FIN. Retransmissions
 * pass, and so does anything new after the first of them (the episode is over). The connection is
 * the first one the guest opens to `port` after set() (10.0.2.2:port, or any address: only the
 * port is matched).
 */
export interface TailDrop {
  /** The server's port. */
  port: number;
  /** Payload bytes the sender sends on the connection before its FIN (for HTTP: headers + body). */
  transferBytes: number;
  /**
   * Segments to lose, counted in MSS from the end (a segment that straddles the start is lost too);
   * 0 loses nothing: the wire only follows the transfer (TailDropStats.pastFin, resets).
   */
  segments: number;
  /** The sender: weft ('toGuest', a download; the default) or the guest ('toWeft', an upload). */
  direction?: 'toGuest' | 'toWeft';
}

/** The wire (see the header comment). */
const PY_FAULT_WIRE = String.raw`
import argparse, ctypes, fcntl, heapq, json, os, random, select, socket, struct, sys, time

TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_IGNORE_OUTGOING = 23
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
BATCH = 256

libc = ctypes.CDLL(None, use_errno=True)

def setns_fd(fd):
    if libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, 'setns: ' + os.strerror(e))

def in_netns(name, fn):
    own = os.open('/proc/self/ns/net', os.O_RDONLY)
    try:
        target = os.open('/var/run/netns/' + name, os.O_RDONLY)
        try:
            setns_fd(target)
        finally:
            os.close(target)
        try:
            return fn()
        finally:
            setns_fd(own)
    finally:
        os.close(own)

def open_tap(name):
    fd = os.open('/dev/net/tun', os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack('16sH22x', name.encode(), IFF_TAP | IFF_NO_PI))
    fcntl.ioctl(fd, TUNSETOFFLOAD, 0)  # MTU-sized frames with complete checksums, as on a wire
    return fd

def open_packet(dev):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 32 << 20)
    s.bind((dev, ETH_P_ALL))
    s.setblocking(False)
    return s

ap = argparse.ArgumentParser()
ap.add_argument('--guest-netns', required=True)
ap.add_argument('--guest-tap', required=True)
ap.add_argument('--wire-netns', required=True)
ap.add_argument('--wire-dev', required=True)
ap.add_argument('--seed', type=int, default=1)
a = ap.parse_args()

tap = in_netns(a.guest_netns, lambda: open_tap(a.guest_tap))
wire = in_netns(a.wire_netns, lambda: open_packet(a.wire_dev))
cfg = {'loss': 0.0, 'duplicate': 0.0, 'corrupt': 0.0, 'reorder': 0.0, 'delayMs': 0.0}
held = []  # heap of (due, n, direction, frame)
held_n = 0

def fresh_stats():
    return {'frames': 0, 'bytes': 0, 'lost': 0, 'duplicated': 0, 'corrupted': 0,
            'delayed': 0, 'reordered': 0, 'tailDropped': 0, 'writeErrors': 0}

class Direction:
    def __init__(self, seed, write):
        self.rng = random.Random(seed)
        self.write = write
        self.stats = fresh_stats()
        self.held = 0

def write_tap(frame):
    os.write(tap, frame)

def write_wire(frame):
    wire.send(frame)

to_weft = Direction(a.seed * 2 + 1, write_wire)
to_guest = Direction(a.seed * 2 + 2, write_tap)

MASK = 0xFFFFFFFF
TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
MAX_RESENT = 4096

def tcp_fields(frame):
    # (sport, dport, seq, ack, flags, payload length, options) of an IPv4 TCP frame, else None.
    if len(frame) < 54 or frame[12] != 8 or frame[13] != 0 or frame[23] != 6:
        return None
    ihl = (frame[14] & 15) * 4
    t = 14 + ihl
    if len(frame) < t + 20:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack_from('!HHIIBB', frame, t)
    doff = (off >> 4) * 4
    total = (frame[16] << 8) | frame[17]
    return sport, dport, seq, ack, flags, total - ihl - doff, frame[t + 20:t + doff]

def syn_options(opts):
    # (MSS option or None, whether a timestamp option is there) of a SYN.
    mss, ts, i = None, False, 0
    while i < len(opts) and opts[i] != 0:
        if opts[i] == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        if opts[i] == 2 and opts[i + 1] == 4 and i + 4 <= len(opts):
            mss = (opts[i + 2] << 8) | opts[i + 3]
        elif opts[i] == 8:
            ts = True
        i += opts[i + 1]
    return mss, ts

class TailDrop:
    # Loses, once, the first transmissions of the sender's segments that reach into the last
    # segments * MSS bytes of the transfer, and its FIN; then watches the retransmissions fill the
    # hole. Sequence numbers are relative: 0 is the first data byte, transferBytes the FIN.
    def __init__(self, spec):
        self.spec = spec
        self.port = int(spec['port'])
        self.total = int(spec['transferBytes'])
        self.segments = int(spec['segments'])
        self.sender = to_weft if spec.get('direction') == 'toWeft' else to_guest
        self.guest_port = None
        self.isn = None
        self.syn = {}  # 'toWeft' / 'toGuest' -> (mss, timestamps) of that side's SYN
        self.mss = None
        self.zone_start = None
        self.max_end = 0  # highest relative sequence number sent + 1
        self.acked = 0  # highest relative ACK the receiver sent through the wire
        self.acked_at_first_drop = None
        self.dropped = []  # [start, end) of each lost first transmission, FIN counting one
        self.fin_dropped = False
        self.hole = []  # parts of the dropped ranges not retransmitted yet
        self.resent = []  # [start, end, ms after the first drop] of each retransmission into the hole
        self.first_drop = self.last_drop = self.repaired = None
        self.over = False
        self.past_fin = []  # [start, end) of the sender's segments with sequence space past its FIN
        self.past_fin_count = 0
        self.resets = {'toWeft': 0, 'toGuest': 0}

    def drops(self, d, frame, now):
        f = tcp_fields(frame)
        if f is None:
            return False
        sport, dport, seq, ack, flags, plen, opts = f
        if d is to_weft:
            if dport != self.port:
                return False
            if flags & TH_SYN and not flags & TH_ACK and self.guest_port is None:
                self.guest_port = sport
            if sport != self.guest_port:
                return False
        elif self.guest_port is None or sport != self.port or dport != self.guest_port:
            return False
        if flags & TH_SYN:
            self.syn['toWeft' if d is to_weft else 'toGuest'] = syn_options(opts)
            if d is self.sender:
                self.isn = seq
            return False
        if flags & TH_RST:
            self.resets['toWeft' if d is to_weft else 'toGuest'] += 1
            return False
        if self.isn is None:
            return False
        if d is not self.sender:
            if flags & TH_ACK:
                rel = (ack - self.isn - 1) & MASK
                if self.acked < rel <= self.total + 1:
                    self.acked = rel
            return False
        length = plen + (1 if flags & TH_FIN else 0)
        if length <= 0:
            return False
        start = (seq - self.isn - 1) & MASK
        end = start + length
        if start >= 1 << 31:
            return False  # numbered before the first data byte (a keepalive, say)
        if end > self.total + 1 or (flags & TH_FIN and end != self.total + 1):
            self.past_fin_count += 1
            if len(self.past_fin) < 16:
                self.past_fin.append([start, end])
            return False
        if end > self.max_end:
            self.max_end = end
            return self.first_transmission(start, end, flags, now)
        self.retransmission(start, end, now)
        return False

    def segment_size(self):
        if self.mss is None and len(self.syn) == 2:
            (m1, t1), (m2, t2) = self.syn.values()
            self.mss = min(m1 or 536, m2 or 536) - (12 if t1 and t2 else 0)
        return self.mss

    def first_transmission(self, start, end, flags, now):
        if self.over or self.segments <= 0:
            return False
        if self.zone_start is None:
            if self.segment_size() is None:
                return False
            self.zone_start = max(0, self.total - self.segments * self.mss)
        if end <= self.zone_start:
            return False
        if self.first_drop is None:
            self.first_drop = now
            self.acked_at_first_drop = self.acked
        self.last_drop = now
        self.dropped.append([start, end])
        if flags & TH_FIN:
            self.fin_dropped = True
        if self.hole and self.hole[-1][1] == start:
            self.hole[-1][1] = end
        else:
            self.hole.append([start, end])
        return True

    def retransmission(self, start, end, now):
        if not self.dropped or end <= self.dropped[0][0]:
            return
        self.over = True
        if len(self.resent) < MAX_RESENT:
            self.resent.append([start, end, round((now - self.first_drop) * 1000, 3)])
        left = []
        for s, e in self.hole:
            if e <= start or s >= end:
                left.append([s, e])
                continue
            if s < start:
                left.append([s, start])
            if e > end:
                left.append([end, e])
        self.hole = left
        if not left and self.repaired is None:
            self.repaired = now

    def report(self):
        def ms(t):
            return None if t is None or self.first_drop is None else round((t - self.first_drop) * 1000, 3)
        return {
            'guestPort': self.guest_port, 'mss': self.mss, 'zoneStart': self.zone_start,
            'sentUpTo': self.max_end, 'acked': self.acked, 'ackedAtFirstDrop': self.acked_at_first_drop,
            'dropped': self.dropped, 'finDropped': self.fin_dropped,
            'lastDropMs': ms(self.last_drop), 'repairMs': ms(self.repaired),
            'unrepairedBytes': sum(e - s for s, e in self.hole), 'resent': self.resent,
            'pastFin': self.past_fin_count, 'pastFinRanges': self.past_fin, 'resets': self.resets,
        }

tail = None  # the TailDrop of the last set, if any

def emit(d, frame):
    try:
        d.write(frame)
    except OSError:
        d.stats['writeErrors'] += 1

def carry(d, frame, now):
    global held_n
    st = d.stats
    st['frames'] += 1
    st['bytes'] += len(frame)
    if tail is not None and tail.drops(d, frame, now):
        st['tailDropped'] += 1
        return
    r = d.rng
    if cfg['loss'] and r.random() < cfg['loss']:
        st['lost'] += 1
        return
    copies = [frame]
    if cfg['duplicate'] and r.random() < cfg['duplicate']:
        st['duplicated'] += 1
        copies.append(frame)
    if cfg['corrupt'] and r.random() < cfg['corrupt']:
        st['corrupted'] += 1
        b = bytearray(frame)
        b[r.randrange(len(b))] ^= 1 << r.randrange(8)
        copies[0] = bytes(b)
    for c in copies:
        if cfg['delayMs'] and not (cfg['reorder'] and r.random() < cfg['reorder']):
            st['delayed'] += 1
            held_n += 1
            d.held += 1
            heapq.heappush(held, (now + cfg['delayMs'] / 1000, held_n, d, c))
        else:
            if d.held:
                st['reordered'] += 1  # overtakes frames of its direction still held back
            emit(d, c)

def release(now):
    while held and held[0][0] <= now:
        _, _, d, c = heapq.heappop(held)
        d.held -= 1
        emit(d, c)

def stats():
    raw = wire.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
    return {'toWeft': dict(to_weft.stats), 'toGuest': dict(to_guest.stats), 'held': len(held),
            'wireSocketDrops': struct.unpack('II', raw)[1],
            'tailDrop': tail.report() if tail is not None else None}

def reply(obj):
    sys.stdout.write(json.dumps(obj) + '\n')
    sys.stdout.flush()

poll = select.poll()
poll.register(tap, select.POLLIN)
poll.register(wire.fileno(), select.POLLIN)
poll.register(sys.stdin.fileno(), select.POLLIN)
pending = b''
reply({'event': 'ready'})
while True:
    timeout = None
    if held:
        timeout = max(0.0, (held[0][0] - time.monotonic()) * 1000)
    events = poll.poll(timeout)
    now = time.monotonic()
    release(now)
    for fd, ev in events:
        if fd == tap:
            for _ in range(BATCH):
                try:
                    frame = os.read(tap, 65536)
                except BlockingIOError:
                    break
                carry(to_weft, frame, now)
        elif fd == wire.fileno():
            for _ in range(BATCH):
                try:
                    frame = wire.recv(65536)
                except BlockingIOError:
                    break
                carry(to_guest, frame, now)
        else:
            chunk = os.read(fd, 65536)
            if not chunk:
                sys.exit(0)  # the test went away
            pending += chunk
            while b'\n' in pending:
                line, pending = pending.split(b'\n', 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                if 'set' in msg:
                    # Frames held under the old settings go out now, then the counters restart.
                    release(float('inf'))
                    spec = dict(msg['set'])
                    tail_spec = spec.pop('tailDrop', None)
                    cfg.update({k: 0.0 for k in cfg})
                    cfg.update({k: float(v) for k, v in spec.items()})
                    previous = stats()
                    to_weft.stats = fresh_stats()
                    to_guest.stats = fresh_stats()
                    tail = TailDrop(tail_spec) if tail_spec else None
                    reply({'event': 'set', 'config': {**cfg, 'tailDrop': tail_spec}, 'previous': previous})
                else:
                    reply({'event': 'stats', 'config': {**cfg, 'tailDrop': tail.spec if tail else None}, 'stats': stats()})
`;

/** What the wire did to the frames of one direction since the last `set`. */
export interface DirectionStats {
  frames: number;
  bytes: number;
  lost: number;
  duplicated: number;
  corrupted: number;
  /** Copies held back by the delay. */
  delayed: number;
  /** Copies sent at once while earlier copies of the same direction were still held back. */
  reordered: number;
  /** Frames lost to the tail drop. */
  tailDropped: number;
  writeErrors: number;
}

/**
 * What the tail drop did, in relative sequence numbers (0 = the first data byte, transferBytes =
 * the FIN) and milliseconds after its first drop; null: not seen (yet).
 */
export interface TailDropStats {
  /** The guest's port of the connection; null until its SYN passed. */
  guestPort: number | null;
  /** Payload per full segment, from the SYNs (MSS, less 12 bytes with timestamps). */
  mss: number | null;
  /** transferBytes − segments × mss: segments that end after it are lost. */
  zoneStart: number | null;
  /** Highest sequence number the sender sent, + 1. */
  sentUpTo: number;
  /** Highest acknowledgement of the receiver's, and that when the first segment was dropped. */
  acked: number;
  ackedAtFirstDrop: number | null;
  /** [start, end) of each lost first transmission, in order (a FIN counts one). */
  dropped: Array<[number, number]>;
  finDropped: boolean;
  /** When the last one was dropped (the sender had sent the whole tail). */
  lastDropMs: number | null;
  /** When retransmissions had covered every dropped byte and the FIN. */
  repairMs: number | null;
  unrepairedBytes: number;
  /** [start, end, ms] of each retransmission into the hole, in the order it passed (at most 4096). */
  resent: Array<[number, number, number]>;
  /**
   * The sender's segments with sequence space past its FIN (data at or after transferBytes, or a
   * FIN elsewhere), and the first 16 of them. None is right, whatever the wire dropped.
   */
  pastFin: number;
  pastFinRanges: Array<[number, number]>;
  /** RSTs on the connection, by the direction they travelled. */
  resets: { toWeft: number; toGuest: number };
}

export interface WireStats {
  toWeft: DirectionStats;
  toGuest: DirectionStats;
  /** Frames held back right now. */
  held: number;
  /** Frames the kernel dropped before the wire read them from weft's side (AF_PACKET statistics). */
  wireSocketDrops: number;
  /** Null unless the last set() had a tailDrop. */
  tailDrop: TailDropStats | null;
}

export interface FaultWireOptions {
  /** Where the python program is written. */
  dir: string;
  /** The namespace the guest's TAP is created in (the wire owns it). */
  guestNs: Netns;
  guestTap?: string;
  /** The namespace of weft's TAP, read and written with an AF_PACKET socket. */
  wireNs: Netns;
  wireDev?: string;
  seed: number;
}

/** Drives the fault wire process: one JSON command per line in, one JSON reply per line out. */
export class FaultWire {
  private buffered = '';
  private readonly lines: string[] = [];
  private waiter: (() => void) | undefined;
  stderr = '';

  private constructor(readonly child: ChildProcess) {
    child.stdout!.setEncoding('utf8').on('data', (s: string) => {
      const parts = (this.buffered + s).split('\n');
      this.buffered = parts.pop() ?? '';
      this.lines.push(...parts.filter((l) => l.trim() !== ''));
      this.waiter?.();
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (this.stderr += s));
    child.once('exit', () => this.waiter?.());
  }

  /**
   * Starts the wire (tracked by the wire namespace, so its cleanup kills it) and waits until it has
   * created the guest's TAP and opened weft's side. The guest's TAP still has to be brought up.
   */
  static async start(o: FaultWireOptions): Promise<FaultWire> {
    const script = join(o.dir, 'fault_wire.py');
    writeFileSync(script, PY_FAULT_WIRE);
    const wire = new FaultWire(
      o.wireNs.track(
        spawn(
          pythonExecutable(),
          [
            script,
            '--guest-netns',
            o.guestNs.name,
            '--guest-tap',
            o.guestTap ?? 'tap0',
            '--wire-netns',
            o.wireNs.name,
            '--wire-dev',
            o.wireDev ?? 'tap0',
            '--seed',
            String(o.seed),
          ],
          { stdio: ['pipe', 'pipe', 'pipe'] },
        ),
      ),
    );
    const first = await wire.nextLine();
    if (first.event !== 'ready') throw new Error(`the fault wire said ${JSON.stringify(first)} instead of ready; stderr:\n${wire.stderr}`);
    return wire;
  }

  private async nextLine(timeoutMs = 10_000): Promise<Record<string, unknown>> {
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length === 0) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`fault wire exited (${this.child.exitCode ?? this.child.signalCode}); stderr:\n${this.stderr}`);
      }
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no reply from the fault wire within ${timeoutMs} ms; stderr:\n${this.stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    return JSON.parse(this.lines.shift()!) as Record<string, unknown>;
  }

  private async command(msg: object): Promise<Record<string, unknown>> {
    this.child.stdin!.write(`${JSON.stringify(msg)}\n`);
    return this.nextLine();
  }

  /** Replaces the faults (unset ones become 0) and restarts the counters; held frames go out first. */
  async set(config: FaultConfig): Promise<void> {
    await this.command({ set: config });
  }

  async stats(): Promise<WireStats> {
    return (await this.command({ stats: true })).stats as WireStats;
  }

  /** Ends the wire (it exits when its stdin closes). */
  stop(): void {
    this.child.stdin?.end();
  }
}
