// The preview Service Worker (`weft-net/web/preview-sw.js`): answers `<scope><port>/<path>` on the
// page's own origin from the guest's port `<port>`. It holds no network of its own: each request
// goes to the page that called network.servePreview() (see preview-protocol.ts), which fetches it
// from the guest and streams the answer back. With no such page open the answer is a 503 page
// that says so; a guest port with nothing listening is the page's 502.
//
// Cookies: a Response made here cannot carry Set-Cookie, and the request the SW sees carries no
// Cookie. Where the CookieStore API exists, the SW keeps the guest's cookies in the browser's own
// jar, path-scoped to `<scope><port>/…` (so script in the preview sees them too), and reads them
// back from it for each request where the browser lets it; where it does not (Chromium), or
// without CookieStore, the serving page keeps the cookies it sends in memory.

import { parseSetCookie } from './preview-cookies';
import { PREVIEW_PING, PREVIEW_REQUEST, PREVIEW_SERVE, type PreviewReply, type PreviewRequestMessage } from './preview-protocol';

// The few Service Worker types used here (this project's TypeScript lib is DOM, not WebWorker).
interface SwClient {
  readonly id: string;
  readonly url: string;
  postMessage(message: unknown, transfer?: Transferable[]): void;
}
interface SwClients {
  get(id: string): Promise<SwClient | undefined>;
  matchAll(options: { type: 'window'; includeUncontrolled: boolean }): Promise<SwClient[]>;
  claim(): Promise<void>;
}
interface ExtendableEvent extends Event {
  waitUntil(p: Promise<unknown>): void;
}
interface FetchEvent extends ExtendableEvent {
  readonly request: Request;
  readonly clientId: string;
  respondWith(r: Response | Promise<Response>): void;
}
interface SwMessageEvent extends ExtendableEvent {
  readonly data: unknown;
  readonly source: SwClient | null;
}
interface CookieListItem {
  name: string;
  value: string;
}
interface CookieStoreLike {
  getAll(options: { url: string }): Promise<CookieListItem[]>;
  set(options: { name: string; value: string; path: string; expires?: number; sameSite?: 'strict' | 'lax' | 'none' }): Promise<void>;
  delete(options: { name: string; path: string }): Promise<void>;
}
declare const self: {
  readonly registration: { readonly scope: string };
  readonly clients: SwClients;
  readonly cookieStore?: CookieStoreLike;
  skipWaiting(): Promise<void>;
  addEventListener(type: 'install' | 'activate', listener: (e: ExtendableEvent) => void): void;
  addEventListener(type: 'fetch', listener: (e: FetchEvent) => void): void;
  addEventListener(type: 'message', listener: (e: SwMessageEvent) => void): void;
};

/** How long windows have to answer a PING. */
const FIND_PAGE_MS = 1500;
/** How long the serving page has to acknowledge a request (it answers at once when it is alive). */
const ACCEPT_MS = 3000;
/** A request the page accepted but never answered (closed meanwhile) ends with 504 after this. */
const ANSWER_MS = 120_000;

let servingClientId: string | undefined;
/** Resolves the current search for a serving page, when a SERVE comes in. */
let onServe: ((client: SwClient) => void) | undefined;

self.addEventListener('install', () => void self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

self.addEventListener('message', (e) => {
  const data = e.data as { type?: string; scope?: string } | null;
  if (data?.type !== PREVIEW_SERVE || data.scope !== self.registration.scope || !e.source) return;
  servingClientId = e.source.id;
  onServe?.(e.source);
});

self.addEventListener('fetch', (e) => {
  const url = new URL(e.request.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin) return;
  if (url.pathname.startsWith(scope.pathname)) {
    const m = /^(\d{1,5})(\/.*)?$/.exec(url.pathname.slice(scope.pathname.length));
    if (!m) return;
    const port = Number(m[1]);
    // `<scope>8000` alone: relative links must resolve inside `<scope>8000/`.
    if (!m[2]) e.respondWith(Response.redirect(`${scope.href}${port}/${url.search}`, 301));
    else e.respondWith(forward(e.request, port, m[2] + url.search));
    return;
  }
  // A root-relative link in a previewed page ("/style.css") leaves the scope: a subresource it
  // names is still asked of this SW (the page is controlled), and is the guest's.
  if (e.clientId) e.respondWith(rootRelative(e, url));
});

async function rootRelative(e: FetchEvent, url: URL): Promise<Response> {
  const client = await self.clients.get(e.clientId);
  const port = client ? previewPortOf(client.url) : undefined;
  if (port === undefined) return fetch(e.request);
  return forward(e.request, port, url.pathname + url.search);
}

/** The guest port a preview URL names, or undefined for a URL outside the preview. */
function previewPortOf(href: string): number | undefined {
  const scope = self.registration.scope;
  if (!href.startsWith(scope)) return undefined;
  const m = /^(\d{1,5})\//.exec(href.slice(scope.length));
  return m ? Number(m[1]) : undefined;
}

async function forward(request: Request, port: number, path: string): Promise<Response> {
  const scope = self.registration.scope;
  const client = await servingPage();
  if (!client) return noPage();
  const store = self.cookieStore;
  // Chromium's CookieStore in a Service Worker reads no URL below the scope (it checks the URL
  // against the script's): then the serving page keeps the cookies it sends ('page').
  let readable = false;
  let cookie: string | undefined;
  if (store) {
    try {
      const all = await store.getAll({ url: `${scope}${port}${path}` });
      readable = true;
      if (all.length > 0) cookie = all.map((c) => `${c.name}=${c.value}`).join('; ');
    } catch {
      readable = false;
    }
  }
  const body = request.method === 'GET' || request.method === 'HEAD' ? null : await request.arrayBuffer();
  const message: PreviewRequestMessage = {
    type: PREVIEW_REQUEST,
    scope,
    port,
    method: request.method,
    path,
    headers: [...request.headers],
    body,
    cookies: readable ? 'store' : 'page',
    ...(cookie ? { cookie } : {}),
  };
  const channel = new MessageChannel();
  const replies = repliesOn(channel.port1);
  client.postMessage(message, body ? [channel.port2, body] : [channel.port2]);
  const accepted = await replies.next(ACCEPT_MS);
  if (accepted?.type !== 'accepted') {
    // That page is gone or no longer serves: look again next time.
    servingClientId = undefined;
    channel.port1.close();
    return noPage();
  }
  const reply = await replies.next(ANSWER_MS);
  channel.port1.close();
  if (!reply || reply.type === 'accepted') {
    return errorPage(504, 'The VM’s page did not answer', 'The page running the VM accepted this request but sent no answer (it may have been closed).');
  }
  if (reply.type === 'failed') return errorPage(reply.status, reply.title, reply.message);
  // Into the browser's jar too, where the preview's own scripts see them.
  if (store) await storeCookies(store, reply.setCookies, scope, port, path);
  const nullBody = [101, 103, 204, 205, 304].includes(reply.status);
  const headers = new Headers(reply.headers);
  if (request.mode === 'navigate' && !headers.has('cross-origin-embedder-policy')) headers.set('Cross-Origin-Embedder-Policy', EMBEDDABLE);
  return new Response(nullBody ? null : reply.body, { status: reply.status, statusText: reply.statusText, headers });
}

/**
 * The COEP put on documents the guest serves (unless it sent its own) and on this worker's own
 * pages. A cross-origin isolated page — one that uses SharedArrayBuffer rings, as the demo does —
 * may frame only documents that declare a COEP; the guest's web server declares none, so an
 * iframe of the preview would show the browser's error page. `credentialless` asks nothing of
 * the document's same-origin (previewed) resources; cross-origin ones load without credentials.
 */
const EMBEDDABLE = 'credentialless';

/** The page that serves this scope: the one known, else the first window that answers a PING. */
async function servingPage(): Promise<SwClient | undefined> {
  if (servingClientId) {
    const known = await self.clients.get(servingClientId);
    if (known) return known;
    servingClientId = undefined;
  }
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
  if (windows.length === 0) return undefined;
  return new Promise<SwClient | undefined>((resolve) => {
    const timer = setTimeout(() => {
      onServe = undefined;
      resolve(undefined);
    }, FIND_PAGE_MS);
    onServe = (c) => {
      clearTimeout(timer);
      onServe = undefined;
      resolve(c);
    };
    for (const w of windows) w.postMessage({ type: PREVIEW_PING, scope: self.registration.scope });
  });
}

/** The replies on a request's port, one at a time, each waited for at most `ms` (undefined: none came). */
function repliesOn(port: MessagePort): { next(ms: number): Promise<PreviewReply | undefined> } {
  const queue: PreviewReply[] = [];
  let waiting: ((r: PreviewReply | undefined) => void) | undefined;
  port.onmessage = (e: MessageEvent) => {
    const r = e.data as PreviewReply;
    if (waiting) {
      const w = waiting;
      waiting = undefined;
      w(r);
    } else queue.push(r);
  };
  return {
    next: (ms) =>
      queue.length > 0
        ? Promise.resolve(queue.shift())
        : new Promise((resolve) => {
            const timer = setTimeout(() => {
              waiting = undefined;
              resolve(undefined);
            }, ms);
            waiting = (r) => {
              clearTimeout(timer);
              resolve(r);
            };
          }),
  };
}

/**
 * Keeps the guest's Set-Cookie fields in the browser's jar, each path-scoped into the preview of
 * its port (`<scope><port>` + the cookie's path); Domain is ignored (every cookie belongs to this
 * origin) and HttpOnly cannot be kept (CookieStore makes script-visible cookies).
 */
async function storeCookies(store: CookieStoreLike, fields: string[], scope: string, port: number, requestPath: string): Promise<void> {
  const base = `${new URL(scope).pathname}${port}`;
  for (const field of fields) {
    const c = parseSetCookie(field, requestPath);
    if (!c) continue;
    const path = base + c.path;
    try {
      if (c.expires !== undefined && c.expires <= Date.now()) await store.delete({ name: c.name, path });
      else
        await store.set({
          name: c.name,
          value: c.value,
          path,
          ...(c.expires !== undefined ? { expires: c.expires } : {}),
          ...(c.sameSite ? { sameSite: c.sameSite } : {}),
        });
    } catch {
      // A cookie the browser refuses (a name or value it does not take) is left out.
    }
  }
}

function noPage(): Response {
  return errorPage(
    503,
    'The VM’s page is not open',
    'This preview is served by the page that runs the virtual machine (network.servePreview). Open that page again and keep it open while you use the preview; then reload this one.',
  );
}

function errorPage(status: number, title: string, message: string): Response {
  const esc = (s: string) => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
  const html = `<!doctype html><meta charset="utf-8"><title>${esc(title)}</title><style>body{font:16px system-ui,sans-serif;margin:3em;max-width:40em}</style><h1>${status} · ${esc(title)}</h1><p>${esc(message)}</p><p><small>weft preview</small></p>`;
  return new Response(html, {
    status,
    headers: { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store', 'Cross-Origin-Embedder-Policy': EMBEDDABLE },
  });
}
