// Why a whole Wisp connection ended (single streams end with a close reason instead).

export type WispErrorCode =
  | 'handshake-timeout' // the peer did not finish the v2 handshake in time
  | 'handshake-rejected' // the server answered the handshake with CLOSE on stream 0
  | 'auth-required' // the server requires credentials the client did not send (or cannot send in v1)
  | 'auth-failed' // the credentials did not match
  | 'malformed-packet' // a message too short to carry the Wisp header
  | 'credit-overrun' // the client sent DATA beyond the credits the server granted
  | 'connection-lost'; // the WebSocket went away

export class WispProtocolError extends Error {
  constructor(
    readonly code: WispErrorCode,
    message: string,
    /** The Wisp close reason sent on stream 0 for this, when there is one. */
    readonly closeReason?: number,
  ) {
    super(message);
    this.name = 'WispProtocolError';
  }
}
