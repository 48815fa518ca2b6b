// The one thing every transport gives `weft vm`: Ethernet frames in and out, and a way to stop.
// A link owns its sockets and fds; close() releases every one of them, whatever state it is in.

import type { Ipv4Address, MacAddress } from '../../core/wire/address';

export interface FrameLinkEvents {
  /** A one-line, structured note for the log (a client connected, a frame was malformed, …). */
  log: (event: string, fields: Record<string, unknown>) => void;
  /** The link cannot carry frames any more (the fd failed, the socket broke). `weft vm` then exits. */
  fatal: (error: Error) => void;
}

export interface FrameLink {
  /** What the link is, for the ready line: e.g. { link: 'tap-fd', fd: 3 }. */
  readonly description: Record<string, unknown>;
  /** Sends one frame. Never throws: a frame that cannot go out is counted as a drop. */
  send(frame: Uint8Array): void;
  /**
   * Registers the receiver of every frame that arrives; the frame may be reused after the call.
   * `checksumTrusted` means the link vouches for the frame's transport checksum (a local kernel
   * built it with checksum offload), so the stack need not verify it.
   */
  onFrame(cb: (frame: Uint8Array, checksumTrusted?: boolean) => void): void;
  /**
   * Room for an outgoing frame of `length` bytes in the link's own write buffer, zero-filled (or
   * only its first `zeroBytes`; see StackOptions.allocFrame): send() of a frame from here, in
   * order, needs no copy.
   */
  allocFrame?(length: number, zeroBytes?: number): Uint8Array;
  /**
   * Sends one frame in two parts, `head` from allocFrame() and `payload` after it, without
   * joining them (see StackOptions.outputGathered). Never throws, as send().
   */
  sendGathered?(head: Uint8Array, payload: Uint8Array): void;
  /** TCP segments may be up to 64 KiB: the link segments them or the guest takes them whole. */
  readonly segmentationOffload?: boolean;
  /**
   * Registers a callback for the end of a burst of frames (all that were waiting have been passed
   * to onFrame), so the stack can send one coalesced ACK instead of one per segment.
   */
  onBatchEnd(cb: () => void): void;
  on<K extends keyof FrameLinkEvents>(event: K, cb: FrameLinkEvents[K]): void;
  /** Frames the link itself dropped, by reason (the stack counts its own separately). */
  drops(): Record<string, number>;
  /** Numbers for the stopped line beyond drops, where the link has any (a LAN's switch table). */
  stats?(): Record<string, number>;
  /**
   * For a link that is a LAN of several guests: the stack's DHCP leases, so that a guest speaking
   * for another's leased address reaches only the stack, not the other guests.
   */
  guardLeases?(holder: (ip: Ipv4Address) => MacAddress | undefined): void;
  /** Closes every socket and fd the link holds; resolves when they are closed. Idempotent. */
  close(): Promise<void>;
}

/** Shared plumbing for the small event surface of a link. */
export class FrameLinkBase {
  protected frameListener: (frame: Uint8Array, checksumTrusted?: boolean) => void = () => {};
  protected batchEndListener: () => void = () => {};
  protected logListeners: FrameLinkEvents['log'][] = [];
  protected fatalListeners: FrameLinkEvents['fatal'][] = [];
  protected readonly dropCounts: Record<string, number> = {};
  private batchEndQueued = false;
  private readonly endBatch = () => {
    this.batchEndQueued = false;
    this.batchEndListener();
  };

  onFrame(cb: (frame: Uint8Array, checksumTrusted?: boolean) => void): void {
    this.frameListener = cb;
  }

  onBatchEnd(cb: () => void): void {
    this.batchEndListener = cb;
  }

  on<K extends keyof FrameLinkEvents>(event: K, cb: FrameLinkEvents[K]): void {
    if (event === 'log') this.logListeners.push(cb as FrameLinkEvents['log']);
    else this.fatalListeners.push(cb as FrameLinkEvents['fatal']);
  }

  drops(): Record<string, number> {
    return { ...this.dropCounts };
  }

  /**
   * Passes on a frame that came in a callback of its own (a datagram): the burst ends once this
   * turn's I/O callbacks are done, not after each frame.
   */
  protected receiveInBatch(frame: Uint8Array): void {
    this.frameListener(frame);
    if (this.batchEndQueued) return;
    this.batchEndQueued = true;
    setImmediate(this.endBatch);
  }

  protected drop(reason: string): void {
    this.dropCounts[reason] = (this.dropCounts[reason] ?? 0) + 1;
  }

  protected log(event: string, fields: Record<string, unknown> = {}): void {
    for (const l of this.logListeners) l(event, fields);
  }

  protected fail(error: Error): void {
    for (const l of this.fatalListeners) l(error);
  }
}
