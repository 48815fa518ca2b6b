// The error the page API throws and rejects with: a message for a person and a stable `code` for a
// program (as ws's WS_ERR_* codes), so a page can tell "the worker did not start" from "the network
// is closed" without matching text. Aborts are not weft errors: what a signal aborted rejects with
// the signal's reason, as fetch does.

import type { WeftErrorCode } from '../worker/worker-api';

export type { WeftErrorCode };

/** An error from weft's page API; `code` says which (see WeftErrorCode), `cause` holds the error beneath, if any. */
export class WeftError extends Error {
  override readonly name = 'WeftError';
  /** Which error this is, stable across releases (the message may change). */
  readonly code: WeftErrorCode;

  constructor(code: WeftErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
