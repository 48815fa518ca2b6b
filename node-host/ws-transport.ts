// The WebSocket under a WispUpstream, in Node: the `ws` package behind the small WispTransport
// interface (the browser worker provides the same over the DOM WebSocket).

import { WebSocket } from 'ws';
import type { WispTransport, WispTransportFactory } from './wisp-upstream';

/** Largest message accepted from the relay (a 64 KiB DATA packet plus headroom). */
const MAX_MESSAGE_BYTES = 1024 * 1024;

export const connectWsTransport: WispTransportFactory = (url, protocols) => {
  const ws = new WebSocket(url, protocols, { perMessageDeflate: false, maxPayload: MAX_MESSAGE_BYTES });
  let unsent = 0;
  let rejected = false;
  const transport: WispTransport = {
    onopen: () => {},
    onmessage: () => {},
    onclose: () => {},
    bufferedAmountLowThreshold: 0,
    send(data) {
      if (ws.readyState !== WebSocket.OPEN) return;
      const length = data.length;
      unsent += length;
      ws.send(data, { binary: true }, () => {
        unsent -= length;
        // Called when this write crosses the threshold downwards (the callbacks come in order).
        const low = transport.bufferedAmountLowThreshold ?? 0;
        if (unsent <= low && unsent + length > low) transport.onbufferedamountlow?.();
      });
    },
    close(code, reason) {
      if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
      else ws.close(code, reason);
    },
    get bufferedAmount() {
      return unsent;
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
  };
  ws.on('open', () => transport.onopen());
  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (isBinary) transport.onmessage(new Uint8Array(data.buffer, data.byteOffset, data.length));
  });
  ws.on('error', (e: Error) => {
    // 'close' always follows. These messages mean the server answered but refused the upgrade.
    if (/Unexpected server response|subprotocol/i.test(e.message)) rejected = true;
  });
  ws.on('close', (code: number, reason: Buffer) => transport.onclose({ code, reason: reason.toString(), rejected }));
  return transport;
};
