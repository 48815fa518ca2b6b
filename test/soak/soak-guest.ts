// The soak's guest side: a python client that opens TCP connections and UDP flows at a steady rate
// in a rotation of behaviours, plus a curl loop, run inside a guest namespace; progress is followed
// from their output.

import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describeExec, pythonExecutable } from '../harness/guest-tools';
import type { Netns } from '../harness/netns';

export interface GuestCounts {
  tcpAttempts: number;
  tcpOk: number;
  tcpRefused: number;
  tcpErrors: number;
  udpFlows: number;
  udpOk: number;
  udpErrors: number;
  bytes: number;
  curlOk: number;
  curlFailed: number;
  errors: string[];
}

export const emptyCounts = (): GuestCounts => ({
  tcpAttempts: 0,
  tcpOk: 0,
  tcpRefused: 0,
  tcpErrors: 0,
  udpFlows: 0,
  udpOk: 0,
  udpErrors: 0,
  bytes: 0,
  curlOk: 0,
  curlFailed: 0,
  errors: [],
});

/** TCP connections the guest made (python client and curl loop). */
export const tcpConnections = (c: GuestCounts): number => c.tcpAttempts + c.curlOk + c.curlFailed;

/** The sum of two runs' counts (errors concatenated). */
export function addCounts(a: GuestCounts, b: GuestCounts): GuestCounts {
  const out = emptyCounts();
  for (const k of Object.keys(out) as Array<keyof GuestCounts>) {
    if (k === 'errors') out.errors = [...a.errors, ...b.errors];
    else out[k] = a[k] + b[k];
  }
  return out;
}

/**
 * The guest's client: `soak_client.py HOST ECHO HTTP CLOSED UDP SECONDS TCP_RATE UDP_RATE FIRST_UDP_PORT`. Opens
 * TCP connections at TCP_RATE/s in a rotation of behaviours (echo with the guest's FIN first, HTTP
 * with the server's FIN first, an abort by RST, a refused port; every 50th echo moves 1 MiB), and
 * UDP flows at UDP_RATE/s, each from a new socket (a new source port): two datagrams, both echoed
 * within 10 s (on a 2-core machine shared with other work, echoes were seen to take over 3 s).
 * Prints a JSON progress line each second and a final one.
 */
const PY_SOAK_CLIENT = String.raw`
import asyncio, json, os, random, socket, struct, sys, time

host = sys.argv[1]
echo_port, http_port, closed_port, udp_port = (int(x) for x in sys.argv[2:6])
seconds, tcp_rate, udp_rate = float(sys.argv[6]), float(sys.argv[7]), float(sys.argv[8])
# UDP flows bind their own source ports, counting up from here (10000…31999, below the ephemeral
# range), so no two flows share one: with kernel-chosen ports a reused port within weft's idle
# timeout would continue the old flow, and weft would see fewer flows than the guest made.
udp_first_port = int(sys.argv[9])
MAX_INFLIGHT = 200
TIMEOUT = 120  # generous: on a loaded 2-core machine a 1 MiB echo among hundreds of connections can take 30 s
rng = random.Random(7)
blob = os.urandom(1 << 20)
c = {'tcpAttempts': 0, 'tcpOk': 0, 'tcpRefused': 0, 'tcpErrors': 0,
     'udpFlows': 0, 'udpOk': 0, 'udpErrors': 0, 'bytes': 0}
errors = []

def fail(kind, what):
    c[kind] += 1
    if len(errors) < 20:
        errors.append(what)

async def echo(n, size):
    reader, writer = await asyncio.open_connection(host, echo_port)
    off = (n * 7919) % (len(blob) - size) if size < len(blob) else 0
    data = blob[off:off + size]
    writer.write(data)
    writer.write_eof()
    got = bytearray()
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            break
        got += chunk
    writer.close()
    await writer.wait_closed()
    if bytes(got) != data:
        raise ValueError('echo mismatch: sent %d, got %d' % (len(data), len(got)))
    c['bytes'] += 2 * size

async def http():
    reader, writer = await asyncio.open_connection(host, http_port)
    writer.write(b'GET /hello HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n')
    body = await reader.read()  # the server closes first
    writer.close()
    await writer.wait_closed()
    if not body.startswith(b'HTTP/1.1 200') or b'hello from the weft test server\n' not in body:
        raise ValueError('bad HTTP reply: %r' % body[:80])

async def abort(size):
    reader, writer = await asyncio.open_connection(host, echo_port)
    writer.write(blob[:size])
    await reader.readexactly(min(size, 1000))
    sock = writer.get_extra_info('socket')
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    writer.transport.abort()  # close() with linger 0: RST

async def refused():
    try:
        _, writer = await asyncio.open_connection(host, closed_port)
    except ConnectionRefusedError:
        c['tcpRefused'] += 1
        return
    writer.close()
    raise ValueError('connected to a closed port')

async def one_tcp(n):
    c['tcpAttempts'] += 1
    kind = n % 10
    try:
        if kind < 5:
            size = (1 << 20) if n % 50 == 0 else rng.randrange(1, 65536)
            await asyncio.wait_for(echo(n, size), TIMEOUT)
        elif kind < 8:
            await asyncio.wait_for(http(), TIMEOUT)
        elif kind == 8:
            await asyncio.wait_for(abort(rng.randrange(1, 16384)), TIMEOUT)
        else:
            await asyncio.wait_for(refused(), TIMEOUT)
            return
        c['tcpOk'] += 1
    except Exception as e:
        fail('tcpErrors', 'tcp %d (kind %d): %r' % (n, kind, e))

async def one_udp(n):
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.bind(('0.0.0.0', 10000 + (udp_first_port - 10000 + n) % 22000))  # n: one per pacing tick
        s.connect((host, udp_port))
        c['udpFlows'] += 1
        sent = [blob[n % 1000:n % 1000 + rng.randrange(1, 1400)] for _ in range(2)]
        for d in sent:
            await loop.sock_sendall(s, d)
        got = []
        deadline = loop.time() + 10
        while len(got) < len(sent):
            got.append(await asyncio.wait_for(loop.sock_recv(s, 65535), max(0.01, deadline - loop.time())))
        if sorted(got) != sorted(sent):
            raise ValueError('udp echo mismatch')
        c['udpOk'] += 1
    except Exception as e:
        fail('udpErrors', 'udp %d: %r' % (n, e))
    finally:
        s.close()

async def pace(rate, make, tasks):
    if rate <= 0:
        return
    start = time.monotonic()
    n = 0
    while True:
        due = start + n / rate
        now = time.monotonic()
        if now - start >= seconds:
            return
        if due > now:
            await asyncio.sleep(due - now)
            continue
        if len(tasks) < MAX_INFLIGHT:
            t = asyncio.ensure_future(make(n))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        n += 1

async def progress(done):
    start = time.monotonic()
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 1)
        except asyncio.TimeoutError:
            pass
        print(json.dumps(dict(c, t=round(time.monotonic() - start, 1))), flush=True)

async def main():
    tasks = set()
    done = asyncio.Event()
    reporter = asyncio.ensure_future(progress(done))
    await asyncio.gather(pace(tcp_rate, one_tcp, tasks), pace(udp_rate, one_udp, tasks))
    if tasks:
        await asyncio.wait(list(tasks), timeout=TIMEOUT + 10)
    done.set()
    await reporter
    print(json.dumps(dict(c, final=True, errors=errors)), flush=True)

asyncio.run(main())
`;

/** Writes the client into `dir`; returns its path. */
export function writeSoakClient(dir: string): string {
  const path = join(dir, 'soak_client.py');
  writeFileSync(path, PY_SOAK_CLIENT);
  return path;
}

/** Servers on the host's loopback, reached by the guest at the gateway 10.0.2.2. */
export interface SoakTargets {
  echoPort: number;
  httpPort: number;
  closedPort: number;
  udpPort: number;
}

export interface GuestRun {
  latest: GuestCounts;
  done: Promise<GuestCounts>;
}

/** Runs the python client and a curl loop in the guest for `seconds`; `latest` follows their progress. */
export function startGuestTraffic(
  ns: Netns,
  client: string,
  targets: SoakTargets,
  o: { seconds: number; tcpRate: number; udpRate: number; firstUdpPort: number },
): GuestRun {
  const run: GuestRun = { latest: emptyCounts(), done: Promise.resolve(emptyCounts()) };
  const py = ns.track(
    spawn(
      'ip',
      [
        'netns',
        'exec',
        ns.name,
        pythonExecutable(),
        client,
        '10.0.2.2',
        ...[targets.echoPort, targets.httpPort, targets.closedPort, targets.udpPort].map(String),
        String(o.seconds),
        String(o.tcpRate),
        String(o.udpRate),
        String(o.firstUdpPort),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    ),
  );
  const curlScript = [
    `end=$((SECONDS + ${Math.ceil(o.seconds)})); ok=0; failed=0`,
    `while [ $SECONDS -lt $end ]; do`,
    `  if curl -sS -o /dev/null --fail --max-time 10 http://10.0.2.2:${targets.httpPort}/hello; then ok=$((ok+1)); else failed=$((failed+1)); fi`,
    `  sleep 0.25`,
    `done`,
    `echo "$ok $failed"`,
  ].join('\n');
  const curl = ns.track(spawn('ip', ['netns', 'exec', ns.name, 'bash', '-c', curlScript], { stdio: ['ignore', 'pipe', 'pipe'] }));

  let pyOut = '';
  let pyErr = '';
  let final: Record<string, unknown> | undefined;
  py.stdout!.setEncoding('utf8').on('data', (s: string) => {
    pyOut += s;
    const lines = pyOut.split('\n');
    pyOut = lines.pop() ?? '';
    for (const l of lines) {
      if (!l.trim()) continue;
      const p = JSON.parse(l) as Record<string, unknown>;
      Object.assign(run.latest, Object.fromEntries(Object.entries(p).filter(([k]) => k in run.latest && k !== 'errors')));
      if (p.final) final = p;
    }
  });
  py.stderr!.setEncoding('utf8').on('data', (s: string) => (pyErr += s));
  let curlOut = '';
  let curlErr = '';
  curl.stdout!.setEncoding('utf8').on('data', (s: string) => (curlOut += s));
  curl.stderr!.setEncoding('utf8').on('data', (s: string) => (curlErr = (curlErr + s).slice(-2000)));

  const exited = (p: ChildProcess) =>
    new Promise<number | null>((resolve) => {
      if (p.exitCode !== null || p.signalCode !== null) resolve(p.exitCode);
      else p.once('exit', (code) => resolve(code));
    });
  run.done = (async () => {
    const [pyCode, curlCode] = await Promise.all([exited(py), exited(curl)]);
    if (pyCode !== 0 || !final) throw new Error(`guest client in ${ns.name} failed (exit ${pyCode}):\n${pyErr.slice(-3000)}`);
    const m = /^(\d+) (\d+)$/m.exec(curlOut);
    if (curlCode !== 0 || !m) throw new Error(`guest curl loop in ${ns.name} failed (exit ${curlCode}): ${curlOut} ${curlErr}`);
    const counts = { ...run.latest, errors: (final.errors as string[]) ?? [], curlOk: Number(m[1]), curlFailed: Number(m[2]) };
    if (counts.curlFailed > 0) counts.errors.push(`curl: ${curlErr.trim().split('\n').slice(-3).join(' | ')}`);
    run.latest = counts;
    return counts;
  })();
  return run;
}

/** The guest kernel's count of retransmitted SYNs (TcpExt TCPSynRetrans in /proc/net/netstat). */
export async function guestSynRetransmits(ns: Netns): Promise<number> {
  const r = await ns.exec(['cat', '/proc/net/netstat']);
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('TcpExt:'));
  if (r.code !== 0 || lines.length < 2) throw new Error(`cannot read the guest's /proc/net/netstat: ${describeExec(r)}`);
  const names = lines[0].split(/\s+/);
  const values = lines[1].split(/\s+/);
  const i = names.indexOf('TCPSynRetrans');
  return i < 0 ? 0 : Number(values[i]);
}
