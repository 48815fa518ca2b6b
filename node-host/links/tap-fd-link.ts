// `--tap-fd N`: a Linux TAP fd a launcher opened for us (as QEMU's `-netdev tap,fd=N`).
// On a TAP one read() is one frame and one write() is one frame.
//
// Reading: libuv's pipe handle makes the fd non-blocking and watches it with epoll, so every
// 'data' event is exactly one read() — one frame — and destroy() stops it at once. A blocking
// fs.read would park a threadpool thread that Node joins at exit (it then hangs, and the TAP stays
// attached). libuv returns to the event loop after every short read, i.e. after every frame, so
// after the first frame we drain the queue ourselves with non-blocking reads into one reused
// buffer: a burst becomes one batch (one coalesced ACK) and costs no allocation per frame.
// Writing: fs.writeSync per frame; the socket's own writev could merge frames.

import fs from 'node:fs';
import net from 'node:net';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { LinkError } from './link-error';

interface PipeHandle { open(fd: number): unknown; close(): void }
interface PipeWrapBinding { Pipe: new (type: number) => PipeHandle; constants: { SOCKET: number } }

/** Wraps `fd` in libuv's pipe handle (non-blocking reads via epoll), quietly. */
function openPipeHandle(fd: number): PipeHandle {
  const emitWarning = process.emitWarning;
  // process.binding warns (DEP0111) under --pending-deprecation; that warning is not for our users.
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0111') return;
    (emitWarning as (...a: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  try {
    const binding = (process as unknown as { binding(name: string): PipeWrapBinding }).binding('pipe_wrap');
    const handle = new binding.Pipe(binding.constants.SOCKET);
    const err = handle.open(fd);
    if (typeof err === 'number' && err < 0) {
      handle.close();
      throw new LinkError(`cannot watch --tap-fd ${fd} (uv error ${err})`);
    }
    return handle;
  } finally {
    process.emitWarning = emitWarning;
  }
}

/** Frames drained per wake-up before yielding to the event loop (keeps other sockets served). */
const MAX_BATCH = 128;

const WRITE_DROP_REASONS: Record<string, string> = {
  EAGAIN: 'tap-full',
  ENOBUFS: 'tap-no-buffers',
  EIO: 'tap-down',
};

export class TapFdLink extends FrameLinkBase implements FrameLink {
  readonly description: Record<string, unknown>;
  private readonly socket: net.Socket;
  private closed = false;
  private readonly writeErrorsLogged = new Set<string>();
  /** 64 KiB + headroom: the largest frame a TAP can hand us at MTU 65520. */
  private readonly readBuffer = Buffer.allocUnsafe(65536 + 256);

  constructor(private readonly fd: number) {
    super();
    let stat: fs.Stats;
    try {
      stat = fs.fstatSync(fd);
    } catch (e) {
      throw new LinkError(`--tap-fd ${fd} is not an open file descriptor (${(e as Error).message})`);
    }
    if (!stat.isCharacterDevice()) {
      throw new LinkError(`--tap-fd ${fd} is not a character device; expected a TAP fd opened from /dev/net/tun`);
    }
    this.description = { link: 'tap-fd', fd };
    const handle = openPipeHandle(fd);
    this.socket = new net.Socket({ handle, readable: true, writable: false } as unknown as net.SocketConstructorOpts);
    this.socket.on('data', (frame: Buffer) => this.onReadable(frame));
    this.socket.on('error', (e) => {
      if (!this.closed) this.fail(new LinkError(`reading the TAP fd failed: ${e.message}`));
    });
    this.socket.on('end', () => {
      if (!this.closed) this.fail(new LinkError('the TAP fd reached end of file'));
    });
  }

  private onReadable(first: Buffer): void {
    this.frameListener(first);
    for (let i = 1; i < MAX_BATCH && !this.closed; i++) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.readBuffer, 0, this.readBuffer.length, null);
      } catch {
        break; // EAGAIN: the queue is empty (other errors surface through the pipe handle)
      }
      if (n <= 0) break;
      this.frameListener(this.readBuffer.subarray(0, n));
    }
    this.batchEndListener();
  }

  send(frame: Uint8Array): void {
    if (this.closed) {
      this.drop('link-closed');
      return;
    }
    try {
      fs.writeSync(this.fd, frame);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'unknown';
      this.drop(WRITE_DROP_REASONS[code] ?? 'tap-write-error');
      if (!this.writeErrorsLogged.has(code)) {
        this.writeErrorsLogged.add(code);
        this.log('link-write-error', { link: 'tap-fd', code, message: (e as Error).message });
      }
    }
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      // The pipe handle owns the fd: destroying the socket closes it.
      if (this.socket.destroyed && this.socket.closed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.destroy();
    });
  }
}
