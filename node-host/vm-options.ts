// The command line of `weft vm`: its flags, their help text, and parsing into a checked value.

import { parseArgs } from 'node:util';
import { DEFAULT_NETWORK, guestAddressProblem } from '../core/config';
import { formatIpv4, parseIpv4, type Ipv4Address } from '../core/wire/address';
import { UsageError } from './cli-errors';
import { badValue, parseArgsError, parseInteger } from './cli-values';
import { parseDnsRecordFlag, parseDnsServerFlag, type DnsRecordFlag } from './dns-config';
import type { StreamEndpoint } from './links/qemu-stream-link';

export type LinkChoice =
  | { kind: 'qemu'; endpoint: StreamEndpoint }
  /** Several remote ports: several QEMUs sending to one local port, each a guest on the LAN. */
  | { kind: 'dgram'; localPort: number; remotePorts: number[] }
  | { kind: 'tap-fd'; fd: number; vnetHdr: boolean };

/** Where guest flows go: this host's sockets, or streams on one WebSocket to a Wisp server. */
export type UpstreamChoice = { kind: 'direct' } | { kind: 'wisp'; url: string };

export interface VmOptions {
  /** The guests' links: one, or several on one LAN (a learning switch with weft as its router). */
  links: LinkChoice[];
  /** --max-guests: QEMU clients one --qemu socket takes at once (undefined: the link's default). */
  maxGuests: number | undefined;
  upstream: UpstreamChoice;
  mtu: number | undefined;
  pcap: string | undefined;
  /** --pcap-snaplen: bytes kept of each frame (undefined: PcapFile's default). */
  pcapSnaplen: number | undefined;
  allowHostLoopback: boolean;
  logFlows: boolean;
  forwards: PortForward[];
  /** --publish: guest ports the relay listens for (relayPort 0: any port it allows). */
  publishes: Array<{ relayPort: number; guestPort: number }>;
  /** --dns-server values (raw; parsed with the resolver list), --dns-record pairs, --dns-search names. */
  dnsServers: string[];
  dnsRecords: DnsRecordFlag[];
  dnsSearch: string[] | undefined;
}

export interface PortForward {
  protocol: 'tcp' | 'udp';
  /** Host address to listen on (default 127.0.0.1). */
  host: string;
  hostPort: number;
  guestPort: number;
  /** The guest to reach (undefined: the one that leased last). */
  guestIp?: Ipv4Address;
}

export const VM_HELP = `Usage: weft vm <link> [options]

Runs the weft network stack in Node for a virtual machine, or several on one LAN: each guest gets
DHCP (10.0.2.15 first), a gateway at 10.0.2.2 and a DNS server at 10.0.2.3 that answer ARP and ping;
guests on one LAN reach each other and find each other by DHCP hostname (<hostname>.weft.internal).

Links (one; or several, repeated or mixed, for one LAN: the guests reach each other through a
learning switch with weft as their router, DHCP and DNS):
  --qemu unix:PATH        Listen on a unix socket for QEMU's "-netdev stream,server=off,addr.type=unix,
                          addr.path=PATH". Frames are length-prefixed (4 bytes, big-endian). Several QEMUs
                          may connect at once, on one LAN (up to --max-guests); a QEMU that exits leaves it,
                          and one that starts (a reboot) joins. A stale socket file at PATH is replaced.
  --qemu tcp:HOST:PORT    The same over TCP ("-netdev stream,server=off,addr.type=inet,addr.host=HOST,
                          addr.port=PORT"). PORT 0 picks a free port (shown in the ready line).
  --max-guests N          QEMU clients one --qemu socket takes at once, 1…1024 (default 64); more are
                          refused and logged (client-refused). 1: one VM at a time, as a private link.
  --dgram LPORT:RPORT     One frame per UDP datagram: bind 127.0.0.1:LPORT, send to 127.0.0.1:RPORT
                          (QEMU: "-netdev dgram,local.type=inet,local.host=127.0.0.1,local.port=RPORT,
                          remote.type=inet,remote.host=127.0.0.1,remote.port=LPORT"). Only RPORT is heard.
                          (--mtu at most 65493 then: a frame must fit one UDP datagram.)
  --dgram LPORT:RPORT1,RPORT2,…
                          Several QEMUs on one LAN through one port of weft's, each with its own RPORT
                          (local.port) and remote.port=LPORT; datagrams from any other port are dropped.
                          (Or repeat --dgram LPORT:RPORT with a port of weft's per QEMU.)
  --tap-fd N              Use the Linux TAP device open on inherited file descriptor N (as QEMU's
                          "-netdev tap,fd=N"; a launcher opens /dev/net/tun with IFF_TAP|IFF_NO_PI).
  --tap-vnet-hdr          The TAP fd was opened with IFF_VNET_HDR and offloads TUN_F_CSUM|TUN_F_TSO4
                          (as QEMU's "vnet_hdr=on"): frames carry a virtio_net_hdr and TCP moves in
                          segments of up to 64 KiB, several times faster than plain frames.
                          (--mtu at most 65500 then; a single link only.)

Options:
  --upstream direct       Where guest connections go: "direct" (this host's sockets; the default), or
  --upstream wisp://HOST:PORT/PATH/   streams on one WebSocket to a Wisp server such as "weft relay"
                          (ws:// and wss:// work too; the path ends with "/"). With --allow-host-loopback,
                          flows to 10.0.2.2 go to 127.0.0.1 on the relay host (weft relay --allow-loopback).
                          A relay's --token goes in the query (wss://HOST/wisp/?token=T), its --password
                          as user info (wss://USER:PASS@HOST/wisp/; Wisp v2 password authentication).
  --mtu N                 Link MTU handed out by DHCP, 576…65520 (default 1500).
  --pcap FILE             Write every frame in and out to FILE (classic pcap, Ethernet).
  --pcap-snaplen N        Keep only the first N bytes of each frame in the pcap, 64…262144 (as tcpdump -s;
                          default 262144: whole 64 KiB offloaded segments). 128 keeps every header of a
                          TCP/IPv4 frame: small captures of long transfers.
  --allow-host-loopback   Let the gateway address 10.0.2.2 reach this host's loopback services (127.0.0.1).
                          Off by default: without it, guest connections to 10.0.2.2 are refused.
  --log-flows             Log one JSON line per closed TCP connection / UDP flow (bytes, duration, reason).
  --dns-server IP[:PORT]  Where the guest's DNS server (10.0.2.3) forwards queries (repeatable). Default:
                          the relay's resolver with a wisp:// upstream, else the nameservers in /etc/resolv.conf.
  --dns-record NAME=IP    Answer NAME with IP locally (repeatable). gateway.weft.internal and
                          host.weft.internal always answer with the gateway address.
  --dns-search LIST       Comma-separated search domains handed out by DHCP (default: weft.internal).
  --forward HOSTPORT:GUESTPORT
                          Forward TCP: connections to 127.0.0.1:HOSTPORT on this host reach GUESTPORT on the
                          guest (its leased address), arriving from 10.0.2.2. Repeatable. [ADDR:]HOSTPORT:GUESTPORT
                          listens on ADDR instead (e.g. 0.0.0.0 — mind who can then reach the guest).
                          HOSTPORT:GUESTIP:GUESTPORT picks the guest on a LAN (default: the one that leased last).
                          udp:[ADDR:]HOSTPORT:GUESTPORT forwards UDP: each host peer gets a port of 10.0.2.2
                          of its own, and the guest's answers to it go back to that peer (idle 60 s: forgotten).
  --publish [RELAYPORT:]GUESTPORT
                          With --upstream wisp://…: ask the relay to listen for GUESTPORT (on RELAYPORT,
                          or any port it allows) — anyone who can reach the relay's port then reaches
                          the guest's server. Needs weft relay --publish-ports and a --token or
                          --password. Logs {"event":"published","guestPort":G,"relayPort":P}. Repeatable.
  -h, --help              Show this help.

Logs go to stderr, one JSON object per line, each with its time (ISO 8601) and level:
{"time":"…","level":"info","event":"ready",…}, {"event":"lease",…}, …
SIGINT or SIGTERM stops weft: the link is closed, the pcap is flushed, final counters are logged,
and weft exits with code 0.

Exit codes: 0 stopped by a signal, 1 the link failed, 2 bad command line or not implemented.
`;

const FLAGS = {
  qemu: { type: 'string', multiple: true },
  dgram: { type: 'string', multiple: true },
  'tap-fd': { type: 'string', multiple: true },
  'tap-vnet-hdr': { type: 'boolean' },
  'max-guests': { type: 'string' },
  upstream: { type: 'string' },
  mtu: { type: 'string' },
  pcap: { type: 'string' },
  'pcap-snaplen': { type: 'string' },
  'log-flows': { type: 'boolean' },
  'dns-server': { type: 'string', multiple: true },
  'dns-record': { type: 'string', multiple: true },
  'dns-search': { type: 'string' },
  'allow-host-loopback': { type: 'boolean' },
  forward: { type: 'string', multiple: true },
  publish: { type: 'string', multiple: true },
  help: { type: 'boolean', short: 'h' },
} as const;

export function parseVmOptions(argv: readonly string[]): VmOptions {
  const values = (() => {
    try {
      return parseArgs({ args: [...argv], options: FLAGS, strict: true, allowPositionals: false }).values;
    } catch (e) {
      throw parseArgsError(e);
    }
  })();
  return {
    forwards: (values.forward ?? []).map(parseForward),
    publishes: parsePublishes(values.publish ?? [], values.upstream),
    dnsServers: (values['dns-server'] ?? []).map((v) => {
      parseDnsServerFlag(v); // throws a usage error for a bad one
      return v;
    }),
    dnsRecords: (values['dns-record'] ?? []).map(parseDnsRecordFlag),
    dnsSearch: values['dns-search'] === undefined ? undefined : parseDnsSearch(values['dns-search']),
    links: parseLinks(values),
    maxGuests: parseMaxGuests(values['max-guests'], (values.qemu ?? []).length > 0),
    upstream: parseUpstream(values.upstream),
    mtu: values.mtu === undefined ? undefined : parseMtu(values.mtu, values['tap-vnet-hdr'] === true, (values.dgram ?? []).length > 0),
    pcap: values.pcap === '' ? badValue('--pcap', '', 'a file name') : values.pcap,
    pcapSnaplen: parsePcapSnaplen(values['pcap-snaplen'], values.pcap !== undefined),
    allowHostLoopback: values['allow-host-loopback'] ?? false,
    logFlows: values['log-flows'] ?? false,
  };
}

function parseLinks(values: { qemu?: string[]; dgram?: string[]; 'tap-fd'?: string[]; 'tap-vnet-hdr'?: boolean }): LinkChoice[] {
  const given = (['qemu', 'dgram', 'tap-fd'] as const).flatMap((k) => (values[k] ?? []).map((v) => [k, v] as const));
  if (given.length === 0) throw new UsageError('a link is required: --qemu unix:PATH|tcp:HOST:PORT, --dgram LPORT:RPORT or --tap-fd N');
  const vnetHdr = values['tap-vnet-hdr'] ?? false;
  if (vnetHdr && (given.length !== 1 || given[0][0] !== 'tap-fd')) {
    // Segmentation offload would have to be agreed with every port of the LAN at once.
    throw new UsageError(given.length !== 1 ? '--tap-vnet-hdr works with a single link (not on a LAN of several)' : '--tap-vnet-hdr goes with --tap-fd N');
  }
  return given.map(([flag, value]): LinkChoice => {
    if (flag === 'tap-fd') return { kind: 'tap-fd', fd: parseInteger('--tap-fd', value, 0, 2 ** 31 - 1), vnetHdr };
    if (flag === 'dgram') {
      const m = /^(\d+):(\d+(?:,\d+)*)$/.exec(value);
      if (!m) badValue('--dgram', value, 'LPORT:RPORT or LPORT:RPORT1,RPORT2,…, e.g. 5555:5556');
      const remotePorts = m[2].split(',').map((p) => parsePort('--dgram', p));
      if (new Set(remotePorts).size !== remotePorts.length) badValue('--dgram', value, 'distinct remote ports');
      if (remotePorts.length > MAX_DGRAM_PEERS) badValue('--dgram', value, `at most ${MAX_DGRAM_PEERS} remote ports`);
      return { kind: 'dgram', localPort: parsePort('--dgram', m[1]), remotePorts };
    }
    return { kind: 'qemu', endpoint: parseStreamEndpoint(value) };
  });
}

/** Guests one --qemu socket takes at once: the bound of the flag's range. */
const MAX_GUESTS_LIMIT = 1024;
/** Remote ports one --dgram takes: as many guests as --max-guests allows at most. */
const MAX_DGRAM_PEERS = MAX_GUESTS_LIMIT;

function parseMaxGuests(value: string | undefined, qemu: boolean): number | undefined {
  if (value === undefined) return undefined;
  if (!qemu) throw new UsageError('--max-guests goes with --qemu (with --dgram and --tap-fd, the guests are the ones listed)');
  return parseInteger('--max-guests', value, 1, MAX_GUESTS_LIMIT);
}

/**
 * With a vnet header, a frame read from the TAP is 10 + 14 + MTU bytes, and libuv reads at most
 * 64 KiB at a time (a read that fills it may have been cut short), so the MTU stops below 65,512
 * there; 65,500 keeps a round margin.
 */
export const VNET_HDR_MAX_MTU = 65500;

/**
 * With --dgram each frame is one UDP datagram, and a UDP datagram carries at most 65,507 bytes
 * (65,535 less the IPv4 and UDP headers): the frame's 14-byte Ethernet header leaves 65,493.
 */
export const DGRAM_MAX_MTU = 65507 - 14;

function parseMtu(value: string, vnetHdr: boolean, dgram: boolean): number {
  const mtu = parseInteger('--mtu', value, 576, 65520);
  if (vnetHdr && mtu > VNET_HDR_MAX_MTU) {
    throw new UsageError(`--mtu ${mtu} is too large with --tap-vnet-hdr (at most ${VNET_HDR_MAX_MTU}; TCP already moves in 64 KiB segments there)`);
  }
  if (dgram && mtu > DGRAM_MAX_MTU) {
    throw new UsageError(
      `--mtu ${mtu} is too large with --dgram (at most ${DGRAM_MAX_MTU}: a frame travels as one UDP datagram, which carries at most 65507 bytes, Ethernet header included)`,
    );
  }
  return mtu;
}

/** 64 keeps Ethernet + IPv4 + a bare TCP header; 262144 is tcpdump's (and PcapWriter's) maximum. */
const PCAP_SNAPLEN_MIN = 64;
const PCAP_SNAPLEN_MAX = 262144;

function parsePcapSnaplen(value: string | undefined, pcap: boolean): number | undefined {
  if (value === undefined) return undefined;
  if (!pcap) throw new UsageError('--pcap-snaplen goes with --pcap FILE');
  return parseInteger('--pcap-snaplen', value, PCAP_SNAPLEN_MIN, PCAP_SNAPLEN_MAX);
}

function parseDnsSearch(value: string): string[] {
  const names = value
    .split(',')
    .map((n) => n.trim().replace(/\.$/, ''))
    .filter((n) => n.length > 0);
  for (const n of names) {
    if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/i.test(n))
      badValue('--dns-search', value, 'comma-separated domain names');
  }
  return names;
}

export function parseForward(value: string): PortForward {
  const udp = value.startsWith('udp:');
  const rest = value.replace(/^(tcp|udp):/, '');
  // ADDR:HOSTPORT:GUESTPORT and HOSTPORT:GUESTIP:GUESTPORT both have three parts: the middle one is
  // a port in the first, a dotted address in the second.
  const m = /^(?:(\[[^\]]+\]|[^:]+):)?(\d+):(?:(\d+\.\d+\.\d+\.\d+):)?(\d+)$/.exec(rest);
  if (!m) {
    return badValue('--forward', value, '[udp:][ADDR:]HOSTPORT:[GUESTIP:]GUESTPORT, e.g. 8080:80, 0.0.0.0:8080:80, 8080:10.0.2.16:80 or udp:5353:53');
  }
  const forward: PortForward = {
    protocol: udp ? 'udp' : 'tcp',
    host: m[1] ? m[1].replace(/^\[|\]$/g, '') : '127.0.0.1',
    hostPort: parsePort('--forward', m[2]),
    guestPort: parsePort('--forward', m[4]),
  };
  if (m[3] !== undefined) forward.guestIp = parseGuestIp(value, m[3]);
  return forward;
}

/** A guest's address on weft's network: not the network's own, its broadcast, or weft's (gateway, DNS). */
function parseGuestIp(value: string, text: string): Ipv4Address {
  let ip: Ipv4Address;
  try {
    ip = parseIpv4(text);
  } catch {
    return badValue('--forward', value, `a guest address such as 10.0.2.15, not ${text}`);
  }
  const n = DEFAULT_NETWORK;
  const where = `${formatIpv4(n.network)}/${n.prefixLength}`;
  const problem = guestAddressProblem(n, ip);
  if (problem === 'outside-network') return badValue('--forward', value, `a guest address in ${where}`);
  if (problem) {
    return badValue(
      '--forward',
      value,
      `a guest's address in ${where}, not the network's, its broadcast or weft's own (${formatIpv4(n.gateway)}, ${formatIpv4(n.dns)})`,
    );
  }
  return ip;
}

export function parseStreamEndpoint(value: string): StreamEndpoint {
  if (value.startsWith('unix:')) {
    const path = value.slice('unix:'.length);
    if (!path) badValue('--qemu', value, 'unix:PATH with a non-empty PATH');
    return { kind: 'unix', path };
  }
  const m = /^tcp:(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(value);
  if (m) return { kind: 'tcp', host: m[1] ?? m[2], port: parsePort('--qemu', m[3], 0) };
  return badValue('--qemu', value, 'unix:PATH or tcp:HOST:PORT');
}

function parseUpstream(value: string | undefined): UpstreamChoice {
  if (value === undefined || value === 'direct') return { kind: 'direct' };
  if (/^(wisps?|wss?):\/\/[^/\s]+\/(\S*\/)?(\?\S*)?$/.test(value)) return { kind: 'wisp', url: value };
  return badValue('--upstream', value, '"direct" or wisp://HOST:PORT/PATH/ (the path ending in "/", then an optional ?token=…)');
}

function parsePublishes(values: string[], upstream: string | undefined): Array<{ relayPort: number; guestPort: number }> {
  const out = values.map((v) => {
    const m = /^(?:(\d+):)?(\d+)$/.exec(v);
    if (!m) return badValue('--publish', v, 'GUESTPORT or RELAYPORT:GUESTPORT, e.g. 80 or 20080:80');
    return { relayPort: m[1] === undefined ? 0 : parsePort('--publish', m[1]), guestPort: parsePort('--publish', m[2]) };
  });
  if (out.length > 0 && !/^(wisps?|wss?):/.test(upstream ?? '')) {
    throw new UsageError('--publish needs --upstream wisp://…: the relay is what listens (for this host, use --forward)');
  }
  return out;
}

function parsePort(flag: string, text: string, min = 1): number {
  return parseInteger(flag, text, min, 65535, 'port');
}
