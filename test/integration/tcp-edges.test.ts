// Edges of weft's TCP sender that only a real guest shows: a Linux guest (a network namespace) behind
// the fault wire (test/harness/fault-wire.ts) and `weft vm --tap-fd 3 --upstream direct
// --allow-host-loopback --log-flows`.
//
// - Half-close, then a long upload: the host's server sends a greeting and ends its side; the guest
//   reads to EOF and then streams 64 MiB to it. weft's FIN is acknowledged early, and weft must send
//   nothing past it for the whole upload (it once sent a phantom byte + FIN at FIN+1 after that ACK
//   and kept retransmitting it: Linux ignores it in CLOSE-WAIT, so no error shows for minutes, until
//   weft's retransmission limit resets the connection; the wire counts such segments).
// - Tail loss: the wire loses the last segments of a download and its FIN, once, so nothing after
//   them reveals the loss but weft's own loss probe. The hole must be retransmitted in full within
//   REPAIR_LIMIT_MS, lowest segment first (it was once repaired one segment per probe, top down: 2.4 s
//   for 134 segments). Once with the last 40 segments of a stream in full flow, once with a whole
//   final flight of 134 segments: the server holds them back until the wire has seen the guest
//   acknowledge everything before them, so no ACK at all comes back after they are lost. Each with
//   TCP timestamps on (Linux's default) and off.
// - Every connection ends cleanly in weft (flow-close reason "closed", after its TIME-WAIT).

import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FaultWire, TailDropStats } from '../harness/fault-wire';
import { GATEWAY, startFaultyLink, type FaultyLink } from '../harness/faulty-link';
import { describeExec, guestBash, missingCommands, shq, writeGuestScripts, type GuestScripts } from '../harness/guest-tools';
import { requireRoot, type Netns } from '../harness/netns';
import type { WeftProcess } from '../harness/weft-process';
import { deterministicBytes, expectedSha256, sha256Hex, startSendThenReadServer, type SendThenReadServer, type TestServer } from '../support/test-servers';

const TITLE = 'TCP edges with a real Linux guest: half-close then upload, tail loss repair';
const GREETING_BYTES = 1000;
const UPLOAD_BYTES = 64 << 20;
const DOWNLOAD_BYTES = 8 << 20;
/** The hole must be retransmitted in full this soon after its first segment was lost. */
const REPAIR_LIMIT_MS = 500;
/** The guest's MSS on weft's 1500-byte link; 12 bytes less payload per segment with timestamps. */
const LINK_MSS = 1460;
/** The longest the whole-flight server holds its last segments back waiting for the guest's ACK of all before them. */
const HOLD_LIMIT_MS = 20_000;
/** weft's TIME-WAIT (30 s) plus slack: every connection has closed in weft by then. */
const FLOW_CLOSE_WAIT_MS = 40_000;

interface TailCase {
  name: string;
  segments: number;
  timestamps: boolean;
  /** The last `segments` leave as one flight, after everything before them is acknowledged. */
  wholeFlight: boolean;
}

const TAIL_CASES: TailCase[] = [
  { name: 'last 40 segments of a stream in full flow', segments: 40, timestamps: true, wholeFlight: false },
  { name: 'last 40 segments of a stream in full flow', segments: 40, timestamps: false, wholeFlight: false },
  { name: 'a whole final flight of 134 segments', segments: 134, timestamps: true, wholeFlight: true },
  { name: 'a whole final flight of 134 segments', segments: 134, timestamps: false, wholeFlight: true },
];

// ── a download whose length is known to the byte ─────────────────────────────────────────────────

interface ExactHttpServer extends TestServer {
  /** Payload bytes of the response to `GET /bytes/N…`: the header and N bytes. */
  responseBytes(body: number): number;
  /** Sends the last bytes of the responses that hold them back (`?last=Z`). */
  release(): void;
  /** Socket errors and bad requests seen. */
  readonly problems: string[];
}

function responseHeader(body: number): string {
  return `HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body}\r\nConnection: close\r\n\r\n`;
}

async function writeAll(s: net.Socket, data: Uint8Array): Promise<void> {
  if (!s.write(data)) await Promise.race([once(s, 'drain'), once(s, 'close')]);
}

/**
 * A minimal HTTP/1.1 server (the host's HTTP test server adds a Date header and keeps connections
 * alive, so its byte count is not exact): `GET /bytes/N` answers with a fixed header and the N
 * deterministic bytes (sha256 = expectedSha256(N)), then closes. `GET /bytes/N?last=Z` holds the
 * last Z bytes back until release().
 */
async function startExactHttpServer(): Promise<ExactHttpServer> {
  const problems: string[] = [];
  const bodies = new Map<number, Buffer>();
  const sockets = new Set<net.Socket>();
  const held: Array<() => void> = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
    s.on('error', (e: NodeJS.ErrnoException) => {
      problems.push(`socket error ${e.code ?? e.message}`);
      s.destroy();
    });
    let request = '';
    const onData = (chunk: Buffer) => {
      request += chunk.toString('latin1');
      if (!request.includes('\r\n\r\n')) {
        if (request.length > 8192) s.destroy();
        return;
      }
      s.off('data', onData);
      s.resume(); // and ignore whatever else the client sends until its FIN
      const m = /^GET \/bytes\/(\d{1,9})(?:\?last=(\d{1,9}))? HTTP\/1\.1\r\n/.exec(request);
      if (!m) {
        problems.push(`bad request ${JSON.stringify(request.slice(0, 200))}`);
        s.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
      }
      const n = Number(m[1]);
      const last = Math.min(n, Number(m[2] ?? 0));
      let body = bodies.get(n);
      if (!body) bodies.set(n, (body = deterministicBytes(n)));
      void (async () => {
        await writeAll(s, Buffer.from(responseHeader(n), 'latin1'));
        await writeAll(s, body.subarray(0, n - last));
        if (last > 0) {
          await new Promise<void>((resolve) => held.push(resolve));
          await writeAll(s, body.subarray(n - last));
        }
        if (!s.destroyed) s.end();
      })();
    };
    s.on('data', onData);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    problems,
    responseBytes: (body) => Buffer.byteLength(responseHeader(body), 'latin1') + body,
    release: () => {
      for (const go of held.splice(0)) go();
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      }),
  };
}

// ── reading the wire's tail-drop report ──────────────────────────────────────────────────────────

/** The wire's account of one tail drop, checked and summed up. */
function describeTail(t: TailDropStats): string {
  // Each retransmission as the index of the lost segment it starts at (0 = the lowest).
  const index = new Map(t.dropped.map(([s], i) => [s, i]));
  const order = t.resent
    .slice(0, 12)
    .map(([s]) => index.get(s) ?? `@${s}`)
    .join(',');
  return (
    `${t.dropped.length} segments lost (FIN ${t.finDropped ? 'too' : 'not'}), the last ${t.lastDropMs} ms after the first; ` +
    `hole retransmitted in full after ${t.repairMs} ms by ${t.resent.length} segments, in the order ${order}${t.resent.length > 12 ? ',…' : ''}`
  );
}

/**
 * Checks that the wire lost exactly the transfer's tail once — a contiguous run of first
 * transmissions from the segment that reaches into the last `segments` × MSS bytes to the FIN (more
 * segments when weft cut a short one in between) — and that the hole was then retransmitted in full,
 * in time and lowest first: before the lowest lost segment goes out again only loss probes (copies
 * of the highest segment, or of the FIN) may, and after it the retransmissions climb.
 */
function expectTailRepaired(t: TailDropStats, transferBytes: number, segments: number, mss: number): void {
  const detail = JSON.stringify({ ...t, dropped: t.dropped.length, resent: t.resent.slice(0, 40) });
  expect(t.mss, `segment size from the handshake: ${detail}`).toBe(mss);
  expect(t.finDropped, `FIN lost: ${detail}`).toBe(true);
  const [holeStart] = t.dropped[0];
  const holeEnd = t.dropped.at(-1)![1];
  expect(holeEnd, `the hole ends with the FIN: ${detail}`).toBe(transferBytes + 1);
  for (let i = 1; i < t.dropped.length; i++) {
    expect(t.dropped[i][0], `lost segments are contiguous and each lost once: ${JSON.stringify(t.dropped)}`).toBe(t.dropped[i - 1][1]);
  }
  const zoneStart = transferBytes - segments * mss;
  expect(t.zoneStart, detail).toBe(zoneStart);
  expect(holeStart, `the first lost segment reaches into the last ${segments} × ${mss} bytes: ${detail}`).toBeLessThanOrEqual(zoneStart);
  expect(t.dropped[0][1], `the first lost segment reaches into the last ${segments} × ${mss} bytes: ${detail}`).toBeGreaterThan(zoneStart);

  expect(t.unrepairedBytes, `hole retransmitted in full: ${detail}`).toBe(0);
  expect(t.repairMs, `hole retransmitted in full within ${REPAIR_LIMIT_MS} ms of its first loss: ${detail}`).toBeLessThan(REPAIR_LIMIT_MS);

  const topStart = t.dropped.filter(([s, e]) => !(s === transferBytes && e === transferBytes + 1)).at(-1)![0];
  const starts = t.resent.map(([s]) => s);
  // Each retransmission as "lost segment index @ ms after the first loss", for the messages.
  const index = new Map(t.dropped.map(([s], i) => [s, i]));
  const order = t.resent
    .slice(0, 60)
    .map(([s, , ms]) => `${index.get(s) ?? s}@${ms}`)
    .join(' ');
  const lowest = starts.indexOf(holeStart);
  expect(lowest, `the lowest lost segment was resent: ${order}`).toBeGreaterThanOrEqual(0);
  const probes = starts.slice(0, lowest);
  expect(
    probes.every((s) => s >= topStart),
    `only loss probes (the highest lost segment, or the FIN) before the lowest: ${order}`,
  ).toBe(true);
  // The highest segment comes again at the end if no probe repaired it; it is the top of the climb anyway.
  const repair = starts.slice(lowest).filter((s) => s < topStart);
  for (let i = 1; i < repair.length; i++) {
    expect(repair[i], `retransmissions climb from the lowest lost segment: ${order}`).toBeGreaterThan(repair[i - 1]);
  }
}

// ── the suite ─────────────────────────────────────────────────────────────────────────────────────

const root = requireRoot(TITLE);
const missing = root.ok ? missingCommands(['curl', 'socat', 'bash', 'sha256sum', 'busybox', 'ip', 'sysctl']) : [];
if (missing.length) console.warn(`[skip] ${TITLE}: missing ${missing.join(', ')} (apt-get install ${missing.join(' ')})`);

describe.skipIf(!root.ok || missing.length > 0)(TITLE, () => {
  let link: FaultyLink | undefined;
  let guestNs: Netns | undefined;
  let weft: WeftProcess;
  let wire: FaultWire | undefined;
  let dir: string | undefined;
  let scripts: GuestScripts;
  let halfClose: SendThenReadServer | undefined;
  let exact: ExactHttpServer | undefined;
  /** Guest connections made so far, by server port: each must close cleanly in weft. */
  const connections = new Map<number, number>();
  const connecting = (port: number) => connections.set(port, (connections.get(port) ?? 0) + 1);

  const flowCloses = (port: number) =>
    weft.events.filter((e) => e.event === 'flow-close' && e.protocol === 'tcp' && typeof e.target === 'string' && e.target.endsWith(`:${port}`));

  const setTimestamps = async (on: boolean) => {
    const r = await guestNs!.exec(['sysctl', '-qw', `net.ipv4.tcp_timestamps=${on ? 1 : 0}`]);
    if (r.code !== 0) throw new Error(`cannot set tcp_timestamps in the guest: ${describeExec(r)}`);
  };

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'weft-tcp-edges-'));
    scripts = writeGuestScripts(dir);
    halfClose = await startSendThenReadServer(GREETING_BYTES);
    exact = await startExactHttpServer();
    link = await startFaultyLink({ dir, seed: 1, weftArgs: ['--upstream', 'direct', '--allow-host-loopback', '--log-flows'] });
    ({ guestNs, weft, wire } = link);
  }, 60_000);

  afterAll(async () => {
    await link?.close();
    await halfClose?.close();
    await exact?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it(`half-close: the server ends its side after a greeting, the guest then uploads ${UPLOAD_BYTES} bytes to it`, async () => {
    // The wire follows weft's side of the connection (it drops nothing): the greeting, then the FIN.
    await wire!.set({ tailDrop: { port: halfClose!.port, transferBytes: GREETING_BYTES, segments: 0 } });
    const greeting = join(dir!, 'greeting.out');
    // socat's child reads the socket to EOF (the server's FIN), and only then streams its data back.
    const child = `cat > ${shq(greeting)}; ${shq(scripts.python)} ${shq(scripts.stream)} ${UPLOAD_BYTES}`;
    connecting(halfClose!.port);
    const start = performance.now();
    const r = await guestBash(guestNs!, `socat -t 40 TCP:${GATEWAY}:${halfClose!.port} SYSTEM:${shq(child)}`, 45_000);
    const seconds = (performance.now() - start) / 1000;
    expect(r.code, `the guest's socat: ${describeExec(r)}`).toBe(0);
    expect(sha256Hex(readFileSync(greeting)), 'the greeting, read to EOF').toBe(expectedSha256(GREETING_BYTES));
    const report = await halfClose!.nextReport(10_000);
    expect(report, 'what the server got after its own FIN, and how it ended').toEqual({
      sent: GREETING_BYTES,
      received: UPLOAD_BYTES,
      receivedAfterEnd: UPLOAD_BYTES,
      sha256: expectedSha256(UPLOAD_BYTES),
      clean: true,
    });
    const t = (await wire!.stats()).tailDrop!;
    console.log(
      `half-close then upload: ${UPLOAD_BYTES / 2 ** 20} MiB in ${seconds.toFixed(1)} s; ` +
        `weft's segments past its FIN: ${t.pastFin}, resets: ${JSON.stringify(t.resets)}`,
    );
    // The guest acknowledged weft's FIN (long before its own), and weft sent nothing past it.
    expect({ sentUpTo: t.sentUpTo, acked: t.acked }, 'weft sent its FIN and the guest acknowledged it').toEqual({
      sentUpTo: GREETING_BYTES + 1,
      acked: GREETING_BYTES + 1,
    });
    expect(t.pastFin, `weft's segments past its FIN (relative sequence numbers; FIN at ${GREETING_BYTES}): ${JSON.stringify(t.pastFinRanges)}`).toBe(0);
    expect(t.resets, 'resets on the connection').toEqual({ toWeft: 0, toGuest: 0 });
    // weft logs the connection's close after its TIME-WAIT (the last test waits for it); a reset
    // would have closed it at once.
    expect(flowCloses(halfClose!.port), 'weft closed the connection early (reset?)').toEqual([]);
  }, 55_000);

  for (const c of TAIL_CASES) {
    const ts = c.timestamps ? 'timestamps on' : 'timestamps off';
    it(`tail loss, ${c.name} and the FIN (${ts}): repaired within ${REPAIR_LIMIT_MS} ms, lowest segment first`, async () => {
      const mss = LINK_MSS - (c.timestamps ? 12 : 0);
      const transferBytes = exact!.responseBytes(DOWNLOAD_BYTES);
      await setTimestamps(c.timestamps);
      try {
        await wire!.set({ tailDrop: { port: exact!.port, transferBytes, segments: c.segments } });
        const path = `/bytes/${DOWNLOAD_BYTES}${c.wholeFlight ? `?last=${c.segments * mss}` : ''}`;
        connecting(exact!.port);
        const download = guestBash(guestNs!, `curl -sS --fail --max-time 30 ${shq(`http://${GATEWAY}:${exact!.port}${path}`)} | sha256sum`, 35_000);
        if (c.wholeFlight) {
          // The last segments leave when the guest has acknowledged everything before them.
          const start = performance.now();
          while (((await wire!.stats()).tailDrop?.acked ?? 0) < transferBytes - c.segments * mss && performance.now() - start < HOLD_LIMIT_MS) {
            await new Promise((r) => setTimeout(r, 10));
          }
          exact!.release();
        }
        const r = await download;
        expect(r.code, describeExec(r)).toBe(0);
        expect(r.stdout.split(' ')[0], 'download sha256').toBe(expectedSha256(DOWNLOAD_BYTES));
        const stats = await wire!.stats();
        const t = stats.tailDrop!;
        console.log(`tail loss, ${c.name} (${ts}): ${describeTail(t)}`);
        expect(stats.wireSocketDrops, 'frames the wire missed (a loss it did not make)').toBe(0);
        expect(stats.toGuest.tailDropped, JSON.stringify(stats.toGuest)).toBe(t.dropped.length);
        if (c.wholeFlight) {
          // Everything before the hole was acknowledged before its first segment left weft: the
          // whole flight was lost and no ACK at all came back after it.
          expect(t.ackedAtFirstDrop, `acknowledged when the flight left: ${JSON.stringify({ ...t, resent: t.resent.length })}`).toBe(t.dropped[0][0]);
        }
        expectTailRepaired(t, transferBytes, c.segments, mss);
        expect({ pastFin: t.pastFin, resets: t.resets }, 'segments past the FIN, resets').toEqual({ pastFin: 0, resets: { toWeft: 0, toGuest: 0 } });
        expect(exact!.problems, 'the server').toEqual([]);
        expect(weft.exit, 'weft is still running').toBeUndefined();
      } finally {
        await wire!.set({});
        await setTimestamps(true);
      }
    }, 45_000);
  }

  it(
    'every connection ended cleanly in weft (after its TIME-WAIT), and weft stops cleanly',
    async () => {
      const start = performance.now();
      const allClosed = () => [...connections].every(([port, n]) => flowCloses(port).length >= n);
      while (!allClosed() && performance.now() - start < FLOW_CLOSE_WAIT_MS) await new Promise((r) => setTimeout(r, 250));
      for (const [port, n] of connections) {
        const closes = flowCloses(port);
        expect(closes.length, `connections to port ${port} closed in weft: ${JSON.stringify(closes)}`).toBe(n);
        expect(
          closes.filter((e) => e.reason !== 'closed'),
          `connections to port ${port} that did not end cleanly`,
        ).toEqual([]);
      }
      weft.kill('SIGTERM');
      const exit = await weft.waitForExit(5_000);
      expect(exit.code, weft.stderr.slice(-4000)).toBe(0);
      expect(
        weft.events.filter((e) => e.event === 'error' || e.event === 'warning'),
        'errors or warnings logged by weft',
      ).toEqual([]);
    },
    FLOW_CLOSE_WAIT_MS + 15_000,
  );
});
