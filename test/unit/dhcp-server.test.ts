import { describe, expect, it } from 'vitest';
import { DEFAULT_NETWORK, type NetworkConfig } from '../../core/config';
import { DhcpServer, type DhcpLeaseEvent, type DhcpReply } from '../../core/services/dhcp-server';
import {
  BROADCAST_MAC,
  IPV4_ANY,
  IPV4_BROADCAST,
  ipv4Add,
  mac,
  parseIpv4 as ip,
  parseMac,
  writeIpv4,
  writeMac,
  type Ipv4Address,
  type MacAddress,
} from '../../core/wire/address';
import { writeU32 } from '../../core/wire/bytes';
import { DhcpMessageType as T, DhcpOption, parseDhcp, type DhcpMessage } from '../../core/wire/dhcp';
import { isDrop } from '../../core/wire/parse-result';

const MAC_A = parseMac('52:54:00:00:00:0a');
const MAC_B = parseMac('52:54:00:00:00:0b');
const MAC_C = parseMac('52:54:00:00:00:0c');
const DAY_MS = 86_400_000;

interface ClientFields {
  type?: number;
  mac?: MacAddress;
  xid?: number;
  flags?: number;
  ciaddr?: Ipv4Address;
  giaddr?: Ipv4Address;
  op?: number;
  htype?: number;
  requestedIp?: Ipv4Address;
  serverId?: Ipv4Address;
  clientId?: number[];
  hostname?: string;
}

/** Builds a client message as bytes and parses it, so the server sees what the codec produces. */
function client(f: ClientFields): DhcpMessage {
  const opts: number[] = [];
  if (f.type !== undefined) opts.push(DhcpOption.MESSAGE_TYPE, 1, f.type);
  const addr = (code: number, v: number) => opts.push(code, 4, v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255);
  if (f.requestedIp !== undefined) addr(DhcpOption.REQUESTED_IP, f.requestedIp);
  if (f.serverId !== undefined) addr(DhcpOption.SERVER_ID, f.serverId);
  if (f.clientId) opts.push(DhcpOption.CLIENT_ID, f.clientId.length, ...f.clientId);
  if (f.hostname) opts.push(DhcpOption.HOSTNAME, f.hostname.length, ...Array.from(f.hostname, (c) => c.charCodeAt(0)));
  opts.push(DhcpOption.END);
  const b = new Uint8Array(Math.max(300, 240 + opts.length));
  b.set([f.op ?? 1, f.htype ?? 1, 6, 0]);
  writeU32(b, 4, f.xid ?? 0x1234);
  b[10] = (f.flags ?? 0) >>> 8;
  writeIpv4(b, 12, f.ciaddr ?? IPV4_ANY);
  writeIpv4(b, 24, f.giaddr ?? IPV4_ANY);
  writeMac(b, 28, f.mac ?? MAC_A);
  writeU32(b, 236, 0x63825363);
  b.set(opts, 240);
  const m = parseDhcp(b);
  if (isDrop(m)) throw new Error(m);
  return m;
}

function setup(overrides: Partial<NetworkConfig> = {}) {
  const events: DhcpLeaseEvent[] = [];
  const server = new DhcpServer({ ...DEFAULT_NETWORK, ...overrides }, (e) => events.push(e));
  return { server, events };
}

function reply(r: DhcpReply | string | null): DhcpReply & { msg: DhcpMessage } {
  if (r === null || typeof r === 'string') throw new Error(`expected a reply, got ${r}`);
  const msg = parseDhcp(r.payload);
  if (isDrop(msg)) throw new Error(msg);
  return { ...r, msg };
}

/** DISCOVER then REQUEST (SELECTING); returns the ACK. */
function dora(server: DhcpServer, f: ClientFields, now = 0) {
  const offer = reply(server.handle(client({ ...f, type: T.DISCOVER }), now));
  expect(offer.msg.messageType).toBe(T.OFFER);
  return reply(server.handle(client({ ...f, type: T.REQUEST, serverId: ip('10.0.2.2'), requestedIp: offer.msg.yiaddr }), now));
}

describe('DhcpServer', () => {
  it('runs DISCOVER → OFFER → REQUEST → ACK and reports the lease', () => {
    const { server, events } = setup({ searchDomains: ['weft.internal'] });
    const offer = reply(server.handle(client({ type: T.DISCOVER, mac: MAC_A, xid: 77, hostname: 'guest' }), 1000));
    expect(offer.msg).toMatchObject({ op: 2, xid: 77, yiaddr: ip('10.0.2.15'), ciaddr: 0, chaddr: MAC_A, messageType: T.OFFER, serverId: ip('10.0.2.2') });
    expect(offer.dstIp).toBe(ip('10.0.2.15'));
    expect(offer.dstMac).toBe(MAC_A);
    expect(events).toEqual([]);
    expect(server.leases()).toEqual([]); // an offer is not a lease

    const ack = reply(server.handle(client({ type: T.REQUEST, mac: MAC_A, xid: 78, serverId: ip('10.0.2.2'), requestedIp: ip('10.0.2.15') }), 2000));
    expect(ack.msg).toMatchObject({ messageType: T.ACK, yiaddr: ip('10.0.2.15'), xid: 78 });
    const o = ack.msg.options;
    const u32 = (code: number) => new DataView(o.get(code)!.buffer, o.get(code)!.byteOffset).getUint32(0);
    expect([u32(DhcpOption.LEASE_TIME), u32(DhcpOption.RENEWAL_TIME), u32(DhcpOption.REBINDING_TIME)]).toEqual([86400, 43200, 75600]);
    expect(u32(DhcpOption.SUBNET_MASK)).toBe(ip('255.255.255.0'));
    expect(u32(DhcpOption.ROUTER)).toBe(ip('10.0.2.2'));
    expect(u32(DhcpOption.DNS_SERVERS)).toBe(ip('10.0.2.3'));
    expect(u32(DhcpOption.BROADCAST_ADDRESS)).toBe(ip('10.0.2.255'));
    expect(Array.from(o.get(DhcpOption.INTERFACE_MTU)!)).toEqual([0x05, 0xdc]);
    expect(o.has(DhcpOption.DOMAIN_NAME)).toBe(true);
    expect(o.has(DhcpOption.DOMAIN_SEARCH)).toBe(true);
    expect(events).toEqual([{ mac: MAC_A, ip: ip('10.0.2.15'), hostname: 'guest', expiresAt: 2000 + DAY_MS }]);
    expect(server.leases()).toEqual([{ mac: MAC_A, ip: ip('10.0.2.15'), hostname: 'guest', expiresAt: 2000 + DAY_MS }]);
  });

  it('answers a real busybox udhcpc DISCOVER', () => {
    const { server } = setup();
    const b = new Uint8Array(300);
    b.set([1, 1, 6, 0, 0xd7, 0xd5, 0x90, 0x1d]);
    b.set([0x52, 0x54, 0x00, 0x12, 0x34, 0x56], 28);
    b.set([0x63, 0x82, 0x53, 0x63, 53, 1, 1, 57, 2, 2, 64, 55, 7, 1, 3, 6, 12, 15, 28, 42, 61, 7, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56, 255], 236);
    const m = parseDhcp(b);
    if (isDrop(m)) throw new Error(m);
    const offer = reply(server.handle(m, 0));
    expect(offer.msg).toMatchObject({ messageType: T.OFFER, xid: 0xd7d5901d, yiaddr: ip('10.0.2.15') });
    expect(offer.payload.length).toBeLessThanOrEqual(576 - 28); // within the client's max message size
  });

  it('gives two MACs distinct addresses and the same MAC its address again', () => {
    const { server } = setup();
    expect(dora(server, { mac: MAC_A }).msg.yiaddr).toBe(ip('10.0.2.15'));
    expect(dora(server, { mac: MAC_B }).msg.yiaddr).toBe(ip('10.0.2.16'));
    expect(dora(server, { mac: MAC_A }, 5000).msg.yiaddr).toBe(ip('10.0.2.15'));
    expect(
      server
        .leases()
        .map((l) => l.ip)
        .sort(),
    ).toEqual([ip('10.0.2.15'), ip('10.0.2.16')]);
  });

  it('offers the requested address when it is free, and ignores one outside the pool', () => {
    const { server } = setup();
    expect(reply(server.handle(client({ type: T.DISCOVER, requestedIp: ip('10.0.2.40') }), 0)).msg.yiaddr).toBe(ip('10.0.2.40'));
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: MAC_B, requestedIp: ip('10.0.2.40') }), 0)).msg.yiaddr).toBe(ip('10.0.2.15'));
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: MAC_C, requestedIp: ip('10.0.2.2') }), 0)).msg.yiaddr).toBe(ip('10.0.2.16'));
  });

  it('keys leases by client identifier when one is sent', () => {
    const { server } = setup();
    const id = [1, 2, 3, 4, 5, 6, 7];
    expect(dora(server, { mac: MAC_A, clientId: id }).msg.yiaddr).toBe(ip('10.0.2.15'));
    expect(server.handle(client({ type: T.RELEASE, mac: MAC_A, clientId: id, ciaddr: ip('10.0.2.15') }), 10)).toBeNull();
    // Same client id behind a new MAC (a re-created VM NIC) once the old lease has ended: same address.
    expect(dora(server, { mac: MAC_B, clientId: id }, 20).msg.yiaddr).toBe(ip('10.0.2.15'));
    // Same MAC, another client id (a second OS on the same NIC): another address.
    expect(dora(server, { mac: MAC_B, clientId: [0, 9, 9] }, 30).msg.yiaddr).toBe(ip('10.0.2.16'));
    expect(server.leases().find((l) => l.ip === ip('10.0.2.15'))).toMatchObject({ mac: MAC_B, clientId: Uint8Array.from(id) });
  });

  it('does not let another MAC take a live lease by sending its client identifier', () => {
    const { server } = setup();
    const id = [1, 2, 3, 4, 5, 6, 7];
    expect(dora(server, { mac: MAC_A, clientId: id }).msg.yiaddr).toBe(ip('10.0.2.15'));
    // A second guest sends A's identifier (forged, or a clone of A's image with the same DUID).
    expect(reply(server.handle(client({ type: T.REQUEST, mac: MAC_B, clientId: id, requestedIp: ip('10.0.2.15') }), 1)).msg.messageType).toBe(T.NAK);
    expect(server.handle(client({ type: T.RELEASE, mac: MAC_B, clientId: id, ciaddr: ip('10.0.2.15') }), 1)).toBeNull();
    expect(server.handle(client({ type: T.DECLINE, mac: MAC_B, clientId: id, requestedIp: ip('10.0.2.15') }), 1)).toBeNull();
    expect(server.holderOf(ip('10.0.2.15'), 2)).toBe(MAC_A);
    // It gets an address of its own, and keeps it after A's lease has ended.
    expect(dora(server, { mac: MAC_B, clientId: id }, 2).msg.yiaddr).toBe(ip('10.0.2.16'));
    expect(server.holderOf(ip('10.0.2.15'), 3)).toBe(MAC_A);
    const afterA = (DEFAULT_NETWORK.leaseTimeSeconds + 1) * 1000;
    const renew = reply(server.handle(client({ type: T.REQUEST, mac: MAC_B, clientId: id, ciaddr: ip('10.0.2.16') }), afterA));
    expect(renew.msg).toMatchObject({ messageType: T.ACK, yiaddr: ip('10.0.2.16') });
    // A comes back: its address is still free for it.
    expect(dora(server, { mac: MAC_A, clientId: id }, afterA + 1).msg.yiaddr).toBe(ip('10.0.2.15'));
  });

  it('handles INIT-REBOOT: ACK for its own or a free address, broadcast NAK otherwise', () => {
    const { server, events } = setup();
    dora(server, { mac: MAC_A });
    const own = reply(server.handle(client({ type: T.REQUEST, mac: MAC_A, requestedIp: ip('10.0.2.15') }), 10));
    expect(own.msg.messageType).toBe(T.ACK);
    expect(events.length).toBe(2);
    for (const wanted of ['192.168.1.50', '10.0.2.15', '10.0.2.2', '10.0.2.200']) {
      const nak = reply(server.handle(client({ type: T.REQUEST, mac: MAC_B, requestedIp: ip(wanted) }), 10));
      expect(nak.msg).toMatchObject({ messageType: T.NAK, yiaddr: 0, serverId: ip('10.0.2.2') });
      expect(nak.msg.options.has(DhcpOption.LEASE_TIME)).toBe(false);
      expect(nak.msg.options.has(DhcpOption.MESSAGE)).toBe(true);
      expect([nak.dstIp, nak.dstMac]).toEqual([IPV4_BROADCAST, BROADCAST_MAC]);
    }
    expect(reply(server.handle(client({ type: T.REQUEST, mac: MAC_B, requestedIp: ip('10.0.2.30') }), 10)).msg.messageType).toBe(T.ACK);
  });

  it('addresses replies per RFC 2131 §4.1', () => {
    const { server, events } = setup();
    const bcast = reply(server.handle(client({ type: T.DISCOVER, flags: 0x8000 }), 0));
    expect([bcast.dstIp, bcast.dstMac]).toEqual([IPV4_BROADCAST, BROADCAST_MAC]);
    expect(bcast.msg.flags).toBe(0x8000);
    const uni = dora(server, { mac: MAC_A });
    expect([uni.dstIp, uni.dstMac]).toEqual([ip('10.0.2.15'), MAC_A]);
    // RENEWING: unicast to ciaddr, even with the broadcast bit set; the lease is extended.
    const renew = reply(server.handle(client({ type: T.REQUEST, mac: MAC_A, ciaddr: ip('10.0.2.15'), flags: 0x8000 }), 60_000));
    expect(renew.msg).toMatchObject({ messageType: T.ACK, ciaddr: ip('10.0.2.15'), yiaddr: ip('10.0.2.15') });
    expect([renew.dstIp, renew.dstMac]).toEqual([ip('10.0.2.15'), MAC_A]);
    expect(events.at(-1)!.expiresAt).toBe(60_000 + DAY_MS);
    // REBINDING from an address someone else holds: NAK.
    expect(reply(server.handle(client({ type: T.REQUEST, mac: MAC_B, ciaddr: ip('10.0.2.15') }), 60_000)).msg.messageType).toBe(T.NAK);
  });

  it('stays silent when the client chose another server, and frees the offer', () => {
    const { server } = setup({ leaseCount: 1 });
    reply(server.handle(client({ type: T.DISCOVER, mac: MAC_A }), 0));
    expect(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 0)).toBe('dhcp-pool-exhausted');
    expect(server.handle(client({ type: T.REQUEST, mac: MAC_A, serverId: ip('10.0.2.99'), requestedIp: ip('10.0.2.15') }), 0)).toBeNull();
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 0)).msg.yiaddr).toBe(ip('10.0.2.15'));
  });

  it('NAKs a SELECTING request for an address held by another client', () => {
    const { server } = setup();
    dora(server, { mac: MAC_A });
    const r = reply(server.handle(client({ type: T.REQUEST, mac: MAC_B, serverId: ip('10.0.2.2'), requestedIp: ip('10.0.2.15') }), 0));
    expect(r.msg.messageType).toBe(T.NAK);
  });

  it('keeps a released address for its client while never-used ones remain', () => {
    const { server } = setup({ leaseCount: 2 });
    dora(server, { mac: MAC_A });
    expect(server.handle(client({ type: T.RELEASE, mac: MAC_A, ciaddr: ip('10.0.2.15') }), 10)).toBeNull();
    expect(dora(server, { mac: MAC_B }, 20).msg.yiaddr).toBe(ip('10.0.2.16'));
    expect(dora(server, { mac: MAC_A }, 30).msg.yiaddr).toBe(ip('10.0.2.15'));
  });

  it('frees an address on RELEASE for others once the pool is full', () => {
    const { server } = setup({ leaseCount: 1 });
    dora(server, { mac: MAC_A });
    expect(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 10)).toBe('dhcp-pool-exhausted');
    // A RELEASE from another client or for another server changes nothing.
    expect(server.handle(client({ type: T.RELEASE, mac: MAC_B, ciaddr: ip('10.0.2.15'), serverId: ip('10.0.2.2') }), 10)).toBeNull();
    expect(server.handle(client({ type: T.RELEASE, mac: MAC_A, ciaddr: ip('10.0.2.15'), serverId: ip('10.0.2.9') }), 10)).toBeNull();
    expect(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 10)).toBe('dhcp-pool-exhausted');
    expect(server.handle(client({ type: T.RELEASE, mac: MAC_A, ciaddr: ip('10.0.2.15'), serverId: ip('10.0.2.2') }), 10)).toBeNull();
    expect(server.leases()).toEqual([]);
    expect(dora(server, { mac: MAC_B }, 20).msg.yiaddr).toBe(ip('10.0.2.15'));
  });

  it('takes a DECLINEd address out of the pool for a while', () => {
    const { server } = setup({ leaseCount: 2 });
    dora(server, { mac: MAC_A });
    expect(server.handle(client({ type: T.DECLINE, mac: MAC_A, requestedIp: ip('10.0.2.15'), serverId: ip('10.0.2.2') }), 0)).toBeNull();
    expect(server.leases()).toEqual([]);
    expect(dora(server, { mac: MAC_A }, 1).msg.yiaddr).toBe(ip('10.0.2.16'));
    expect(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 1)).toBe('dhcp-pool-exhausted');
    // Another client cannot decline an address that is leased to A.
    expect(server.handle(client({ type: T.DECLINE, mac: MAC_B, requestedIp: ip('10.0.2.16') }), 2)).toBeNull();
    expect(server.leases().map((l) => l.ip)).toEqual([ip('10.0.2.16')]);
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 600_001)).msg.yiaddr).toBe(ip('10.0.2.15'));
  });

  it('answers INFORM with parameters but no lease, unicast to ciaddr', () => {
    const { server, events } = setup();
    const r = reply(server.handle(client({ type: T.INFORM, mac: MAC_C, ciaddr: ip('10.0.2.77') }), 0));
    expect(r.msg).toMatchObject({ messageType: T.ACK, yiaddr: 0, ciaddr: ip('10.0.2.77') });
    expect(r.msg.options.has(DhcpOption.LEASE_TIME)).toBe(false);
    expect(r.msg.options.has(DhcpOption.RENEWAL_TIME)).toBe(false);
    expect(r.msg.options.has(DhcpOption.ROUTER)).toBe(true);
    expect([r.dstIp, r.dstMac]).toEqual([ip('10.0.2.77'), MAC_C]);
    expect(events).toEqual([]);
    expect(server.handle(client({ type: T.INFORM, mac: MAC_C }), 0)).toBe('dhcp-inform-no-ciaddr');
  });

  it('runs out with leaseCount 2, then reclaims expired leases and stale offers', () => {
    const { server } = setup({ leaseCount: 2 });
    dora(server, { mac: MAC_A }, 0);
    dora(server, { mac: MAC_B }, 1000);
    expect(server.handle(client({ type: T.DISCOVER, mac: MAC_C }), 2000)).toBe('dhcp-pool-exhausted');
    // After both leases end, C takes the one that ended first.
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: MAC_C }), DAY_MS + 5000)).msg.yiaddr).toBe(ip('10.0.2.15'));
    expect(server.leases().map((l) => l.ip)).toEqual([ip('10.0.2.16')]);
    // C's offer holds for a minute, then is fair game.
    const D = parseMac('52:54:00:00:00:0d');
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: D }), DAY_MS + 6000)).msg.yiaddr).toBe(ip('10.0.2.16'));
    const E = parseMac('52:54:00:00:00:0e');
    expect(server.handle(client({ type: T.DISCOVER, mac: E }), DAY_MS + 7000)).toBe('dhcp-pool-exhausted');
    expect(reply(server.handle(client({ type: T.DISCOVER, mac: E }), DAY_MS + 70_000)).msg.yiaddr).toBe(ip('10.0.2.15'));
  });

  it('keeps the lease table within the pool size', () => {
    const { server } = setup({ leaseCount: 2 });
    for (let k = 0; k < 50; k++) {
      server.handle(client({ type: T.DISCOVER, mac: mac(0x525400000100 + k) }), k * DAY_MS * 2);
      server.handle(client({ type: T.REQUEST, mac: mac(0x525400000100 + k), requestedIp: ipv4Add(ip('10.0.2.15'), k % 2) }), k * DAY_MS * 2);
      expect(server.leases().length).toBeLessThanOrEqual(2);
    }
  });

  it('never leases the gateway or DNS address when the pool overlaps them', () => {
    const { server } = setup({ firstLease: ip('10.0.2.2'), leaseCount: 3 });
    expect(dora(server, { mac: MAC_A }).msg.yiaddr).toBe(ip('10.0.2.4'));
    expect(server.handle(client({ type: T.DISCOVER, mac: MAC_B }), 0)).toBe('dhcp-pool-exhausted');
  });

  it('reports every drop reason', () => {
    const { server } = setup();
    expect(server.handle(client({ type: T.DISCOVER, op: 2 }), 0)).toBe('dhcp-not-request');
    expect(server.handle(client({ type: T.DISCOVER, htype: 6 }), 0)).toBe('dhcp-bad-hardware-type');
    expect(server.handle(client({ type: T.DISCOVER, giaddr: ip('10.9.0.1') }), 0)).toBe('dhcp-relayed-unsupported');
    expect(server.handle(client({}), 0)).toBe('dhcp-no-message-type');
    expect(server.handle(client({ type: T.OFFER }), 0)).toBe('dhcp-unexpected-message-type');
    expect(server.handle(client({ type: T.REQUEST }), 0)).toBe('dhcp-request-no-address');
    expect(server.handle(client({ type: T.REQUEST, serverId: ip('10.0.2.2') }), 0)).toBe('dhcp-request-no-address');
  });

  it('refuses a search domain it cannot encode when constructed', () => {
    expect(() => setup({ searchDomains: ['bad..name'] })).toThrow(RangeError);
  });
});
