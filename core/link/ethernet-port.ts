// weft's router on one Ethernet link: every frame in either direction is counted and shown to the
// capture hook here, and every frame out gets its Ethernet header, its padding and its buffer here.
// The IP layers send through a port and know nothing of the link; a second link (a switch with
// several guests' ports) would be a second port beside this one.

import type { Clock } from '../clock';
import { FrameAllocator } from '../frame-allocator';
import type { MacAddress } from '../wire/address';
import { emitEthernetHeader, ETHERNET_HEADER_LENGTH } from '../wire/ethernet';

/** Ethernet's minimum frame size without FCS: shorter frames are padded as a NIC would. */
const MIN_FRAME = 60;

export interface EthernetPortOptions {
  /** The router's MAC on this link: the source of every frame it sends. */
  mac: MacAddress;
  /** Takes each frame sent, synchronously; the port never touches it again. */
  output: (frame: Uint8Array) => void;
  /** Takes a frame in two parts, where the link can send it so (StackOptions.outputGathered). */
  outputGathered?: (head: Uint8Array, payload: Uint8Array) => void;
  /** Sees every frame in both directions (for pcap). */
  capture?: (frame: Uint8Array, direction: 'in' | 'out', timeMs: number) => void;
  clock: Clock;
  /** Builds frames in the link's memory instead of the port's own blocks (StackOptions.allocFrame). */
  allocFrame?: (length: number, zeroBytes?: number) => Uint8Array;
}

export interface EthernetPortCounters {
  framesIn: number;
  framesOut: number;
  /** Of framesOut, those the link took in two parts, the payload not copied (sendGathered). */
  framesGathered: number;
  bytesIn: number;
  bytesOut: number;
}

export class EthernetPort {
  readonly mac: MacAddress;
  private readonly output: (frame: Uint8Array) => void;
  private readonly outputGathered?: (head: Uint8Array, payload: Uint8Array) => void;
  private readonly capture?: EthernetPortOptions['capture'];
  private readonly clock: Clock;
  private readonly allocFrame: (length: number, zeroBytes?: number) => Uint8Array;
  private readonly stats: EthernetPortCounters = { framesIn: 0, framesOut: 0, framesGathered: 0, bytesIn: 0, bytesOut: 0 };

  constructor(opts: EthernetPortOptions) {
    this.mac = opts.mac;
    this.output = opts.output;
    // A capture sees whole frames: with one, every frame is built whole.
    if (!opts.capture) this.outputGathered = opts.outputGathered;
    this.capture = opts.capture;
    this.clock = opts.clock;
    if (opts.allocFrame) {
      this.allocFrame = opts.allocFrame;
    } else {
      const frames = new FrameAllocator();
      this.allocFrame = (length) => frames.alloc(length);
    }
  }

  /** Whether sendGathered() may be used: the link takes frames in two parts and nothing captures them. */
  get gathers(): boolean {
    return this.outputGathered !== undefined;
  }

  counters(): EthernetPortCounters {
    return { ...this.stats };
  }

  /** Counts and captures a frame from the link, before anything parses it. */
  received(frame: Uint8Array, now: number): void {
    this.stats.framesIn++;
    this.stats.bytesIn += frame.length;
    if (this.capture) this.capture(frame, 'in', now);
  }

  /**
   * A zeroed frame with room for `payloadLength` bytes after the Ethernet header, padded to the
   * minimum. `filledFrom`: the caller writes every payload byte from this offset on, so they need
   * not be zeroed first (padding is zeroed all the same).
   */
  alloc(payloadLength: number, filledFrom?: number): Uint8Array {
    const length = ETHERNET_HEADER_LENGTH + payloadLength;
    if (filledFrom === undefined || length < MIN_FRAME) return this.allocFrame(Math.max(MIN_FRAME, length));
    return this.allocFrame(length, ETHERNET_HEADER_LENGTH + filledFrom);
  }

  /** Room for the headers of a frame for sendGathered(): `headersLength` bytes after the Ethernet header, unpadded. */
  allocHead(headersLength: number): Uint8Array {
    return this.allocFrame(ETHERNET_HEADER_LENGTH + headersLength);
  }

  /** Writes the Ethernet header into a frame from alloc() and sends it. */
  send(frame: Uint8Array, dstMac: MacAddress, ethertype: number): void {
    emitEthernetHeader(frame, 0, dstMac, this.mac, ethertype);
    this.stats.framesOut++;
    this.stats.bytesOut += frame.length;
    // Read here, not passed in: frames also leave from upstream callbacks, outside input()/poll().
    if (this.capture) this.capture(frame, 'out', this.clock.now());
    this.output(frame);
  }

  /**
   * Sends a frame in two parts: `head` from allocHead() (the Ethernet header is written into it) and
   * `payload` after it, of which the link takes a view, not a copy. Only when `gathers`; the
   * payload must be long enough to need no padding.
   */
  sendGathered(head: Uint8Array, payload: Uint8Array, dstMac: MacAddress, ethertype: number): void {
    if (!this.outputGathered) throw new Error('sendGathered on a port whose link takes whole frames');
    emitEthernetHeader(head, 0, dstMac, this.mac, ethertype);
    this.stats.framesOut++;
    this.stats.framesGathered++;
    this.stats.bytesOut += head.length + payload.length;
    this.outputGathered(head, payload);
  }
}
