// network.connectTcp(): a TCP connection from the page into the guest. The worker opens it (see
// worker/guest-tcp.ts) and hands over its two streams once the guest accepted; here the worker's
// answer becomes a WeftError or a GuestTcpConnection, and the page's AbortSignal and the network's
// closing end it.

import * as Comlink from 'comlink';
import type { GuestTcpEnd, StackControlApi } from '../worker/worker-api';
import { WeftError } from './weft-error';

/** Options of WeftNetwork.connectTcp. */
export interface ConnectTcpOptions {
  /** The guest's address, dotted (default: the address the guest leased most recently). */
  guestIp?: string;
  /**
   * Milliseconds the guest has to accept before connectTcp rejects with ERR_WEFT_GUEST_TIMEOUT
   * (default 20,000).
   */
  timeout?: number;
  /** Aborting resets the connection (RST to the guest); connectTcp, if still waiting, rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** A TCP connection into the guest (WeftNetwork.connectTcp). */
export interface GuestTcpConnection {
  /**
   * What the guest sends. Reading slowly holds the guest back: weft's queue for the page is small
   * (128 KiB) and, once full, the window weft advertises to the guest closes. Ends when the guest
   * half-closes (FIN); errors when the connection is reset (the message starts with the code).
   * Cancelling it resets the connection.
   */
  readonly readable: ReadableStream<Uint8Array>;
  /**
   * What the page sends the guest. write() resolves once the stack took the bytes into its send
   * buffer (which waits while the guest's window is closed); close() half-closes (FIN); abort()
   * resets the connection.
   */
  readonly writable: WritableStream<Uint8Array>;
  /**
   * Resolves when the connection is over: both directions ended, or the page ended it (abort,
   * cancel, signal). Rejects with a WeftError ERR_WEFT_GUEST_RESET when the guest reset it or weft
   * gave up on it, ERR_WEFT_CLOSED when the network closed.
   */
  readonly closed: Promise<void>;
  /** The guest's address. */
  readonly guestIp: string;
}

/** The default for ConnectTcpOptions.timeout. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 20_000;

let nextId = 1;

/**
 * Opens a connection through the worker. `whenClosed` rejects when the network closes: what the
 * attempt and `closed` race with.
 */
export async function connectGuestTcp(
  api: Comlink.Remote<StackControlApi>,
  port: number,
  options: ConnectTcpOptions,
  whenClosed: Promise<never>,
): Promise<GuestTcpConnection> {
  const { guestIp, timeout = DEFAULT_CONNECT_TIMEOUT_MS, signal } = options;
  signal?.throwIfAborted();
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`connectTcp: the port must be an integer in 1…65535, got ${port}`);
  const id = nextId++;
  let ended!: (end: GuestTcpEnd) => void;
  const end = new Promise<GuestTcpEnd>((resolve) => (ended = resolve));
  const onAbort = () => void api.abortTcp(id).catch(() => undefined);
  signal?.addEventListener('abort', onAbort, { once: true });
  void end.then(() => signal?.removeEventListener('abort', onAbort));
  const aborted = new Promise<never>((_, reject) => signal?.addEventListener('abort', () => reject(signal.reason), { once: true }));
  aborted.catch(() => undefined);
  const request = { id, port, timeoutMs: timeout, ...(guestIp === undefined ? {} : { guestIp }) };
  const result = await Promise.race([
    api.connectTcp(
      request,
      Comlink.proxy((e: GuestTcpEnd) => ended(e)),
    ),
    whenClosed,
    aborted,
  ]);
  if (!result.ok) throw new WeftError(result.code, result.message);
  const closed = Promise.race([
    end.then((e) => {
      if (e.code) throw new WeftError(e.code, e.message);
    }),
    whenClosed,
  ]);
  // Nobody need await `closed`: how the streams end says the same.
  closed.catch(() => undefined);
  return { readable: result.readable, writable: result.writable, closed, guestIp: result.guestIp };
}
