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
// Protocol with the test: one JSON command per line on stdin ({"set": {...}} replaces the faults and
// restarts the counters; {"stats": true} reads them), one JSON reply per line on stdout.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pythonExecutable } from './guest-tools';
import type { Netns } from './netns';

/** Probabilities in [0, 1]; delayMs with reorder = the fraction that skips the delay. Unset = 0. */
export interface FaultConfig { loss?: number; duplicate?: number; corrupt?: number; reorder?: number; delayMs?: number }

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
            'delayed': 0, 'reordered': 0, 'writeErrors': 0}

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
            'wireSocketDrops': struct.unpack('II', raw)[1]}

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
                    cfg.update({k: 0.0 for k in cfg})
                    cfg.update({k: float(v) for k, v in msg['set'].items()})
                    previous = stats()
                    to_weft.stats = fresh_stats()
                    to_guest.stats = fresh_stats()
                    reply({'event': 'set', 'config': cfg, 'previous': previous})
                else:
                    reply({'event': 'stats', 'config': cfg, 'stats': stats()})
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
  writeErrors: number;
}

export interface WireStats {
  toWeft: DirectionStats;
  toGuest: DirectionStats;
  /** Frames held back right now. */
  held: number;
  /** Frames the kernel dropped before the wire read them from weft's side (AF_PACKET statistics). */
  wireSocketDrops: number;
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
    const wire = new FaultWire(o.wireNs.track(spawn(pythonExecutable(), [
      script, '--guest-netns', o.guestNs.name, '--guest-tap', o.guestTap ?? 'tap0',
      '--wire-netns', o.wireNs.name, '--wire-dev', o.wireDev ?? 'tap0', '--seed', String(o.seed),
    ], { stdio: ['pipe', 'pipe', 'pipe'] })));
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
