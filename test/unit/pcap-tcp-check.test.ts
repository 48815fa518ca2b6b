// The pcap oracle that fails an integration test when weft sends a byte past its FIN
// (test/harness/pcap-tcp-check.ts), on hand-made captures written by weft's own pcap writer.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { PcapWriter } from '../../core/pcap-writer';
import { parseIpv4 } from '../../core/wire/address';
import { IPPROTO_TCP } from '../../core/wire/ipv4';
import { ACK, emitTcp, FIN, PSH, RST, SYN, tcpHeaderLength, type TcpOptions } from '../../core/wire/tcp';
import { describeFinViolation, PcapFormatError, PcapTcpChecker, scanPcapFile, type PcapTcpScan } from '../harness/pcap-tcp-check';
import { checkCapture } from '../harness/weft-capture';
import type { WeftEvent, WeftProcess } from '../harness/weft-process';
import { GATEWAY_MAC, GUEST_IP, GUEST_MAC, ipv4Frame, seededRandom } from '../support/frames';

const REMOTE = parseIpv4('93.184.216.34');
const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
/** What Linux and weft put on every segment: 12 bytes of timestamps, so a header is 32 bytes. */
const TS: TcpOptions = { timestamp: { value: 1, echo: 2 } };

type Side = 'weft' | 'guest';

interface Seg {
  from: Side;
  seq: number;
  ack?: number;
  flags: number;
  length?: number;
  options?: TcpOptions;
  /** Guest port (another port is another connection). */
  port?: number;
}

function frame(s: Seg): Uint8Array {
  const port = s.port ?? 40000;
  const weft = s.from === 'weft';
  const [src, dst, srcPort, dstPort] = weft ? [REMOTE, GUEST_IP, 80, port] : [GUEST_IP, REMOTE, port, 80];
  const payload = new Uint8Array(s.length ?? 0).fill(0x61);
  const tcp = new Uint8Array(tcpHeaderLength(s.options) + payload.length);
  emitTcp({ srcPort, dstPort, seq: s.seq >>> 0, ack: (s.ack ?? 0) >>> 0, flags: s.flags, window: 65535, options: s.options, payload }, tcp, 0, src, dst);
  return ipv4Frame({ src, dst, protocol: IPPROTO_TCP, id: 7 }, tcp, weft ? GATEWAY_MAC : GUEST_MAC, weft ? GUEST_MAC : GATEWAY_MAC);
}

function pcapOf(segs: Seg[], snaplen?: number): Uint8Array {
  const chunks: Uint8Array[] = [];
  const writer = new PcapWriter((c) => chunks.push(c), snaplen);
  segs.forEach((s, i) => {
    writer.write(frame(s), T0 + i);
  });
  return Buffer.concat(chunks);
}

function scan(bytes: Uint8Array): PcapTcpScan {
  const checker = new PcapTcpChecker();
  checker.push(bytes);
  return checker.finish();
}

/** A download: handshake, `data` bytes from weft in 1000-byte segments, weft's FIN, the guest's FIN, weft's last ACK. */
function download(guestIsn: number, weftIsn: number, data: number, port?: number): { segs: Seg[]; finSeq: number; guestFin: number } {
  const g = (n: number) => (guestIsn + n) >>> 0;
  const w = (n: number) => (weftIsn + n) >>> 0;
  const segs: Seg[] = [
    { from: 'guest', seq: g(0), flags: SYN, port },
    { from: 'weft', seq: w(0), ack: g(1), flags: SYN | ACK, port },
    { from: 'guest', seq: g(1), ack: w(1), flags: ACK, port },
  ];
  for (let off = 0; off < data; off += 1000) {
    const length = Math.min(1000, data - off);
    segs.push({ from: 'weft', seq: w(1 + off), ack: g(1), flags: ACK | PSH, length, options: TS, port });
    segs.push({ from: 'guest', seq: g(1), ack: w(1 + off + length), flags: ACK, options: TS, port });
  }
  const finSeq = w(1 + data);
  segs.push(
    { from: 'weft', seq: finSeq, ack: g(1), flags: FIN | ACK, options: TS, port },
    { from: 'guest', seq: g(1), ack: finSeq + 1, flags: FIN | ACK, options: TS, port },
    { from: 'weft', seq: finSeq + 1, ack: g(2), flags: ACK, options: TS, port },
  );
  return { segs, finSeq, guestFin: g(1) };
}

describe("pcap TCP check: nothing past weft's FIN", () => {
  it('passes a clean close and counts the connection and its FIN', () => {
    const { segs } = download(1000, 5000, 3500);
    const r = scan(pcapOf(segs));
    expect(r).toMatchObject({ frames: segs.length, connections: 1, connectionAttempts: 1, weftFins: 1, violationsTotal: 0, truncatedTail: false });
    expect(r.weftSegments).toBe(segs.filter((s) => s.from === 'weft').length);
    expect(r.violations).toEqual([]);
  });

  it('fails one stale byte with a FIN at FIN+1, after the guest acknowledged the FIN', () => {
    const { segs, finSeq } = download(1000, 5000, 3500);
    segs.push({ from: 'weft', seq: finSeq + 1, ack: 1002, flags: FIN | ACK | PSH, length: 1, options: TS });
    const r = scan(pcapOf(segs));
    expect(r.violationsTotal).toBe(1);
    expect(r.violations[0]).toMatchObject({
      kind: 'data-past-fin',
      frame: segs.length,
      timeMs: T0 + segs.length - 1,
      flow: `93.184.216.34:80 > 10.0.2.15:40000`,
      flags: 'FIN,PSH,ACK',
      seq: finSeq + 1,
      length: 1,
      finSeq,
      isn: 5000,
    });
    const text = describeFinViolation(r.violations[0]);
    expect(text).toContain(`frame ${segs.length} at 2026-01-02T03:04:05`);
    expect(text).toContain('= FIN+1, 1 byte: data-past-fin');
    expect(text).toContain(`relative ${finSeq - 5000}`);
  });

  it('passes retransmissions that end at the FIN: FIN with its data, old data, the FIN alone, ACKs at FIN+1', () => {
    const { segs, finSeq } = download(1000, 5000, 3500);
    segs.push(
      { from: 'weft', seq: finSeq - 500, ack: 1002, flags: FIN | ACK | PSH, length: 500, options: TS },
      { from: 'weft', seq: finSeq - 1500, ack: 1002, flags: ACK, length: 1000, options: TS },
      { from: 'weft', seq: finSeq, ack: 1002, flags: FIN | ACK, options: TS },
      { from: 'weft', seq: finSeq + 1, ack: 1002, flags: ACK, options: TS },
    );
    expect(scan(pcapOf(segs))).toMatchObject({ violationsTotal: 0, weftFins: 1 });
  });

  it('passes a FIN that carries the last data (its sequence number is after the data)', () => {
    const segs: Seg[] = [
      { from: 'guest', seq: 10, flags: SYN },
      { from: 'weft', seq: 20, ack: 11, flags: SYN | ACK },
      { from: 'weft', seq: 21, ack: 11, flags: FIN | ACK | PSH, length: 100 },
      { from: 'weft', seq: 21, ack: 11, flags: FIN | ACK | PSH, length: 100 },
      { from: 'weft', seq: 122, ack: 12, flags: ACK },
    ];
    expect(scan(pcapOf(segs))).toMatchObject({ violationsTotal: 0, weftFins: 1, connections: 1 });
  });

  it('fails a FIN moved to another sequence number and an empty segment numbered past FIN+1', () => {
    const { segs, finSeq } = download(1000, 5000, 2000);
    segs.push(
      { from: 'weft', seq: finSeq + 1, ack: 1002, flags: FIN | ACK, options: TS },
      { from: 'weft', seq: finSeq - 10, ack: 1002, flags: FIN | ACK, options: TS },
      { from: 'weft', seq: finSeq + 2, ack: 1002, flags: ACK, options: TS },
    );
    const r = scan(pcapOf(segs));
    expect(r.violations.map((v) => [v.kind, v.seq - finSeq])).toEqual([
      ['fin-moved', 1],
      ['fin-moved', -10],
      ['seq-past-fin', 2],
    ]);
  });

  it('handles sequence numbers that wrap past 2^32, both clean and with a byte past the FIN', () => {
    const isn = 2 ** 32 - 1500; // data crosses the wrap; the FIN lies after it
    const clean = download(7, isn, 3000);
    expect(clean.finSeq).toBe(1501);
    expect(scan(pcapOf(clean.segs))).toMatchObject({ violationsTotal: 0, weftFins: 1 });

    const justBefore = download(7, 2 ** 32 - 3002, 3000); // the FIN is the last sequence number, 2^32 − 1
    expect(justBefore.finSeq).toBe(2 ** 32 - 1);
    justBefore.segs.push(
      { from: 'weft', seq: justBefore.finSeq - 1000, ack: 9, flags: FIN | ACK, length: 1000, options: TS },
      { from: 'weft', seq: 0, ack: 9, flags: ACK, options: TS }, // FIN+1, wrapped
      { from: 'weft', seq: 0, ack: 9, flags: FIN | ACK | PSH, length: 1, options: TS },
    );
    const r = scan(pcapOf(justBefore.segs));
    expect(r.violations.map((v) => [v.kind, v.seq, v.finSeq])).toEqual([['data-past-fin', 0, 2 ** 32 - 1]]);
    expect(describeFinViolation(r.violations[0])).toContain('seq 0 (relative 3002) = FIN+1');
  });

  it('starts over on a new SYN on the same 4-tuple, and counts each connection once', () => {
    const first = download(1000, 5000, 2000);
    // The same ports again with a new ISN far beyond the first connection's FIN.
    const second = download(900_000, 800_000, 5000);
    const segs = [...first.segs, ...second.segs];
    // A retransmitted SYN-ACK is the same connection.
    segs.splice(first.segs.length + 2, 0, { ...second.segs[1] });
    expect(scan(pcapOf(segs))).toMatchObject({ violationsTotal: 0, connections: 2, connectionAttempts: 2, weftFins: 2 });
  });

  it('keeps connections on different ports apart', () => {
    const a = download(1000, 5000, 2000, 40001);
    const b = download(3000, 9000, 2000, 40002);
    // Interleaved; b's data is numbered past a's FIN, which matters only within a.
    const segs = a.segs.flatMap((s, i) => [s, b.segs[i]]);
    segs.push({ from: 'weft', seq: a.finSeq + 1, ack: 1002, flags: ACK | PSH, length: 1, port: 40001 });
    const r = scan(pcapOf(segs));
    expect(r).toMatchObject({ connections: 2, weftFins: 2, violationsTotal: 1 });
    expect(r.violations[0].flow).toBe('93.184.216.34:80 > 10.0.2.15:40001');
  });

  it("judges only weft's segments: the guest may do as it likes past its own FIN", () => {
    const { segs, guestFin } = download(1000, 5000, 2000);
    segs.push({ from: 'guest', seq: guestFin + 1, ack: 1, flags: FIN | ACK, length: 10 });
    expect(scan(pcapOf(segs)).violationsTotal).toBe(0);
  });

  it('does not judge resets (a reset for an unknown connection may carry sequence number 0)', () => {
    const { segs, finSeq } = download(1000, 2 ** 31 + 5000, 2000);
    segs.push({ from: 'weft', seq: 0, ack: 1002, flags: RST | ACK }, { from: 'weft', seq: finSeq + 1, flags: RST });
    expect(scan(pcapOf(segs)).violationsTotal).toBe(0);
  });

  it('reads header-only captures: a frame cut to 128 bytes still counts by its original length', () => {
    const { segs, finSeq } = download(1000, 5000, 3500);
    segs.push({ from: 'weft', seq: finSeq + 1, ack: 1002, flags: FIN | ACK, length: 1, options: TS });
    const bytes = pcapOf(segs, 128);
    // The 1000-byte segments were really cut.
    expect(bytes.length).toBeLessThan(segs.length * (16 + 128));
    const r = scan(bytes);
    expect(r).toMatchObject({ unreadableFromWeft: 0, weftFins: 1, violationsTotal: 1 });
    expect(r.violations[0]).toMatchObject({ kind: 'data-past-fin', seq: finSeq + 1 });

    // 64 bytes cut into a 32-byte TCP header (14 + 20 + 30): those segments are counted as unread.
    const cut = scan(pcapOf(segs, 64));
    expect(cut.unreadableFromWeft).toBe(segs.filter((s) => s.from === 'weft' && s.options).length);
    expect(cut.unreadableFromGuest).toBe(segs.filter((s) => s.from === 'guest' && s.options).length);
  });

  it('gives the same result however the file is split into chunks, and reads a file', async () => {
    const { segs, finSeq } = download(1000, 5000, 20_000);
    segs.push({ from: 'weft', seq: finSeq + 1, ack: 1002, flags: FIN | ACK, length: 1, options: TS });
    const bytes = pcapOf(segs);
    const whole = scan(bytes);
    const rng = seededRandom(7);
    for (const maxChunk of [1, 17, 1500]) {
      const checker = new PcapTcpChecker();
      for (let off = 0; off < bytes.length; ) {
        const n = 1 + Math.floor(rng.next() * maxChunk);
        // A reused buffer, as a file reader would hand over.
        const reused = new Uint8Array(bytes.subarray(off, off + n));
        checker.push(reused);
        reused.fill(0);
        off += n;
      }
      expect(checker.finish()).toEqual(whole);
    }
    const dir = mkdtempSync(join(tmpdir(), 'weft-pcap-check-'));
    try {
      const path = join(dir, 'x.pcap');
      writeFileSync(path, bytes);
      expect(await scanPcapFile(path)).toEqual(whole);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says when the file ends inside a record, and refuses what is not an Ethernet pcap', () => {
    const bytes = pcapOf(download(1, 2, 100).segs);
    expect(scan(bytes.subarray(0, bytes.length - 3)).truncatedTail).toBe(true);
    const bad = new Uint8Array(bytes);
    bad[0] = 0x0a;
    expect(() => scan(bad)).toThrow(PcapFormatError);
    const raw = new Uint8Array(bytes);
    raw[20] = 101; // LINKTYPE_RAW
    expect(() => scan(raw)).toThrow(/link type 101/);
    const huge = new Uint8Array(bytes);
    new DataView(huge.buffer).setUint32(24 + 8, 2 ** 30, true);
    expect(() => scan(huge)).toThrow(/is not a frame/);
  });

  it('reports the longest frame each way by its original length, also when the capture keeps only headers', () => {
    // Ethernet 14 + IPv4 20 + TCP 32 (with timestamps) + payload.
    const segs: Seg[] = [
      { from: 'weft', seq: 1, flags: ACK, length: 1448, options: TS },
      { from: 'guest', seq: 1, flags: ACK, length: 8948, options: TS },
      { from: 'weft', seq: 1449, flags: ACK, length: 100, options: TS },
    ];
    for (const snaplen of [undefined, 128]) {
      expect(scan(pcapOf(segs, snaplen))).toMatchObject({ largestFrameFromWeft: 1514, largestFrameFromGuest: 9014 });
    }
  });
});

describe('weft capture check: a scan held against what weft logged', () => {
  /** A stopped weft as the check sees it: its log events. */
  const weftThatLogged = (...events: WeftEvent[]) => ({ pid: 1234, events }) as unknown as WeftProcess;
  const stopped = (pcapFrames: number, tcpConnectionsOpened: number): WeftEvent => ({ event: 'stopped', pcapFrames, counters: { tcpConnectionsOpened } });

  async function check(segs: Seg[], weft: WeftProcess | undefined, snaplen?: number) {
    const dir = mkdtempSync(join(tmpdir(), 'weft-capture-check-'));
    try {
      const path = join(dir, 'weft.pcap');
      writeFileSync(path, pcapOf(segs, snaplen));
      return await checkCapture(path, weft);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  it('passes a clean capture that has every frame and connection weft logged', async () => {
    const { segs } = download(1000, 5000, 3500);
    const r = await check(segs, weftThatLogged(stopped(segs.length, 1)));
    expect(r.problems).toEqual([]);
    expect(r.scan).toMatchObject({ connections: 1, weftFins: 1 });
  });

  it('fails a byte past the FIN, quoting the segment', async () => {
    const { segs, finSeq } = download(1000, 5000, 3500);
    segs.push({ from: 'weft', seq: finSeq + 1, ack: 1002, flags: FIN | ACK, length: 1 });
    const r = await check(segs, weftThatLogged(stopped(segs.length, 1)));
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatch(/^weft sent 1 TCP segment\(s\) past its FIN \(.*\):\n {2}frame \d+ at .* = FIN\+1, 1 byte: data-past-fin/);
    expect(r.problems[0]).toContain(`frame ${segs.length} at`);
  });

  it('fails a scan that cannot have seen everything: frames missing, fewer SYNs than connections, no final counters', async () => {
    const { segs } = download(1000, 5000, 3500);
    expect((await check(segs, weftThatLogged(stopped(segs.length + 5, 1)))).problems).toEqual([
      expect.stringMatching(new RegExp(`^the scan read ${segs.length} frames of the ${segs.length + 5} weft wrote`)),
    ]);
    expect((await check(segs, weftThatLogged(stopped(segs.length, 3)))).problems).toEqual([
      expect.stringMatching(/^weft opened 3 TCP connections but the scan of .* saw 1 SYNs/),
    ]);
    expect((await check([], weftThatLogged(stopped(0, 2)))).problems).toEqual([expect.stringMatching(/weft opened 2 TCP connections .* saw 0 SYNs/)]);
    expect((await check(segs, weftThatLogged({ event: 'ready' }))).problems).toEqual([expect.stringMatching(/did not log "stopped"/)]);
  });

  it('fails frames from weft it cannot read, and a file that is not a pcap', async () => {
    const { segs } = download(1000, 5000, 3500);
    const r = await check(segs, undefined, 64);
    expect(r.problems).toEqual([expect.stringMatching(/^\d+ TCP frames from weft in .* could not be read/)]);
    const missing = await checkCapture(join(tmpdir(), 'weft-no-such-capture.pcap'), undefined);
    expect(missing.problems).toEqual([expect.stringMatching(/^cannot scan weft's capture .*ENOENT/)]);
  });
});
