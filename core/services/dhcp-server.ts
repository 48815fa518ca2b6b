// The DHCP server (RFC 2131) for weft's one virtual link. weft is the only server there, so it is
// authoritative: a client asking for an address it cannot have gets a NAK at once rather than
// silence, which is what lets a guest moved from another network recover quickly.

import { guestAddressProblem, type NetworkConfig } from '../config';
import {
  BROADCAST_MAC,
  IPV4_ANY,
  IPV4_BROADCAST,
  ipv4Add,
  ipv4Diff,
  ipv4SubnetBroadcast,
  prefixMask,
  type Ipv4Address,
  type MacAddress,
} from '../wire/address';
import { BOOTREQUEST, DHCP_FLAG_BROADCAST, DhcpMessageType as T, emitDhcp, encodeDomainSearch, type DhcpMessage, type DhcpReplyRepr } from '../wire/dhcp';
import type { DropReason } from '../wire/parse-result';
import { copyBytes } from '../wire/bytes';

/** How long an OFFER holds its address for the client before others may take it. */
const OFFER_HOLD_MS = 60_000;
/** How long a DECLINEd address stays out of the pool (dnsmasq uses the same ten minutes). */
const DECLINE_HOLD_MS = 600_000;

export interface DhcpReply {
  /** UDP payload to send from port 67 to port 68. */
  payload: Uint8Array;
  dstIp: Ipv4Address;
  dstMac: MacAddress;
}

export interface DhcpLeaseEvent {
  mac: MacAddress;
  ip: Ipv4Address;
  hostname?: string;
  /** ms, on the clock passed to handle(). */
  expiresAt: number;
}

export interface DhcpLease extends DhcpLeaseEvent {
  /** Client identifier (option 61) the lease is keyed by, if the client sent one. */
  clientId?: Uint8Array;
}

interface LeaseEntry {
  key: string;
  mac: MacAddress;
  ip: Ipv4Address;
  clientId?: Uint8Array;
  hostname?: string;
  expiresAt: number;
  /** offered: held for an OFFER; bound: ACKed; free: released, kept so the client can get it back. */
  state: 'offered' | 'bound' | 'free';
}

export class DhcpServer {
  private readonly byKey = new Map<string, LeaseEntry>();
  private readonly byIp = new Map<Ipv4Address, LeaseEntry>();
  /** Declined pool addresses and when they may be used again; bounded by the pool size. */
  private readonly declined = new Map<Ipv4Address, number>();
  private readonly mask: number;
  private readonly broadcastAddress: Ipv4Address;

  constructor(
    private readonly config: NetworkConfig,
    private readonly onLease: (e: DhcpLeaseEvent) => void,
  ) {
    this.mask = prefixMask(config.prefixLength);
    this.broadcastAddress = ipv4SubnetBroadcast(config.network, this.mask);
    // Fail at start-up, not on the first guest's DISCOVER, if the search list cannot be encoded.
    if (config.searchDomains.length) encodeDomainSearch(config.searchDomains);
  }

  /** Answers one client message. null means no reply on purpose (RELEASE, DECLINE, another server chosen). */
  handle(msg: DhcpMessage, now: number): DhcpReply | DropReason | null {
    if (msg.op !== BOOTREQUEST) return 'dhcp-not-request';
    if (msg.htype !== 1 || msg.hlen !== 6 || msg.chaddr === null) return 'dhcp-bad-hardware-type';
    if (msg.giaddr !== IPV4_ANY) return 'dhcp-relayed-unsupported';
    if (msg.messageType === undefined) return 'dhcp-no-message-type';
    switch (msg.messageType) {
      case T.DISCOVER:
        return this.discover(msg, msg.chaddr, now);
      case T.REQUEST:
        return this.request(msg, msg.chaddr, now);
      case T.DECLINE:
        return this.decline(msg, msg.chaddr, now);
      case T.RELEASE:
        return this.release(msg, msg.chaddr, now);
      case T.INFORM:
        return this.inform(msg, msg.chaddr);
      default:
        return 'dhcp-unexpected-message-type';
    }
  }

  /** Bound leases, including any that have expired but not been reclaimed. */
  leases(): ReadonlyArray<DhcpLease> {
    const out: DhcpLease[] = [];
    for (const e of this.byKey.values()) {
      if (e.state !== 'bound') continue;
      const lease: DhcpLease = { mac: e.mac, ip: e.ip, expiresAt: e.expiresAt };
      if (e.hostname !== undefined) lease.hostname = e.hostname;
      if (e.clientId) lease.clientId = e.clientId;
      out.push(lease);
    }
    return out;
  }

  /**
   * The MAC of a live lease on `ip` (bound, not expired), if any: on a LAN the only one that may
   * speak for that address, so another guest cannot draw weft's traffic for it to itself.
   */
  holderOf(ip: Ipv4Address, now: number): MacAddress | undefined {
    const e = this.byIp.get(ip);
    return e !== undefined && e.state === 'bound' && e.expiresAt > now ? e.mac : undefined;
  }

  private discover(msg: DhcpMessage, mac: MacAddress, now: number): DhcpReply | DropReason {
    const key = this.keyFor(msg, mac, now);
    const own = this.byKey.get(key);
    let ip: Ipv4Address | undefined;
    if (own && this.usable(own.ip, key, now)) ip = own.ip;
    else if (msg.requestedIp !== undefined && this.usable(msg.requestedIp, key, now)) ip = msg.requestedIp;
    else ip = this.allocate(now);
    if (ip === undefined) return 'dhcp-pool-exhausted';
    const entry = this.assign(key, msg, mac, ip);
    if (entry.state !== 'bound' || entry.expiresAt <= now) {
      entry.state = 'offered';
      entry.expiresAt = now + OFFER_HOLD_MS;
    }
    return this.reply(msg, mac, T.OFFER, ip);
  }

  private request(msg: DhcpMessage, mac: MacAddress, now: number): DhcpReply | DropReason | null {
    const key = this.keyFor(msg, mac, now);
    let ip: Ipv4Address;
    if (msg.serverId !== undefined) {
      // SELECTING: the client picked a server. If not us, our offer is void.
      if (msg.serverId !== this.config.gateway) {
        const own = this.byKey.get(key);
        if (own && own.state === 'offered') this.remove(own);
        return null;
      }
      if (msg.requestedIp === undefined) return 'dhcp-request-no-address';
      ip = msg.requestedIp;
    } else if (msg.requestedIp !== undefined) {
      ip = msg.requestedIp; // INIT-REBOOT
    } else if (msg.ciaddr !== IPV4_ANY) {
      ip = msg.ciaddr; // RENEWING or REBINDING
    } else {
      return 'dhcp-request-no-address';
    }
    if (!this.usable(ip, key, now)) return this.nak(msg, mac, 'requested address not available');
    const entry = this.assign(key, msg, mac, ip);
    entry.state = 'bound';
    entry.expiresAt = now + this.config.leaseTimeSeconds * 1000;
    const event: DhcpLeaseEvent = { mac, ip, expiresAt: entry.expiresAt };
    if (entry.hostname !== undefined) event.hostname = entry.hostname;
    this.onLease(event);
    return this.reply(msg, mac, T.ACK, ip);
  }

  private decline(msg: DhcpMessage, mac: MacAddress, now: number): null {
    if (msg.serverId !== undefined && msg.serverId !== this.config.gateway) return null;
    const ip = msg.requestedIp;
    if (ip === undefined || !this.inPool(ip)) return null;
    const key = this.keyFor(msg, mac, now);
    const holder = this.byIp.get(ip);
    // Only the client holding the address (or nobody) may take it out of the pool; otherwise one
    // guest could evict another's live lease.
    if (holder && holder.key !== key && holder.state !== 'free' && holder.expiresAt > now) return null;
    if (holder) this.remove(holder);
    this.declined.set(ip, now + DECLINE_HOLD_MS);
    return null;
  }

  private release(msg: DhcpMessage, mac: MacAddress, now: number): null {
    if (msg.serverId !== undefined && msg.serverId !== this.config.gateway) return null;
    const entry = this.byIp.get(msg.ciaddr);
    if (entry && entry.key === this.keyFor(msg, mac, now)) {
      // Keep the entry so the same client gets this address back while nobody else needs it.
      entry.state = 'free';
      entry.expiresAt = now;
    }
    return null;
  }

  private inform(msg: DhcpMessage, mac: MacAddress): DhcpReply | DropReason {
    if (msg.ciaddr === IPV4_ANY) return 'dhcp-inform-no-ciaddr';
    return this.reply(msg, mac, T.ACK, IPV4_ANY);
  }

  /**
   * The key of this client's lease. A client identifier names a lease and may move to a new MAC
   * (RFC 2131 §4.2), but not away from a live lease on another MAC: else one guest on a LAN could
   * take another's address, and the traffic weft sends to it, by sending that guest's identifier,
   * and two VMs cloned from one image (one DUID) would share an address. Such a client is keyed by
   * its identifier and its MAC together, and keeps that lease.
   */
  private keyFor(msg: DhcpMessage, mac: MacAddress, now: number): string {
    const key = clientKey(msg, mac);
    if (!msg.clientId) return key;
    const ownMac = `${key}@${mac.toString(16)}`;
    if (this.byKey.has(ownMac)) return ownMac;
    const holder = this.byKey.get(key);
    return holder && holder.mac !== mac && holder.state !== 'free' && holder.expiresAt > now ? ownMac : key;
  }

  /** True if `ip` may be given to client `key`: in the pool, not declined, not held by another. */
  private usable(ip: Ipv4Address, key: string, now: number): boolean {
    if (!this.inPool(ip)) return false;
    const holder = this.byIp.get(ip);
    if (holder && holder.key === key) return true;
    if ((this.declined.get(ip) ?? 0) > now) return false;
    return !holder || holder.state === 'free' || holder.expiresAt <= now;
  }

  private inPool(ip: Ipv4Address): boolean {
    const c = this.config;
    const index = ipv4Diff(ip, c.firstLease);
    if (index < 0 || index >= c.leaseCount) return false;
    // The pool may overlap addresses weft itself owns; those are never leased.
    return guestAddressProblem(c, ip) === undefined;
  }

  /** The lowest never-used pool address, else the one whose lease ended longest ago. */
  private allocate(now: number): Ipv4Address | undefined {
    let oldest: LeaseEntry | undefined;
    for (let k = 0; k < this.config.leaseCount; k++) {
      const ip = ipv4Add(this.config.firstLease, k);
      if (!this.inPool(ip) || (this.declined.get(ip) ?? 0) > now) continue;
      const holder = this.byIp.get(ip);
      if (!holder) return ip;
      const reclaimable = holder.state === 'free' || holder.expiresAt <= now;
      if (reclaimable && (!oldest || holder.expiresAt < oldest.expiresAt)) oldest = holder;
    }
    return oldest?.ip;
  }

  /** Points client `key` at `ip`, evicting whatever else held either. Every entry owns one pool address, so the table never outgrows the pool. */
  private assign(key: string, msg: DhcpMessage, mac: MacAddress, ip: Ipv4Address): LeaseEntry {
    let entry = this.byKey.get(key);
    const holder = this.byIp.get(ip);
    if (holder && holder !== entry) this.remove(holder);
    if (entry && entry.ip !== ip) {
      this.byIp.delete(entry.ip);
      entry.ip = ip;
    }
    if (!entry) {
      entry = { key, mac, ip, expiresAt: 0, state: 'offered' };
      if (msg.clientId) entry.clientId = copyBytes(msg.clientId); // the message buffer is not ours to keep
      this.byKey.set(key, entry);
    }
    this.byIp.set(ip, entry);
    this.declined.delete(ip);
    entry.mac = mac;
    if (msg.hostname !== undefined) entry.hostname = msg.hostname;
    return entry;
  }

  private remove(entry: LeaseEntry): void {
    this.byKey.delete(entry.key);
    if (this.byIp.get(entry.ip) === entry) this.byIp.delete(entry.ip);
  }

  private nak(msg: DhcpMessage, mac: MacAddress, why: string): DhcpReply {
    const payload = emitDhcp({ messageType: T.NAK, xid: msg.xid, flags: msg.flags, chaddr: mac, serverId: this.config.gateway, message: why });
    // RFC 2131 §4.1: a NAK is broadcast, since the client may hold an address that is wrong here.
    return { payload, dstIp: IPV4_BROADCAST, dstMac: BROADCAST_MAC };
  }

  private reply(msg: DhcpMessage, mac: MacAddress, type: number, yiaddr: Ipv4Address): DhcpReply {
    const c = this.config;
    const repr: DhcpReplyRepr = {
      messageType: type,
      xid: msg.xid,
      flags: msg.flags,
      ciaddr: type === T.OFFER ? IPV4_ANY : msg.ciaddr, // RFC 2131 table 3
      yiaddr,
      chaddr: mac,
      serverId: c.gateway,
      subnetMask: this.mask,
      router: c.gateway,
      dnsServers: [c.dns],
      domainName: c.domainName,
      searchDomains: c.searchDomains,
      mtu: c.mtu,
      broadcastAddress: this.broadcastAddress,
    };
    // INFORM: the client configured its own address; it gets parameters, not a lease (§3.4).
    if (msg.messageType !== T.INFORM) repr.leaseTimeSeconds = c.leaseTimeSeconds;
    const payload = emitDhcp(repr);
    // RFC 2131 §4.1 reply addressing (relayed messages were dropped before).
    if (msg.ciaddr !== IPV4_ANY) return { payload, dstIp: msg.ciaddr, dstMac: mac };
    if (msg.flags & DHCP_FLAG_BROADCAST) return { payload, dstIp: IPV4_BROADCAST, dstMac: BROADCAST_MAC };
    return { payload, dstIp: yiaddr, dstMac: mac };
  }
}

/** Leases follow option 61 when present (RFC 2131 §4.2), so a client keeps its address even if its MAC changes. */
function clientKey(msg: DhcpMessage, mac: MacAddress): string {
  if (!msg.clientId) return `mac:${mac}`;
  let hex = 'id:';
  for (const byte of msg.clientId) hex += byte.toString(16).padStart(2, '0');
  return hex;
}
