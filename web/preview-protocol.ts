// What the preview Service Worker (preview-sw.ts) and the page that serves the preview
// (preview-server.ts) say to each other. Types and names only: both sides import this, and the
// worker's bundle holds nothing else of the library.
//
// The SW and the page find each other without shared state, because a browser stops an idle SW
// and starts it again empty: the page announces itself (SERVE) when it starts serving; a SW that
// knows no page asks every window of the origin (PING) and takes the first that answers SERVE.
// Each request then goes to the page with a MessagePort of its own, on which the page answers
// ACCEPTED at once and later RESPONSE (the body as a transferred stream) or FAILED.

export const PREVIEW_SERVE = 'weft-preview-serve';
export const PREVIEW_PING = 'weft-preview-ping';
export const PREVIEW_REQUEST = 'weft-preview-request';

/** Page → SW: this page answers requests for `scope` (sent when it starts, and in reply to a PING). */
export interface PreviewServeMessage {
  type: typeof PREVIEW_SERVE;
  scope: string;
}

/** SW → every window: which page serves `scope`? */
export interface PreviewPingMessage {
  type: typeof PREVIEW_PING;
  scope: string;
}

/** SW → the serving page, with a MessagePort for the answer (ports[0]). */
export interface PreviewRequestMessage {
  type: typeof PREVIEW_REQUEST;
  scope: string;
  /** The guest's TCP port. */
  port: number;
  method: string;
  /** Path and query on the guest, starting with '/'. */
  path: string;
  headers: Array<[string, string]>;
  body: ArrayBuffer | null;
  /**
   * 'store': the SW read the browser's jar (CookieStore) and `cookie` is what it holds for this
   * path. 'page': it could not (no CookieStore, or one that reads nothing below the scope), and the
   * page sends and keeps the cookies itself. Either way Set-Cookie fields come back to the SW, which
   * writes them into the browser's jar when it has CookieStore.
   */
  cookies: 'store' | 'page';
  cookie?: string;
}

/** Page → SW on the request's port. */
export type PreviewReply =
  | { type: 'accepted' }
  | {
      type: 'response';
      status: number;
      statusText: string;
      /** Without Set-Cookie (see setCookies) and with Location already in the preview's URL space. */
      headers: Array<[string, string]>;
      setCookies: string[];
      body: ReadableStream<Uint8Array> | null;
    }
  | { type: 'failed'; status: 502 | 504; title: string; message: string };
