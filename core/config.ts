import { ipv4Diff, ipv4Network, ipv4SubnetBroadcast, parseIpv4, parseMac, prefixMask, type Ipv4Address, type MacAddress } from './wire/address';

/** The virtual network weft presents to its guests (slirp's defaults, which users already know). */
export interface NetworkConfig {
  /** Network address, e.g. 10.0.2.0. */
  network: Ipv4Address;
  prefixLength: number;
  /** The router address the guest uses; weft answers ARP and ping for it. */
  gateway: Ipv4Address;
  /** The DNS server address handed out by DHCP; weft answers ARP and ping for it too. */
  dns: Ipv4Address;
  /** First address leased by DHCP; later guests get the following ones. */
  firstLease: Ipv4Address;
  /** Number of addresses in the lease pool. */
  leaseCount: number;
  /** The MAC address weft uses for every address it owns. */
  gatewayMac: MacAddress;
  /** Link MTU (IP packet size), 576…65520. */
  mtu: number;
  leaseTimeSeconds: number;
  domainName: string;
  searchDomains: string[];
}

export const DEFAULT_NETWORK: NetworkConfig = {
  network: parseIpv4('10.0.2.0'),
  prefixLength: 24,
  gateway: parseIpv4('10.0.2.2'),
  dns: parseIpv4('10.0.2.3'),
  firstLease: parseIpv4('10.0.2.15'),
  leaseCount: 64,
  // Locally administered, unicast; "52:55" as slirp uses, so captures look familiar.
  gatewayMac: parseMac('52:55:0a:00:02:02'),
  mtu: 1500,
  leaseTimeSeconds: 86400,
  domainName: 'weft.internal',
  searchDomains: [],
};

/** Bounds on everything the stack keeps; every buffer has one. */
export interface StackLimits {
  arpCacheEntries: number;
  /** Bytes of fragments held for reassembly, across all sources. */
  reassemblyBytesTotal: number;
  /** Bytes of fragments held for reassembly from one source address. */
  reassemblyBytesPerSource: number;
  /** Datagrams being reassembled at once from one source address. */
  reassemblyDatagramsPerSource: number;
  reassemblyTimeoutMs: number;
  /** Frames waiting for an ARP answer before they can be sent. */
  arpPendingFrames: number;
}

export const DEFAULT_LIMITS: StackLimits = {
  arpCacheEntries: 256,
  reassemblyBytesTotal: 4 * 1024 * 1024,
  reassemblyBytesPerSource: 1024 * 1024,
  reassemblyDatagramsPerSource: 64,
  reassemblyTimeoutMs: 30_000,
  arpPendingFrames: 64,
};

export function resolveNetworkConfig(partial: Partial<NetworkConfig> = {}): NetworkConfig {
  const cfg: NetworkConfig = { ...DEFAULT_NETWORK, ...partial };
  const mask = prefixMask(cfg.prefixLength);
  cfg.network = ipv4Network(cfg.network, mask);
  for (const [name, ip] of [
    ['gateway', cfg.gateway],
    ['dns', cfg.dns],
    ['firstLease', cfg.firstLease],
  ] as const) {
    if (ipv4Network(ip, mask) !== cfg.network) throw new RangeError(`${name} is outside the network`);
  }
  if (!Number.isInteger(cfg.mtu) || cfg.mtu < 576 || cfg.mtu > 65520) {
    throw new RangeError(`MTU must be an integer in 576…65520, got ${cfg.mtu}`);
  }
  const lastHost = ipv4SubnetBroadcast(cfg.network, mask);
  if (cfg.leaseCount < 1 || cfg.leaseCount > ipv4Diff(lastHost, cfg.firstLease)) {
    throw new RangeError('the lease pool runs past the end of the network');
  }
  return cfg;
}

/** Why an address cannot be a guest's on a network (see guestAddressProblem). */
export type GuestAddressProblem = 'outside-network' | 'network-address' | 'broadcast' | 'weft-address';

/**
 * Why `ip` cannot be a guest's address on `cfg`'s network — outside it, the network's own address,
 * its broadcast, or one weft answers for (gateway, DNS) — or undefined when it can. The one rule the
 * stack (which sources to learn), DHCP (what to lease) and the CLI (a forward's guest) share.
 */
export function guestAddressProblem(cfg: NetworkConfig, ip: Ipv4Address): GuestAddressProblem | undefined {
  const mask = prefixMask(cfg.prefixLength);
  if (ipv4Network(ip, mask) !== cfg.network) return 'outside-network';
  if (ip === cfg.network) return 'network-address';
  if (ip === ipv4SubnetBroadcast(cfg.network, mask)) return 'broadcast';
  if (ip === cfg.gateway || ip === cfg.dns) return 'weft-address';
  return undefined;
}

/** TCP endpoint tuning; every per-connection buffer is bounded by these. */
export interface TcpConfig {
  /** Guest → upstream bytes held per connection (bounds the window weft advertises). */
  receiveBufferBytes: number;
  /** Upstream → guest bytes held per connection before the upstream is paused. */
  sendBufferBytes: number;
  /**
   * The most that pause point grows to for a guest offering a large window: sendBufferBytes beyond
   * its largest window, up to this. Default: no growth (a tab's memory is tighter than a host's).
   */
  sendBufferMaxBytes?: number;
  /**
   * Upstream → guest bytes held by all connections together. Past it, a connection holding more
   * than 64 KiB pauses its upstream until the guests have acknowledged enough (so a guest that
   * opens many connections and reads none cannot make weft hold each one's limit).
   */
  sendBufferTotalBytes: number;
  /**
   * Guest → upstream bytes held by all connections together (what upstreams have not taken yet).
   * Past it, a connection holding more than 64 KiB stops opening its window and drops what the
   * guest sends beyond (the guest sends it again), so a guest writing to many servers that do not
   * read cannot make weft hold each connection's receive buffer.
   */
  receiveBufferTotalBytes: number;
  /** An upstream connect that has not succeeded by then fails (the guest gets RST). */
  connectTimeoutMs: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  maxRetransmits: number;
  delayedAckMs: number;
  timeWaitMs: number;
  keepaliveIdleMs: number;
  keepaliveIntervalMs: number;
  keepaliveProbes: number;
  maxConnections: number;
  /** Connections still opening (upstream connect or handshake pending); the oldest is dropped past this. */
  maxHalfOpen: number;
  maxTimeWait: number;
  sack: boolean;
  timestamps: boolean;
  windowScaling: boolean;
}

export const DEFAULT_TCP: TcpConfig = {
  receiveBufferBytes: 256 * 1024,
  sendBufferBytes: 256 * 1024,
  sendBufferTotalBytes: 64 * 1024 * 1024,
  receiveBufferTotalBytes: 64 * 1024 * 1024,
  connectTimeoutMs: 20_000,
  initialRtoMs: 1000,
  minRtoMs: 200,
  maxRtoMs: 60_000,
  maxRetransmits: 12,
  delayedAckMs: 40,
  timeWaitMs: 30_000,
  keepaliveIdleMs: 10 * 60_000,
  keepaliveIntervalMs: 75_000,
  keepaliveProbes: 9,
  maxConnections: 8192,
  maxHalfOpen: 512,
  maxTimeWait: 4096,
  sack: true,
  timestamps: true,
  windowScaling: true,
};

export interface UdpConfig {
  idleTimeoutMs: number;
  maxFlows: number;
}

export const DEFAULT_UDP: UdpConfig = {
  idleTimeoutMs: 60_000,
  maxFlows: 1024,
};
