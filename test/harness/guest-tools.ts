// Small programs a netns guest runs against weft (python3 scripts written to a temp dir, shell
// pipelines) and host-side helpers: command lookup, a process's open fd count.
//
// The Python scripts reproduce test/support/test-servers.ts's deterministic stream exactly (same
// xorshift32 block, same per-block rotation), so a guest can produce or check it without the host.

import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UDHCPC_SCRIPT, type ExecResult, type Netns } from './netns';

/** The deterministic 1 MiB base block and stream, as in test-servers.ts (keep the two in step). */
const PY_DETERMINISTIC = `
import array, sys

BLOCK = 1 << 20

def base_block():
    words = array.array('I', bytes(BLOCK))
    x = 0x2545F491
    for i in range(BLOCK // 4):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        words[i] = x
    if sys.byteorder == 'big':
        words.byteswap()
    return words.tobytes()

def deterministic_chunks(base, total):
    left = total
    k = 0
    while left > 0:
        off = ((k * 0x9E3779B1) & 0xFFFFFFFF) >> 12
        for part in (memoryview(base)[off:], memoryview(base)[:off]):
            if left == 0 or len(part) == 0:
                continue
            piece = part if len(part) <= left else part[:left]
            left -= len(piece)
            yield piece
        k += 1
`;

/** `stream.py N`: writes the deterministic stream of N bytes to stdout, then its sha256 to stderr. */
const PY_STREAM = `${PY_DETERMINISTIC}
import hashlib
n = int(sys.argv[1])
h = hashlib.sha256()
out = sys.stdout.buffer
for chunk in deterministic_chunks(base_block(), n):
    h.update(chunk)
    out.write(chunk)
out.flush()
print(h.hexdigest(), file=sys.stderr)
`;

/**
 * `parallel_echo.py HOST PORT CONNS BYTES`: opens CONNS connections to an echo server, waits until all
 * are open, then sends BYTES on each (distinct content), half-closes, and checks the echo. Prints JSON.
 */
const PY_PARALLEL_ECHO = `${PY_DETERMINISTIC}
import asyncio, hashlib, json, time

host, port, conns, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
base = base_block()
double = memoryview(base + base)

def payload(i):
    if size <= BLOCK:
        off = (i * 7919) % BLOCK
        return [double[off:off + size]]
    return list(deterministic_chunks(base, size))

async def main():
    opened = 0
    failed_open = 0
    all_open = asyncio.Event()
    errors = []

    def settle():
        if opened + failed_open == conns:
            all_open.set()

    async def one(i):
        nonlocal opened, failed_open
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except Exception as e:
            failed_open += 1
            errors.append(f'{i} open: {e!r}')
            settle()
            return False
        opened += 1
        settle()
        await all_open.wait()
        chunks = payload(i)
        want = hashlib.sha256()
        for c in chunks:
            want.update(c)
        got = hashlib.sha256()
        count = 0
        async def send():
            for c in chunks:
                for off in range(0, len(c), 65536):
                    writer.write(c[off:off + 65536])
                    await writer.drain()
            writer.write_eof()
        async def recv():
            nonlocal count
            while True:
                data = await reader.read(262144)
                if not data:
                    return
                got.update(data)
                count += len(data)
        try:
            await asyncio.gather(send(), recv())
        except Exception as e:
            errors.append(f'{i} transfer: {e!r}')
            writer.close()
            return False
        writer.close()
        if count != size or got.digest() != want.digest():
            errors.append(f'{i}: got {count} bytes, digest match {got.digest() == want.digest()}')
            return False
        return True

    start = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(conns)))
    print(json.dumps({
        'conns': conns, 'opened': opened, 'ok': sum(1 for r in results if r),
        'seconds': round(time.monotonic() - start, 2), 'errors': errors[:20],
    }))

asyncio.run(main())
`;

/**
 * `udp_echo.py HOST PORT COUNT MAXSIZE`: sends COUNT datagrams of sizes 1…MAXSIZE (a few in flight
 * at a time) to a UDP echo server and checks that every one comes back intact. Prints JSON; stops
 * early once 10 are missing or corrupt.
 */
const PY_UDP_ECHO = `${PY_DETERMINISTIC}
import collections, json, socket, time

host, port, count, maxsize = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
WINDOW = 8
base = base_block()
sizes = [1 + (i * 7919) % maxsize for i in range(count)]
sizes[0] = 1
sizes[-1] = maxsize
payloads = [base[(i * 4099) % (BLOCK - maxsize):][:n] for i, n in enumerate(sizes)]

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
s.connect((host, port))
received = 0
missing = 0
corrupt = 0
errors = []
start = time.monotonic()
for w in range(0, count, WINDOW):
    batch = payloads[w:w + WINDOW]
    want = collections.Counter(batch)
    for p in batch:
        s.send(p)
    got = 0
    deadline = time.monotonic() + 3
    while got < len(batch):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data = s.recv(65535)
        except socket.timeout:
            break
        except OSError as e:
            errors.append(repr(e))
            continue
        got += 1
        received += 1
        if want[data] > 0:
            want[data] -= 1
        else:
            corrupt += 1
    missing += sum(want.values())
    if missing + corrupt >= 10:
        break  # broken enough: report now rather than wait out every window
print(json.dumps({
    'sent': count, 'received': received, 'missing': missing, 'corrupt': corrupt,
    'sentBeforeStop': min(count, w + WINDOW),
    'seconds': round(time.monotonic() - start, 2), 'errors': errors[:20],
}))
`;

export interface GuestScripts {
  python: string;
  /** `stream.py N` → the deterministic stream on stdout, its sha256 on stderr. */
  stream: string;
  /** `parallel_echo.py HOST PORT CONNS BYTES` → JSON {conns, opened, ok, seconds, errors}. */
  parallelEcho: string;
  /** `udp_echo.py HOST PORT COUNT MAXSIZE` → JSON {sent, received, missing, corrupt, sentBeforeStop, seconds, errors}. */
  udpEcho: string;
}

/** Writes the guest scripts into `dir`; `python` is the host's python3, resolved to a real path. */
export function writeGuestScripts(dir: string): GuestScripts {
  const write = (name: string, text: string) => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };
  return {
    python: pythonExecutable(),
    stream: write('stream.py', PY_STREAM),
    parallelEcho: write('parallel_echo.py', PY_PARALLEL_ECHO),
    udpEcho: write('udp_echo.py', PY_UDP_ECHO),
  };
}

let python: string | undefined;

/** The real python3 binary (not a pyenv shim, which may behave differently inside `ip netns exec`). */
export function pythonExecutable(): string {
  python ??= execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();
  return python;
}

/** Commands from `names` that are not on PATH. */
export function missingCommands(names: readonly string[]): string[] {
  return names.filter((n) => {
    try {
      execFileSync('sh', ['-c', `command -v ${n}`], { stdio: 'ignore' });
      return false;
    } catch {
      return true;
    }
  });
}

/** Runs a bash script (with pipefail) inside the namespace. */
export function guestBash(ns: Netns, script: string, timeoutMs = 20_000): Promise<ExecResult> {
  return ns.exec(['bash', '-c', `set -o pipefail\n${script}`], timeoutMs);
}

/** Quotes one word for a POSIX shell. */
export function shq(word: string): string {
  return `'${word.replaceAll("'", "'\\''")}'`;
}

/** Open file descriptors of a process (Linux /proc). */
export function openFdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Polls until `pid` has at most `max` open fds; resolves with the last count seen. */
export async function waitForFdCount(pid: number, max: number, timeoutMs: number): Promise<number> {
  const start = Date.now();
  for (;;) {
    const n = openFdCount(pid);
    if (n <= max || Date.now() - start >= timeoutMs) return n;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** What a process's fds point at, sockets resolved to their TCP/UDP endpoints (for failure messages). */
export function describeFds(pid: number): string[] {
  const sockets = new Map<string, string>();
  for (const proto of ['tcp', 'udp'] as const) {
    let table: string;
    try {
      table = readFileSync(`/proc/${pid}/net/${proto}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of table.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      sockets.set(cols[9], `${proto} ${hexEndpoint(cols[1])} → ${hexEndpoint(cols[2])} state ${cols[3]}`);
    }
  }
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    out.push(`${fd} → ${target}${inode && sockets.has(inode) ? ` (${sockets.get(inode)})` : ''}`);
  }
  return out;
}

/** "0100007F:1F90" (little-endian IPv4 : port, as /proc/net/tcp prints them) → "127.0.0.1:8080". */
function hexEndpoint(text: string): string {
  const [ip, port] = text.split(':');
  const n = parseInt(ip, 16);
  return `${n & 0xff}.${(n >>> 8) & 0xff}.${(n >>> 16) & 0xff}.${n >>> 24}:${parseInt(port, 16)}`;
}

/** One-line description of an exec result for assertion messages. */
export function describeExec(r: ExecResult): string {
  return `exit ${r.code}${r.signal ? ` (${r.signal})` : ''}${r.timedOut ? ' (timed out)' : ''}\nstdout: ${r.stdout.slice(-2000)}\nstderr: ${r.stderr.slice(-2000)}`;
}

/** Leases an address for tap0 in `ns` with busybox udhcpc, sending `hostname` (option 12) as a guest's DHCP client does. */
export async function leaseWithHostname(ns: Netns, hostname: string): Promise<string> {
  const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5', '-x', `hostname:${hostname}`], 40_000);
  if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
  const addr = await ns.exec(['ip', '-4', '-o', 'addr', 'show', 'tap0']);
  const m = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(addr.stdout);
  if (!m) throw new Error(`no address on tap0: ${addr.stdout}`);
  return m[1];
}
