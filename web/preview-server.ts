// network.servePreview(): the page's half of the preview. It registers the preview Service Worker
// (preview-sw.ts) at the scope, tells it this page serves, and answers what it forwards: each
// request goes to the guest through the page's HTTP client, and the answer streams back with
// Location fields moved into the preview's URL space and Set-Cookie handed to the SW (or, without
// CookieStore, kept here). The SW can reach the guest only through an open page: see preview-sw.ts.

import { decodedBody, type HttpRequest, type HttpResponse } from './guest-http';
import { PageCookieJar } from './preview-cookies';
import { PREVIEW_PING, PREVIEW_REQUEST, PREVIEW_SERVE, type PreviewReply, type PreviewRequestMessage, type PreviewServeMessage } from './preview-protocol';
import { WeftError } from './weft-error';

/** Options of WeftNetwork.servePreview. */
export interface ServePreviewOptions {
  /**
   * Where the preview lives on this page's origin: a path ending in '/', such as '/preview/'
   * (relative to the page, or a full URL of its origin). `<scope><port>/<path>` is then the guest's
   * `http://<guest>:<port>/<path>`.
   */
  scope: string;
  /**
   * The preview Service Worker script (default: preview-sw.js beside this module, which the
   * package ships as `weft-net/web/preview-sw.js`). It must be same-origin, and a browser lets a
   * Service Worker control only paths under its script's folder unless the script is served with
   * `Service-Worker-Allowed: /` (or a header naming the scope).
   */
  serviceWorkerUrl?: string | URL;
  /** Stops serving when aborted, as close() does. */
  signal?: AbortSignal;
}

/** A running preview (WeftNetwork.servePreview). */
export interface PreviewServer {
  /** The scope as a full URL, ending in '/'. */
  readonly scope: string;
  /** The preview URL of a guest port (and a path on it): `url(8000)` is `<scope>8000/`. */
  url(port: number, path?: string): string;
  /**
   * Stops answering (the Service Worker stays registered: with no serving page its answers are a
   * 503 page). `unregister: true` also removes it.
   */
  close(options?: { unregister?: boolean }): Promise<void>;
}

/** What the preview needs of the network. */
export interface PreviewBackend {
  /** One HTTP exchange with the guest (no redirects followed). */
  exchange(req: HttpRequest): Promise<HttpResponse>;
  /** Host names that mean the guest in a Location field: 'guest' and its addresses. */
  guestHosts(): Iterable<string>;
}

/** Request fields the client sets itself, or that belong to the browser's hop to the SW. */
const DROPPED_REQUEST_FIELDS = new Set([
  'host',
  'connection',
  'keep-alive',
  'content-length',
  'transfer-encoding',
  'cookie',
  'upgrade',
  'proxy-connection',
  'te',
]);
/** Response fields that describe the hop from the guest, not the answer. */
const HOP_RESPONSE_FIELDS = new Set(['connection', 'keep-alive', 'transfer-encoding', 'proxy-connection', 'upgrade', 'trailer']);

export async function startPreview(options: ServePreviewOptions, backend: PreviewBackend): Promise<PreviewServer> {
  const { signal } = options;
  signal?.throwIfAborted();
  const container = (globalThis.navigator as Navigator | undefined)?.serviceWorker;
  if (!container) {
    throw new WeftError(
      'ERR_WEFT_PREVIEW_UNAVAILABLE',
      'servePreview: this page cannot use Service Workers (it must be a secure context: https:, or http://localhost)',
    );
  }
  const scope = new URL(options.scope, location.href);
  if (scope.origin !== location.origin || !scope.pathname.endsWith('/') || scope.search || scope.hash) {
    throw new WeftError('ERR_WEFT_PREVIEW_UNAVAILABLE', `servePreview: the scope must be a path on this origin ending in '/', got ${options.scope}`);
  }
  const scriptUrl = options.serviceWorkerUrl ?? new URL('./preview-sw.js', import.meta.url);
  let registration: ServiceWorkerRegistration;
  try {
    registration = await container.register(scriptUrl, { scope: scope.href, updateViaCache: 'none' });
  } catch (e) {
    throw new WeftError(
      'ERR_WEFT_PREVIEW_UNAVAILABLE',
      `servePreview: could not register ${String(scriptUrl)} for ${scope.href} (${e instanceof Error ? e.message : String(e)}; a scope above the script's folder needs the header Service-Worker-Allowed)`,
      { cause: e },
    );
  }
  const active = await activeWorker(registration);
  const server = new PreviewResponder(registration.scope, backend);
  const onMessage = (e: MessageEvent) => server.onMessage(e);
  container.addEventListener('message', onMessage);
  container.startMessages();
  active.postMessage({ type: PREVIEW_SERVE, scope: registration.scope } satisfies PreviewServeMessage);

  let closed = false;
  const close = async (o: { unregister?: boolean } = {}) => {
    if (!closed) {
      closed = true;
      container.removeEventListener('message', onMessage);
      signal?.removeEventListener('abort', onAbort);
    }
    if (o.unregister) await registration.unregister();
  };
  const onAbort = () => void close();
  signal?.addEventListener('abort', onAbort, { once: true });
  return {
    scope: registration.scope,
    url: (port, path = '') => `${registration.scope}${port}/${path.replace(/^\//, '')}`,
    close,
  };
}

/** The registration's worker once it is active. */
function activeWorker(reg: ServiceWorkerRegistration): Promise<ServiceWorker> {
  if (reg.active) return Promise.resolve(reg.active);
  const pending = reg.installing ?? reg.waiting;
  return new Promise((resolve, reject) => {
    if (!pending) return reject(new WeftError('ERR_WEFT_PREVIEW_UNAVAILABLE', 'servePreview: the Service Worker registered but never started'));
    pending.addEventListener('statechange', () => {
      if (pending.state === 'activated') resolve(pending);
      else if (pending.state === 'redundant') reject(new WeftError('ERR_WEFT_PREVIEW_UNAVAILABLE', 'servePreview: the Service Worker failed to install'));
    });
  });
}

/** Answers the SW's messages for one scope. */
class PreviewResponder {
  /** Only where the SW has no CookieStore. */
  private readonly jar = new PageCookieJar();

  constructor(
    private readonly scope: string,
    private readonly backend: PreviewBackend,
  ) {}

  onMessage(e: MessageEvent): void {
    const data = e.data as { type?: string; scope?: string } | null;
    if (!data || data.scope !== this.scope) return;
    if (data.type === PREVIEW_PING) {
      (e.source as ServiceWorker | null)?.postMessage({ type: PREVIEW_SERVE, scope: this.scope } satisfies PreviewServeMessage);
    } else if (data.type === PREVIEW_REQUEST && e.ports[0]) {
      void this.answer(data as PreviewRequestMessage, e.ports[0]);
    }
  }

  private async answer(req: PreviewRequestMessage, port: MessagePort): Promise<void> {
    const reply = (r: PreviewReply, transfer: Transferable[] = []) => port.postMessage(r, transfer);
    reply({ type: 'accepted' });
    try {
      const headers = req.headers.filter(([n]) => !DROPPED_REQUEST_FIELDS.has(n.toLowerCase()));
      const cookie = req.cookies === 'store' ? req.cookie : this.jar.cookieFor(req.port, req.path);
      if (cookie) headers.push(['Cookie', cookie]);
      const url = new URL(`http://guest:${req.port}${req.path}`);
      let res: HttpResponse;
      try {
        res = await this.backend.exchange({ method: req.method, url, headers, body: req.body ? new Uint8Array(req.body) : null });
      } catch (e) {
        reply(failure(e, req.port));
        return;
      }
      const { body, decoded } = decodedBody(res.body, res.headers);
      const setCookies: string[] = [];
      const out: Array<[string, string]> = [];
      for (const [name, value] of res.headers) {
        const n = name.toLowerCase();
        if (HOP_RESPONSE_FIELDS.has(n) || (decoded && (n === 'content-encoding' || n === 'content-length'))) continue;
        if (n === 'set-cookie') setCookies.push(value);
        else if (n === 'location') out.push([name, this.previewLocation(value, url)]);
        else out.push([name, value]);
      }
      if (req.cookies === 'page') this.jar.store(req.port, req.path, setCookies);
      reply({ type: 'response', status: res.status, statusText: res.statusText, headers: out, setCookies, body }, body ? [body] : []);
    } catch (e) {
      reply({ type: 'failed', status: 502, title: 'The preview failed', message: e instanceof Error ? e.message : String(e) });
    } finally {
      port.close();
    }
  }

  /** A Location on the guest (absolute with a guest host, or root-relative) as a preview URL; others as they are. */
  private previewLocation(location: string, requestUrl: URL): string {
    let target: URL;
    try {
      target = new URL(location, requestUrl);
    } catch {
      return location;
    }
    const hosts = new Set(['guest', 'localhost', '127.0.0.1', ...this.backend.guestHosts()]);
    if (target.protocol !== 'http:' || !hosts.has(target.hostname)) return location;
    return `${this.scope}${target.port || '80'}${target.pathname}${target.search}${target.hash}`;
  }
}

/** The 502 (or 504) page for a request the guest could not answer. */
function failure(e: unknown, port: number): PreviewReply {
  const code = (e as { cause?: { code?: string } }).cause?.code;
  if (code === 'ERR_WEFT_GUEST_REFUSED') {
    return {
      type: 'failed',
      status: 502,
      title: `Nothing listens on port ${port} in the VM`,
      message: `The guest refused the connection to port ${port}: start a server there (for example busybox httpd -p ${port}), then reload.`,
    };
  }
  if (code === 'ERR_WEFT_GUEST_TIMEOUT') {
    return { type: 'failed', status: 504, title: 'The VM did not answer', message: `The guest did not accept a connection to port ${port} in time.` };
  }
  const message = e instanceof Error ? e.message : String(e);
  return { type: 'failed', status: 502, title: `The VM's server on port ${port} failed`, message };
}
