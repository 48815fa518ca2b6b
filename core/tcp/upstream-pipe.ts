// A connection's end of its upstream stream. Guest bytes go up in order; while the stream pushes
// back they wait in a backlog, which the receive window bounds (held bytes close the window we
// advertise), and the guest's FIN is passed on only once the backlog has gone. The other way, the
// stream is paused while the send buffer towards the guest is full, and an active open holds what
// the stream sends before the guest has accepted.

import type { TcpCloseReason, TcpStream } from '../upstream';
import { copyBytes } from '../wire/bytes';

export class UpstreamPipe {
  private stream: TcpStream | undefined;
  /** Cleared when the stream closes by itself: nothing can be written after. */
  private open = true;
  private blocked = false;
  private paused = false;
  private endSent = false;
  private readonly backlog: Uint8Array[] = [];
  private backlogLength = 0;
  /** Bytes the stream sent before an active open completed. */
  private early: Uint8Array[] = [];

  attach(stream: TcpStream): void {
    this.stream = stream;
  }

  /** Guest bytes waiting for the stream to take them. */
  get backlogBytes(): number {
    return this.backlogLength;
  }

  get flushed(): boolean {
    return this.backlog.length === 0;
  }

  /** Bytes wait in the backlog and the stream may still take them. */
  get draining(): boolean {
    return this.backlog.length > 0 && this.stream !== undefined;
  }

  /** Writes guest bytes behind any backlog; false when no open stream can take them. */
  write(chunk: Uint8Array): boolean {
    if (!this.stream || !this.open) return false;
    if (this.blocked || this.backlog.length > 0) {
      this.backlog.push(chunk);
      this.backlogLength += chunk.length;
      return true;
    }
    if (!this.stream.write(chunk)) this.blocked = true;
    return true;
  }

  /** The stream wants more: writes the backlog until it pushes back again. */
  drain(): void {
    this.blocked = false;
    while (this.backlog.length > 0 && !this.blocked && this.stream) {
      const chunk = this.backlog.shift() as Uint8Array;
      this.backlogLength -= chunk.length;
      if (!this.stream.write(chunk)) this.blocked = true;
    }
  }

  /** Passes the guest's FIN on, once, when nothing is left before it. */
  endIfFlushed(): void {
    if (this.endSent || this.backlog.length > 0) return;
    this.endSent = true;
    this.stream?.end();
  }

  /** Stops the stream's data while the send buffer is full. */
  pause(): void {
    if (this.paused) return;
    this.paused = true;
    this.stream?.pause();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.stream?.resume();
  }

  /** Keeps data that came before the guest accepted an active open, and holds the stream off. */
  holdEarly(data: Uint8Array): void {
    this.early.push(copyBytes(data));
    this.stream?.pause();
  }

  /** The guest accepted: hands back what was held; release() then lets the stream go on. */
  takeEarly(): Uint8Array[] {
    return this.early.splice(0);
  }

  release(): void {
    this.stream?.resume();
  }

  /** The stream closed by itself. */
  closed(): void {
    this.open = false;
    this.stream = undefined;
  }

  /** Aborts the stream, telling it why; the backlog goes with it. */
  destroy(reason: TcpCloseReason): void {
    this.stream?.destroy(reason);
    this.stream = undefined;
    this.backlog.length = 0;
    this.backlogLength = 0;
  }
}
