// A readable net.Socket over an inherited fd (a TAP), through libuv's pipe handle: the fd is made
// non-blocking and watched with epoll, each 'data' event is one read(), and destroy() stops it at
// once. A blocking fs.read would instead park a thread-pool thread that Node joins at exit.
//
// Node has no public way to do this: the handle comes from `process.binding('pipe_wrap')`, an
// internal binding. This module is the one place weft touches it, and its test
// (test/unit/fd-socket.test.ts) checks on the Node it runs on that the binding is still there and
// still reads a pollable fd — so a Node upgrade that removes it fails that test, not a user's VM.

import net from 'node:net';
import { LinkError } from './link-error';

interface PipeHandle {
  open(fd: number): unknown;
  close(): void;
}
interface PipeWrapBinding {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

/** libuv's pipe handle for `fd`. */
function openPipeHandle(fd: number): PipeHandle {
  const emitWarning = process.emitWarning;
  // process.binding warns (DEP0111) under --pending-deprecation; that warning is not for our users.
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    const code = typeof rest[0] === 'object' && rest[0] ? (rest[0] as { code?: string }).code : rest[1];
    if (code === 'DEP0111') return;
    (emitWarning as (...a: unknown[]) => void).call(process, warning, ...rest);
  }) as typeof process.emitWarning;
  let binding: PipeWrapBinding;
  try {
    binding = (process as unknown as { binding(name: string): PipeWrapBinding }).binding('pipe_wrap');
  } catch (e) {
    throw new LinkError(`this Node (${process.version}) has no pipe_wrap binding to watch an fd with: ${(e as Error).message}`);
  } finally {
    process.emitWarning = emitWarning;
  }
  const handle = new binding.Pipe(binding.constants.SOCKET);
  const err = handle.open(fd);
  if (typeof err === 'number' && err < 0) {
    handle.close();
    throw new LinkError(`cannot watch fd ${fd} (uv error ${err})`);
  }
  return handle;
}

/** A socket that reads `fd` (never writes it: writes go through fs.writeSync by the owner). */
export function watchFd(fd: number): net.Socket {
  const handle = openPipeHandle(fd);
  return new net.Socket({ handle, readable: true, writable: false } as unknown as net.SocketConstructorOpts);
}
