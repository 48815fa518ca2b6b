// `weft vm` with a real Linux guest in QEMU (test/harness/qemu-guest.ts), once over `-netdev stream`
// (weft vm --qemu unix:PATH) and once over `-netdev dgram` (weft vm --dgram), the same cases on both:
//
// - first boot, one script: DHCP (10.0.2.15, router 10.0.2.2, DNS 10.0.2.3, MTU 1500 on eth0), ping
//   of the gateway and the DNS address, a 3000-byte ping fragmented both ways, DNS (weft's own names,
//   a --dns-record, a name and an NXDOMAIN forwarded to a test server, a URL by name), a 16 MiB
//   download and its upload back with sha256 on both ends, a connection to a closed host port refused
//   within 2 s, and `--forward` into `nc -l` in the guest (bytes checked both ways);
// - a second QEMU on the same socket / UDP ports after the first has powered off (a reboot): the
//   same lease, ping and a request; and the same after a QEMU killed in the middle of a download (a
//   power cut: weft still holds the dead guest's connection);
// - weft stops on SIGTERM within 2 s, and its pcap holds no frame over MTU + 14 (1514) either way
//   and nothing from weft past its FIN;
// - `--mtu 9000` in a fresh weft: DHCP hands out 9000, a 8000-byte ping goes unfragmented, a
//   20000-byte one fragmented, the 16 MiB download and upload pass, and the pcap shows jumbo frames
//   both ways but none over 9014;
// - over -netdev stream, a weft without a capture at MTU 65520 (the benchmarked path: long payloads
//   sent from the send buffers in two parts): the 16 MiB download and upload pass.
//
// Each guest runs one script and powers off, so the file boots eleven guests (≈2.5 s each under TCG).

import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PcapTcpScan } from '../harness/pcap-tcp-check';
import { DEFAULT_GUEST_MAC, describeRun, qemuMissing, type GuestRun, type QemuGuest, type QemuLink } from '../harness/qemu-guest';
import { guestScript as guestScriptWith, QemuSuite, resultOf } from '../harness/qemu-suite';
import { assertCleanCapture, CAPTURE_SNAPLEN, WeftCapture } from '../harness/weft-capture';
import type { WeftProcess } from '../harness/weft-process';
import { DNS_TEST_ZONE, startDnsTestServer, type DnsTestServer } from '../support/dns-test-server';
import {
  closedTcpPort,
  deterministicBytes,
  expectedSha256,
  freeUdpPorts,
  HELLO_TEXT,
  sha256Hex,
  startHalfCloseServer,
  startHttpTestServer,
  type TestServer,
} from '../support/test-servers';

const SUITE = 'weft vm with a QEMU guest';
const DOWNLOAD_BYTES = 16 << 20;
/** The guest's `nc -l` port that --forward reaches, what it sends (the first bytes of the download), and what the host sends it. */
const FORWARD_GUEST_PORT = 8000;
const FORWARD_GUEST_BYTES = 256 << 10;
const FORWARD_HOST_DATA = deterministicBytes(1 << 20).reverse();
const DNS_RECORD = { name: 'qemu-host.test', ip: '10.0.2.77' };
const REFUSED_WITHIN_MS = 2_000;
/** The power-cut guest downloads this much (it never finishes) and is killed this long after weft connects upstream for it. */
const POWER_CUT_DOWNLOAD_BYTES = 1 << 30;
const POWER_CUT_AFTER_MS = 500;
const JUMBO_MTU = 9000;
/** QEMU's and passt's largest: the MTU the benchmark runs at. */
const MAX_MTU = 65520;
/** Ethernet header: the longest frame on a link is its MTU plus 14 (no FCS in a capture). */
const ETHERNET_HEADER = 14;
/** A boot with the 16 MiB transfers takes ≈6 s under TCG here; this is room for a loaded machine. */
const BOOT_TIMEOUT_MS = 150_000;

const missing = qemuMissing();
if (missing) console.warn(`[skip] ${SUITE}: ${missing}`);

// ── the guest's side: shell functions that print WEFT-RESULT lines ──────────────────────────────

const GUEST_FUNCTIONS = String.raw`
result() { echo "WEFT-RESULT $*"; }
now_ms() { awk '{ printf "%d\n", $1 * 1000 }' /proc/uptime; }
size_of() { stat -c %s "$1" 2>/dev/null || echo 0; }
sha_of() { sha256sum "$1" 2>/dev/null | cut -d' ' -f1; }

link_check() {
  result link mtu=$(cat /sys/class/net/eth0/mtu) addr=$(ip -o -4 addr show dev eth0 | awk '{ print $4 }') \
    via=$(ip route show default | awk '{ print $3 }')
}

ping_check() { # NAME HOST SIZE COUNT
  out=$(ping -c "$4" -i 0.2 -W 3 -s "$3" "$2" 2>&1); rc=$?
  result "$1" rc=$rc replies=$(echo "$out" | grep -c "bytes from $2") \
    bytes=$(echo "$out" | sed -n 's/^\([0-9]*\) bytes from.*/\1/p' | head -n 1)
}

dns_check() { # NAME QUERY
  out=$(nslookup "$2" 2>&1); rc=$?
  addrs=$(echo "$out" | sed -n '/^Name:/,$ s/^Address: *//p' | grep -E '^[0-9.]+$' | sort -u | tr '\n' ',' | sed 's/,$//')
  result "$1" rc=$rc addrs=$addrs nxdomain=$(echo "$out" | grep -c NXDOMAIN)
}

http_get() { # NAME URL: the body's size and sha256
  wget -q -O /tmp/get "$2"; rc=$?
  result "$1" rc=$rc bytes=$(size_of /tmp/get) sha256=$(sha_of /tmp/get)
}

download_upload() { # BYTES: GET /bytes/BYTES into /tmp/d, then send it back to the half-close server
  t0=$(now_ms); wget -q -O /tmp/d "http://10.0.2.2:$HTTP_PORT/bytes/$1"; rc=$?; t1=$(now_ms)
  result download rc=$rc bytes=$(size_of /tmp/d) sha256=$(sha_of /tmp/d) ms=$((t1 - t0))
  # busybox wget --post-file stops at the first NUL byte; nc half-closes at the end of its input,
  # and the server answers "<bytes> <sha256>" to that FIN.
  t0=$(now_ms); reply=$(nc 10.0.2.2 "$UPLOAD_PORT" < /tmp/d); rc=$?; t1=$(now_ms)
  result upload rc=$rc bytes=$(echo "$reply" | cut -d' ' -f1) sha256=$(echo "$reply" | cut -d' ' -f2) ms=$((t1 - t0))
}

refused_check() { # a host port nothing listens on
  t0=$(now_ms); out=$(nc -w 5 10.0.2.2 "$CLOSED_PORT" < /dev/null 2>&1); rc=$?; t1=$(now_ms)
  result refused rc=$rc ms=$((t1 - t0)) said_refused=$(echo "$out" | grep -c 'Connection refused')
}

forward_serve() { # nc -l: sends the first FORWARD_BYTES of /tmp/d, then keeps what the host sends until its FIN
  head -c "$FORWARD_BYTES" /tmp/d > /tmp/fwd-out
  printf '#!/bin/sh\ncat /tmp/fwd-out\ncat > /tmp/fwd-in\n' > /tmp/fwd.sh; chmod +x /tmp/fwd.sh
  nc -l -p "$FORWARD_PORT" -e /tmp/fwd.sh & nc_pid=$!
  i=0; while ! netstat -ltn | grep -q ":$FORWARD_PORT "; do [ $i -ge 50 ] && break; usleep 100000; i=$((i + 1)); done
  echo "WEFT-READY forward"
  i=0; while kill -0 $nc_pid 2>/dev/null; do [ $i -ge 600 ] && { kill $nc_pid; break; }; usleep 100000; i=$((i + 1)); done
  result forward bytes=$(size_of /tmp/fwd-in) sha256=$(sha_of /tmp/fwd-in)
}
`;

function guestScript(vars: Record<string, string | number>, body: string): string {
  return guestScriptWith(GUEST_FUNCTIONS, vars, body);
}

// ── the host's side ──────────────────────────────────────────────────────────────────────────────

/** Connects to 127.0.0.1:port, sends `data` and half-closes; resolves with all it got until the far end's FIN. */
function forwardExchange(port: number, data: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true }, () => s.end(data));
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => {
      s.destroy();
      resolve(Buffer.concat(chunks));
    });
    s.on('error', reject);
    s.setTimeout(30_000, () => s.destroy(new Error('no FIN from the guest within 30 s of silence')));
  });
}

/** Lazily runs `fn` once; every caller gets the same promise (so one boot serves several tests). */
function once<T>(fn: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= fn());
}

interface WeftRun {
  weft: WeftProcess;
  link: QemuLink;
}

interface FirstBoot {
  run: GuestRun;
  /** What the host got through --forward, or why the exchange failed. */
  forward: { received: Buffer } | { error: string };
}

describe.skipIf(missing !== undefined)(SUITE, () => {
  const suite = QemuSuite.use(SUITE, 'qemu');
  let http: TestServer | undefined;
  let upload: TestServer | undefined;
  let dns: DnsTestServer | undefined;
  let closedPort = 0;

  beforeAll(async () => {
    if (suite.skipReason) return;
    http = await startHttpTestServer();
    upload = await startHalfCloseServer();
    dns = await startDnsTestServer();
    closedPort = await closedTcpPort();
  });

  afterAll(async () => {
    await http?.close();
    await upload?.close();
    await dns?.close();
  });

  /** Starts `weft vm` on a fresh link of `kind` (with a capture unless told), and waits for its ready line. */
  async function startWeft(kind: 'stream' | 'dgram', extraArgs: string[] = [], capture = true): Promise<WeftRun> {
    const dir = suite.tempDir(`qemu-${kind}`);
    let link: QemuLink;
    let linkArgs: string[];
    if (kind === 'stream') {
      link = { kind, path: join(dir, 'weft.sock') };
      linkArgs = ['--qemu', `unix:${link.path}`];
    } else {
      const [weftPort, qemuPort] = await freeUdpPorts(2);
      link = { kind, weftPort, qemuPort };
      linkArgs = ['--dgram', `${weftPort}:${qemuPort}`];
    }
    const pcap = join(dir, 'weft.pcap');
    const weft = await suite.startWeft(
      [
        'vm',
        ...linkArgs,
        '--allow-host-loopback',
        '--dns-server',
        `127.0.0.1:${dns!.port}`,
        '--dns-record',
        `${DNS_RECORD.name}=${DNS_RECORD.ip}`,
        ...(capture ? ['--pcap', pcap, '--pcap-snaplen', String(CAPTURE_SNAPLEN)] : []),
        ...extraArgs,
      ],
      (w) => {
        if (capture) w.capture = WeftCapture.ofFile(pcap);
      },
    );
    return { weft, link };
  }

  /** SIGTERM: weft must exit with 0 within 2 s; then its capture must pass the FIN check. */
  async function stopWeft(weft: WeftProcess): Promise<PcapTcpScan> {
    weft.kill('SIGTERM');
    const exit = await weft.waitForExit(5_000);
    expect(exit.code, weft.stderr).toBe(0);
    expect(exit.elapsedMs).toBeLessThan(2_000);
    return assertCleanCapture(weft);
  }

  function boot(label: string, link: QemuLink, script: string): QemuGuest {
    return suite.boot({ link, script, label, mac: DEFAULT_GUEST_MAC, timeoutMs: BOOT_TIMEOUT_MS });
  }

  const finish = (guest: QemuGuest) => suite.finish(guest);

  function expectDownloadUpload(run: GuestRun): void {
    const download = resultOf(run, 'download');
    expect(download, describeRun(run)).toMatchObject({ rc: '0', bytes: String(DOWNLOAD_BYTES), sha256: expectedSha256(DOWNLOAD_BYTES) });
    const uploaded = resultOf(run, 'upload');
    expect(uploaded, describeRun(run)).toMatchObject({ rc: '0', bytes: String(DOWNLOAD_BYTES), sha256: expectedSha256(DOWNLOAD_BYTES) });
    console.log(`[qemu] ${run.label}: 16 MiB down in ${download.ms} ms, up in ${uploaded.ms} ms (guest clock)`);
  }

  /** No frame over mtu + 14 either way. */
  function expectFramesWithin(scan: PcapTcpScan, mtu: number): void {
    expect(scan.largestFrameFromWeft, 'longest frame from weft').toBeLessThanOrEqual(mtu + ETHERNET_HEADER);
    expect(scan.largestFrameFromGuest, 'longest frame from the guest').toBeLessThanOrEqual(mtu + ETHERNET_HEADER);
  }

  for (const kind of ['stream', 'dgram'] as const) {
    describe(`over -netdev ${kind}`, () => {
      let forwardPort = 0;
      const firstWeft = once(async () => {
        forwardPort = await closedTcpPort();
        return startWeft(kind, ['--forward', `${forwardPort}:${FORWARD_GUEST_PORT}`]);
      });

      const firstBoot = once(async (): Promise<FirstBoot> => {
        const { link } = await firstWeft();
        const script = guestScript(
          { HTTP_PORT: http!.port, UPLOAD_PORT: upload!.port, CLOSED_PORT: closedPort, FORWARD_PORT: FORWARD_GUEST_PORT, FORWARD_BYTES: FORWARD_GUEST_BYTES },
          `
link_check
ping_check ping-gateway 10.0.2.2 56 3
ping_check ping-dns 10.0.2.3 56 3
ping_check ping-fragmented 10.0.2.2 3000 2
dns_check dns-gateway gateway.weft.internal
dns_check dns-record ${DNS_RECORD.name}
dns_check dns-forwarded www.${DNS_TEST_ZONE}
dns_check dns-nxdomain no-such-name.${DNS_TEST_ZONE}
http_get hello-by-name "http://host.weft.internal:$HTTP_PORT/hello"
download_upload ${DOWNLOAD_BYTES}
refused_check
forward_serve
`,
        );
        const guest = boot(`${kind} boot 1`, link, script);
        const forward = guest
          .waitForMarker('READY', (m) => m.name === 'forward', BOOT_TIMEOUT_MS)
          .then(() => forwardExchange(forwardPort, FORWARD_HOST_DATA))
          .then(
            (received) => ({ received }),
            (e: Error) => ({ error: e.message }),
          );
        const run = await finish(guest);
        return { run, forward: await forward };
      });

      it(
        'leases 10.0.2.15 with router 10.0.2.2, DNS 10.0.2.3 and MTU 1500 to udhcpc at boot',
        async ({ skip }) => {
          if (suite.skipReason) skip(suite.skipReason);
          const { run } = await firstBoot();
          expect(run.lease, describeRun(run)).toMatchObject({
            event: 'bound',
            ip: '10.0.2.15',
            mask: '24',
            router: '10.0.2.2',
            dns: '10.0.2.3',
            domain: 'weft.internal',
            mtu: '1500',
          });
          expect(resultOf(run, 'link')).toEqual({ mtu: '1500', addr: '10.0.2.15/24', via: '10.0.2.2' });
          const { weft } = await firstWeft();
          const lease = await weft.waitForEvent('lease', (e) => e.ip === '10.0.2.15');
          expect(lease.mac).toBe(DEFAULT_GUEST_MAC);
        },
        BOOT_TIMEOUT_MS + 30_000,
      );

      it('answers ping for the gateway and the DNS address, and a 3000-byte ping fragmented both ways', async ({ skip }) => {
        if (suite.skipReason) skip(suite.skipReason);
        const { run } = await firstBoot();
        expect(resultOf(run, 'ping-gateway')).toMatchObject({ rc: '0', replies: '3', bytes: '64' });
        expect(resultOf(run, 'ping-dns')).toMatchObject({ rc: '0', replies: '3', bytes: '64' });
        expect(resultOf(run, 'ping-fragmented')).toMatchObject({ rc: '0', replies: '2', bytes: '3008' });
      });

      it("resolves weft's own names, a --dns-record, a forwarded name and an NXDOMAIN, and fetches a URL by name", async ({ skip }) => {
        if (suite.skipReason) skip(suite.skipReason);
        const { run } = await firstBoot();
        expect(resultOf(run, 'dns-gateway')).toMatchObject({ rc: '0', addrs: '10.0.2.2' });
        expect(resultOf(run, 'dns-record')).toMatchObject({ rc: '0', addrs: DNS_RECORD.ip });
        expect(resultOf(run, 'dns-forwarded')).toMatchObject({ rc: '0', addrs: '192.0.2.10' });
        expect(resultOf(run, 'dns-nxdomain')).toMatchObject({ addrs: '', nxdomain: expect.not.stringMatching(/^0$/) });
        expect(resultOf(run, 'hello-by-name')).toMatchObject({ rc: '0', bytes: String(HELLO_TEXT.length), sha256: sha256Hex(HELLO_TEXT) });
      });

      it('downloads 16 MiB and uploads it back, sha256 equal on both ends', async ({ skip }) => {
        if (suite.skipReason) skip(suite.skipReason);
        expectDownloadUpload((await firstBoot()).run);
      });

      it(`refuses a connection to a closed host port within ${REFUSED_WITHIN_MS / 1000} s`, async ({ skip }) => {
        if (suite.skipReason) skip(suite.skipReason);
        const { run } = await firstBoot();
        const refused = resultOf(run, 'refused');
        expect(refused, describeRun(run)).toMatchObject({ said_refused: '1' });
        expect(refused.rc).not.toBe('0');
        expect(Number(refused.ms)).toBeLessThan(REFUSED_WITHIN_MS);
      });

      it('--forward reaches nc -l in the guest: bytes intact both ways', async ({ skip }) => {
        if (suite.skipReason) skip(suite.skipReason);
        const { run, forward } = await firstBoot();
        if ('error' in forward) throw new Error(`the host side of the forward failed: ${forward.error}; ${describeRun(run)}`);
        expect(forward.received.length).toBe(FORWARD_GUEST_BYTES);
        expect(sha256Hex(forward.received)).toBe(expectedSha256(FORWARD_GUEST_BYTES));
        expect(resultOf(run, 'forward')).toEqual({ bytes: String(FORWARD_HOST_DATA.length), sha256: sha256Hex(FORWARD_HOST_DATA) });
      });

      /** A guest after a reboot: the same lease, ping and a request. */
      async function expectRebootWorks(label: string): Promise<void> {
        const { link } = await firstWeft();
        const script = guestScript(
          { HTTP_PORT: http!.port },
          `
link_check
ping_check ping-gateway 10.0.2.2 56 3
http_get hello "http://10.0.2.2:$HTTP_PORT/hello"
`,
        );
        const run = await finish(boot(label, link, script));
        expect(run.lease, describeRun(run)).toMatchObject({ ip: '10.0.2.15', router: '10.0.2.2', dns: '10.0.2.3', mtu: '1500' });
        expect(resultOf(run, 'ping-gateway')).toMatchObject({ rc: '0', replies: '3' });
        expect(resultOf(run, 'hello')).toMatchObject({ rc: '0', sha256: sha256Hex(HELLO_TEXT) });
      }

      it(
        'serves a second QEMU on the same link after the first powered off (a reboot)',
        async ({ skip }) => {
          if (suite.skipReason) skip(suite.skipReason);
          await firstBoot();
          await expectRebootWorks(`${kind} boot 2 (reboot)`);
          const { weft } = await firstWeft();
          if (kind === 'stream') expect(weft.events.filter((e) => e.event === 'client-connected')).toHaveLength(2);
          expect(weft.events.filter((e) => e.event === 'lease' && e.ip === '10.0.2.15').length).toBeGreaterThanOrEqual(2);
        },
        BOOT_TIMEOUT_MS + 30_000,
      );

      it(
        'serves a new QEMU after the last one lost power in the middle of a download',
        async ({ skip }) => {
          if (suite.skipReason) skip(suite.skipReason);
          await firstBoot();
          const { weft, link } = await firstWeft();
          const seen = weft.events.length;
          const script = guestScript({ HTTP_PORT: http!.port }, `wget -q -O /dev/null "http://10.0.2.2:$HTTP_PORT/bytes/${POWER_CUT_DOWNLOAD_BYTES}"`);
          const doomed = boot(`${kind} boot 3 (power cut)`, link, script);
          // The download is under way once weft has connected upstream for it; let it run a little.
          await weft.waitForEvent('upstream-tcp-connect', (e) => weft.events.indexOf(e) >= seen, BOOT_TIMEOUT_MS);
          await new Promise((r) => setTimeout(r, POWER_CUT_AFTER_MS));
          doomed.kill();
          const cut = await doomed.finished;
          expect(cut.signal, describeRun(cut)).toBe('SIGKILL');
          expect(cut.scriptRc, 'the download was still running').toBeUndefined();
          // weft still holds the dead guest's connection; the new guest resets it when weft retransmits.
          await expectRebootWorks(`${kind} boot 4 (after the power cut)`);
        },
        BOOT_TIMEOUT_MS + 30_000,
      );

      it('stops on SIGTERM within 2 s; its pcap has no frame over 1514 bytes and nothing past a FIN', async ({ skip }) => {
        if (suite.skipReason) skip(suite.skipReason);
        const { weft } = await firstWeft();
        const scan = await stopWeft(weft);
        expectFramesWithin(scan, 1500);
        // Full-size TCP segments both ways (the download and the upload).
        expect(scan.largestFrameFromWeft).toBe(1514);
        expect(scan.largestFrameFromGuest).toBe(1514);
        // Four boots: three hello requests, two downloads, the upload, the forward and the refused attempt.
        expect(scan.connectionAttempts).toBeGreaterThanOrEqual(8);
        expect(weft.events.filter((e) => e.event === 'warning' || e.event === 'error')).toEqual([]);
      });

      it(
        `--mtu ${JUMBO_MTU}: DHCP hands it out, ping fragments only past it, 16 MiB each way in jumbo frames, none over ${JUMBO_MTU + ETHERNET_HEADER}`,
        async ({ skip }) => {
          if (suite.skipReason) skip(suite.skipReason);
          const { weft, link } = await startWeft(kind, ['--mtu', String(JUMBO_MTU)]);
          const script = guestScript(
            { HTTP_PORT: http!.port, UPLOAD_PORT: upload!.port },
            `
link_check
ping_check ping-jumbo 10.0.2.2 8000 2
ping_check ping-fragmented 10.0.2.2 20000 2
download_upload ${DOWNLOAD_BYTES}
`,
          );
          const run = await finish(boot(`${kind} boot 5 (a fresh weft with --mtu ${JUMBO_MTU})`, link, script));
          expect(run.lease, describeRun(run)).toMatchObject({ ip: '10.0.2.15', mtu: String(JUMBO_MTU) });
          expect(resultOf(run, 'link')).toMatchObject({ mtu: String(JUMBO_MTU) });
          expect(resultOf(run, 'ping-jumbo')).toMatchObject({ rc: '0', replies: '2', bytes: '8008' });
          expect(resultOf(run, 'ping-fragmented')).toMatchObject({ rc: '0', replies: '2', bytes: '20008' });
          expectDownloadUpload(run);

          const scan = await stopWeft(weft);
          expectFramesWithin(scan, JUMBO_MTU);
          expect(scan.largestFrameFromWeft).toBe(JUMBO_MTU + ETHERNET_HEADER);
          expect(scan.largestFrameFromGuest).toBe(JUMBO_MTU + ETHERNET_HEADER);
          // Only the 20000-byte pings were fragmented: 2 requests reassembled, 2 replies in 3 fragments each.
          const stopped = weft.events.find((e) => e.event === 'stopped');
          expect(stopped?.counters).toMatchObject({ datagramsReassembled: 2, fragmentsSent: 6 });
        },
        BOOT_TIMEOUT_MS + 30_000,
      );
    });
  }

  // Every weft above has a capture, which takes whole frames. Without one, the stream link takes
  // long TCP payloads in two parts, sent from the connections' send buffers where they lie — the
  // path `npm run bench -- qemu` measures, here with the bytes checked, at the MTU it runs at.
  it(
    `over -netdev stream without a capture, at MTU ${MAX_MTU}: 16 MiB each way sent from the send buffers, sha256 equal`,
    async ({ skip }) => {
      if (suite.skipReason) skip(suite.skipReason);
      const { weft, link } = await startWeft('stream', ['--mtu', String(MAX_MTU)], false);
      const script = guestScript({ HTTP_PORT: http!.port, UPLOAD_PORT: upload!.port }, `link_check\ndownload_upload ${DOWNLOAD_BYTES}\n`);
      const run = await finish(boot(`stream boot 6 (no capture, --mtu ${MAX_MTU})`, link, script));
      expect(resultOf(run, 'link')).toMatchObject({ mtu: String(MAX_MTU) });
      expectDownloadUpload(run);
      weft.kill('SIGTERM');
      const exit = await weft.waitForExit(5_000);
      expect(exit.code, weft.stderr).toBe(0);
      const counters = weft.events.find((e) => e.event === 'stopped')?.counters as { framesGathered: number; drops: Record<string, number> };
      // The download's ~260 segments of 64 KiB went in two parts (a few cross the send buffer's end and are copied).
      expect(counters.framesGathered).toBeGreaterThan(200);
      expect(counters.drops).not.toHaveProperty('tcp-bad-checksum');
    },
    BOOT_TIMEOUT_MS + 30_000,
  );
});
