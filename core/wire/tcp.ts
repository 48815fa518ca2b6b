// TCP header codec (RFC 9293) with the options weft uses: MSS, window scale, SACK (RFC 2018) and
// timestamps (RFC 7323). The parser reads into a plain object and keeps the payload as a view; the
// emitter writes into a caller's buffer. Window values are the raw 16-bit field: scaling is the
// connection's business, not the codec's.

import type { SeqNum } from '../tcp/seq';
import type { Ipv4Address } from './address';
import { finishChecksum, pseudoHeaderSum, sumBytes } from './checksum';
import type { Parsed } from './parse-result';
import { readU16, readU32, writeU16, writeU32 } from './bytes';

export const FIN = 0x01;
export const SYN = 0x02;
export const RST = 0x04;
export const PSH = 0x08;
export const ACK = 0x10;
export const URG = 0x20;
export const ECE = 0x40;
export const CWR = 0x80;
/** AccECN's AE bit (RFC 9768), the low bit of byte 12; kept so a parse/emit round trip is lossless. */
export const AE = 0x100;

export const TCP_PROTOCOL = 6;
export const TCP_HEADER_MIN = 20;
/** The data offset field is 4 bits of 32-bit words: at most 60 bytes of header, 40 of options. */
export const TCP_OPTIONS_MAX = 40;

const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_MSS = 2;
const OPT_WSCALE = 3;
const OPT_SACK_PERM = 4;
const OPT_SACK = 5;
const OPT_TIMESTAMP = 8;

/** RFC 7323 §2.3: a larger shift must be treated as 14. */
const MAX_WINDOW_SCALE = 14;

export interface TcpTimestamp {
  value: number;
  echo: number;
}

/**
 * `S` is how SACK edges are typed: parsed segments carry sequence numbers (SeqNum); what is emitted
 * may be any 32-bit numbers (a test's hand-made blocks).
 */
export interface TcpOptions<S extends number = number> {
  mss?: number;
  windowScale?: number;
  sackPermitted?: boolean;
  /** SACK blocks as [left, right) sequence-number edges. */
  sack?: Array<[S, S]>;
  timestamp?: TcpTimestamp;
}

/**
 * Options with every field present, in one order, for a segment to fill in: every segment's options
 * then share one hidden class, and V8 keeps the header code that reads them monomorphic. Built up
 * field by field, each mix of options (SYN, data, data with SACK, parsed) was a shape of its own,
 * and that code was deoptimised and recompiled as each new one arrived.
 */
export function noTcpOptions<S extends number = number>(): TcpOptions<S> {
  return { mss: undefined, windowScale: undefined, sackPermitted: undefined, sack: undefined, timestamp: undefined };
}

/** Options for a segment that has none (not to be changed). */
const NO_OPTIONS: TcpOptions = noTcpOptions();

export interface TcpSegment {
  srcPort: number;
  dstPort: number;
  seq: SeqNum;
  ack: SeqNum;
  /** Header length in 32-bit words. */
  dataOffset: number;
  flags: number;
  window: number;
  checksum: number;
  urgent: number;
  options: TcpOptions<SeqNum>;
  /** A view into the parsed buffer, not a copy. */
  payload: Uint8Array;
}

/**
 * The payload of a segment being sent, from wherever the sender keeps it: copied into the frame,
 * or — where it lies in one piece and the link can send a frame in two parts — sent from there.
 */
export interface SegmentPayload {
  /** Writes the payload into `out` at `offset`. */
  copyTo(out: Uint8Array, offset: number): void;
  /** The payload's bytes in one piece, unchanged until the frame has left; undefined if not in one piece. */
  view(): Uint8Array | undefined;
}

/** What to emit. Missing fields default to 0 / no options / empty payload. */
export interface TcpRepr {
  srcPort: number;
  dstPort: number;
  seq: number;
  ack: number;
  flags: number;
  window: number;
  urgent?: number;
  options?: TcpOptions;
  payload?: Uint8Array;
}

/** Parses a TCP segment (the IP payload, already trimmed to the IP total length). Never throws. */
export function parseTcp(segment: Uint8Array): Parsed<TcpSegment> {
  if (segment.length < TCP_HEADER_MIN) return 'tcp-truncated';
  const dataOffset = segment[12] >>> 4;
  if (dataOffset < 5) return 'tcp-bad-data-offset';
  const headerLength = dataOffset * 4;
  if (headerLength > segment.length) return 'tcp-truncated';
  const options = parseOptions(segment, TCP_HEADER_MIN, headerLength);
  if (typeof options === 'string') return options;
  return {
    srcPort: readU16(segment, 0),
    dstPort: readU16(segment, 2),
    seq: readU32(segment, 4) as SeqNum,
    ack: readU32(segment, 8) as SeqNum,
    dataOffset,
    flags: ((segment[12] & 0x01) << 8) | segment[13],
    window: readU16(segment, 14),
    checksum: readU16(segment, 16),
    urgent: readU16(segment, 18),
    options,
    payload: segment.subarray(headerLength),
  };
}

// Known options with a wrong length are ignored, as Linux does (tcp_parse_options): a peer's odd
// option should cost it that option, not the whole segment. Only a length that breaks the walk
// itself (too short to advance, or past the header) makes the segment unparseable.
function parseOptions(b: Uint8Array, start: number, end: number): Parsed<TcpOptions<SeqNum>> {
  const opts = noTcpOptions<SeqNum>();
  let i = start;
  while (i < end) {
    const kind = b[i];
    if (kind === OPT_EOL) break;
    if (kind === OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= end) return 'tcp-option-overrun';
    const len = b[i + 1];
    if (len < 2 || i + len > end) return 'tcp-option-overrun';
    switch (kind) {
      case OPT_MSS:
        if (len === 4) opts.mss = readU16(b, i + 2);
        break;
      case OPT_WSCALE:
        if (len === 3) opts.windowScale = Math.min(b[i + 2], MAX_WINDOW_SCALE);
        break;
      case OPT_SACK_PERM:
        if (len === 2) opts.sackPermitted = true;
        break;
      case OPT_SACK:
        if ((len - 2) % 8 === 0 && len > 2) {
          const blocks: Array<[SeqNum, SeqNum]> = [];
          for (let j = i + 2; j < i + len; j += 8) blocks.push([readU32(b, j) as SeqNum, readU32(b, j + 4) as SeqNum]);
          opts.sack = blocks;
        }
        break;
      case OPT_TIMESTAMP:
        if (len === 10) opts.timestamp = { value: readU32(b, i + 2), echo: readU32(b, i + 6) };
        break;
      default:
        break; // unknown: skipped by its length
    }
    i += len;
  }
  return opts;
}

/** True if the segment's checksum is correct for this IPv4 source and destination. */
export function verifyTcpChecksum(segment: Uint8Array, srcIp: Ipv4Address, dstIp: Ipv4Address): boolean {
  const initial = pseudoHeaderSum(srcIp, dstIp, TCP_PROTOCOL, segment.length);
  return finishChecksum(sumBytes(segment, 0, segment.length, initial)) === 0;
}

// Options are laid out as Linux's tcp_options_write does, so captures look like a Linux peer and
// every option stays 4-byte aligned without trailing padding:
//   MSS | SACK_PERM+TS (or NOP NOP TS, or NOP NOP SACK_PERM) | NOP WS | NOP NOP SACK blocks.

/** How many SACK blocks fit beside the other options: 4 alone, 3 with timestamps, fewer on a SYN. */
function sackBlockCount(o: TcpOptions, fixed: number): number {
  const wanted = o.sack?.length ?? 0;
  if (wanted === 0) return 0;
  const room = Math.floor((TCP_OPTIONS_MAX - fixed - 4) / 8);
  return Math.max(0, Math.min(wanted, o.timestamp ? 3 : 4, room));
}

function fixedOptionsLength(o: TcpOptions): number {
  let n = 0;
  if (o.mss !== undefined) n += 4;
  if (o.timestamp) n += 12;
  else if (o.sackPermitted) n += 4;
  if (o.windowScale !== undefined) n += 4;
  return n;
}

function optionsLength(o: TcpOptions): number {
  const fixed = fixedOptionsLength(o);
  const blocks = sackBlockCount(o, fixed);
  return fixed + (blocks > 0 ? 4 + 8 * blocks : 0);
}

/** Bytes of TCP header (20 plus options) that emitTcp writes for these options. */
export function tcpHeaderLength(options: TcpOptions = NO_OPTIONS): number {
  return TCP_HEADER_MIN + optionsLength(options);
}

function writeOptions(o: TcpOptions, b: Uint8Array, start: number): number {
  let i = start;
  if (o.mss !== undefined) {
    b[i] = OPT_MSS;
    b[i + 1] = 4;
    writeU16(b, i + 2, o.mss);
    i += 4;
  }
  if (o.timestamp) {
    if (o.sackPermitted) {
      b[i] = OPT_SACK_PERM;
      b[i + 1] = 2;
    } else {
      b[i] = OPT_NOP;
      b[i + 1] = OPT_NOP;
    }
    b[i + 2] = OPT_TIMESTAMP;
    b[i + 3] = 10;
    writeU32(b, i + 4, o.timestamp.value);
    writeU32(b, i + 8, o.timestamp.echo);
    i += 12;
  } else if (o.sackPermitted) {
    b[i] = OPT_NOP;
    b[i + 1] = OPT_NOP;
    b[i + 2] = OPT_SACK_PERM;
    b[i + 3] = 2;
    i += 4;
  }
  if (o.windowScale !== undefined) {
    b[i] = OPT_NOP;
    b[i + 1] = OPT_WSCALE;
    b[i + 2] = 3;
    b[i + 3] = o.windowScale;
    i += 4;
  }
  const blocks = sackBlockCount(o, i - start);
  if (blocks > 0 && o.sack) {
    b[i] = OPT_NOP;
    b[i + 1] = OPT_NOP;
    b[i + 2] = OPT_SACK;
    b[i + 3] = 2 + 8 * blocks;
    i += 4;
    for (let k = 0; k < blocks; k++) {
      writeU32(b, i, o.sack[k][0]);
      writeU32(b, i + 4, o.sack[k][1]);
      i += 8;
    }
  }
  return i - start;
}

/**
 * Writes header, options and payload at `offset` and fills in the checksum over the IPv4
 * pseudo-header. Returns the bytes written. Throws RangeError if `out` is too small: typed arrays
 * drop out-of-range writes silently, which would send a corrupt segment instead.
 */
export function emitTcp(repr: TcpRepr, out: Uint8Array, offset: number, srcIp: Ipv4Address, dstIp: Ipv4Address): number {
  const payloadLength = repr.payload?.length ?? 0;
  const headerLength = tcpHeaderLength(repr.options);
  if (offset < 0 || offset + headerLength + payloadLength > out.length) {
    throw new RangeError(`TCP segment of ${headerLength + payloadLength} bytes does not fit at offset ${offset}`);
  }
  if (repr.payload) out.set(repr.payload, offset + headerLength);
  return emitTcpHeader(repr, payloadLength, out, offset, srcIp, dstIp);
}

/**
 * Writes a TCP header in front of `payloadLength` bytes already in place after it (no copy), and
 * the checksum. `partialChecksum`: write only the folded pseudo-header sum, uncomplemented — a
 * segment for a link with checksum offload, where the receiving kernel takes it as verified.
 * `payloadElsewhere`: the payload is not after the header but in these bytes (a frame the link
 * sends in two parts); the checksum covers them where they lie.
 */
export function emitTcpHeader(
  repr: TcpRepr,
  payloadLength: number,
  out: Uint8Array,
  offset: number,
  srcIp: Ipv4Address,
  dstIp: Ipv4Address,
  partialChecksum = false,
  payloadElsewhere?: Uint8Array,
): number {
  const options = repr.options ?? NO_OPTIONS;
  const headerLength = tcpHeaderLength(options);
  const total = headerLength + payloadLength;
  const inPlace = payloadElsewhere === undefined ? total : headerLength;
  if (offset < 0 || offset + inPlace > out.length) throw new RangeError(`TCP segment of ${total} bytes does not fit at offset ${offset}`);
  if (payloadElsewhere !== undefined && payloadElsewhere.length !== payloadLength) {
    throw new RangeError(`TCP payload of ${payloadElsewhere.length} bytes where ${payloadLength} were announced`);
  }
  writeU16(out, offset, repr.srcPort);
  writeU16(out, offset + 2, repr.dstPort);
  writeU32(out, offset + 4, repr.seq);
  writeU32(out, offset + 8, repr.ack);
  out[offset + 12] = ((headerLength / 4) << 4) | ((repr.flags >>> 8) & 0x01);
  out[offset + 13] = repr.flags & 0xff;
  writeU16(out, offset + 14, repr.window);
  writeU16(out, offset + 16, 0);
  writeU16(out, offset + 18, repr.urgent ?? 0);
  writeOptions(options, out, offset + TCP_HEADER_MIN);
  let sum = pseudoHeaderSum(srcIp, dstIp, TCP_PROTOCOL, total);
  if (partialChecksum) {
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    writeU16(out, offset + 16, sum);
  } else {
    // The header is a whole number of 32-bit words, so the payload's sum adds on without a byte swap.
    sum = sumBytes(out, offset, inPlace, sum);
    if (payloadElsewhere !== undefined) sum = sumBytes(payloadElsewhere, 0, payloadLength, sum);
    writeU16(out, offset + 16, finishChecksum(sum));
  }
  return total;
}
