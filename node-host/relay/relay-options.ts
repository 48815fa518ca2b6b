// The command line of `weft relay`: its flags, their help text, and parsing into a checked value.

import { parseArgs } from 'node:util';
import { UsageError } from '../cli-errors';
import { badValue, parseArgsError, parseDuration, parseInteger } from '../cli-values';
import { parsePolicyEntry, type PolicyConfig, type PolicyEntry } from './destination-policy';
import { availableParallelism } from 'node:os';
import { TrustedProxies } from './client-address';
import { parseIp } from './ip-range';

export interface RelayOptions {
  host: string;
  port: number;
  path: string;
  demo: boolean;
  policy: PolicyConfig;
  password: { username: string; password: string } | undefined;
  token: string | undefined;
  /** Allowed Origin header values; undefined allows any (and requests without one). */
  origins: string[] | undefined;
  maxClients: number;
  /** WebSocket clients at once from one IP address. */
  maxClientsPerIp: number;
  maxStreamsPerClient: number;
  connectTimeoutMs: number;
  /** 0: streams never time out for being idle. */
  idleTimeoutMs: number;
  /** A WebSocket that has opened no stream this long after it was accepted is closed; 0: never. */
  firstStreamTimeoutMs: number;
  /** New streams per second per client IP; 0: unlimited. */
  rate: number;
  /** Bytes per second per client (each direction); 0: unlimited. */
  bandwidth: number;
  dnsServers: string[];
  /** Reverse proxies whose X-Forwarded-For names the client (--trust-proxy); none by default. */
  trustProxy: TrustedProxies;
  /** Relay processes sharing the listener (--workers); 1 runs everything in this process. */
  workers: number;
  /** Ports clients may have the relay listen on for them (weft's publish extension); undefined: off. */
  publishPorts: [number, number] | undefined;
  /** Published ports one client may hold at once. */
  maxPublishedPerClient: number;
  /** LAN rooms (--lan): Ethernet between clients that join one room; undefined: off. */
  lan: LanOptions | undefined;
}

/** The bounds of --lan (see the help text). */
export interface LanOptions {
  /** Rooms at once on this relay (over all --workers). */
  maxRooms: number;
  /** Members at once in one room. */
  maxMembers: number;
  /** Rooms one client IP is a member of at once. */
  maxRoomsPerIp: number;
  /** Frames per second one member may send; 0: no limit. */
  frameRate: number;
  /** Bytes per second one member may send; 0: no limit. */
  bandwidth: number;
}

export const RELAY_HELP = `Usage: weft relay [--listen HOST:PORT] [--path /wisp/] [--demo] [policy flags]

A Wisp server (v1 and v2) that lets guests in web pages open TCP and UDP connections through this
host. It resolves hostnames itself and checks every resolved address against its policy before it
connects, so a name that resolves to a private address is refused like the address itself.

Listening:
  --listen HOST:PORT      Address to listen on (default 127.0.0.1:8080; PORT 0 picks a free port)
  --path /wisp/           URL path of the Wisp endpoint (default /wisp/); also served: /healthz, /metrics
  --workers N|auto        Relay processes sharing the listener (default 1; auto: one per core). Each
                          client IP is served by one worker, so per-IP limits hold as with one
                          process; /metrics labels each worker's series with worker="K"
  --trust-proxy CIDR      The reverse proxies in front of the relay (repeatable or comma-separated):
                          from these peers only, the rightmost untrusted X-Forwarded-For address
                          is the client, for per-IP limits and logs
  --demo                  Serve the demo page at / (dist/demo, built by npm start); without --origin,
                          WebSockets are taken only from that page

Destinations (safe by default: loopback, private 10/8 172.16/12 192.168/16, CGNAT 100.64/10,
link-local 169.254/16 (169.254.169.254 included), multicast, broadcast, 0.0.0.0/8, reserved ranges
and the IPv6 equivalents ::1 fc00::/7 fe80::/10 ff00::/8 ::, also as ::ffff:-mapped addresses, are refused):
  --allow CIDR|HOST       Allow a range or a hostname (".example.com" includes subdomains). Repeatable,
                          or comma-separated. An allowed hostname may resolve anywhere.
  --deny CIDR|HOST        Refuse a range or a hostname; wins over every allow. Repeatable.
  --allow-private         Allow the private and CGNAT ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7)
  --allow-loopback        Allow this host's loopback (127/8, ::1)
  --ports LIST            Allowed destination ports, e.g. 80,443,8000-8999 (default: all)
  --dns-server IP[:PORT]  Resolve with these DNS servers instead of the system resolver. Repeatable.
                          Clients reach the first one (default: the first nameserver in /etc/resolv.conf)
                          as resolver.weft.internal:53 — DNS only, on port 53, whatever the policy says.

Publishing (weft's extension: a guest's server reachable at a port of this host; off by default):
  --publish-ports LO-HI   Let authenticated clients have the relay listen on a port in LO-HI for
                          them (e.g. weft vm --publish 80): each connection there becomes a stream
                          to the client's guest. Needs --token or --password. Listens on --listen's
                          host, so 0.0.0.0 for the outside world
  --max-published-per-client N   Published ports one client may hold at once (default 4)

LAN rooms (weft's extension: Ethernet between clients of one room, off by default):
  --lan                   Let authenticated clients join rooms at <path>lan/<room> (a key in their
                          first message): the relay switches frames between a room's members and
                          hosts its router (DHCP, DNS with guest names, NAT to the internet under
                          this relay's policy and limits). Needs --token or --password
  --lan-max-rooms N       Rooms at once (default 100)
  --lan-max-members N     Members at once in one room (default 16; at most 50)
  --lan-max-rooms-per-ip N   Rooms one client IP is in at once (default 4)
  --lan-frame-rate N      Frames per second one member may send (default 10000; 0: unlimited)
  --lan-bandwidth BYTES   Bytes per second one member may send (default 8M; 0: unlimited)

Clients:
  --password USER:PASS    Require Wisp v2 password authentication (v1 clients then need --token)
  --token TOKEN           Require TOKEN from clients: "?token=TOKEN" on the URL, or an
                          "Authorization: Bearer TOKEN" header. With --password, either one suffices.
  --origin LIST           Accept WebSocket upgrades only from these origins (comma-separated)
  --max-clients N         WebSocket clients at once (default 1000)
  --max-clients-per-ip N  WebSocket clients at once from one IP address (default 64), so one
                          address cannot take every slot
  --max-streams-per-client N   Streams open at once on one WebSocket (default 1024)
  --connect-timeout DUR   Give up connecting to a destination after DUR (default 10s; e.g. 500ms, 30s)
  --idle-timeout DUR      Close streams without traffic for DUR (default: never)
  --first-stream-timeout DUR   Close a WebSocket that opens no stream within DUR of connecting
                          (default 2m, longer than a VM takes to boot; 0: never). weft's own
                          client reconnects when it next needs the relay.
  --rate N                New streams per second per client IP (default 200; 0: unlimited)
  --bandwidth BYTES       Bytes per second per client and direction, e.g. 1M or 500K (default: unlimited)
  -h, --help              Show this help

Wisp v2 extensions offered: UDP, password (with --password), stream-open confirmation, and
weft's half-close (END packets, used only with clients that offer it, such as weft vm --upstream wisp).

Refusals carry Wisp close reasons: 0x48 blocked by policy, 0x49 throttled, 0x42 unreachable (also
DNS failures), 0x43 connect timeout, 0x44 refused, 0x41 invalid request.

Logs go to stderr, one JSON object per line with "time" (ISO 8601), "level" and "event": "ready"
with the URLs, one "stream-close" per stream (client, destination, bytes each way, duration,
reason), "client-close" per WebSocket.
SIGTERM or SIGINT drains: no new clients, every stream closed with 0x02, exit within 5 seconds.
`;

const FLAGS = {
  listen: { type: 'string' },
  path: { type: 'string' },
  demo: { type: 'boolean' },
  allow: { type: 'string', multiple: true },
  deny: { type: 'string', multiple: true },
  'allow-private': { type: 'boolean' },
  'allow-loopback': { type: 'boolean' },
  ports: { type: 'string' },
  password: { type: 'string' },
  token: { type: 'string' },
  origin: { type: 'string', multiple: true },
  'max-clients': { type: 'string' },
  'max-clients-per-ip': { type: 'string' },
  'max-streams-per-client': { type: 'string' },
  'connect-timeout': { type: 'string' },
  'idle-timeout': { type: 'string' },
  'first-stream-timeout': { type: 'string' },
  rate: { type: 'string' },
  bandwidth: { type: 'string' },
  'dns-server': { type: 'string', multiple: true },
  workers: { type: 'string' },
  'publish-ports': { type: 'string' },
  'max-published-per-client': { type: 'string' },
  lan: { type: 'boolean' },
  'lan-max-rooms': { type: 'string' },
  'lan-max-members': { type: 'string' },
  'lan-max-rooms-per-ip': { type: 'string' },
  'lan-frame-rate': { type: 'string' },
  'lan-bandwidth': { type: 'string' },
  'trust-proxy': { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

function integer(flag: string, text: string | undefined, fallback: number, min: number, max: number): number {
  return text === undefined ? fallback : parseInteger(flag, text, min, max);
}

function duration(flag: string, text: string | undefined, fallbackMs: number): number {
  return text === undefined ? fallbackMs : parseDuration(flag, text);
}

function positive(flag: string, text: string | undefined, ms: number): number {
  if (ms <= 0) badValue(flag, text ?? '', 'a duration above zero');
  return ms;
}

/** "1M", "500K", "1000" (bytes); K/M/G are powers of 1024. */
function byteRate(flag: string, text: string | undefined, fallback = 0): number {
  if (text === undefined) return fallback;
  const m = /^(\d+(?:\.\d+)?)([KMG])?i?B?$/i.exec(text);
  if (!m) badValue(flag, text, 'bytes per second such as 500K or 10M');
  const scale = { K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[(m[2] ?? '').toUpperCase()] ?? 1;
  return Math.round(Number(m[1]) * scale);
}

function list(values: string[] | undefined): string[] {
  return (values ?? [])
    .flatMap((v) => v.split(','))
    .map((v) => v.trim())
    .filter((v) => v !== '');
}

function entries(flag: string, values: string[] | undefined): PolicyEntry[] {
  return list(values).map((v) => parsePolicyEntry(v) ?? badValue(flag, v, 'an address range (CIDR) or a hostname'));
}

function ports(text: string | undefined): Array<[number, number]> {
  if (text === undefined) return [];
  return list([text]).map((part) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    const lo = m ? Number(m[1]) : NaN;
    const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
    if (!m || lo < 1 || hi > 65535 || lo > hi) badValue('--ports', text, 'ports or ranges in 1…65535, e.g. 80,443,8000-8999');
    return [lo, hi];
  });
}

function listen(text: string | undefined): { host: string; port: number } {
  if (text === undefined) return { host: '127.0.0.1', port: 8080 };
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text);
  const host = m ? (m[1] ?? m[2]) : '';
  if (!m || host === '' || Number(m[3]) > 65535) badValue('--listen', text, 'HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080');
  return { host, port: Number(m[3]) };
}

export function parseRelayOptions(argv: readonly string[]): RelayOptions {
  const values = (() => {
    try {
      return parseArgs({ args: [...argv], options: FLAGS, strict: true, allowPositionals: false }).values;
    } catch (e) {
      throw parseArgsError(e);
    }
  })();
  const path = values.path ?? '/wisp/';
  if (!path.startsWith('/') || !path.endsWith('/')) badValue('--path', path, 'a path that starts and ends with "/", e.g. /wisp/');
  let password: RelayOptions['password'];
  if (values.password !== undefined) {
    const i = values.password.indexOf(':');
    if (i <= 0 || i === values.password.length - 1) badValue('--password', values.password, 'USER:PASS');
    password = { username: values.password.slice(0, i), password: values.password.slice(i + 1) };
    if (Buffer.byteLength(password.username) > 255) badValue('--password', values.password, 'a user name of at most 255 bytes');
  }
  if (values.token === '') badValue('--token', '', 'a non-empty token');
  const dnsServers = list(values['dns-server']);
  for (const s of dnsServers) {
    const m = /^(?:\[([^\]]+)\]|([^:]+))(?::\d+)?$/.exec(s);
    if (!(parseIp(s) ?? (m && parseIp(m[1] ?? m[2])))) badValue('--dns-server', s, 'an IP address, optionally with :PORT');
  }
  const origins = values.origin === undefined ? undefined : list(values.origin);
  return {
    ...listen(values.listen),
    path,
    demo: values.demo ?? false,
    policy: {
      allow: entries('--allow', values.allow),
      deny: entries('--deny', values.deny),
      allowPrivate: values['allow-private'] ?? false,
      allowLoopback: values['allow-loopback'] ?? false,
      ports: ports(values.ports),
    },
    password,
    token: values.token,
    origins,
    maxClients: integer('--max-clients', values['max-clients'], 1000, 1, 1_000_000),
    maxClientsPerIp: integer('--max-clients-per-ip', values['max-clients-per-ip'], 64, 1, 1_000_000),
    maxStreamsPerClient: integer('--max-streams-per-client', values['max-streams-per-client'], 1024, 1, 1_000_000),
    connectTimeoutMs: positive('--connect-timeout', values['connect-timeout'], duration('--connect-timeout', values['connect-timeout'], 10_000)),
    idleTimeoutMs: duration('--idle-timeout', values['idle-timeout'], 0),
    firstStreamTimeoutMs: duration('--first-stream-timeout', values['first-stream-timeout'], 120_000),
    rate: integer('--rate', values.rate, 200, 0, 1_000_000),
    bandwidth: byteRate('--bandwidth', values.bandwidth),
    dnsServers,
    trustProxy: trustProxy(values['trust-proxy']),
    workers: workers(values.workers),
    publishPorts: publishPorts(values['publish-ports'], values.token !== undefined || password !== undefined),
    maxPublishedPerClient: integer('--max-published-per-client', values['max-published-per-client'], 4, 1, 1000),
    lan: lanOptions(values, values.token !== undefined || password !== undefined),
  };
}

function lanOptions(values: Record<string, string | boolean | string[] | undefined>, authenticated: boolean): LanOptions | undefined {
  const text = (flag: string) => values[flag] as string | undefined;
  if (!values.lan) {
    const stray = ['lan-max-rooms', 'lan-max-members', 'lan-max-rooms-per-ip', 'lan-frame-rate', 'lan-bandwidth'].find((f) => values[f] !== undefined);
    if (stray) throw new UsageError(`--${stray} needs --lan`);
    return undefined;
  }
  // A room's members share a LAN and its router reaches out from this host: only clients you know.
  if (!authenticated)
    throw new UsageError('--lan needs --token or --password: room members reach each other and the network from this host, so only clients you know may');
  return {
    maxRooms: integer('--lan-max-rooms', text('lan-max-rooms'), 100, 1, 100_000),
    maxMembers: integer('--lan-max-members', text('lan-max-members'), 16, 2, 50),
    maxRoomsPerIp: integer('--lan-max-rooms-per-ip', text('lan-max-rooms-per-ip'), 4, 1, 100_000),
    frameRate: integer('--lan-frame-rate', text('lan-frame-rate'), 10_000, 0, 10_000_000),
    bandwidth: byteRate('--lan-bandwidth', text('lan-bandwidth'), 8 * 1024 * 1024),
  };
}

function publishPorts(text: string | undefined, authenticated: boolean): [number, number] | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(text) ?? /^(\d+)$/.exec(text);
  const lo = m ? Number(m[1]) : NaN;
  const hi = m?.[2] !== undefined ? Number(m[2]) : lo;
  if (!m || lo < 1 || hi > 65535 || lo > hi) badValue('--publish-ports', text, 'a port range such as 20000-20099');
  // Anyone could otherwise open ports on this host and point them at a VM of their choosing.
  if (!authenticated)
    throw new UsageError('--publish-ports needs --token or --password: it lets clients open ports on this host, so only clients you know may');
  return [lo, hi];
}

function trustProxy(values: string[] | undefined): TrustedProxies {
  const parsed = TrustedProxies.parse(list(values));
  if ('invalid' in parsed) badValue('--trust-proxy', parsed.invalid, 'an address range (CIDR) or an address, e.g. 127.0.0.1 or 10.0.0.0/8');
  return parsed;
}

/** Upper bound: each worker is a Node process of ~50 MB before its first client. */
const MAX_WORKERS = 64;

function workers(text: string | undefined): number {
  if (text === 'auto') return Math.min(MAX_WORKERS, availableParallelism());
  if (text !== undefined && !/^\d+$/.test(text)) badValue('--workers', text, `a number of processes in 1…${MAX_WORKERS}, or auto`);
  return integer('--workers', text, 1, 1, MAX_WORKERS);
}
