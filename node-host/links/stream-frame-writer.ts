// Frames to one QEMU `-netdev stream` peer, each as a 4-byte big-endian length and the frame. The
// frames of one burst are packed into buffers and leave together at the end of the turn, in one
// writev. A write per frame cost a system call each, most of weft's time on this link; and frames
// written a few at a time reach the guest a few at a time — a TCG guest then takes an interrupt and
// sends an ACK per few frames, which slowed its downloads at MTU 65520. The peer's backlog is
// bounded: a slow peer loses its own frames, and nothing else waits for it. A frame may come in
// two parts (writeGathered): its head is packed here and its payload, a view of a TCP send buffer,
// joins the same writev where it lies.

import type net from 'node:net';
import { bytesView } from '../../core/wire/bytes';

export const LENGTH_BYTES = 4;
/** Bytes queued towards a slow peer before further frames are dropped. */
const MAX_PENDING_BYTES = 4 * 1024 * 1024;
/** Room for one burst (one batch of input, one timer); a larger burst takes another buffer. */
const ARENA_BYTES = 256 * 1024;
/** Arenas kept for reuse once the socket has written them out; a slow peer needs a few. */
const SPARE_ARENAS = 8;

export class StreamFrameWriter {
  /**
   * Where frames of the current burst are packed: [sent, fill) is not written yet, and [fill,
   * reserved) is room handed out by alloc() for frames the stack is building or holding.
   */
  private arena: Buffer = Buffer.allocUnsafe(ARENA_BYTES);
  private sent = 0;
  private fill = 0;
  private reserved = 0;
  private flushQueued = false;
  /** Writes of each arena the socket has not finished. */
  private readonly unwritten = new Map<Buffer, number>();
  /** Arenas left behind with every frame in them written: reusable once those writes finish. */
  private readonly retired = new Set<Buffer>();
  private readonly spare: Buffer[] = [];
  /**
   * This burst's pieces before the current arena's [sent, fill), waiting for the flush: [arena,
   * bytes to write], or [undefined, a payload] written from where the stack keeps it.
   */
  private readonly ready: Array<[Buffer | undefined, Buffer]> = [];
  private readyBytes = 0;

  constructor(private readonly socket: net.Socket) {}

  /**
   * Zero-filled room for a frame of `length` bytes (only its first `zeroBytes` when the stack
   * writes the rest), right after room for its length: written in order, the frame is in place
   * and write() needs no copy. At a large MTU, copying each 64 KiB frame here and allocating it
   * in the stack were a third of weft's CPU per download.
   */
  alloc(length: number, zeroBytes = length): Uint8Array {
    const need = LENGTH_BYTES + length;
    if (this.reserved + need > this.arena.length) this.nextArena(need);
    const start = this.reserved + LENGTH_BYTES;
    this.reserved += need;
    const frame = bytesView(this.arena, start, length);
    frame.fill(0, 0, Math.min(zeroBytes, length));
    return frame;
  }

  /** Queues one frame (copied unless built in place). False when the peer's backlog is full: the frame is dropped. */
  write(frame: Uint8Array): boolean {
    if (this.backlogFull()) return false;
    this.place(frame, frame.length);
    this.queueFlush();
    return true;
  }

  /**
   * Queues one frame in two parts: `head` as write() takes a frame, and `payload` written after
   * it from where it lies, in the same writev — it must stay unchanged until the flush has handed
   * it to the socket, and the socket until written. False when the backlog is full, as write().
   */
  writeGathered(head: Uint8Array, payload: Uint8Array): boolean {
    if (this.backlogFull()) return false;
    this.place(head, head.length + payload.length);
    // The head ends what this arena has ready; the payload follows it as a piece of its own.
    this.ready.push([this.arena, this.arena.subarray(this.sent, this.fill)]);
    this.holdFor(this.arena);
    this.ready.push([undefined, Buffer.from(payload.buffer, payload.byteOffset, payload.length)]);
    this.readyBytes += this.fill - this.sent + payload.length;
    this.sent = this.fill;
    this.queueFlush();
    return true;
  }

  private backlogFull(): boolean {
    return this.socket.writableLength + this.readyBytes + this.fill - this.sent > MAX_PENDING_BYTES;
  }

  /** Puts `bytes` in the arena after what is ready, behind the length of a frame of `frameLength` bytes. */
  private place(bytes: Uint8Array, frameLength: number): void {
    const need = LENGTH_BYTES + bytes.length;
    if (bytes.buffer === this.arena.buffer && bytes.byteOffset === this.arena.byteOffset + this.fill + LENGTH_BYTES) {
      // Built in place and next in line: only its length is missing.
      this.arena.writeUInt32BE(frameLength, this.fill);
      this.fill += need;
    } else {
      // From elsewhere, or out of order (it waited for ARP, or a frame before it was never sent):
      // copied behind what is ready — into a fresh arena when room handed out lies in the way.
      if (this.reserved > this.fill || this.fill + need > this.arena.length) this.nextArena(need);
      this.arena.writeUInt32BE(frameLength, this.fill);
      this.arena.set(bytes, this.fill + LENGTH_BYTES);
      this.fill += need;
      this.reserved = this.fill;
    }
  }

  private queueFlush(): void {
    if (!this.flushQueued) {
      this.flushQueued = true;
      // Once this turn's I/O callbacks are done (setImmediate), not after each one (a microtask):
      // at a large MTU each 64 KiB read from a host socket makes one segment, and Node runs up to
      // 32 reads per turn — one write per segment woke QEMU per frame.
      setImmediate(this.flushNow);
    }
  }

  private readonly flushNow = () => this.flush();

  /**
   * Moves to another arena; what the old one holds ready goes out with the rest of the burst. The
   * old one's bytes may also be queued in the socket, or handed out for a frame not sent yet (it
   * waits for ARP, or is never sent). An arena whose frames were all written is used again once the
   * socket is done with it: at a large MTU a fresh 256 KiB buffer per four frames made most of
   * weft's garbage-collection work.
   */
  private nextArena(need: number): void {
    const old = this.arena;
    if (this.fill > this.sent) {
      this.ready.push([old, old.subarray(this.sent, this.fill)]);
      this.readyBytes += this.fill - this.sent;
      this.holdFor(old);
    }
    if (this.reserved === this.fill && old.length === ARENA_BYTES) {
      if (this.unwritten.has(old)) this.retired.add(old);
      else this.keep(old);
    }
    this.arena = (need <= ARENA_BYTES ? this.spare.pop() : undefined) ?? Buffer.allocUnsafe(Math.max(ARENA_BYTES, need));
    this.sent = this.fill = this.reserved = 0;
  }

  private keep(arena: Buffer): void {
    if (this.spare.length < SPARE_ARENAS) this.spare.push(arena);
  }

  /** One more write of `arena` that the socket has not finished: it is not reused until written(). */
  private holdFor(arena: Buffer): void {
    this.unwritten.set(arena, (this.unwritten.get(arena) ?? 0) + 1);
  }

  private written(arena: Buffer): void {
    const left = (this.unwritten.get(arena) ?? 1) - 1;
    if (left > 0) return void this.unwritten.set(arena, left);
    this.unwritten.delete(arena);
    if (this.retired.delete(arena)) this.keep(arena);
  }

  private flush(): void {
    this.flushQueued = false;
    const ready = this.ready;
    if (this.fill === this.sent && ready.length === 0) return;
    if (this.socket.destroyed) {
      for (const [arena] of ready) if (arena) this.written(arena);
      ready.length = 0;
      this.readyBytes = 0;
      this.sent = this.fill;
      return;
    }
    // Corked, the burst's pieces leave in one writev.
    const corked = ready.length > 0;
    if (corked) this.socket.cork();
    for (const [arena, bytes] of ready) this.socket.write(bytes, arena ? () => this.written(arena) : undefined);
    ready.length = 0;
    this.readyBytes = 0;
    if (this.fill > this.sent) {
      const arena = this.arena;
      this.holdFor(arena);
      this.socket.write(arena.subarray(this.sent, this.fill), () => this.written(arena));
      this.sent = this.fill;
    }
    if (corked) this.socket.uncork();
    // Written at once and nothing handed out: no byte of the arena is held, start again from its beginning.
    if (this.socket.writableLength === 0 && this.reserved === this.fill) this.sent = this.fill = this.reserved = 0;
  }
}
