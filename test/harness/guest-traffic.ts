// Guest TCP and UDP through `weft vm` with a real Linux guest (a network namespace on a TAP):
// servers listen on the host's 127.0.0.1 and the guest reaches them at the gateway, 10.0.2.2:PORT.
// Big transfers with curl, many parallel connections, a refused port, half-close both ways with
// socat, 1000 UDP datagrams, and no fd left open in weft afterwards. The upstream (direct sockets,
// or a Wisp relay) is the caller's choice.
//
// WEFT_BIG_BYTES sets the size of the big download/upload; WEFT_PARALLEL_CONNS the number of
// parallel connections (defaults per caller).

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec, describeFds, guestBash, missingCommands, openFdCount, shq, waitForFdCount, writeGuestScripts, type GuestScripts } from './guest-tools';
import { Netns, requireRoot, UDHCPC_SCRIPT } from './netns';
import { describeScan } from './pcap-tcp-check';
import { assertCleanCapture } from './weft-capture';
import type { WeftProcess } from './weft-process';
import {
  closedTcpPort,
  deterministicBytes,
  expectedSha256,
  HELLO_TEXT,
  sha256Hex,
  startHalfCloseServer,
  startHttpTestServer,
  startSendThenReadServer,
  startTcpEchoServer,
  startUdpEchoServer,
  type SendThenReadServer,
  type TestServer,
  type UdpEchoServer,
  type UploadReply,
} from '../support/test-servers';

const GATEWAY = '10.0.2.2';
const PARALLEL_BYTES = 1 << 20;
const SEND_THEN_READ_BYTES = 1 << 20;
/** UDP flows close after the NAT's idle timeout (60 s by default): allow that much to settle. */
const FD_SETTLE_MS = envInt('WEFT_FD_SETTLE_MS', 75_000);

function envInt(name: string, fallback: number): number {
  const v = process.env[name];
  if (v === undefined || v === '') return fallback;
  if (!/^\d+$/.test(v)) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return Number(v);
}

export interface UpstreamUnderTest {
  /** weft vm arguments that select the upstream (with host loopback allowed). */
  weftArgs: string[];
  stop(): Promise<void>;
}

export interface GuestTrafficOptions {
  /** Starts what the guest's flows go through (e.g. a relay), before weft. */
  upstream: () => Promise<UpstreamUnderTest>;
  bigBytes: number;
  parallel: number;
  /** Open the TAP with a vnet header and offloads (`weft vm --tap-vnet-hdr`). */
  vnetHdr?: boolean;
  /** Wait for weft's fds to return to the baseline (up to a minute: UDP flows idle out). Default true. */
  checkFds?: boolean;
  /**
   * weft writes a pcap, scanned at the end for bytes past its FIN. Default true. Off, long TCP
   * payloads go to the TAP in two parts, from where the stack keeps them (a capture takes whole
   * frames), and the stopped line must count them.
   */
  capture?: boolean;
}

export function describeGuestTraffic(TITLE: string, label: string, o: GuestTrafficOptions): void {
  const BIG = envInt('WEFT_BIG_BYTES', o.bigBytes);
  const PARALLEL = envInt('WEFT_PARALLEL_CONNS', o.parallel);
  /** Generous: a floor of 60 s plus 4 MB/s for the big transfers. */
  const BIG_TIMEOUT_MS = 60_000 + Math.ceil(BIG / 4_000);
  const root = requireRoot(TITLE);
  const missing = root.ok ? missingCommands(['curl', 'socat', 'bash', 'sha256sum', 'busybox']) : [];
  if (missing.length) console.warn(`[skip] ${TITLE}: missing ${missing.join(', ')} (apt-get install ${missing.join(' ')})`);

  describe.skipIf(!root.ok || missing.length > 0)(TITLE, () => {
    let upstream: UpstreamUnderTest | undefined;
    let ns: Netns | undefined;
    let weft: WeftProcess;
    let dir: string;
    let scripts: GuestScripts;
    let httpServer: TestServer;
    let echo: TestServer;
    let halfClose: TestServer;
    let sendThenRead: SendThenReadServer;
    let udpEcho: UdpEchoServer;
    let baselineFds: number;
    const servers: TestServer[] = [];

    const url = (port: number, path: string) => `http://${GATEWAY}:${port}${path}`;

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'weft-direct-'));
      scripts = writeGuestScripts(dir);
      httpServer = await startHttpTestServer();
      echo = await startTcpEchoServer();
      halfClose = await startHalfCloseServer();
      sendThenRead = await startSendThenReadServer(SEND_THEN_READ_BYTES);
      udpEcho = await startUdpEchoServer();
      servers.push(httpServer, echo, halfClose, sendThenRead, udpEcho);

      upstream = await o.upstream();
      ns = Netns.create(label);
      // Flow closes are logged so that a failed transfer can say how weft ended it.
      weft = await ns.spawnWeftOnTap([...upstream.weftArgs, '--log-flows'], 'tap0', { vnetHdr: o.vnetHdr === true, capture: o.capture !== false });
      const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
      if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
      baselineFds = openFdCount(weft.pid!);
    }, 90_000);

    afterAll(async () => {
      await ns?.cleanup();
      await upstream?.stop();
      await Promise.all(servers.map((s) => s.close()));
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    it('fetches a small page from the host through the gateway (curl)', async () => {
      const r = await ns!.exec(['curl', '-sS', '--fail', '--max-time', '10', url(httpServer.port, '/hello')]);
      expect(r.code, describeExec(r)).toBe(0);
      expect(r.stdout).toBe(HELLO_TEXT);
    });

    it('echoes 1000 UDP datagrams of 1…8000 bytes intact', async () => {
      const r = await ns!.exec([scripts.python, scripts.udpEcho, GATEWAY, String(udpEcho.port), '1000', '8000'], 120_000);
      expect(r.code, describeExec(r)).toBe(0);
      const result = JSON.parse(r.stdout) as { sent: number; received: number; missing: number; corrupt: number };
      expect(result, r.stdout).toMatchObject({ sent: 1000, received: 1000, missing: 0, corrupt: 0 });
    }, 130_000);

    it('refuses a closed port at once (curl exit 7, "connection refused")', async () => {
      const closed = await closedTcpPort();
      const start = performance.now();
      const r = await ns!.exec(['curl', '-sS', '--max-time', '10', url(closed, '/')], 15_000);
      const elapsed = performance.now() - start;
      expect(r.code, describeExec(r)).toBe(7);
      expect(r.stderr.toLowerCase()).toMatch(/connection refused|couldn't connect/);
      expect(elapsed).toBeLessThan(2_000);
    });

    it('half-close, guest FIN first: the reply sent after it still arrives (socat)', async () => {
      const input = join(dir, 'half-close.in');
      const data = deterministicBytes(300_000);
      writeFileSync(input, data);
      const r = await guestBash(ns!, `socat -t 30 - TCP:${GATEWAY}:${halfClose.port} < ${shq(input)}`, 40_000);
      expect(r.code, describeExec(r)).toBe(0);
      expect(r.stdout).toBe(`${data.length} ${sha256Hex(data)}\n`);
    }, 45_000);

    it('half-close, server FIN first: the guest still sends afterwards (socat)', async () => {
      const input = join(dir, 'after-fin.in');
      const output = join(dir, 'after-fin.out');
      const data = deterministicBytes(200_000).subarray(1234);
      writeFileSync(input, data);
      // The child reads the socket to EOF (the server's FIN), and only then sends its file back.
      const child = `cat > ${shq(output)}; cat ${shq(input)}`;
      const r = await guestBash(ns!, `socat -t 30 TCP:${GATEWAY}:${sendThenRead.port} SYSTEM:${shq(child)}`, 40_000);
      expect(r.code, describeExec(r)).toBe(0);
      expect(sha256Hex(readFileSync(output))).toBe(expectedSha256(SEND_THEN_READ_BYTES));
      const report = await sendThenRead.nextReport(10_000);
      expect(report).toEqual({
        sent: SEND_THEN_READ_BYTES,
        received: data.length,
        receivedAfterEnd: data.length,
        sha256: sha256Hex(data),
        clean: true,
      });
    }, 45_000);

    it(
      `downloads ${BIG} bytes with curl, sha256 intact`,
      async () => {
        const expected = expectedSha256(BIG);
        const r = await guestBash(
          ns!,
          `curl -sS --fail --max-time ${Math.ceil(BIG_TIMEOUT_MS / 1000)} ${shq(url(httpServer.port, `/bytes/${BIG}`))} | sha256sum`,
          BIG_TIMEOUT_MS + 5_000,
        );
        expect(r.code, `${describeExec(r)}\n${abnormalEnds(weft)}`).toBe(0);
        expect(r.stdout.split(' ')[0]).toBe(expected);
      },
      BIG_TIMEOUT_MS + 10_000,
    );

    it(
      `uploads ${BIG} bytes with curl -T -, sha256 intact`,
      async () => {
        const r = await guestBash(
          ns!,
          `${shq(scripts.python)} ${shq(scripts.stream)} ${BIG} | curl -sS --fail --max-time ${Math.ceil(BIG_TIMEOUT_MS / 1000)} -T - ${shq(url(httpServer.port, '/upload'))}`,
          BIG_TIMEOUT_MS + 5_000,
        );
        expect(r.code, `${describeExec(r)}\n${abnormalEnds(weft)}`).toBe(0);
        // The generator prints the guest-side sha256 on stderr.
        const guestSha = /^[0-9a-f]{64}$/m.exec(r.stderr)?.[0];
        expect(guestSha, r.stderr).toBe(expectedSha256(BIG));
        const reply = JSON.parse(r.stdout) as UploadReply;
        expect(reply).toEqual({ sha256: guestSha, bytes: BIG });
      },
      BIG_TIMEOUT_MS + 10_000,
    );

    it.runIf(o.vnetHdr === true)('moved the bulk data in segments larger than the MTU, both ways (vnet header offload)', async () => {
      // The guest's view of tap0: rx = frames from weft, tx = frames to weft. Plain 1500-byte
      // frames would average under 1,514 bytes; offloaded segments are up to 64 KiB.
      const stat = async (name: string) => Number((await ns!.exec(['cat', `/sys/class/net/tap0/statistics/${name}`])).stdout.trim());
      const fromWeft = (await stat('rx_bytes')) / (await stat('rx_packets'));
      const toWeft = (await stat('tx_bytes')) / (await stat('tx_packets'));
      console.log(`average frame: weft → guest ${Math.round(fromWeft)} B, guest → weft ${Math.round(toWeft)} B`);
      expect(fromWeft, 'average frame weft → guest').toBeGreaterThan(4000);
      expect(toWeft, 'average frame guest → weft').toBeGreaterThan(4000);
    });

    it(`moves 1 MiB each way on ${PARALLEL} parallel connections`, async () => {
      const r = await ns!.exec([scripts.python, scripts.parallelEcho, GATEWAY, String(echo.port), String(PARALLEL), String(PARALLEL_BYTES)], 400_000);
      expect(r.code, describeExec(r)).toBe(0);
      const result = JSON.parse(r.stdout) as { conns: number; opened: number; ok: number; errors: string[] };
      expect(result, r.stdout).toMatchObject({ conns: PARALLEL, opened: PARALLEL, ok: PARALLEL, errors: [] });
    }, 410_000);

    it.runIf(o.checkFds !== false)(
      'closes every upstream socket afterwards (weft fd count back to its baseline)',
      async () => {
        const fds = await waitForFdCount(weft.pid!, baselineFds, FD_SETTLE_MS);
        const detail = fds > baselineFds ? `:\n${describeFds(weft.pid!).join('\n')}` : '';
        expect(fds, `weft has ${fds} fds open, ${baselineFds} before the traffic${detail}`).toBeLessThanOrEqual(baselineFds);
      },
      FD_SETTLE_MS + 10_000,
    );

    it('stops cleanly on SIGTERM without warnings or errors', async () => {
      weft.kill('SIGTERM');
      const exit = await weft.waitForExit(5_000);
      expect(exit.code, weft.stderr.slice(-4000)).toBe(0);
      expect(weft.events.filter((e) => e.event === 'warning' || e.event === 'error')).toEqual([]);
      if (o.capture === false) {
        const counters = weft.events.find((e) => e.event === 'stopped')?.counters as { framesGathered: number };
        // The big download alone is thousands of segments sent from the send buffers.
        expect(counters.framesGathered).toBeGreaterThan(1000);
      }
    });

    it.runIf(o.capture !== false)(
      'sent nothing past its FIN on any connection (its pcap, scanned)',
      async () => {
        expect(weft.exit, 'weft has stopped').toBeDefined();
        const start = performance.now();
        const scan = await assertCleanCapture(weft);
        console.log(`weft's capture: ${describeScan(scan)}; scanned in ${((performance.now() - start) / 1000).toFixed(1)} s`);
        // The page, two half-closes, the download, the upload and the parallel echoes: each ends with
        // weft's FIN, so the scan has judged each of them.
        expect(scan.connections, describeScan(scan)).toBeGreaterThanOrEqual(PARALLEL + 5);
        expect(scan.weftFins, describeScan(scan)).toBeGreaterThanOrEqual(PARALLEL + 5);
      },
      120_000,
    );
  });
}

/** weft's last TCP flows that did not close cleanly, and its warnings: why a transfer broke. */
function abnormalEnds(weft: WeftProcess): string {
  const ends = weft.events.filter((e) => (e.event === 'flow-close' && e.protocol === 'tcp' && e.reason !== 'closed') || e.event === 'warning');
  return `weft's abnormal flow ends and warnings (last 10 of ${ends.length}): ${ends
    .slice(-10)
    .map((e) => JSON.stringify(e))
    .join('\n')}`;
}
