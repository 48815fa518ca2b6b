// DNS over TCP (RFC 1035 §4.2.2, RFC 7766) for guest connections to the DNS address, port 53. The
// stack terminates the guest's connection into this TcpStream as if it were an upstream: what the
// guest writes is split into 2-byte-length-prefixed queries for the DnsServer, and each reply goes
// back with its own prefix, in the order the answers come (RFC 7766 §7 allows that). Queries may be
// pipelined. After the guest's FIN, the replies still owed are sent, then our FIN and the close.
// Every handler call is deferred (never made from inside a TcpStream method), so the stack is not
// re-entered.

import { UpstreamError, type TcpStream, type TcpStreamHandlers } from '../upstream';
import type { DnsServer } from './dns-server';

/** Queries being answered at once on one connection; reading stops (write() returns false) beyond it. */
const MAX_OUTSTANDING = 32;
/** write() returns false once this much unparsed input is held: a whole largest message and its prefix. */
const INPUT_SOFT_LIMIT = 2 + 65_535;
/** A guest that keeps writing past back-pressure beyond this loses the connection. */
const INPUT_HARD_LIMIT = 4 * INPUT_SOFT_LIMIT;

class LocalDnsTcpStream implements TcpStream {
  private input = new Uint8Array(1024);
  private inputStart = 0;
  private inputEnd = 0;
  private outstanding = 0;
  private readonly output: Uint8Array[] = [];
  private connected = false;
  private paused = false;
  private guestEnded = false;
  private wantDrain = false;
  /** Set once destroy() is called or onClose has been scheduled: no further handler calls. */
  private done = false;
  private flushScheduled = false;

  constructor(
    private readonly server: DnsServer,
    private readonly handlers: TcpStreamHandlers,
    private readonly now: () => number,
    private readonly defer: (fn: () => void) => void,
  ) {
    defer(() => {
      if (this.done) return;
      this.connected = true;
      handlers.onConnect();
      this.flush();
    });
  }

  write(data: Uint8Array): boolean {
    if (this.done || this.guestEnded) return true;
    this.append(data);
    if (this.buffered > INPUT_HARD_LIMIT) {
      this.abort('DNS over TCP: the client kept sending past back-pressure');
      return false;
    }
    this.consume();
    if (this.accepting()) return true;
    this.wantDrain = true;
    return false;
  }

  end(): void {
    if (this.done || this.guestEnded) return;
    this.guestEnded = true;
    this.scheduleFlush();
  }

  destroy(): void {
    this.done = true;
    this.output.length = 0;
    this.input = new Uint8Array(0);
    this.inputStart = this.inputEnd = 0;
  }

  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.scheduleFlush();
  }

  private get buffered(): number {
    return this.inputEnd - this.inputStart;
  }

  private accepting(): boolean {
    return this.buffered < INPUT_SOFT_LIMIT && this.outstanding < MAX_OUTSTANDING;
  }

  private append(data: Uint8Array): void {
    if (this.inputEnd + data.length > this.input.length) {
      const held = this.buffered;
      if (held + data.length <= this.input.length) {
        this.input.copyWithin(0, this.inputStart, this.inputEnd);
      } else {
        const next = new Uint8Array(Math.max(held + data.length, this.input.length * 2));
        next.set(this.input.subarray(this.inputStart, this.inputEnd));
        this.input = next;
      }
      this.inputStart = 0;
      this.inputEnd = held;
    }
    this.input.set(data, this.inputEnd);
    this.inputEnd += data.length;
  }

  /** Hands every complete query to the server while fewer than MAX_OUTSTANDING are unanswered. */
  private consume(): void {
    while (!this.done && this.outstanding < MAX_OUTSTANDING && this.buffered >= 2) {
      const length = (this.input[this.inputStart] << 8) | this.input[this.inputStart + 1];
      if (this.buffered < 2 + length) break;
      const query = this.input.slice(this.inputStart + 2, this.inputStart + 2 + length);
      this.inputStart += 2 + length;
      if (this.inputStart === this.inputEnd) {
        this.inputStart = this.inputEnd = 0;
        if (this.input.length > 16_384) this.input = new Uint8Array(1024); // give back a burst's buffer
      }
      this.outstanding++;
      let answered = false;
      const accepted = this.server.query(query, 'tcp', this.now(), (reply) => {
        if (answered) return;
        answered = true;
        this.onReply(reply);
      });
      if (!accepted && !answered) {
        answered = true;
        this.outstanding--; // dropped by the server (counted there): nothing will come
      }
    }
  }

  private onReply(reply: Uint8Array): void {
    if (this.done) return;
    this.outstanding--;
    if (reply.length <= 65_535) {
      const framed = new Uint8Array(2 + reply.length);
      framed[0] = reply.length >>> 8;
      framed[1] = reply.length & 0xff;
      framed.set(reply, 2);
      this.output.push(framed);
    }
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled || this.done) return;
    this.flushScheduled = true;
    this.defer(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    if (this.done || !this.connected) return;
    this.consume();
    while (!this.done && !this.paused && this.output.length > 0) this.handlers.onData(this.output.shift()!);
    if (this.done) return;
    if (this.wantDrain && this.accepting()) {
      this.wantDrain = false;
      this.handlers.onDrain();
      if (this.done) return;
    }
    // A partial message left after the guest's FIN can never complete: it is discarded.
    const queriesLeft = this.outstanding > 0 || this.completeQueryBuffered();
    if (this.guestEnded && !queriesLeft && this.output.length === 0) {
      this.done = true;
      this.handlers.onEnd();
      this.handlers.onClose();
    }
  }

  private completeQueryBuffered(): boolean {
    if (this.buffered < 2) return false;
    return this.buffered >= 2 + ((this.input[this.inputStart] << 8) | this.input[this.inputStart + 1]);
  }

  private abort(message: string): void {
    this.destroy();
    this.defer(() => this.handlers.onClose(new UpstreamError('error', message)));
  }
}

/**
 * A TcpStream that answers DNS over TCP with `server`: the stack's guest-facing TCP connection to
 * the DNS address, port 53, is joined to it like to an upstream stream. `now` is the stack's clock;
 * `defer` runs a function soon, outside the current call (e.g. queueMicrotask, or the stack's own
 * task queue).
 */
export function openLocalDnsTcp(server: DnsServer, handlers: TcpStreamHandlers, now: () => number, defer: (fn: () => void) => void): TcpStream {
  return new LocalDnsTcpStream(server, handlers, now, defer);
}
