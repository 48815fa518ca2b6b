// The relay's HTTP side: the Wisp WebSocket endpoint (with origin, token and client-count checks
// before the upgrade), /healthz, /metrics, the optional demo site, and draining on shutdown.

import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { EventLog } from '../log';
import { DestinationPolicy } from './destination-policy';
import { RelayConnection, type ClientInfo, type RelayConnectionHost } from './relay-connection';
import { RelayMetrics } from './relay-metrics';
import type { RelayOptions } from './relay-options';
import { createResolver, type Resolve } from './resolver';
import { StaticSite } from './static-site';
import { destroyLingeringSockets } from './tcp-destination';
import { LogThrottle } from './log-throttle';
import { KeyedRateLimiter } from './token-bucket';
import { readFileSync } from 'node:fs';
import { formatIpv4 } from '../../core/wire/address';
import { parseResolvConf, RESOLV_CONF } from '../dns-config';
import { parseIp } from './ip-range';
import type { RelayResolver } from './relay-connection';
import { lanRoomOf, LanRooms } from './lan-rooms';
import { MemoryWispLink } from './memory-wisp';
import type { WispTransport } from '../../core/wisp/wisp-upstream';

/**
 * Largest WebSocket message accepted; larger ones end the client (close code 1009). Wisp counts
 * credits in packets, not bytes, and clients such as wisp-js send whatever chunk they were given,
 * so this is generous; RelayConnection bounds the bytes a client may have in flight separately.
 */
export const MAX_MESSAGE_BYTES = 1024 * 1024;

function sameSecret(a: string, b: string): boolean {
  // Hash first so the comparison takes the same time whatever the lengths.
  return timingSafeEqual(createHash('sha256').update(a).digest(), createHash('sha256').update(b).digest());
}

function reject(socket: Duplex, status: number, text: string): void {
  socket.end(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${text.length + 1}\r\n\r\n${text}\n`);
  setTimeout(() => socket.destroy(), 1000).unref();
}

/** What the relay server needs from whoever starts it (the CLI, createRelay, a worker process). */
export interface RelayServerHost {
  log: EventLog;
  /** The resolvers clients may reach on port 53 (tests); defaults to --dns-server, else resolv.conf. */
  resolvers?: RelayResolver[];
  /** Overrides DNS resolution (tests); defaults to the system resolver or --dns-server. */
  resolve?: Resolve;
  demoRoot?: string;
  /** Told the number of WebSocket clients after each change (a worker tells its primary). */
  onClientCount?: (clients: number) => void;
  /** Told the number of LAN rooms after each change (a worker tells its primary). */
  onRoomCount?: (rooms: number) => void;
  /** Told the number of LAN rooms a client address is in after each change (a worker tells its primary). */
  onIpRoomCount?: (ip: string, rooms: number) => void;
}

/**
 * Whether a page at `origin` is the one this relay serves: its host is the request's Host, and, on
 * a loopback listener, a loopback name (a DNS-rebound name would otherwise pass as "same origin").
 */
function isOwnOrigin(origin: string, host: string | undefined, listenHost: string): boolean {
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || host === undefined || url.host !== host.toLowerCase()) return false;
  const loopbackListener = /^(127\.|localhost$|::1$|\[::1\]$)/.test(listenHost);
  return !loopbackListener || /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])$/.test(url.hostname);
}

export class RelayServer {
  readonly metrics = new RelayMetrics();
  private http: http.Server | undefined;
  private readonly wss: WebSocketServer;
  private readonly connections = new Set<RelayConnection>();
  /** WebSockets per client IP, counted from admission until the socket closes (upgrade or not). */
  private readonly perIp = new Map<string, number>();
  private readonly sockets = new Set<WebSocket>();
  private readonly ctx: RelayConnectionHost;
  private readonly site: StaticSite | undefined;
  /** LAN rooms (--lan), and the in-memory Wisp connections of their routers. */
  readonly lan: LanRooms | undefined;
  private readonly roomConnections = new Set<RelayConnection>();
  private draining = false;

  constructor(
    private readonly options: RelayOptions,
    private readonly deps: RelayServerHost,
  ) {
    const pw = options.password;
    this.ctx = {
      options,
      policy: new DestinationPolicy(options.policy),
      resolve: deps.resolve ?? createResolver(options.dnsServers),
      resolvers: deps.resolvers ?? relayResolvers(options.dnsServers),
      metrics: this.metrics,
      log: deps.log,
      streamRate: options.rate > 0 ? new KeyedRateLimiter(options.rate, Math.max(1, options.rate * 2)) : undefined,
      // Both compared every time (no && short-circuit): the time taken must not tell whether the username was right.
      checkPassword: pw ? (c) => [sameSecret(c.username, pw.username), sameSecret(c.password, pw.password)].every(Boolean) : undefined,
      passwordTries: new KeyedRateLimiter(1, 5),
      refusalLog: new LogThrottle(() => this.metrics.logLinesSuppressed++),
      publishedPorts: new Set(),
    };
    if (options.demo && deps.demoRoot) this.site = new StaticSite(deps.demoRoot, options.path);
    if (options.lan) {
      this.lan = new LanRooms({
        options: options.lan,
        metrics: this.metrics,
        log: deps.log,
        refusalLog: this.ctx.refusalLog,
        checkPassword: this.ctx.checkPassword,
        passwordTries: this.ctx.passwordTries,
        openWisp: (label) => this.openRoomWisp(label),
        gatewayIsHost: options.policy.allowLoopback,
        onCount: () => this.countChanged(),
        onRooms: deps.onRoomCount,
        onIpRooms: deps.onIpRoomCount,
      });
    }
    this.wss = new WebSocketServer({
      noServer: true,
      maxPayload: MAX_MESSAGE_BYTES,
      perMessageDeflate: false,
      // Wisp v2 clients offer a subprotocol whose value the spec leaves open; echo the first one
      // (a ws client fails the handshake when none is selected).
      handleProtocols: (protocols) => protocols.values().next().value ?? false,
    });
  }

  /** Listens; resolves with the bound address (port 0 picks one). */
  listen(): Promise<{ host: string; port: number }> {
    const server = this.httpServer();
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, this.options.host, () => {
        server.off('error', reject);
        this.metrics.watchEventLoop();
        const a = server.address() as net.AddressInfo;
        resolve({ host: a.address, port: a.port });
      });
    });
  }

  /**
   * Serves connections handed over by a primary process (`--workers`) instead of listening:
   * `head` is what the primary already read from the socket (the request's head), replayed into
   * the HTTP parser before the socket's own bytes.
   */
  serveHandedOver(): (socket: net.Socket, head: Buffer) => void {
    const server = this.httpServer();
    this.metrics.watchEventLoop();
    return (socket, head) => {
      server.emit('connection', socket);
      // The HTTP parser reads the socket's handle directly once attached; the replayed head goes
      // through its 'data' listener, which it keeps for exactly this kind of injected input.
      if (head.length > 0) socket.emit('data', head);
      socket.resume();
    };
  }

  private httpServer(): http.Server {
    const server = http.createServer((req, res) => this.onRequest(req, res));
    server.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => this.handleUpgrade(req, socket, head));
    server.on('clientError', (_e, socket: net.Socket) => socket.destroy());
    this.http = server;
    return server;
  }

  /** WebSocket clients: Wisp connections and LAN room members. */
  get clientCount(): number {
    return this.connections.size + (this.lan?.memberCount ?? 0);
  }

  private countChanged(): void {
    this.metrics.clients = this.clientCount;
    this.deps.onClientCount?.(this.clientCount);
  }

  /**
   * A Wisp connection into this relay for a LAN room's router: a RelayConnection like any client's
   * (policy, stream caps, --rate and --bandwidth keyed by the room, metrics), over memory.
   */
  private openRoomWisp(label: string): WispTransport {
    const link = new MemoryWispLink();
    link.open(() => {
      const conn = new RelayConnection(link.server, { ip: label, port: 0, version: 2, preauthorized: true, label }, this.ctx);
      this.roomConnections.add(conn);
      link.server.on('close', () => this.roomConnections.delete(conn));
    });
    return link.client;
  }

  /**
   * Stops accepting, closes every stream with 0x02 and every WebSocket (1001), and resolves once
   * all are gone — or after `graceMs`, when the stragglers are cut off.
   */
  async drain(graceMs: number): Promise<void> {
    this.draining = true;
    this.metrics.stop();
    this.http?.close();
    this.http?.closeIdleConnections();
    for (const c of this.connections) c.drain();
    this.lan?.drain();
    const deadline = Date.now() + graceMs;
    while ((this.sockets.size > 0 || (this.lan?.memberCount ?? 0) > 0) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    for (const ws of this.sockets) ws.terminate();
    this.lan?.closeAll();
    for (const c of this.roomConnections) c.drain();
    this.http?.closeAllConnections();
    destroyLingeringSockets();
  }

  private onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const pathname = new URL(req.url ?? '/', 'http://relay').pathname;
    if (pathname === '/healthz') {
      res.writeHead(this.draining ? 503 : 200, { 'content-type': 'text/plain' });
      res.end(this.draining ? 'draining\n' : 'ok\n');
      return;
    }
    if (pathname === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(this.metrics.render());
      return;
    }
    if (pathname === this.options.path || (this.lan && lanRoomOf(pathname, this.options.path) !== undefined)) {
      res.writeHead(426, { 'content-type': 'text/plain', upgrade: 'websocket' });
      res.end(pathname === this.options.path ? 'this is a Wisp endpoint: connect with a WebSocket\n' : 'this is a LAN room: connect with a WebSocket\n');
      return;
    }
    if (this.site?.handle(req, res, pathname)) return;
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
  }

  /** A WebSocket upgrade request, from this relay's own server or an embedder's (weft-net/relay). */
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://relay');
    const ip = this.options.trustProxy.clientAddress(req.socket.remoteAddress, req.headers['x-forwarded-for']);
    const refuse = (status: number, text: string, cause: string) => {
      this.metrics.upgradeRejected(cause);
      const extra = this.ctx.refusalLog.admit(ip, performance.now());
      if (extra) this.deps.log('upgrade-rejected', { client: ip, status, cause, ...extra });
      reject(socket, status, text);
    };
    // A LAN room (--lan): `<path>lan/<room>`; the same checks as Wisp up to the client counts.
    const room = this.lan ? lanRoomOf(url.pathname, this.options.path) : undefined;
    if (room === null) return refuse(400, 'Bad Request', 'room-name');
    if (url.pathname !== this.options.path && room === undefined) return refuse(404, 'Not Found', 'path');
    if (this.draining) return refuse(503, 'Service Unavailable', 'draining');
    const origin = req.headers.origin;
    const origins = this.options.origins;
    if (origins && !origins.includes('*') && (origin === undefined || !origins.includes(origin))) {
      return refuse(403, 'Forbidden', 'origin');
    }
    // --demo without --origin: a page may connect only if it is the demo's own, so no other site
    // the user visits can use the relay (with --allow-loopback, their own machine's services).
    if (!origins && this.options.demo && origin !== undefined && !isOwnOrigin(origin, req.headers.host, this.options.host)) {
      return refuse(403, 'Forbidden', 'origin');
    }
    const version: 1 | 2 = req.headers['sec-websocket-protocol'] ? 2 : 1;
    const token = this.options.token;
    const presented = url.searchParams.get('token') ?? /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const tokenOk = token !== undefined && presented !== undefined && presented !== null && sameSecret(presented, token);
    // A room member gives its password in its join message; a Wisp client needs v2 for one.
    const passwordPossible = this.options.password !== undefined && (version === 2 || room !== undefined);
    if (token !== undefined && !tokenOk && !passwordPossible) return refuse(401, 'Unauthorized', 'token');
    if (this.options.password !== undefined && !tokenOk && !passwordPossible) return refuse(401, 'Unauthorized', 'password-needs-v2');
    if (this.clientCount >= this.options.maxClients) return refuse(503, 'Service Unavailable', 'max-clients');
    const fromIp = this.perIp.get(ip) ?? 0;
    if (fromIp >= this.options.maxClientsPerIp) return refuse(503, 'Service Unavailable', 'max-clients-per-ip');
    this.perIp.set(ip, fromIp + 1);
    releaseOnClose(socket, this.perIp, ip);
    if (room !== undefined && this.lan) {
      this.lan.accept(req, socket, head, { ip, port: req.socket.remotePort ?? 0, room, preauthorized: tokenOk });
      return;
    }
    // Read before the upgrade and passed on as a value: a closure that mentions `req` would keep the
    // whole request (headers, raw strings, parser state: ~1.2 KiB) alive for the client's lifetime.
    const info: ClientInfo = { ip, port: req.socket.remotePort ?? 0, version, preauthorized: tokenOk };
    this.wss.handleUpgrade(req, socket, head, (ws) => this.accepted(ws, info, socket));
  }

  private accepted(ws: WebSocket, info: ClientInfo, socket: Duplex): void {
    const conn = new RelayConnection(ws, info, this.ctx, socket);
    this.connections.add(conn);
    this.sockets.add(ws);
    this.metrics.connectionsTotal++;
    this.countChanged();
    ws.on('close', () => {
      this.connections.delete(conn);
      this.sockets.delete(ws);
      this.countChanged();
    });
  }
}

/** Gives the IP's slot back when its socket closes (a function of its own: see `info` above). */
function releaseOnClose(socket: Duplex, perIp: Map<string, number>, ip: string): void {
  socket.once('close', () => {
    const n = (perIp.get(ip) ?? 1) - 1;
    if (n > 0) perIp.set(ip, n);
    else perIp.delete(ip);
  });
}

/** --dns-server values (IP or IP:PORT, [IPv6]:PORT), else the host's IPv4 nameservers. */
export function relayResolvers(dnsServers: readonly string[]): RelayResolver[] {
  const out: RelayResolver[] = [];
  const texts = dnsServers.length > 0 ? dnsServers : hostNameservers();
  for (const t of texts) {
    const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(t) ?? /^([^:]+)(?::(\d+))?$/.exec(t);
    const address = parseIp(m ? m[1] : t) ?? parseIp(t);
    if (address) out.push({ address, port: m?.[2] ? Number(m[2]) : 53 });
  }
  return out;
}

function hostNameservers(): string[] {
  try {
    return parseResolvConf(readFileSync(RESOLV_CONF, 'utf8')).servers.map((s) => `${formatIpv4(s.ip)}:${s.port}`);
  } catch {
    return [];
  }
}
