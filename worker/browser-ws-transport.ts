// The WebSocket under the Wisp upstream in a browser worker. A DOM WebSocket cannot pause reading,
// and a refused upgrade is indistinguishable from an unreachable relay (both close with 1006).

import type { WispTransport, WispTransportFactory } from '../core/wisp/wisp-upstream';

export const connectBrowserWebSocket: WispTransportFactory = (url, protocols) => {
  const ws = new WebSocket(url, protocols);
  ws.binaryType = 'arraybuffer';
  let opened = false;
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
  ws.onopen = () => {
    opened = true;
    transport.onopen();
  };
  ws.onmessage = (e: MessageEvent) => {
    if (e.data instanceof ArrayBuffer) transport.onmessage(new Uint8Array(e.data));
  };
  // A browser fails the connection when a server ignores our subprotocol, exactly as when the relay
  // is down: `rejected` stays unknown and the upstream decides (it alternates v2 and v1 offers).
  ws.onclose = (e: CloseEvent) => transport.onclose({ code: e.code, reason: e.reason });
  return transport;
};
