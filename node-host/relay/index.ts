// weft-net/relay: the relay for a Node program's own HTTP server (Express, Fastify, plain http).
// The options are the CLI's flags, typed; they go through the very same parser, so a value the CLI
// refuses is refused here with the same message.

import type http from 'node:http';
import type { Duplex } from 'node:stream';
import { UsageError } from '../cli-errors';
import { jsonLineLog } from '../log';
import { parseRelayOptions } from './relay-options';
import { RelayServer } from './relay-server';

export interface RelayOptions {
  /** URL path of the Wisp endpoint that handleUpgrade accepts (default '/wisp/'). */
  path?: string;
  /** Ranges (CIDR) or hostnames to allow (".example.com" includes subdomains), as --allow. */
  allow?: string[];
  /** Ranges or hostnames to refuse; wins over every allow. */
  deny?: string[];
  /** Allow the private and CGNAT ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7). */
  allowPrivate?: boolean;
  /** Allow this host's loopback (127/8, ::1): what lets a guest's 10.0.2.2 reach the host's own services. */
  allowLoopback?: boolean;
  /** Allowed destination ports: "80,443,8000-8999", or numbers and [from, to] pairs (default: all). */
  ports?: string | Array<number | [number, number]>;
  /** Wisp v2 password authentication (v1 clients then need the token). */
  password?: { username: string; password: string };
  /** A token clients present as ?token=… or "Authorization: Bearer …". */
  token?: string;
  /** Origins whose pages may connect, as --origin (default: any). A list, or one comma-separated string. */
  origin?: string | string[];
  /** The same as `origin`. */
  origins?: string[];
  /** WebSocket clients at once (default 1000). */
  maxClients?: number;
  /** WebSocket clients at once from one IP address (default 64). */
  maxClientsPerIp?: number;
  /** Streams open at once on one WebSocket (default 1024). */
  maxStreamsPerClient?: number;
  /** Give up connecting to a destination after this long (default 10 000 ms). */
  connectTimeoutMs?: number;
  /** Close streams without traffic for this long (default 0: never). */
  idleTimeoutMs?: number;
  /** Close a WebSocket that opens no stream within this long (default 120 000 ms; 0: never). */
  firstStreamTimeoutMs?: number;
  /** New streams per second per client IP (default 200; 0: unlimited). */
  rate?: number;
  /** Bytes per second per client and direction (default 0: unlimited). */
  bandwidth?: number;
  /** DNS servers ("IP" or "IP:PORT") to resolve with instead of resolv.conf's. */
  dnsServers?: string[];
  /**
   * Reverse proxies in front of your server (CIDRs or addresses, as --trust-proxy): from these
   * peers the rightmost untrusted X-Forwarded-For address counts as the client for per-IP limits
   * and logs (default: none; the TCP peer is the client).
   */
  trustProxy?: string | string[];
  /**
   * LAN rooms, as --lan (default: off; needs `token` or `password`): clients that join one room at
   * `<path>lan/<room>` share an Ethernet LAN whose router (DHCP, DNS, NAT under this relay's policy)
   * the relay hosts. `true` takes the defaults; the fields are --lan-max-rooms, --lan-max-members,
   * --lan-max-rooms-per-ip, --lan-frame-rate and --lan-bandwidth (bytes per second).
   */
  lan?: boolean | { maxRooms?: number; maxMembers?: number; maxRoomsPerIp?: number; frameRate?: number; bandwidth?: number };
  /** Where the JSON log events go (default: one JSON line each on stderr). */
  log?: (event: string, fields: Record<string, unknown>) => void;
}

export interface Relay {
  /** Takes over an HTTP upgrade request for the Wisp path, or with `lan` a room's (answers others with 404). */
  handleUpgrade(req: http.IncomingMessage, socket: Duplex, head: Buffer): void;
  /** The Prometheus text /metrics serves on the CLI relay. */
  metrics(): string;
  /** WebSocket clients connected now (room members included). */
  readonly clients: number;
  /** Closes every stream (0x02) and WebSocket (1001); resolves once they are gone, or after `graceMs` (default 3000). */
  close(graceMs?: number): Promise<void>;
}

/** The error createRelay throws for an option it cannot take; `code` is stable. */
export class RelayOptionError extends Error {
  readonly code = 'ERR_WEFT_RELAY_OPTION';
  constructor(message: string) {
    super(message);
    this.name = 'RelayOptionError';
  }
}

function toArgv(o: RelayOptions): string[] {
  const argv: string[] = [];
  const flag = (name: string, value: string | number | boolean | undefined) => {
    if (value === undefined || value === false) return;
    argv.push(`--${name}`);
    if (value !== true) argv.push(String(value));
  };
  flag('path', o.path);
  for (const a of o.allow ?? []) flag('allow', a);
  for (const d of o.deny ?? []) flag('deny', d);
  flag('allow-private', o.allowPrivate);
  flag('allow-loopback', o.allowLoopback);
  if (o.ports !== undefined)
    flag('ports', typeof o.ports === 'string' ? o.ports : o.ports.map((p) => (Array.isArray(p) ? `${p[0]}-${p[1]}` : String(p))).join(','));
  if (o.password) flag('password', `${o.password.username}:${o.password.password}`);
  flag('token', o.token);
  const origins = [...(typeof o.origin === 'string' ? [o.origin] : (o.origin ?? [])), ...(o.origins ?? [])];
  if (o.origin !== undefined || o.origins !== undefined) flag('origin', origins.join(','));
  flag('max-clients', o.maxClients);
  flag('max-clients-per-ip', o.maxClientsPerIp);
  flag('max-streams-per-client', o.maxStreamsPerClient);
  const ms = (v: number | undefined) => (v === undefined ? undefined : `${v}ms`);
  flag('connect-timeout', ms(o.connectTimeoutMs));
  flag('idle-timeout', ms(o.idleTimeoutMs));
  flag('first-stream-timeout', ms(o.firstStreamTimeoutMs));
  flag('rate', o.rate);
  flag('bandwidth', o.bandwidth);
  for (const s of o.dnsServers ?? []) flag('dns-server', s);
  for (const t of typeof o.trustProxy === 'string' ? [o.trustProxy] : (o.trustProxy ?? [])) flag('trust-proxy', t);
  if (o.lan) {
    flag('lan', true);
    const lan = o.lan === true ? {} : o.lan;
    flag('lan-max-rooms', lan.maxRooms);
    flag('lan-max-members', lan.maxMembers);
    flag('lan-max-rooms-per-ip', lan.maxRoomsPerIp);
    flag('lan-frame-rate', lan.frameRate);
    flag('lan-bandwidth', lan.bandwidth);
  }
  return argv;
}

/**
 * A Wisp relay to mount on your own HTTP server:
 *
 *     const relay = createRelay({ allowLoopback: true });
 *     server.on('upgrade', (req, socket, head) => relay.handleUpgrade(req, socket, head));
 */
export function createRelay(options: RelayOptions = {}): Relay {
  if (options.password?.username.includes(':')) throw new RelayOptionError('password: the user name cannot contain ":"');
  let parsed: ReturnType<typeof parseRelayOptions>;
  try {
    parsed = parseRelayOptions(toArgv(options));
  } catch (e) {
    throw e instanceof UsageError
      ? new RelayOptionError(e.message.replace(/--([a-z-]+)/g, (_, f: string) => f.replace(/-([a-z])/g, (__, c: string) => c.toUpperCase())))
      : e;
  }
  const log = options.log ?? jsonLineLog();
  const server = new RelayServer(parsed, { log: (event, fields = {}) => log(event, fields) });
  server.metrics.watchEventLoop();
  return {
    handleUpgrade: (req, socket, head) => server.handleUpgrade(req, socket, head),
    metrics: () => server.metrics.render(),
    get clients() {
      return server.clientCount;
    },
    close: (graceMs = 3000) => server.drain(graceMs),
  };
}
