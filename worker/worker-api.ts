// What the page and the weft worker say to each other (through comlink), and the events the
// network reports. Types only: web/ imports these, worker/ implements them.

import type { FlowEvent, StackCounters } from '../core/stack-events';
import type { Ipv4Address } from '../core/wire/address';

export interface NetworkSettings {
  /**
   * ws:// or wss:// URL of a Wisp endpoint, such as `weft relay`'s ws://HOST:PORT/wisp/ (default: none).
   * The guest's TCP and UDP flows beyond the virtual network go out through it, and weft's DNS
   * (10.0.2.3) asks it to resolve names unless `dohUrl` is set. Without one the guest reaches only
   * weft's own DHCP and DNS: its other connections are refused.
   */
  relayUrl?: string;
  /**
   * The virtual network, each field an address in dotted form (defaults: network 10.0.2.0,
   * prefixLength 24, gateway 10.0.2.2, dns 10.0.2.3, firstLease 10.0.2.15 — the addresses QEMU's
   * user networking uses). DHCP hands out leases from `firstLease` on; the gateway and DNS server
   * must lie inside the network.
   */
  network?: { network?: string; prefixLength?: number; gateway?: string; dns?: string; firstLease?: string };
  /** The link MTU, announced to the guest by DHCP: an integer in 576…65520 (default 1500). */
  mtu?: number;
  /**
   * A DNS over HTTPS endpoint (RFC 8484, e.g. https://cloudflare-dns.com/dns-query) that weft's DNS
   * forwards the guest's queries to (default: none — queries go through the relay, and without a
   * relay only `dnsRecords` are answered). When set it is used even with a relay. Failures are
   * reported as 'error' events.
   */
  dohUrl?: string;
  /**
   * Names weft's DNS answers itself, before forwarding anything: name → IPv4 address, e.g.
   * `{ 'files.test': '10.0.2.2' }` (default: none). Names are matched case-insensitively; a trailing
   * dot is ignored.
   */
  dnsRecords?: Record<string, string>;
  /**
   * Let the guest reach the relay host's own loopback through the gateway (default false). With it,
   * a connection to 10.0.2.2 (the gateway) goes to 127.0.0.1 on the relay host — but only when the
   * relay allows loopback too (`weft relay --allow-loopback`). Without it, such a connection (e.g.
   * `wget http://10.0.2.2:8080/` for a server on the relay's machine) is refused.
   */
  allowHostLoopback?: boolean;
  /**
   * Credentials for a relay that requires Wisp v2 password authentication (`weft relay --password
   * USER:PASS`) (default: none). They travel inside the WebSocket: use a wss:// relayUrl.
   */
  password?: { username: string; password: string };
  /**
   * One LAN shared by several tabs of this origin (default: none — the network is this page's own).
   * A name: every tab whose createNetwork names the same LAN joins one stack, run by a SharedWorker
   * named after it — the guests of all those tabs are on one switched LAN, with one DHCP, DNS and
   * relay connection. The first tab's settings start the stack; a tab whose settings differ is
   * refused (ERR_WEFT_LAN_MISMATCH). The LAN lives while any of its tabs does. `{ room, key }` is a
   * LAN across browsers through the relay (`weft relay --lan`): the page's guests join the room
   * `room` (1–64 of A–Z a–z 0–9 . _ ~ -) of `relayUrl`, which its first member made with `key`
   * (8–256 bytes; the others must bring the same). The room's router (DHCP, DNS, NAT) runs in the
   * relay, so what needs a stack in the page (connectTcp, fetch, servePreview, publish) fails with
   * ERR_WEFT_ROOM_UNSUPPORTED. The 'relay' event says 'connected' once the page is in the room; a
   * refusal that would repeat (a wrong key) is an 'error' event ERR_WEFT_ROOM_REFUSED.
   */
  lan?: string | { room: string; key: string };
}

export type RelayState = 'none' | 'connecting' | 'connected' | 'reconnecting' | 'failed';

/** What the network reports; a WeftNetwork dispatches each as a WeftEvent named by its `type`, with it as `detail`. */
export type NetworkEvent =
  | { type: 'relay'; state: RelayState; url?: string; message?: string }
  | { type: 'lease'; mac: string; ip: string; hostname?: string }
  | { type: 'flow-open'; flow: FlowSummary }
  | { type: 'flow-close'; flow: FlowSummary }
  | { type: 'drops'; drops: Record<string, number> }
  | { type: 'error'; message: string; code?: WeftErrorCode };

/**
 * The stable codes of weft's errors (WeftError.code, and the 'error' event's code):
 * - ERR_WEFT_SAB_UNAVAILABLE: framePath 'sab' was asked for on a page that is not cross-origin isolated.
 * - ERR_WEFT_START_FAILED: the worker could not be created or loaded, or the stack in it could not start.
 * - ERR_WEFT_WORKER_ERROR: the worker threw an error nothing caught (an 'error' event; the stack may have stopped).
 * - ERR_WEFT_CLOSED: the network is closed (attach or a call after close(), or one still waiting when it closed).
 * - ERR_WEFT_GUEST_REFUSED: the guest refused a connection (it answered RST: nothing listens on that port).
 * - ERR_WEFT_GUEST_UNREACHABLE: no guest to connect to (none has taken a lease, and no guestIp was given), or
 *   the guest never answered weft's SYN (the stack gave up after its retries, about a minute).
 * - ERR_WEFT_GUEST_TIMEOUT: the guest did not accept a connection within the page's timeout.
 * - ERR_WEFT_GUEST_RESET: an open connection to the guest was reset (by the guest, or weft gave up on it).
 * - ERR_WEFT_TOO_MANY_CONNECTIONS: the page has as many connections into the guest open as weft allows, or the
 *   stack's connection table is full.
 * - ERR_WEFT_NO_RELAY: publish needs a relay (relayUrl) and there is none.
 * - ERR_WEFT_PUBLISH_REFUSED: the relay does not publish (weft relay --publish-ports, with a token or password), the
 *   port asked for is outside its range or taken, or this client holds as many published ports as it may.
 * - ERR_WEFT_PREVIEW_UNAVAILABLE: servePreview cannot run here (no Service Workers: not a secure context), its scope
 *   is not a path of this origin, or the preview Service Worker could not be registered.
 * - ERR_WEFT_LAN_UNAVAILABLE: createNetwork({ lan: name }) in a browser without SharedWorker (Chrome on Android),
 *   which a LAN shared by tabs needs; create a network of the page's own instead.
 * - ERR_WEFT_LAN_MISMATCH: the LAN runs with other settings than this tab's (the first tab's settings started it).
 * - ERR_WEFT_LAN_FULL: the LAN has as many tabs as it takes.
 * - ERR_WEFT_ROOM_REFUSED: the relay will not let the page into its LAN room (`lan: { room, key }`): a wrong key or
 *   bad credentials; an 'error' event (the page does not retry).
 * - ERR_WEFT_ROOM_UNSUPPORTED: what needs weft's stack in the page (connectTcp, fetch, servePreview, publish) on a LAN
 *   room, whose router runs in the relay.
 */
export type WeftErrorCode =
  | 'ERR_WEFT_SAB_UNAVAILABLE'
  | 'ERR_WEFT_START_FAILED'
  | 'ERR_WEFT_WORKER_ERROR'
  | 'ERR_WEFT_CLOSED'
  | 'ERR_WEFT_GUEST_REFUSED'
  | 'ERR_WEFT_GUEST_UNREACHABLE'
  | 'ERR_WEFT_GUEST_TIMEOUT'
  | 'ERR_WEFT_GUEST_RESET'
  | 'ERR_WEFT_TOO_MANY_CONNECTIONS'
  | 'ERR_WEFT_PREVIEW_UNAVAILABLE'
  | 'ERR_WEFT_NO_RELAY'
  | 'ERR_WEFT_PUBLISH_REFUSED'
  | 'ERR_WEFT_LAN_UNAVAILABLE'
  | 'ERR_WEFT_LAN_MISMATCH'
  | 'ERR_WEFT_LAN_FULL'
  | 'ERR_WEFT_ROOM_REFUSED'
  | 'ERR_WEFT_ROOM_UNSUPPORTED';

/** What the worker reports about a publication (network.publish): each (re)publication, or a refusal. */
export type PublishEvent = { type: 'published'; port: number } | { type: 'refused'; message: string; code: WeftErrorCode };

/** What the page asks for with connectTcp: a connection from weft's gateway address to a port on the guest. */
export interface GuestConnectRequest {
  /** Chosen by the page, unique among its connections: what abortTcp names. */
  id: number;
  port: number;
  /** Dotted address; default the guest's latest lease. */
  guestIp?: string;
  /** Milliseconds the guest has to accept before the attempt fails with ERR_WEFT_GUEST_TIMEOUT. */
  timeoutMs: number;
}

/**
 * The answer to connectTcp: once the guest accepted, the two streams (transferred to the page), or
 * why there is no connection.
 */
export type GuestConnectResult =
  | { ok: true; readable: ReadableStream<Uint8Array>; writable: WritableStream<Uint8Array>; guestIp: string }
  | { ok: false; code: WeftErrorCode; message: string };

/** How a connection into the guest ended: without `code` cleanly (or because the page ended it), with one as that error. */
export interface GuestTcpEnd {
  code?: WeftErrorCode;
  message: string;
}

/** A flow as the page shows it (addresses formatted). */
export interface FlowSummary {
  id: string;
  protocol: 'tcp' | 'udp';
  guest: string;
  target: string;
  state?: string;
  bytesFromGuest: number;
  bytesToGuest: number;
  openedAt: number;
  reason?: string;
}

export interface NetworkStats extends StackCounters {
  relay: RelayState;
  framesToPage: number;
  framesFromPage: number;
  /**
   * Milliseconds the worker spent working (frames from the page, timers, relay messages), a close
   * measure of its CPU time (a browser gives a worker no CPU clock).
   */
  workerBusyMs: number;
  /**
   * How frames cross between the page and the worker: 'sab' through SharedArrayBuffer rings (the
   * page is cross-origin isolated), 'transfer' as batches of transferred ArrayBuffers.
   */
  framePath: FramePath;
  /**
   * Whether new TCP connections send the guest segments of up to 64 KiB, which its card takes whole
   * (every attached port said so: FramePort.offloadSegments).
   */
  segmentationOffload: boolean;
  /**
   * Frames dropped on the way between the page and the worker because the way was full (page →
   * worker and worker → page): the rings on 'sab'; on a LAN shared by tabs, what a tab or the worker
   * did not take in time (its backlog past 4 MiB); 0 otherwise.
   */
  ringDrops: { toWorker: number; toPage: number };
  /** The LAN the page's guests are on (see WeftNetwork.attach and NetworkSettings.lan). */
  lan: LanStats;
  /**
   * How the worker sums checksums: 'simd' with WebAssembly SIMD, 'scalar' where the browser has no
   * WebAssembly SIMD or the worker's Content Security Policy forbids compiling WebAssembly.
   */
  checksum: 'simd' | 'scalar';
}

/** The switched LAN of a network: the page's ports, and for a LAN shared by tabs its name and tabs. */
export interface LanStats {
  /** Ports attached in this page, each a guest's NIC. */
  ports: number;
  /** MACs the page's switch knows the port of (its guests', and weft's behind the worker). */
  macsLearned: number;
  /** Frames the LAN's switches dropped, by reason: this page's, and on a shared LAN the worker's for this tab. */
  drops: Record<string, number>;
  /** The LAN's name, for a LAN shared by tabs. */
  name?: string;
  /** The tabs on a LAN shared by tabs, this one included. */
  tabs?: number;
}

/** What the worker reports for NetworkStats: all but the page's own switch. */
export interface WorkerStats extends Omit<NetworkStats, 'lan'> {
  /** For a LAN shared by tabs: its name, tabs, and what its switch dropped of this tab's frames. */
  sharedLan?: { name: string; tabs: number; drops: Record<string, number> };
}

/** How frames cross between the page and the worker: SharedArrayBuffer rings ('sab') or transferred batches ('transfer'). */
export type FramePath = 'sab' | 'transfer';

/** The shared buffers of the two frame rings (made by FrameRing.allocate). */
export interface FrameRingBuffers {
  toWorker: SharedArrayBuffer;
  toPage: SharedArrayBuffer;
}

/** The message on the frame port that says "the ring you read has frames" (see FrameRingWriter). */
export const RING_DOORBELL = 'ring';

/** What a page asks of a running stack: the dedicated worker and a shared LAN's worker both answer it. */
export interface StackControlApi {
  /** The page leaves: a dedicated worker stops its stack; a shared LAN's stops when its last tab left. */
  stop(): Promise<void>;
  /** Segmentation offload towards the guest for connections opened from now on (see NetworkStats.segmentationOffload). */
  setSegmentationOffload(on: boolean): Promise<void>;
  stats(): Promise<WorkerStats>;
  flows(): Promise<FlowSummary[]>;
  startCapture(): Promise<void>;
  /** Stops capturing and returns the pcap file's bytes. */
  stopCapture(): Promise<Uint8Array>;
  /**
   * Opens a TCP connection into the guest (Stack.connectToGuest) and resolves once the guest
   * accepted it, with its two streams transferred to the page, or with why not. `onEnd` is called
   * once, when the connection is over.
   */
  connectTcp(request: GuestConnectRequest, onEnd: (end: GuestTcpEnd) => void): Promise<GuestConnectResult>;
  /** Resets a connection connectTcp opened (or is opening): the page's AbortSignal. */
  abortTcp(id: number): Promise<void>;
  /**
   * Asks the relay to listen for the guest's `guestPort` (weft's publish extension), on `relayPort`
   * or any port it allows (0). `onEvent` hears each publication (again after a reconnect) and refusals.
   */
  publish(id: number, guestPort: number, relayPort: number, onEvent: (e: PublishEvent) => void): Promise<void>;
  /** Stops publication `id`. */
  unpublish(id: number): Promise<void>;
}

/** The dedicated worker's control API (one page, one stack). */
export interface WeftWorkerApi extends StackControlApi {
  /**
   * Starts the stack. Frames flow over `framePort` as packed batches (see frame-batch.ts) or, with
   * `rings`, through the two SharedArrayBuffer rings (see frame-ring.ts), the port then carrying
   * only doorbells (RING_DOORBELL) for a reader without Atomics.waitAsync.
   */
  start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void, rings?: FrameRingBuffers): Promise<void>;
}

/**
 * The control API of a LAN shared by tabs (the SharedWorker named after it), one per tab: `join`
 * instead of start. Frames, and the events, flow over `framePort` (see lan-channel.ts).
 */
export interface LanWorkerApi extends StackControlApi {
  /**
   * Joins the LAN `name`, starting its stack with `settings` when no tab runs it. `lock` names a Web
   * Lock the tab holds while it lives: when the worker is granted it, the tab is gone (closed
   * without close(), crashed) and its port leaves the LAN.
   */
  join(name: string, settings: NetworkSettings, framePort: MessagePort, lock: string | undefined): Promise<LanJoinResult>;
}

/** The answer to a join: the LAN's relay state now, or why the tab may not join. */
export type LanJoinResult = { ok: true; relay: RelayState } | { ok: false; code: WeftErrorCode; message: string };

export function summarizeFlow(e: FlowEvent, format: (ip: Ipv4Address) => string): FlowSummary {
  const guest = `${format(e.guest.ip)}:${e.guest.port}`;
  const target = `${format(e.target.ip)}:${e.target.port}`;
  return {
    id: `${e.protocol} ${guest}>${target}@${e.openedAt}`,
    protocol: e.protocol,
    guest,
    target,
    ...('state' in e ? { state: e.state } : {}),
    bytesFromGuest: e.bytesFromGuest,
    bytesToGuest: e.bytesToGuest,
    openedAt: e.openedAt,
    ...(e.reason === undefined ? {} : { reason: e.reason }),
  };
}
