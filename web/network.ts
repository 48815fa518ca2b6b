// createNetwork(): a weft network for a page. The stack runs in a Web Worker; this handle starts it,
// carries frames to and from emulators, and reports what happens as DOM events (it is an
// EventTarget; see network-events.ts). The frame ports attached to one network are one switched LAN
// (guest-lan.ts): guests reach each other port to port in the page, and weft's router, DHCP and DNS
// in the worker. What cannot proceed throws or rejects with a WeftError, and an AbortSignal closes
// the network or detaches a port. Frames cross through two SharedArrayBuffer rings when the page is
// cross-origin isolated (no message per batch, no allocation per batch, and the worker can start on
// a frame while the emulator still runs), otherwise in batches of transferred ArrayBuffers. With
// `lan: name` the stack is the one of a LAN the tabs of this origin share, in a SharedWorker
// (stack-worker.ts, worker/lan-host.ts).

import type * as Comlink from 'comlink';
import { DEFAULT_NETWORK } from '../core/config';
import { parseMac } from '../core/wire/address';
import { DEFAULT_RING_BYTES } from '../worker/frame-ring';
import type { FlowSummary, FramePath, LanStats, NetworkEvent, NetworkSettings, NetworkStats, RelayState, StackControlApi } from '../worker/worker-api';
import type { FramePort } from './frame-port';
import { GuestLan } from './guest-lan';
import { DedicatedStackWorker, LanStackWorker, type StackWorker } from './stack-worker';
import { connectGuestTcp, type ConnectTcpOptions, type GuestTcpConnection } from './guest-connection';
import { GuestHttpClient } from './guest-http';
import { publishGuestPort, type GuestPublication, type PublishOptions } from './guest-publication';
import { WeftEvent, type NetworkEventOf, type NetworkEventType, type WeftNetworkEventMap } from './network-events';
import { WeftError } from './weft-error';
import { startPreview, type PreviewServer, type ServePreviewOptions } from './preview-server';

export type { FlowSummary, FramePath, LanStats, NetworkEvent, NetworkSettings, NetworkStats, RelayState };

export interface NetworkOptions extends NetworkSettings {
  /**
   * Where the worker script is (default: `new URL('./weft-worker.js', import.meta.url)`, the file
   * beside this module; the package ships it as `weft-net/web/weft-worker.js`). Set it when a
   * bundler does not keep that expression (it then neither copies the file nor rewrites the URL),
   * or when the page serves the file elsewhere. The worker must be same-origin with the page.
   */
  workerUrl?: string | URL;
  /**
   * How frames cross to the worker (default 'auto': 'sab' where the page can share memory, else
   * 'transfer'). 'sab' uses two SharedArrayBuffer rings, one per direction: no message and no
   * allocation per batch; it needs a cross-origin isolated page (COOP same-origin, COEP
   * require-corp), and createNetwork throws ERR_WEFT_SAB_UNAVAILABLE without one. 'transfer' sends
   * batches of frames as transferred ArrayBuffers and works on every page. A LAN shared by tabs
   * (`lan: name`) is always 'transfer': its SharedWorker cannot share memory with the page.
   */
  framePath?: FramePath | 'auto';
  /**
   * Bytes per ring, each direction, on the 'sab' path (default 4 MiB). A full ring drops frames and
   * counts them (stats().ringDrops). Unused on 'transfer'.
   */
  ringBytes?: number;
  /**
   * Closes the network when aborted, as close() does; `ready` and calls under way then reject with
   * the signal's reason. An already aborted signal makes createNetwork throw its reason (no worker
   * is started).
   */
  signal?: AbortSignal;
}

/** Options of WeftNetwork.attach. */
export interface AttachOptions {
  /** Detaches the port when aborted; with an already aborted signal the port is not attached. */
  signal?: AbortSignal;
}

/**
 * A weft network: the stack in a worker, the frame ports attached to it, and its events. It is an
 * EventTarget: `addEventListener('lease', (e) => e.detail.ip)`; each event's `detail` is the
 * NetworkEvent (see WeftNetworkEventMap). Calls that cannot proceed reject with a WeftError.
 */
export interface WeftNetwork extends EventTarget {
  /** Listens for one kind of event, typed by WeftNetworkEventMap: `addEventListener('lease', (e) => e.detail.ip)`. */
  addEventListener<K extends keyof WeftNetworkEventMap>(
    type: K,
    listener: (this: WeftNetwork, ev: WeftNetworkEventMap[K]) => unknown,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  /** Stops a listener added with addEventListener (same type, listener and capture flag). */
  removeEventListener<K extends keyof WeftNetworkEventMap>(
    type: K,
    listener: (this: WeftNetwork, ev: WeftNetworkEventMap[K]) => unknown,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
  /**
   * Subscribes to one kind of event with a listener that gets the NetworkEvent itself (sugar for
   * addEventListener; a listener that throws is logged, and the others still run); returns the
   * unsubscribe function.
   */
  on<T extends NetworkEventType>(type: T, listener: (e: NetworkEventOf<T>) => void): () => void;
  /**
   * Connects an emulator (or anything that speaks Ethernet frames); returns the detach function.
   * Every port attached to one network is on one switched LAN, with weft as its router, DHCP and
   * DNS: each guest leases its own address, and guests reach each other directly (a frame between
   * two of them goes port to port in the page, to no other port, and never through the worker).
   * With `lan: name` the guests of every tab on that LAN are on it too. A port can be attached
   * once at a time (a TypeError otherwise). Throws a WeftError ERR_WEFT_CLOSED once the network is
   * closed.
   */
  attach(port: FramePort, options?: AttachOptions): () => void;
  /**
   * Resolves once the worker runs the stack (or this tab joined its LAN). Rejects with a WeftError
   * ERR_WEFT_START_FAILED if it cannot start, ERR_WEFT_LAN_MISMATCH or ERR_WEFT_LAN_FULL if the
   * LAN refuses this tab (each also reported as an 'error' event), ERR_WEFT_CLOSED if the network
   * is closed first, or the signal's reason if it is aborted first.
   */
  readonly ready: Promise<void>;
  /** How frames cross between this page and the worker. */
  readonly framePath: FramePath;
  /** The relay connection's state, as the last 'relay' event said ('none' without a relay). */
  readonly relayState: RelayState;
  /** The stack's counters. */
  stats(): Promise<NetworkStats>;
  /** The flows open now. */
  flows(): Promise<FlowSummary[]>;
  /**
   * Starts capturing every frame weft's stack sends or receives (in the worker, bounded to 64 MiB):
   * frames between two guests do not pass it.
   */
  startCapture(): Promise<void>;
  /** Stops the capture and returns it as a pcap file. */
  stopCapture(): Promise<Blob>;
  /**
   * Opens a TCP connection from weft's gateway address into the guest (default: the address a
   * guest attached in this page leased most recently; any guest on the LAN with `guestIp`) and
   * resolves once the guest accepted it, with WHATWG streams that honour back-pressure both ways
   * (see GuestTcpConnection). Rejects with a WeftError
   * ERR_WEFT_GUEST_REFUSED (nothing listens: the guest answered RST), ERR_WEFT_GUEST_UNREACHABLE
   * (no lease yet and no guestIp, or no answer at all), ERR_WEFT_GUEST_TIMEOUT (options.timeout),
   * ERR_WEFT_TOO_MANY_CONNECTIONS or ERR_WEFT_CLOSED; with the signal's reason when it is aborted.
   */
  connectTcp(port: number, options?: ConnectTcpOptions): Promise<GuestTcpConnection>;
  /**
   * fetch() against the guest's HTTP server: `http://10.0.2.15:8000/…`, or `http://guest:8000/…`
   * for connectTcp's default guest (this page's latest lease). HTTP/1.1 over connectTcp, with keep-alive (up
   * to 4 idle connections per origin, closed after 5 s idle), Content-Length and chunked bodies
   * both ways (a ReadableStream body, with `duplex: 'half'`, goes chunked), a Response whose body
   * streams as the guest sends it, redirects per init.redirect ('manual' returns the redirect
   * itself), and init.signal. Fails as fetch does, with a TypeError; its `cause` is the WeftError
   * when weft could not connect (cause.code ERR_WEFT_GUEST_REFUSED when nothing listens). No
   * cookies are kept, and only http: reaches the guest (no TLS).
   */
  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response>;
  /**
   * Serves the guest's web servers on this page's origin: `<scope><port>/<path>` (in an iframe or
   * another tab) is answered from the guest's port — through this page, which must stay open (see
   * ServePreviewOptions and README). Registers the shipped Service Worker at the scope when it is
   * not registered there yet. Rejects with a WeftError ERR_WEFT_PREVIEW_UNAVAILABLE when the page
   * cannot use Service Workers or the registration fails.
   */
  servePreview(options: ServePreviewOptions): Promise<PreviewServer>;
  /**
   * Has the relay listen for the guest's `guestPort` (weft's publish extension: the relay needs
   * `--publish-ports` and a token or password), so anyone who can reach the relay's host reaches
   * the guest's server at `publication.url`. Resolves once the relay listens; rejects with a
   * WeftError ERR_WEFT_NO_RELAY (no relayUrl) or ERR_WEFT_PUBLISH_REFUSED (with the relay's reason).
   * The publication is asked for again after the relay connection comes back; `port` may change then.
   */
  publish(guestPort: number, options?: PublishOptions): Promise<GuestPublication>;
  /**
   * Detaches every port, stops the stack and ends the worker — on a LAN shared by tabs, this tab
   * leaves (what it opened closes) and the stack stops once the last tab left. From then on attach
   * throws and the other calls reject with a WeftError ERR_WEFT_CLOSED (as do `ready` and calls
   * still under way).
   */
  close(): Promise<void>;
}

/** Whether this page can share memory with a worker (cross-origin isolated, SharedArrayBuffer present). */
function canShareMemory(): boolean {
  return (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated === true && typeof SharedArrayBuffer === 'function';
}

/**
 * Starts a weft network in a worker (see NetworkOptions), or joins the LAN `options.lan` names.
 * Throws a WeftError ERR_WEFT_SAB_UNAVAILABLE for framePath 'sab' on a page that is not
 * cross-origin isolated (or with `lan`: a SharedWorker cannot share memory with the page),
 * ERR_WEFT_LAN_UNAVAILABLE for `lan` in a browser without SharedWorker, ERR_WEFT_START_FAILED when
 * the browser refuses to create the worker, and the signal's reason when `signal` is already aborted.
 */
export function createNetwork(options: NetworkOptions = {}): WeftNetwork {
  return new Network(options);
}

const closedError = () => new WeftError('ERR_WEFT_CLOSED', 'this weft network is closed');

/** LAN names at most this long (it names a SharedWorker and Web Locks). */
const MAX_LAN_NAME = 128;

class Network extends EventTarget implements WeftNetwork {
  readonly ready: Promise<void>;
  readonly framePath: FramePath;
  private relay: RelayState = 'none';
  private readonly worker: StackWorker;
  private readonly api: Comlink.Remote<StackControlApi>;
  /** The attached ports, switched (guest-lan.ts). */
  private readonly lan: GuestLan;
  /** The detach functions of the attached ports (close() calls them). */
  private readonly detachers = new Set<() => void>();
  private offload = false;
  private readonly signal: AbortSignal | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Rejects, once the network closes, with the reason: what `ready` and calls under way race with. */
  private readonly whenClosed: Promise<never>;
  private rejectWhenClosed!: (reason: unknown) => void;
  /** network.fetch's HTTP/1.1 client (made at the first fetch). */
  private http: GuestHttpClient | undefined;
  /** The addresses guests leased, for the preview's Location rewriting. */
  private readonly leasedIps = new Set<string>();
  /** The address a guest attached in this page leased most recently: connectTcp's default. */
  private ownLease: string | undefined;
  private readonly previews = new Set<PreviewServer>();
  private readonly relayUrl: string | undefined;

  constructor(options: NetworkOptions) {
    super();
    const { workerUrl, framePath: wantedPath = 'auto', ringBytes = DEFAULT_RING_BYTES, signal, ...settings } = options;
    signal?.throwIfAborted();
    this.relayUrl = settings.relayUrl;
    const lanName = typeof settings.lan === 'string' ? settings.lan : undefined;
    if (lanName !== undefined && (lanName.length === 0 || lanName.length > MAX_LAN_NAME)) {
      throw new RangeError(`createNetwork: a LAN's name is 1 to ${MAX_LAN_NAME} characters long, got ${JSON.stringify(lanName)}`);
    }
    if (wantedPath === 'sab' && lanName !== undefined) {
      throw new WeftError(
        'ERR_WEFT_SAB_UNAVAILABLE',
        "createNetwork: a LAN shared by tabs runs in a SharedWorker, which cannot share memory with the page: use framePath 'auto' with lan",
      );
    }
    if (wantedPath === 'sab' && !canShareMemory()) {
      throw new WeftError(
        'ERR_WEFT_SAB_UNAVAILABLE',
        "createNetwork: framePath 'sab' needs a cross-origin isolated page (serve it with COOP: same-origin and COEP: require-corp), or use framePath 'auto'",
      );
    }
    const mtu = settings.mtu ?? DEFAULT_NETWORK.mtu;
    this.lan = new GuestLan({
      mtu,
      routerMacs: [DEFAULT_NETWORK.gatewayMac],
      toWorker: (frame) => this.worker.push(frame),
      // With shared rings, take what the worker has written meanwhile at once: an emulator sends
      // frames (e.g. ACKs) while it runs a time slice, and the frames for it can then reach its
      // card within that slice instead of after it (reading an empty ring is one atomic load).
      afterInput: () => this.worker.drain(),
      onOffloadChange: () => this.updateOffload(),
    });
    const workerOptions = { url: workerUrl ?? new URL('./weft-worker.js', import.meta.url), deliver: (frame: Uint8Array) => this.lan.fromWorker(frame) };
    this.worker =
      lanName !== undefined
        ? new LanStackWorker(lanName, workerOptions)
        : new DedicatedStackWorker(wantedPath === 'transfer' || !canShareMemory() ? 'transfer' : 'sab', ringBytes, workerOptions);
    this.framePath = this.worker.framePath;
    this.api = this.worker.api;
    this.whenClosed = new Promise<never>((_, reject) => (this.rejectWhenClosed = reject));
    this.whenClosed.catch(() => undefined);

    let settled = false;
    let settle!: (outcome: { error: unknown } | undefined) => boolean;
    this.ready = new Promise<void>((resolve, reject) => {
      settle = (outcome) => {
        if (settled) return false;
        settled = true;
        if (outcome) reject(outcome.error);
        else resolve();
        return true;
      };
    });
    // Nobody need await `ready`: a start that fails is also reported as an 'error' event.
    this.ready.catch(() => undefined);
    const failStart = (e: WeftError) => {
      if (settle({ error: e })) this.emit({ type: 'error', code: e.code, message: e.message });
    };
    this.worker.start(settings, this.emit).then(
      () => settle(undefined),
      (e: unknown) => failStart(e instanceof WeftError ? e : new WeftError('ERR_WEFT_START_FAILED', `weft could not start: ${messageOf(e)}`, { cause: e })),
    );
    this.whenClosed.catch((reason: unknown) => settle({ error: reason }));

    // A worker script that does not load (a bundler that moved it, a 404) or that throws says so
    // only here: without this, `ready` would wait for ever.
    void this.worker.failed.then((thrown) => {
      if (!settled) {
        const why = thrown || `the script ${String(workerOptions.url)} did not load (if a bundler moved weft-worker.js, set workerUrl)`;
        failStart(new WeftError('ERR_WEFT_START_FAILED', `weft could not start its worker: ${why}`));
      } else if (!this.closed) {
        this.emit({ type: 'error', code: 'ERR_WEFT_WORKER_ERROR', message: `the weft worker threw: ${thrown || 'an error without a message'}` });
      }
    });

    this.signal = signal;
    signal?.addEventListener('abort', this.onAbort, { once: true });
  }

  get relayState(): RelayState {
    return this.relay;
  }

  on<T extends NetworkEventType>(type: T, listener: (e: NetworkEventOf<T>) => void): () => void {
    const wrapped = (e: Event) => {
      try {
        listener((e as WeftEvent<T>).detail);
      } catch (err) {
        console.error('weft: an event listener threw', err);
      }
    };
    this.addEventListener(type, wrapped);
    return () => this.removeEventListener(type, wrapped);
  }

  attach(port: FramePort, options: AttachOptions = {}): () => void {
    if (this.closed) throw new WeftError('ERR_WEFT_CLOSED', 'attach: this weft network is closed');
    const { signal } = options;
    if (signal?.aborted) return () => undefined;
    const remove = this.lan.add(port);
    let attached = true;
    const detach = () => {
      if (!attached) return;
      attached = false;
      signal?.removeEventListener('abort', detach);
      this.detachers.delete(detach);
      remove();
    };
    this.detachers.add(detach);
    signal?.addEventListener('abort', detach, { once: true });
    return detach;
  }

  async stats(): Promise<NetworkStats> {
    const { sharedLan, ...stats } = await this.call(() => this.api.stats());
    const page = this.lan.stats();
    const drops = { ...page.drops };
    for (const [reason, n] of Object.entries(sharedLan?.drops ?? {})) drops[reason] = (drops[reason] ?? 0) + n;
    return {
      ...stats,
      ringDrops: { ...stats.ringDrops, toWorker: stats.ringDrops.toWorker + this.worker.droppedToWorker() },
      lan: { ...page, drops, ...(sharedLan ? { name: sharedLan.name, tabs: sharedLan.tabs } : {}) },
    };
  }

  flows(): Promise<FlowSummary[]> {
    return this.call(() => this.api.flows());
  }

  startCapture(): Promise<void> {
    return this.call(() => this.api.startCapture());
  }

  async stopCapture(): Promise<Blob> {
    const bytes = await this.call(() => this.api.stopCapture());
    return new Blob([bytes as BlobPart], { type: 'application/vnd.tcpdump.pcap' });
  }

  close(): Promise<void> {
    return this.shutdown(closedError());
  }

  connectTcp(port: number, options: ConnectTcpOptions = {}): Promise<GuestTcpConnection> {
    if (this.closed) return Promise.reject(closedError());
    return this.call(() => {
      const guestIp = options.guestIp ?? this.ownLease;
      return connectGuestTcp(this.api, port, guestIp === undefined ? options : { ...options, guestIp }, this.whenClosed);
    });
  }

  fetch(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
    if (this.closed) return Promise.reject(new TypeError('network.fetch: this weft network is closed', { cause: closedError() }));
    return this.httpClient().fetch(input, init);
  }

  publish(guestPort: number, options: PublishOptions = {}): Promise<GuestPublication> {
    if (this.closed) return Promise.reject(closedError());
    return this.call(() => publishGuestPort(this.api, this.relayUrl, guestPort, options, this.whenClosed));
  }

  async servePreview(options: ServePreviewOptions): Promise<PreviewServer> {
    if (this.closed) throw closedError();
    const http = this.httpClient();
    const preview = await startPreview(options, {
      exchange: (req) => http.exchange(req),
      guestHosts: () => this.leasedIps,
    });
    this.previews.add(preview);
    return preview;
  }

  /** The guest's HTTP client: a URL's host is 'guest' (connectTcp's default guest) or an IPv4 address. */
  private httpClient(): GuestHttpClient {
    this.http ??= new GuestHttpClient({
      connect: async (hostname, port, signal) => {
        if (hostname !== 'guest' && !/^\d{1,3}(\.\d{1,3}){3}$/.test(hostname)) {
          throw new TypeError(`network.fetch reaches only the guest: use http://guest:PORT/ or its address (http://10.0.2.15:PORT/), not ${hostname}`);
        }
        return this.connectTcp(port, { ...(hostname === 'guest' ? {} : { guestIp: hostname }), ...(signal ? { signal } : {}) });
      },
    });
    return this.http;
  }

  private readonly onAbort = () => {
    // Nobody awaits an abort: a worker that fails to stop is ended all the same.
    this.shutdown(this.signal?.reason).catch(() => undefined);
  };

  /** Closes the network (once); `reason` is what `ready` and calls under way reject with. */
  private shutdown(reason: unknown): Promise<void> {
    this.closing ??= this.stopWorker(reason);
    return this.closing;
  }

  private async stopWorker(reason: unknown): Promise<void> {
    this.closed = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.rejectWhenClosed(reason);
    for (const detach of [...this.detachers]) detach();
    this.http?.close();
    for (const p of this.previews) void p.close();
    await this.worker.end();
  }

  /**
   * A call into the worker once it runs the stack; rejects with ERR_WEFT_CLOSED once the network is
   * closed (or with the reason it closed while under way), or with why the stack did not start.
   */
  private call<R>(fn: () => Promise<R>): Promise<R> {
    if (this.closed) return Promise.reject(closedError());
    return Promise.race([this.ready.then(fn), this.whenClosed]);
  }

  private readonly emit = (e: NetworkEvent): void => {
    if (e.type === 'relay') this.relay = e.state;
    if (e.type === 'lease') {
      this.leasedIps.add(e.ip);
      if (this.lan.isOwnGuest(parseMac(e.mac))) this.ownLease = e.ip;
    }
    this.dispatchEvent(new WeftEvent(e));
  };

  private updateOffload(): void {
    const on = this.lan.size > 0 && this.lan.allOffload;
    if (on === this.offload || this.closed) return;
    this.offload = on;
    this.api.setSegmentationOffload(on).catch(() => undefined);
  }
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
