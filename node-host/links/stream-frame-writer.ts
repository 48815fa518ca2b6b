// Frames to one QEMU `-netdev stream` peer, each as a 4-byte big-endian length and the frame. The
// frames of one burst are packed into one buffer and go out in one write: a write per frame cost a
// system call each, most of weft's time on this link. The peer's backlog is bounded: a slow peer
// loses its own frames, and nothing else waits for it.

import type net from 'node:net';

export const LENGTH_BYTES = 4;
/** Bytes queued towards a slow peer before further frames are dropped. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** Room for one burst (one batch of input, one timer); a larger burst takes another buffer. */
const ARENA_BYTES = 256 * 1024;

export class StreamFrameWriter {
  /** Where frames of the current burst are packed; [sent, fill) is not written yet. */
  private arena = Buffer.allocUnsafe(ARENA_BYTES);
  private sent = 0;
  private fill = 0;
  private flushQueued = false;

  constructor(private readonly socket: net.Socket) {}

  /** Queues one frame (copied). False when the peer's backlog is full: the frame is dropped. */
  write(frame: Uint8Array): boolean {
    if (this.socket.writableLength + this.fill - this.sent > MAX_PENDING_BYTES) return false;
    const need = LENGTH_BYTES + frame.length;
    if (this.fill + need > this.arena.length) {
      this.flush();
      // What was written from this arena may still be queued in the socket: take a fresh one.
      this.arena = Buffer.allocUnsafe(Math.max(ARENA_BYTES, need));
      this.sent = this.fill = 0;
    }
    this.arena.writeUInt32BE(frame.length, this.fill);
    this.arena.set(frame, this.fill + LENGTH_BYTES);
    this.fill += need;
    if (!this.flushQueued) {
      this.flushQueued = true;
      // Once this turn's I/O callbacks are done (setImmediate), not after each one (a microtask):
      // at a large MTU each 64 KiB read from a host socket makes one segment, and Node runs up to
      // 32 reads per turn — one write per segment woke QEMU per frame.
      setImmediate(this.flushNow);
    }
    return true;
  }

  private readonly flushNow = () => this.flush();

  private flush(): void {
    this.flushQueued = false;
    if (this.fill === this.sent) return;
    if (this.socket.destroyed) {
      this.sent = this.fill = 0;
      return;
    }
    this.socket.write(this.arena.subarray(this.sent, this.fill));
    this.sent = this.fill;
    // Written at once, nothing of the arena is held any more: start again from its beginning.
    if (this.socket.writableLength === 0) this.sent = this.fill = 0;
  }
}
