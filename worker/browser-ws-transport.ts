// The WebSocket under the Wisp upstream in a browser worker.
//
// Wisp has no flow control from server to client, so the only way to hold back a relay that sends
// faster than the guest reads is to stop reading the socket (TCP back-pressure reaches the relay,
// which then stops reading its destination). A DOM WebSocket cannot stop reading; WebSocketStream
// (Chromium 124+) can: its messages are pulled from a ReadableStream, and a message not pulled is
// not read from the network. So WebSocketStream is used where it exists, with pause()/resume(), and
// the plain WebSocket elsewhere (the upstream then holds more per stream before it gives up on it).
// Either way a refused upgrade is indistinguishable from an unreachable relay (both close as 1006).

import type { WispTransport, WispTransportFactory } from '../core/wisp/wisp-upstream';

/** The parts of WebSocketStream used here (not yet in TypeScript's DOM types). */
interface WebSocketStreamLike {
  readonly opened: Promise<{ readable: ReadableStream<ArrayBuffer | string>; writable: WritableStream<Uint8Array | string>; protocol: string }>;
  readonly closed: Promise<{ closeCode?: number; reason?: string }>;
  close(info?: { closeCode?: number; reason?: string }): void;
}
type WebSocketStreamConstructor = new (url: string, options?: { protocols?: string[] }) => WebSocketStreamLike;

function webSocketStreamConstructor(): WebSocketStreamConstructor | undefined {
  return (globalThis as { WebSocketStream?: WebSocketStreamConstructor }).WebSocketStream;
}

/** Whether this browser's transport can pause reading (else streams must hold what arrives). */
export const browserWebSocketCanPause = (): boolean => webSocketStreamConstructor() !== undefined;

/** Runs a callback into the upstream (the worker measures its busy time with it). */
export type Around = (fn: () => void) => void;
const direct: Around = (fn) => fn();

/**
 * A transport factory: WebSocketStream when the browser has it, else WebSocket. Every call into the
 * upstream (open, message, close) runs through `around`.
 */
export function browserWebSocketFactory(around: Around = direct): WispTransportFactory {
  return (url, protocols) => {
    const Stream = webSocketStreamConstructor();
    return Stream ? connectWebSocketStream(Stream, url, protocols, around) : connectDomWebSocket(url, protocols, around);
  };
}

function connectWebSocketStream(Stream: WebSocketStreamConstructor, url: string, protocols: string[], around: Around): WispTransport {
  const wss = new Stream(url, protocols.length > 0 ? { protocols } : {});
  let reader: ReadableStreamDefaultReader<ArrayBuffer | string> | undefined;
  let writer: WritableStreamDefaultWriter<Uint8Array | string> | undefined;
  let paused = false;
  let reading = false;
  let done = false;
  let buffered = 0;

  const finish = (code: number, reason: string) => {
    if (done) return;
    done = true;
    around(() => transport.onclose({ code, reason }));
  };

  /** Pulls messages until paused or closed; one loop at a time. */
  const readLoop = async () => {
    if (reading || !reader) return;
    reading = true;
    try {
      while (!paused && !done) {
        const { value, done: end } = await reader.read();
        if (end) break;
        if (done) break;
        if (value instanceof ArrayBuffer) around(() => transport.onmessage(new Uint8Array(value)));
      }
    } catch {
      // The stream errored: `closed` settles and reports it.
    } finally {
      reading = false;
    }
  };

  const transport: WispTransport = {
    onopen: () => {},
    onmessage: () => {},
    onclose: () => {},
    send(data) {
      if (!writer || done) return;
      buffered += data.length;
      writer.write(data).then(
        () => {
          buffered -= data.length;
        },
        () => {
          buffered -= data.length;
        },
      );
    },
    close(code, reason) {
      if (done) return;
      try {
        wss.close({ closeCode: code ?? 1000, reason: reason ?? '' });
      } catch {
        wss.close();
      }
      // `closed` reports the end; the upstream stops listening to this transport anyway.
    },
    get bufferedAmount() {
      return buffered;
    },
    pause() {
      paused = true;
    },
    resume() {
      if (!paused) return;
      paused = false;
      void readLoop();
    },
  };

  wss.opened.then(
    (conn) => {
      if (done) return;
      reader = conn.readable.getReader();
      writer = conn.writable.getWriter();
      around(() => transport.onopen());
      void readLoop();
    },
    () => {
      // `closed` rejects too and reports it.
    },
  );
  wss.closed.then(
    (info) => finish(info.closeCode ?? 1005, info.reason ?? ''),
    () => finish(1006, ''),
  );
  return transport;
}

function connectDomWebSocket(url: string, protocols: string[], around: Around): WispTransport {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = 'arraybuffer';
  const transport: WispTransport = {
    onopen: () => {},
    onmessage: () => {},
    onclose: () => {},
    send(data) {
      if (ws.readyState === WebSocket.OPEN) ws.send(data as Uint8Array<ArrayBuffer>);
    },
    close(code, reason) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    },
    get bufferedAmount() {
      return ws.bufferedAmount;
    },
  };
  ws.onopen = () => around(() => transport.onopen());
  ws.onmessage = (e: MessageEvent) => {
    if (e.data instanceof ArrayBuffer) around(() => transport.onmessage(new Uint8Array(e.data as ArrayBuffer)));
  };
  // A browser fails the connection when a server ignores our subprotocol, exactly as when the relay
  // is down: `rejected` stays unknown and the upstream decides (it alternates v2 and v1 offers).
  ws.onclose = (e: CloseEvent) => around(() => transport.onclose({ code: e.code, reason: e.reason }));
  return transport;
}
