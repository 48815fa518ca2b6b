// An oracle over weft's own captures (`weft vm --pcap FILE`): reads a classic pcap and, for every TCP
// connection, checks that weft never sends a sequence number past its FIN. The FIN occupies one
// sequence number, finSeq; after it weft may retransmit anything that ends at finSeq (a FIN with or
// without data, old data) and send pure ACKs at finSeq + 1, but never a byte at or after finSeq, a
// FIN somewhere else, or a segment numbered beyond finSeq + 1.
//
// The file is read in chunks (a capture of a long transfer is hundreds of MB) and each frame is
// parsed with weft's own wire codecs; frames cut short by a snap length (`--pcap-snaplen`) still
// count by their original length, so a header-only capture is enough.
//
// Direction: weft sends every frame from one MAC, the gateway's (52:55:0a:00:02:02 unless told
// otherwise); every other source is a guest. Connection boundaries: a SYN from weft (its SYN-ACK for
// a guest's connection, its SYN for a port forward) starts a new connection on the 4-tuple, so a
// reused port is judged afresh. RSTs are not judged: their sequence numbers follow other rules
// (RFC 9293 §3.10.7.1; a reset for an unknown connection may carry 0).

import { open } from 'node:fs/promises';
import { DEFAULT_NETWORK } from '../../core/config';
import { seqAdd, seqDiff, seqGt, toSeq, type SeqNum } from '../../core/tcp/seq';
import { formatIpv4, type MacAddress } from '../../core/wire/address';
import { ETHERNET_HEADER_LENGTH, ETHERTYPE_IPV4, parseEthernet } from '../../core/wire/ethernet';
import { IPPROTO_TCP, IPV4_HEADER_LENGTH, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { ACK, CWR, ECE, FIN, parseTcp, PSH, RST, SYN, TCP_HEADER_MIN, URG } from '../../core/wire/tcp';

const GLOBAL_HEADER_LENGTH = 24;
const RECORD_HEADER_LENGTH = 16;
const LINKTYPE_ETHERNET = 1;
/** Larger than any frame weft writes (a 64 KiB offloaded segment plus headers); guards against a corrupt length. */
const MAX_FRAME_LENGTH = 1 << 20;
const READ_CHUNK = 4 << 20;

export type FinViolationKind =
  /** Payload that ends after finSeq: a byte at or past the FIN's own sequence number. */
  | 'data-past-fin'
  /** A second FIN at another sequence number. */
  | 'fin-moved'
  /** An empty segment numbered beyond finSeq + 1 (what weft would send after a phantom byte). */
  | 'seq-past-fin';

export interface FinViolation {
  kind: FinViolationKind;
  /** 1-based frame number, as tshark and Wireshark count. */
  frame: number;
  /** Capture time, Unix epoch milliseconds. */
  timeMs: number;
  /** weft's side first: "10.0.2.2:8080 > 10.0.2.15:40000". */
  flow: string;
  flags: string;
  seq: number;
  length: number;
  /** Sequence number of weft's FIN on this connection (the first FIN the scan saw). */
  finSeq: number;
  /** weft's initial sequence number, if the scan saw its SYN (for tshark-style relative numbers). */
  isn: number | undefined;
}

export interface PcapTcpScan {
  /** Bytes of the file read. */
  bytes: number;
  frames: number;
  /** TCP segments from weft that were checked. */
  weftSegments: number;
  /** Connections weft took part in: SYN or SYN-ACK from weft, one per initial sequence number. */
  connections: number;
  /** Connection attempts: SYNs without ACK from either side, one per 4-tuple and ISN (refused ones too). */
  connectionAttempts: number;
  /** Connections whose FIN from weft the scan saw. */
  weftFins: number;
  /** TCP/IPv4 frames from weft the scan could not read (a header cut off by the snap length, a bad IP header): they were not checked. */
  unreadableFromWeft: number;
  /** The same from the guest (e.g. corrupted on a faulty link); they do not matter to the check. */
  unreadableFromGuest: number;
  /** The file ended inside a record (a capture cut short, e.g. weft killed without a flush). */
  truncatedTail: boolean;
  /** The longest frame (its original length: Ethernet header and payload, no FCS) from weft, and from any guest. */
  largestFrameFromWeft: number;
  largestFrameFromGuest: number;
  /** The first `maxViolations` violations, in capture order. */
  violations: FinViolation[];
  violationsTotal: number;
}

export interface PcapTcpCheckOptions {
  /** The MAC weft sends from (default: the gateway MAC of DEFAULT_NETWORK). */
  weftMac?: MacAddress;
  /** How many violations to keep (all are counted). Default 100. */
  maxViolations?: number;
}

export class PcapFormatError extends Error {
  constructor(
    readonly code: 'bad-magic' | 'bad-linktype' | 'bad-record-length',
    message: string,
  ) {
    super(message);
    this.name = 'PcapFormatError';
  }
}

interface WeftSide {
  /** weft's ISN, if its SYN was seen. */
  isn: SeqNum | undefined;
  finSeq: SeqNum | undefined;
}

/** Feeds a pcap file's bytes in order (`push`), then `finish()` for the result. */
export class PcapTcpChecker {
  private readonly weftMac: MacAddress;
  private readonly maxViolations: number;
  private pending: Uint8Array = new Uint8Array(0);
  private littleEndian = true;
  private nanoseconds = false;
  private headerRead = false;
  private scratch = new Uint8Array(0);
  private readonly weftSides = new Map<string, WeftSide>();
  /** Last SYN's ISN per sender 4-tuple, so a retransmitted SYN is one attempt. */
  private readonly synIsn = new Map<string, number>();
  private readonly scan: PcapTcpScan = {
    bytes: 0,
    frames: 0,
    weftSegments: 0,
    connections: 0,
    connectionAttempts: 0,
    weftFins: 0,
    unreadableFromWeft: 0,
    unreadableFromGuest: 0,
    truncatedTail: false,
    largestFrameFromWeft: 0,
    largestFrameFromGuest: 0,
    violations: [],
    violationsTotal: 0,
  };

  constructor(opts: PcapTcpCheckOptions = {}) {
    this.weftMac = opts.weftMac ?? DEFAULT_NETWORK.gatewayMac;
    this.maxViolations = opts.maxViolations ?? 100;
  }

  push(chunk: Uint8Array): void {
    this.scan.bytes += chunk.length;
    let buf = chunk;
    if (this.pending.length > 0) {
      buf = new Uint8Array(this.pending.length + chunk.length);
      buf.set(this.pending);
      buf.set(chunk, this.pending.length);
    }
    let off = 0;
    if (!this.headerRead) {
      if (buf.length < GLOBAL_HEADER_LENGTH) {
        this.pending = buf.slice();
        return;
      }
      this.readGlobalHeader(buf);
      off = GLOBAL_HEADER_LENGTH;
    }
    const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
    while (buf.length - off >= RECORD_HEADER_LENGTH) {
      const included = view.getUint32(off + 8, this.littleEndian);
      const original = view.getUint32(off + 12, this.littleEndian);
      if (included > MAX_FRAME_LENGTH || original > MAX_FRAME_LENGTH || included > original) {
        throw new PcapFormatError('bad-record-length', `pcap record ${this.scan.frames + 1}: captured ${included} of ${original} bytes is not a frame`);
      }
      if (buf.length - off < RECORD_HEADER_LENGTH + included) break;
      const seconds = view.getUint32(off, this.littleEndian);
      const fraction = view.getUint32(off + 4, this.littleEndian);
      const timeMs = seconds * 1000 + (this.nanoseconds ? fraction / 1e6 : fraction / 1e3);
      const start = off + RECORD_HEADER_LENGTH;
      this.scan.frames++;
      this.frame(buf.subarray(start, start + included), original, timeMs);
      off = start + included;
    }
    // Copy the remainder: `chunk` may be a buffer the caller reuses.
    this.pending = buf.slice(off);
  }

  finish(): PcapTcpScan {
    this.scan.truncatedTail = this.pending.length > 0;
    return { ...this.scan, violations: [...this.scan.violations] };
  }

  private readGlobalHeader(buf: Uint8Array): void {
    const view = new DataView(buf.buffer, buf.byteOffset, GLOBAL_HEADER_LENGTH);
    const magic = view.getUint32(0, true);
    if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) this.littleEndian = true;
    else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) this.littleEndian = false;
    else throw new PcapFormatError('bad-magic', `not a classic pcap file (magic 0x${magic.toString(16)}; pcapng is not read here)`);
    this.nanoseconds = magic === 0xa1b23c4d || magic === 0x4d3cb2a1;
    const linktype = view.getUint32(20, this.littleEndian);
    if (linktype !== LINKTYPE_ETHERNET) throw new PcapFormatError('bad-linktype', `pcap link type ${linktype}, expected 1 (Ethernet)`);
    this.headerRead = true;
  }

  /** `captured` may be shorter than the frame was (`original` bytes): lengths come from the headers. */
  private frame(captured: Uint8Array, original: number, timeMs: number): void {
    const eth = parseEthernet(captured);
    if (isDrop(eth)) return;
    const fromWeft = eth.src === this.weftMac;
    if (fromWeft) this.scan.largestFrameFromWeft = Math.max(this.scan.largestFrameFromWeft, original);
    else this.scan.largestFrameFromGuest = Math.max(this.scan.largestFrameFromGuest, original);
    if (eth.ethertype !== ETHERTYPE_IPV4) return;
    const ipStart = ETHERNET_HEADER_LENGTH;
    const claimsTcp = captured.length > ipStart + 9 && captured[ipStart + 9] === IPPROTO_TCP;
    const unreadable = () => {
      if (!claimsTcp) return;
      if (fromWeft) this.scan.unreadableFromWeft++;
      else this.scan.unreadableFromGuest++;
    };
    // The IP header must be captured whole; the payload need not be. The parsers get a frame of
    // the original length (bytes past the capture are never read: only header fields and the
    // payload's length are used).
    if (captured.length < ipStart + IPV4_HEADER_LENGTH || captured.length < ipStart + (captured[ipStart] & 0x0f) * 4) return unreadable();
    let frame = captured;
    if (captured.length < original) {
      if (this.scratch.length < original) this.scratch = new Uint8Array(Math.max(original, 2 * this.scratch.length));
      this.scratch.set(captured);
      frame = this.scratch.subarray(0, original);
    }
    const ip = parseIpv4Packet(frame.subarray(ipStart));
    if (isDrop(ip)) return unreadable();
    if (ip.protocol !== IPPROTO_TCP) return;
    const tcpStart = ipStart + ip.headerLength;
    if (ip.moreFragments || ip.fragmentOffset !== 0 || captured.length < tcpStart + TCP_HEADER_MIN) return unreadable();
    const tcp = parseTcp(ip.payload);
    if (isDrop(tcp) || captured.length < tcpStart + tcp.dataOffset * 4) return unreadable();

    const flow = `${formatIpv4(ip.src)}:${tcp.srcPort} > ${formatIpv4(ip.dst)}:${tcp.dstPort}`;
    if ((tcp.flags & (SYN | ACK)) === SYN && this.synIsn.get(flow) !== tcp.seq) {
      this.synIsn.set(flow, tcp.seq);
      this.scan.connectionAttempts++;
    }
    if (!fromWeft) return;
    this.scan.weftSegments++;
    this.weftSegment(flow, tcp.seq, tcp.payload.length, tcp.flags, timeMs);
  }

  private weftSegment(flow: string, seq: SeqNum, length: number, flags: number, timeMs: number): void {
    let side = this.weftSides.get(flow);
    if (flags & SYN) {
      // A new ISN is a new connection on this 4-tuple; the same one, a retransmitted SYN(-ACK).
      if (side?.isn !== seq) {
        this.scan.connections++;
        this.weftSides.set(flow, { isn: seq, finSeq: undefined });
      }
      return;
    }
    if (!side) {
      // Mid-connection (the capture began later): judged from its first FIN on.
      side = { isn: undefined, finSeq: undefined };
      this.weftSides.set(flow, side);
    }
    if (flags & RST) return;
    const fin = (flags & FIN) !== 0;
    const dataEnd = seqAdd(seq, length);
    if (side.finSeq === undefined) {
      if (fin) {
        side.finSeq = dataEnd;
        this.scan.weftFins++;
      }
      return;
    }
    const finSeq = side.finSeq;
    let kind: FinViolationKind | undefined;
    if (length > 0 && seqGt(dataEnd, finSeq)) kind = 'data-past-fin';
    else if (fin && dataEnd !== finSeq) kind = 'fin-moved';
    else if (!fin && seqGt(seq, seqAdd(finSeq, 1))) kind = 'seq-past-fin';
    if (kind === undefined) return;
    this.scan.violationsTotal++;
    if (this.scan.violations.length >= this.maxViolations) return;
    this.scan.violations.push({
      kind,
      frame: this.scan.frames,
      timeMs,
      flow,
      flags: formatTcpFlags(flags),
      seq,
      length,
      finSeq,
      isn: side.isn,
    });
  }
}

/** Scans a pcap file in chunks; throws PcapFormatError for a file that is not an Ethernet pcap. */
export async function scanPcapFile(path: string, opts: PcapTcpCheckOptions = {}): Promise<PcapTcpScan> {
  const checker = new PcapTcpChecker(opts);
  const file = await open(path, 'r');
  try {
    const buf = new Uint8Array(READ_CHUNK);
    for (;;) {
      const { bytesRead } = await file.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      checker.push(buf.subarray(0, bytesRead));
    }
  } finally {
    await file.close();
  }
  return checker.finish();
}

const FLAG_NAMES: Array<[number, string]> = [
  [SYN, 'SYN'],
  [FIN, 'FIN'],
  [RST, 'RST'],
  [PSH, 'PSH'],
  [ACK, 'ACK'],
  [URG, 'URG'],
  [ECE, 'ECE'],
  [CWR, 'CWR'],
];

export function formatTcpFlags(flags: number): string {
  return FLAG_NAMES.filter(([bit]) => flags & bit)
    .map(([, name]) => name)
    .join(',');
}

/** One line per violation, e.g. for a test failure message. */
export function describeFinViolation(v: FinViolation): string {
  const at = (n: number) => (v.isn === undefined ? `${n}` : `${n} (relative ${seqDiff(toSeq(n), toSeq(v.isn))})`);
  const offset = seqDiff(toSeq(v.seq), toSeq(v.finSeq));
  return (
    `frame ${v.frame} at ${new Date(v.timeMs).toISOString()}: ${v.flow} [${v.flags}] seq ${at(v.seq)} = FIN${offset < 0 ? '' : '+'}${offset}, ` +
    `${v.length} byte${v.length === 1 ? '' : 's'}: ${v.kind} (weft's FIN is at ${at(v.finSeq)})`
  );
}

/** A short account of a scan for logs and failure messages. */
export function describeScan(s: PcapTcpScan): string {
  return (
    `${s.frames} frames (${(s.bytes / 1e6).toFixed(1)} MB), ${s.connections} connections (${s.connectionAttempts} attempts), ${s.weftFins} FINs from weft, ` +
    `${s.weftSegments} weft segments checked, ${s.violationsTotal} past a FIN` +
    (s.unreadableFromWeft ? `, ${s.unreadableFromWeft} unreadable weft frames` : '') +
    (s.truncatedTail ? ', file cut short' : '')
  );
}
