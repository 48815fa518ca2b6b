// Connections the page opens into the guest (network.connectTcp): the stack's active open
// (Stack.connectToGuest, the path `weft vm --forward` takes) on one side, a WHATWG ReadableStream
// and WritableStream on the other, which the worker hands to the page as transferable streams.
//
// Why transferable streams: the page then reads and writes the worker's streams directly — each
// chunk is one structured-clone message, with no comlink call per chunk — and the streams'
// own back-pressure crosses with them (the page's side of a transferred stream waits for the other
// side's pull), so a page that reads slowly closes the guest's TCP window, and a guest that reads
// slowly holds the page's write() back. Chromium (since 87) and Firefox transfer streams; in a
// browser that cannot, the transfer throws and connectTcp rejects.
//
// Back-pressure, both ways:
// - guest → page: the stack writes into the readable's queue; write() returns false once the queue
//   is past READ_QUEUE_BYTES, the stack then holds the guest's bytes in its backlog (closing the
//   window it advertises), and the readable's next pull() calls onDrain.
// - page → guest: the writable's write() hands the stack at most WRITE_PIECE_BYTES at a time and
//   waits while the stack has paused the stream (its send buffer towards the guest is full), so a
//   write resolves only once the stack took its bytes.
//
// How one ends: the stack destroys the stream with its reason (TcpStream.destroy: 'guest-refused',
// 'guest-unreachable', 'guest-reset', …), which endFor() turns into the page's error code.

import type { Stack } from '../core/stack';
import { UpstreamError, type TcpCloseReason, type TcpStream, type TcpStreamHandlers } from '../core/upstream';
import { formatIpv4, parseIpv4, type Ipv4Address } from '../core/wire/address';
import type { GuestConnectRequest, GuestConnectResult, GuestTcpEnd, WeftErrorCode } from './worker-api';

/** Bytes from the guest queued for the page before the stack is told to hold off. */
const READ_QUEUE_BYTES = 128 * 1024;
/**
 * The most handed to the stack at once: it pauses the stream once its send buffer (256 KiB) is
 * full and refuses more than 256 KiB beyond that, so a piece must stay well under it.
 */
const WRITE_PIECE_BYTES = 64 * 1024;
/** Connections into the guest the page may have open (or opening) at once. */
export const MAX_GUEST_CONNECTIONS = 256;

type Phase = 'connecting' | 'open' | 'done';

/** One connection into the guest: the TcpStream the stack drives, and the page's two streams. */
export class GuestTcpStream implements TcpStream {
  readonly readable: ReadableStream<Uint8Array>;
  readonly writable: WritableStream<Uint8Array>;
  phase: Phase = 'connecting';
  private handlers: TcpStreamHandlers | undefined;
  private readController!: ReadableStreamDefaultController<Uint8Array>;
  private writeController!: WritableStreamDefaultController;
  /** The stack has not accepted more from us (until the guest accepts, and while its send buffer is full). */
  private paused = true;
  private wakeWriter: (() => void) | undefined;
  private owesDrain = false;
  private guestEnded = false;
  private pageEnded = false;

  /**
   * `target` names the guest's port in messages ("port 8000 on 10.0.2.15"). `onOpen` runs when
   * the guest accepted, `onEnd` once when the attempt or the connection ended.
   */
  constructor(
    readonly id: number,
    readonly target: string,
    private readonly onOpen: () => void,
    private readonly onEnd: (end: GuestTcpEnd) => void,
  ) {
    this.readable = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.readController = c;
        },
        pull: () => {
          if (!this.owesDrain || this.phase === 'done') return;
          this.owesDrain = false;
          this.handlers?.onDrain();
        },
        cancel: () => this.abortByPage(),
      },
      new ByteLengthQueuingStrategy({ highWaterMark: READ_QUEUE_BYTES }),
    );
    this.writable = new WritableStream<Uint8Array>({
      start: (c) => {
        this.writeController = c;
      },
      write: (chunk) => this.writeToGuest(chunk),
      close: () => {
        if (this.phase === 'done') throw new TypeError('the connection to the guest is closed');
        this.pageEnded = true;
        this.handlers?.onEnd();
        this.finishIfBothEnded();
      },
      abort: () => this.abortByPage(),
    });
  }

  /** The stack's handlers for this stream (Stack.connectToGuest's attach). */
  attach(handlers: TcpStreamHandlers): this {
    this.handlers = handlers;
    return this;
  }

  // ── TcpStream: what the stack calls ──────────────────────────────────────

  write(data: Uint8Array): boolean {
    if (this.phase === 'done') return false;
    // A copy of just these bytes: the clone to the page would otherwise carry the whole buffer a
    // view lies in.
    this.readController.enqueue(data.slice());
    const room = (this.readController.desiredSize ?? 0) > 0;
    if (!room) this.owesDrain = true;
    return room;
  }

  end(): void {
    if (this.phase === 'done' || this.guestEnded) return;
    this.guestEnded = true;
    this.readController.close();
    this.finishIfBothEnded();
  }

  /** The stack ended the connection: the page's streams error with the code its reason maps to. */
  destroy(reason?: TcpCloseReason): void {
    if (this.phase === 'done') return;
    this.handlers = undefined;
    this.settle(endFor(reason, this.target));
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    this.paused = false;
    if (this.phase === 'connecting') {
      // The first resume is the guest's SYN-ACK: the connection is open.
      this.phase = 'open';
      this.onOpen();
    }
    const wake = this.wakeWriter;
    this.wakeWriter = undefined;
    wake?.();
  }

  // ── ends ─────────────────────────────────────────────────────────────────

  /**
   * Ends the connection with `end`. Unless both directions ended cleanly, the page's streams error
   * (with the code in the message: a WeftError's code does not survive the clone to the page).
   */
  settle(end: GuestTcpEnd, clean = false): void {
    if (this.phase === 'done') return;
    this.phase = 'done';
    if (!clean) {
      const error = new Error(end.code ? `${end.code}: ${end.message}` : end.message);
      if (!this.guestEnded) this.readController.error(error);
      this.writeController.error(error);
    }
    this.wakeWriter?.();
    this.wakeWriter = undefined;
    this.onEnd(end);
  }

  /** The page (or its AbortSignal, or a timeout) gives up: the guest gets RST. */
  abortFromOutside(end: GuestTcpEnd): void {
    if (this.phase === 'done') return;
    const h = this.handlers;
    this.handlers = undefined;
    this.settle(end);
    h?.onClose(new UpstreamError(end.code === 'ERR_WEFT_GUEST_TIMEOUT' ? 'timeout' : 'reset', end.message));
  }

  private abortByPage(): void {
    this.abortFromOutside({ message: 'the page ended the connection' });
  }

  private finishIfBothEnded(): void {
    if (!this.guestEnded || !this.pageEnded || this.phase === 'done') return;
    const h = this.handlers;
    this.handlers = undefined;
    this.settle({ message: 'closed' }, true);
    // Both directions ended: for the stack this is the other side closing cleanly.
    h?.onClose();
  }

  private async writeToGuest(chunk: Uint8Array): Promise<void> {
    const bytes = toBytes(chunk);
    for (let off = 0; off < bytes.length; off += WRITE_PIECE_BYTES) {
      while (this.paused && this.phase !== 'done') await new Promise<void>((resolve) => (this.wakeWriter = resolve));
      if (this.phase === 'done' || !this.handlers) throw new TypeError('the connection to the guest is closed');
      this.handlers.onData(bytes.subarray(off, off + WRITE_PIECE_BYTES));
    }
  }
}

function toBytes(chunk: unknown): Uint8Array {
  if (chunk instanceof Uint8Array) return chunk;
  if (ArrayBuffer.isView(chunk)) return new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
  if (chunk instanceof ArrayBuffer) return new Uint8Array(chunk);
  throw new TypeError('connectTcp: write Uint8Array chunks (or other ArrayBuffer views)');
}

/** The page's connections into the guest for one stack: opens them and bounds how many there are. */
export class GuestConnector {
  private readonly byId = new Map<number, GuestTcpStream>();
  /** The address of the newest lease: where a connection without guestIp goes (as the stack would send it). */
  private leasedIp: Ipv4Address | undefined;
  private readonly unsubscribe: Array<() => void>;

  constructor(private readonly stack: Stack) {
    this.unsubscribe = [
      stack.on('lease', (e) => {
        this.leasedIp = e.ip;
      }),
    ];
  }

  connect(request: GuestConnectRequest, onEnd: (end: GuestTcpEnd) => void): Promise<GuestConnectResult> {
    const { id, port, guestIp, timeoutMs } = request;
    const fail = (code: WeftErrorCode, message: string) => Promise.resolve<GuestConnectResult>({ ok: false, code, message });
    if (!Number.isInteger(port) || port < 1 || port > 65535) return fail('ERR_WEFT_GUEST_UNREACHABLE', `connectTcp: ${port} is not a TCP port`);
    if (this.byId.size >= MAX_GUEST_CONNECTIONS) {
      return fail('ERR_WEFT_TOO_MANY_CONNECTIONS', `connectTcp: ${MAX_GUEST_CONNECTIONS} connections into the guest are open already`);
    }
    let to: Ipv4Address;
    if (guestIp !== undefined) {
      try {
        to = parseIpv4(guestIp);
      } catch {
        return fail('ERR_WEFT_GUEST_UNREACHABLE', `connectTcp: ${guestIp} is not an IPv4 address`);
      }
    } else if (this.leasedIp === undefined) {
      // Without a lease the stack would try its first lease address, where nobody may be.
      return fail('ERR_WEFT_GUEST_UNREACHABLE', 'connectTcp: no guest has taken a lease yet (pass guestIp for a guest with a static address)');
    } else {
      to = this.leasedIp;
    }
    const target = `port ${port}${guestIp ? ` on ${guestIp}` : ''}`;
    return new Promise<GuestConnectResult>((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      let answered = false;
      const answer = (r: GuestConnectResult) => {
        if (answered) return;
        answered = true;
        clearTimeout(timer);
        resolve(r);
      };
      const stream = new GuestTcpStream(
        id,
        target,
        () => {
          clearTimeout(timer);
          const { readable, writable } = stream;
          answer({ ok: true, readable, writable, guestIp: formatIpv4(to) });
        },
        (end) => {
          this.byId.delete(id);
          if (end.code) answer({ ok: false, code: end.code, message: end.message });
          else answer({ ok: false, code: 'ERR_WEFT_GUEST_RESET', message: `connectTcp: ${end.message} before the guest accepted` });
          onEnd(end);
        },
      );
      this.byId.set(id, stream);
      const opened = this.stack.connectToGuest(port, (handlers) => stream.attach(handlers), to);
      if (!opened) {
        stream.settle({ code: 'ERR_WEFT_TOO_MANY_CONNECTIONS', message: `connectTcp: the stack has no free port or its connection table is full` });
        return;
      }
      timer = setTimeout(() => {
        if (stream.phase === 'connecting') {
          stream.abortFromOutside({
            code: 'ERR_WEFT_GUEST_TIMEOUT',
            message: `connectTcp: the guest did not accept a connection to ${target} within ${timeoutMs} ms`,
          });
        }
      }, timeoutMs);
    });
  }

  abort(id: number): void {
    this.byId.get(id)?.abortFromOutside({ message: 'aborted by the page' });
  }

  /** The stack is going away: every connection ends with ERR_WEFT_CLOSED. */
  close(): void {
    for (const off of this.unsubscribe) off();
    for (const s of [...this.byId.values()]) s.abortFromOutside({ code: 'ERR_WEFT_CLOSED', message: 'the weft network closed' });
  }
}

/** What the reason the stack destroyed a connection into the guest with means for the page. */
export function endFor(reason: TcpCloseReason | undefined, target: string): GuestTcpEnd {
  switch (reason) {
    case 'guest-refused':
      return { code: 'ERR_WEFT_GUEST_REFUSED', message: `the guest refused the connection to ${target} (nothing listens there)` };
    case 'guest-unreachable':
      return { code: 'ERR_WEFT_GUEST_UNREACHABLE', message: `the guest did not answer a connection to ${target} (no reply to ARP or SYN)` };
    case 'guest-reset':
      return { code: 'ERR_WEFT_GUEST_RESET', message: `the guest reset the connection to ${target}` };
    case 'shutdown':
      return { code: 'ERR_WEFT_CLOSED', message: 'the weft network closed' };
    default:
      return { code: 'ERR_WEFT_GUEST_RESET', message: `weft ended the connection to ${target} (${reason ?? 'aborted'})` };
  }
}
