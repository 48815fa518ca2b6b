// Several real QEMU guests on one LAN through one `weft vm` (test/harness/qemu-guest.ts):
//
// - over one `--qemu unix:PATH` socket: two guests at once get distinct leases, resolve each other
//   by DHCP hostname (<hostname>.weft.internal), ping each other, move 8 MiB over TCP from one to
//   the other with the sha256 equal on both ends, and both fetch from this host through weft; then
//   one powers off and a new QEMU with its MAC and name connects (a reboot): it leases again, and it
//   and the guest still running reach each other;
// - over `--dgram LPORT:RPORT1,RPORT2` (one port of weft's for two QEMUs): the guests resolve and
//   ping each other.
//
// The guests run at once and wait for each other over the LAN itself: a guest that needs the other
// to stay up listens with `nc -l` until the other says it is done with it.

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuMissing, type GuestRun, type QemuGuest, type QemuLink } from '../harness/qemu-guest';
import { guestScript, QemuSuite, resultOf } from '../harness/qemu-suite';
import type { WeftProcess } from '../harness/weft-process';
import { freeUdpPorts, HELLO_TEXT, sha256Hex, startHttpTestServer, type TestServer } from '../support/test-servers';

const SUITE = 'weft vm with several QEMU guests on one LAN';
const TRANSFER_BYTES = 8 << 20;
const MAC_A = '52:54:00:12:34:0a';
const MAC_B = '52:54:00:12:34:0b';
/** Two guests at once under TCG, with the 8 MiB transfer, on a loaded 2-core machine. */
const BOOT_TIMEOUT_MS = 150_000;

const missing = qemuMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

// ── the guests' side ─────────────────────────────────────────────────────────────────────────────

const GUEST_FUNCTIONS = `
result() { echo "WEFT-RESULT $*"; }
addr_of() { ip -o -4 addr show dev eth0 | awk '{ print $4 }' | cut -d/ -f1; }

retry() { # retry N CMD…: runs CMD until it succeeds, at most N times, 0.5 s apart
  n=$1; shift; i=1
  while ! "$@"; do [ $i -ge $n ] && return 1; usleep 500000; i=$((i + 1)); done
}

wait_pid() { # wait_pid PID TENTHS: waits for PID to end; kills it after that many tenths of a second
  i=0; while kill -0 "$1" 2>/dev/null; do [ $i -ge "$2" ] && { kill "$1"; return 1; }; usleep 100000; i=$((i + 1)); done
}

named_lease() { # NAME: DHCP again, sending NAME as the hostname (option 12) so the others find it
  udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 -O mtu -x "hostname:$1" > /dev/null 2>&1
  result lease rc=$? ip=$(addr_of)
}

resolve() { # RESULT HOST: waits for HOST to resolve (the other guest may lease later)
  retry 60 sh -c "nslookup $2 > /tmp/ns 2>&1"; rc=$?
  result "$1" rc=$rc addr=$(sed -n '/^Name:/,$ s/^Address: *//p' /tmp/ns | grep -E '^[0-9.]+$' | head -n 1)
}

ping_check() { # RESULT HOST: three echoes, each given 5 s. After its last echo, "ping -c 3" waits
  # only two round trips (at least 1 s): a TCG guest stalled that long on a loaded machine lost one.
  n=0; rc=1
  for i in 1 2 3; do ping -c 1 -W 5 "$2" > /dev/null 2>&1 && { n=$((n + 1)); rc=0; }; done
  result "$1" rc=$rc replies=$n
}

host_get() { # RESULT: the test server's /hello through weft's router
  wget -q -O /tmp/hello "http://10.0.2.2:$HTTP_PORT/hello"; rc=$?
  result "$1" rc=$rc sha256=$(sha256sum /tmp/hello 2>/dev/null | cut -d' ' -f1)
}

tell() { # HOST PORT: says "done" to the other guest's nc -l (retried until it listens)
  retry 60 sh -c "echo done | nc $1 $2"
}

# listen PORT FILE: nc -l in the background, what it receives into FILE; its PID in $listener.
# busybox nc half-closes when its input ends, and a sender exits once it sees that: so the input
# is a pipe that stays open, not the /dev/null a background job gets.
listen() {
  sleep 900 | nc -l -p "$1" > "$2" &
  listener=$!
}
`;

/** Guest A on the stream LAN: sends 8 MiB to B, then stays until B is done with it. */
const STREAM_A = `
listen 9001 /tmp/b-done; wait_for_b=$listener
named_lease guest-a
resolve dns-b guest-b.weft.internal
ping_check ping-b guest-b.weft.internal
host_get host
head -c "$BYTES" /dev/urandom > /tmp/data
result sent sha256=$(sha256sum /tmp/data | cut -d' ' -f1)
retry 60 sh -c "nc guest-b.weft.internal 9000 < /tmp/data"
result send rc=$?
wait_pid $wait_for_b 900
result released by=$(cat /tmp/b-done)
`;

/** Guest B: receives A's 8 MiB; after A is gone, waits for the rebooted A and pings it too. */
const STREAM_B = `
listen 9000 /tmp/got; receiver=$listener
listen 9002 /tmp/a2-hello; wait_for_a2=$listener
named_lease guest-b
resolve dns-a guest-a.weft.internal
ping_check ping-a guest-a.weft.internal
host_get host
wait_pid $receiver 900
result received bytes=$(stat -c %s /tmp/got) sha256=$(sha256sum /tmp/got | cut -d' ' -f1)
tell guest-a.weft.internal 9001
wait_pid $wait_for_a2 1200
result a2-hello said=$(cat /tmp/a2-hello)
resolve dns-a2 guest-a.weft.internal
ping_check ping-a2 guest-a.weft.internal
tell guest-a.weft.internal 9001
`;

/** A after its reboot: a new QEMU with A's MAC and name. */
const STREAM_A_REBOOTED = `
listen 9001 /tmp/b-done; wait_for_b=$listener
named_lease guest-a
ping_check ping-gateway 10.0.2.2
host_get host
resolve dns-b guest-b.weft.internal
ping_check ping-b guest-b.weft.internal
tell guest-b.weft.internal 9002
wait_pid $wait_for_b 900
result released by=$(cat /tmp/b-done)
`;

/**
 * Two guests over dgram: each resolves and pings the other, and each stays up until the other has
 * said it is done with it (a guest whose pings answer at once finishes in well under a second).
 */
const DGRAM_C = `
listen 9001 /tmp/d-done; wait_for_d=$listener
named_lease guest-c
resolve dns-d guest-d.weft.internal
ping_check ping-d guest-d.weft.internal
tell guest-d.weft.internal 9002
wait_pid $wait_for_d 900
result released by=$(cat /tmp/d-done)
`;

const DGRAM_D = `
listen 9002 /tmp/c-done; wait_for_c=$listener
named_lease guest-d
resolve dns-c guest-c.weft.internal
ping_check ping-c guest-c.weft.internal
host_get host
tell guest-c.weft.internal 9001
wait_pid $wait_for_c 900
result released by=$(cat /tmp/c-done)
`;

// ── the host's side ──────────────────────────────────────────────────────────────────────────────

describe.skipIf(missing !== undefined)(SUITE, () => {
  const suite = QemuSuite.use(SUITE, 'qemu-lan');
  let http: TestServer | undefined;

  beforeAll(async () => {
    if (!suite.skipReason) http = await startHttpTestServer();
  });

  afterAll(async () => {
    await http?.close();
  });

  const startWeft = (linkArgs: string[]) => suite.startWeft(['vm', ...linkArgs, '--allow-host-loopback']);

  /** SIGTERM: weft exits with 0 and logs its counters. */
  async function stopWeft(weft: WeftProcess): Promise<Record<string, unknown>> {
    weft.kill('SIGTERM');
    const exit = await weft.waitForExit(5_000);
    expect(exit.code, weft.stderr).toBe(0);
    expect(weft.events.filter((e) => e.event === 'warning' || e.event === 'error')).toEqual([]);
    return weft.events.find((e) => e.event === 'stopped') as Record<string, unknown>;
  }

  function boot(label: string, link: QemuLink, mac: string, body: string): QemuGuest {
    const script = guestScript(GUEST_FUNCTIONS, { HTTP_PORT: http!.port, BYTES: TRANSFER_BYTES }, body);
    return suite.boot({ link, script, label, mac, timeoutMs: BOOT_TIMEOUT_MS });
  }

  const finish = (guest: QemuGuest): Promise<GuestRun> => suite.finish(guest);

  const helloOk = { rc: '0', sha256: sha256Hex(HELLO_TEXT) };

  it(
    'two QEMUs on one --qemu socket: own leases, names, ping, 8 MiB guest to guest, the host; then one reboots and rejoins',
    async ({ skip }) => {
      if (suite.skipReason) skip(suite.skipReason);
      const link: QemuLink = { kind: 'stream', path: join(suite.tempDir('qemu-lan'), 'weft.sock') };
      const weft = await startWeft(['--qemu', `unix:${link.path}`]);

      const b = boot('guest B', link, MAC_B, STREAM_B);
      const a = boot('guest A', link, MAC_A, STREAM_A);
      const runA = await finish(a);
      // A has powered off: its client leaves the LAN, B keeps its own.
      const leftA = await weft.waitForEvent('client-disconnected');
      expect(leftA.clients).toBe(1);
      const runA2 = await finish(boot('guest A after a reboot', link, MAC_A, STREAM_A_REBOOTED));
      const runB = await finish(b);

      const ipA = resultOf(runA, 'lease').ip;
      const ipB = resultOf(runB, 'lease').ip;
      expect(ipA).toMatch(/^10\.0\.2\.\d+$/);
      expect(ipB).toMatch(/^10\.0\.2\.\d+$/);
      expect(ipA).not.toBe(ipB);
      expect(resultOf(runA, 'dns-b')).toEqual({ rc: '0', addr: ipB });
      expect(resultOf(runB, 'dns-a')).toEqual({ rc: '0', addr: ipA });
      expect(resultOf(runA, 'ping-b')).toEqual({ rc: '0', replies: '3' });
      expect(resultOf(runB, 'ping-a')).toEqual({ rc: '0', replies: '3' });
      expect(resultOf(runA, 'host')).toEqual(helloOk);
      expect(resultOf(runB, 'host')).toEqual(helloOk);
      expect(resultOf(runA, 'send').rc).toBe('0');
      expect(resultOf(runB, 'received')).toEqual({ bytes: String(TRANSFER_BYTES), sha256: resultOf(runA, 'sent').sha256 });
      expect(resultOf(runA, 'released').by).toBe('done');

      // The reboot: the same MAC, so the same lease and name; it and B reach each other again.
      expect(resultOf(runA2, 'lease')).toEqual({ rc: '0', ip: ipA });
      expect(resultOf(runA2, 'ping-gateway')).toEqual({ rc: '0', replies: '3' });
      expect(resultOf(runA2, 'host')).toEqual(helloOk);
      expect(resultOf(runA2, 'dns-b')).toEqual({ rc: '0', addr: ipB });
      expect(resultOf(runA2, 'ping-b')).toEqual({ rc: '0', replies: '3' });
      expect(resultOf(runB, 'a2-hello').said).toBe('done');
      expect(resultOf(runB, 'dns-a2')).toEqual({ rc: '0', addr: ipA });
      expect(resultOf(runB, 'ping-a2')).toEqual({ rc: '0', replies: '3' });

      const connected = weft.events.filter((e) => e.event === 'client-connected');
      expect(connected.map((e) => e.client)).toEqual([1, 2, 3]);
      expect(Math.max(...connected.map((e) => Number(e.clients)))).toBe(2);
      expect(weft.events.filter((e) => e.event === 'client-refused')).toEqual([]);
      const leases = weft.events.filter((e) => e.event === 'lease');
      expect(leases.filter((e) => e.hostname === 'guest-a').map((e) => e.ip)).toContain(ipA);
      expect(leases.filter((e) => e.hostname === 'guest-b').map((e) => e.ip)).toContain(ipB);
      const stopped = await stopWeft(weft);
      // Nobody tried to speak for an address that is not theirs.
      const drops = (stopped.counters as { drops: Record<string, number> }).drops;
      expect(drops['arp-lease-conflict'] ?? 0).toBe(0);
      expect(drops['ipv4-lease-conflict'] ?? 0).toBe(0);
      expect(stopped.linkStats).toMatchObject({ clients: 0 });
    },
    3 * BOOT_TIMEOUT_MS,
  );

  it(
    'two QEMUs on one --dgram port (LPORT:RPORT1,RPORT2): they resolve and ping each other',
    async ({ skip }) => {
      if (suite.skipReason) skip(suite.skipReason);
      const [weftPort, portC, portD] = await freeUdpPorts(3);
      const weft = await startWeft(['--dgram', `${weftPort}:${portC},${portD}`]);
      const c = boot('guest C (dgram)', { kind: 'dgram', weftPort, qemuPort: portC }, MAC_A, DGRAM_C);
      const d = boot('guest D (dgram)', { kind: 'dgram', weftPort, qemuPort: portD }, MAC_B, DGRAM_D);
      const [runC, runD] = [await finish(c), await finish(d)];
      const ipC = resultOf(runC, 'lease').ip;
      const ipD = resultOf(runD, 'lease').ip;
      expect(ipC).not.toBe(ipD);
      expect(resultOf(runC, 'dns-d')).toEqual({ rc: '0', addr: ipD });
      expect(resultOf(runD, 'dns-c')).toEqual({ rc: '0', addr: ipC });
      expect(resultOf(runC, 'ping-d')).toEqual({ rc: '0', replies: '3' });
      expect(resultOf(runD, 'ping-c')).toEqual({ rc: '0', replies: '3' });
      expect(resultOf(runD, 'host')).toEqual(helloOk);
      expect(resultOf(runC, 'released').by).toBe('done');
      expect(resultOf(runD, 'released').by).toBe('done');
      const stopped = await stopWeft(weft);
      expect(stopped.linkStats).toMatchObject({ macsLearned: 2 });
    },
    2 * BOOT_TIMEOUT_MS,
  );
});
