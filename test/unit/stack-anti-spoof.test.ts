// One LAN, several guests: a guest must not take weft's addresses or another guest's leased address
// from weft's point of view. Hand-made frames into one Stack; where weft's own traffic for an address
// goes is read from the destination MAC of what it sends there (a UDP datagram from the gateway).

import { describe, expect, it } from 'vitest';
import { instant } from '../../core/clock';
import { Stack } from '../../core/stack';
import { ARP_REPLY, ARP_REQUEST } from '../../core/wire/arp';
import { parseIpv4, parseMac, ZERO_MAC, type Ipv4Address, type MacAddress } from '../../core/wire/address';
import { parseEthernet } from '../../core/wire/ethernet';
import { isDrop } from '../../core/wire/parse-result';
import { arpFrame, DNS_IP, dhcpFrame, GATEWAY_IP, GATEWAY_MAC, GUEST_IP, GUEST_MAC, pingFrame, seededRandom } from '../support/frames';
import { DhcpMessageType } from '../../core/wire/dhcp';

const SPOOFER_MAC = parseMac('52:54:00:66:66:66');
const SUBNET_BROADCAST = parseIpv4('10.0.2.255');
const STATIC_IP = parseIpv4('10.0.2.50');
/** The default lease time (resolveNetworkConfig): a day. */
const LEASE_MS = 86_400_000;

function makeStack() {
  let now = 1_000_000;
  const out: Uint8Array[] = [];
  const stack = new Stack({ clock: { now: () => instant(now) }, random: seededRandom(7).fill, output: (f) => out.push(f) });
  return { stack, out, advance: (ms: number) => (now += ms) };
}

type Lan = ReturnType<typeof makeStack>;

/** DISCOVER then REQUEST for 10.0.2.15 from GUEST_MAC, as udhcpc does; the lease is bound. */
function lease(lan: Lan, mac: MacAddress = GUEST_MAC): void {
  const requested = [50, 4, 10, 0, 2, 15, 54, 4, 10, 0, 2, 2];
  lan.stack.input(dhcpFrame(DhcpMessageType.DISCOVER, mac, 1));
  let leased = false;
  const off = lan.stack.on('lease', (e) => (leased = e.ip === GUEST_IP && e.mac === mac));
  lan.stack.input(dhcpFrame(DhcpMessageType.REQUEST, mac, 2, requested));
  off();
  expect(leased).toBe(true);
  lan.out.length = 0;
}

/** The MAC weft sends its own traffic for `ip` to (a datagram from the gateway), or 'arp' while it asks. */
function whereWeftSends(lan: Lan, ip: Ipv4Address): MacAddress | 'arp' {
  lan.out.length = 0;
  const socket = lan.stack.openGuestUdp(9, { onDatagram: () => {} }, ip);
  socket!.send(new Uint8Array(8));
  socket!.close();
  const eth = parseEthernet(lan.out[0]);
  if (isDrop(eth)) throw new Error(eth);
  return eth.ethertype === 0x0806 ? 'arp' : eth.dst;
}

const gratuitous = (mac: MacAddress, ip: Ipv4Address) => arpFrame({ operation: ARP_REQUEST, senderMac: mac, senderIp: ip, targetMac: ZERO_MAC, targetIp: ip });
/** An ARP reply sent to weft's MAC, as if weft had asked. */
const unicastReply = (mac: MacAddress, ip: Ipv4Address) =>
  arpFrame({ operation: ARP_REPLY, senderMac: mac, senderIp: ip, targetMac: GATEWAY_MAC, targetIp: GATEWAY_IP }, GATEWAY_MAC);

describe('Stack on a LAN: a guest cannot take a leased address', () => {
  it('a gratuitous ARP from another MAC for a leased address is refused and counted; weft keeps sending to the lease holder', () => {
    const lan = makeStack();
    lease(lan);
    lan.stack.input(gratuitous(SPOOFER_MAC, GUEST_IP));
    expect(lan.stack.counters().drops['arp-lease-conflict']).toBe(1);
    expect(whereWeftSends(lan, GUEST_IP)).toBe(GUEST_MAC);
  });

  it('an ARP reply from another MAC for a leased address is refused', () => {
    const lan = makeStack();
    lease(lan);
    lan.stack.input(unicastReply(SPOOFER_MAC, GUEST_IP));
    expect(lan.stack.counters().drops['arp-lease-conflict']).toBe(1);
    expect(whereWeftSends(lan, GUEST_IP)).toBe(GUEST_MAC);
  });

  it('a packet from another MAC with a leased address as its source is dropped (not answered, not learned)', () => {
    const lan = makeStack();
    lease(lan);
    const ping = pingFrame(GATEWAY_IP, 56);
    ping.set([0x52, 0x54, 0x00, 0x66, 0x66, 0x66], 6); // the spoofer's source MAC, the guest's source IP
    lan.stack.input(ping);
    expect(lan.out).toHaveLength(0);
    expect(lan.stack.counters().drops['ipv4-lease-conflict']).toBe(1);
    expect(whereWeftSends(lan, GUEST_IP)).toBe(GUEST_MAC);
  });

  it('the lease holder itself is learned and answered as before', () => {
    const lan = makeStack();
    lease(lan);
    lan.stack.input(gratuitous(GUEST_MAC, GUEST_IP));
    lan.stack.input(pingFrame(GATEWAY_IP, 56));
    expect(lan.out).toHaveLength(1);
    expect(lan.stack.counters().drops).toEqual({});
    expect(whereWeftSends(lan, GUEST_IP)).toBe(GUEST_MAC);
  });

  it('a new lease for the address moves the binding to its holder', () => {
    const lan = makeStack();
    lease(lan);
    lan.advance(LEASE_MS + 1);
    lease(lan, SPOOFER_MAC);
    expect(whereWeftSends(lan, GUEST_IP)).toBe(SPOOFER_MAC);
    lan.stack.input(gratuitous(GUEST_MAC, GUEST_IP));
    expect(lan.stack.counters().drops['arp-lease-conflict']).toBe(1);
    expect(whereWeftSends(lan, GUEST_IP)).toBe(SPOOFER_MAC);
  });

  it('once the lease has run out, the address is learned from whoever uses it, as a static one', () => {
    const lan = makeStack();
    lease(lan);
    lan.advance(LEASE_MS + 1);
    lan.stack.input(gratuitous(SPOOFER_MAC, GUEST_IP));
    expect(lan.stack.counters().drops['arp-lease-conflict']).toBeUndefined();
    expect(whereWeftSends(lan, GUEST_IP)).toBe(SPOOFER_MAC);
  });

  it('an address nobody leased (a static one) is learned, and follows the latest MAC, as before', () => {
    const lan = makeStack();
    lan.stack.input(gratuitous(GUEST_MAC, STATIC_IP));
    expect(whereWeftSends(lan, STATIC_IP)).toBe(GUEST_MAC);
    lan.stack.input(gratuitous(SPOOFER_MAC, STATIC_IP));
    expect(whereWeftSends(lan, STATIC_IP)).toBe(SPOOFER_MAC);
    expect(lan.stack.counters().drops).toEqual({});
  });
});

describe("Stack on a LAN: weft's own addresses are never learned from a guest", () => {
  for (const [name, ip] of [
    ['the gateway', GATEWAY_IP],
    ['the DNS address', DNS_IP],
  ] as const) {
    it(`a gratuitous ARP or an ARP reply claiming ${name} is refused and leaves no binding`, () => {
      const lan = makeStack();
      lan.stack.input(gratuitous(SPOOFER_MAC, ip));
      lan.stack.input(unicastReply(SPOOFER_MAC, ip));
      expect(lan.stack.counters().drops['arp-address-conflict']).toBe(2);
      expect(lan.stack.counters().arpCacheEntries).toBe(0);
    });
  }

  it('an ARP claiming the subnet broadcast address leaves no binding (weft sends there to the broadcast MAC)', () => {
    const lan = makeStack();
    lan.stack.input(gratuitous(SPOOFER_MAC, SUBNET_BROADCAST));
    expect(lan.stack.counters().arpCacheEntries).toBe(0);
  });

  it('packets with the gateway as their source teach nothing', () => {
    const lan = makeStack();
    lan.stack.input(pingFrame(DNS_IP, 56, 1, GATEWAY_IP));
    expect(lan.stack.counters().arpCacheEntries).toBe(0);
  });
});

describe('Stack.leases and leaseHolderOf: the live leases, for a switch and for late listeners', () => {
  it('lists a bound lease and its holder while it lasts, and neither once it has ended', () => {
    const lan = makeStack();
    expect(lan.stack.leases()).toEqual([]);
    lease(lan);
    expect(lan.stack.leases()).toMatchObject([{ mac: GUEST_MAC, ip: GUEST_IP }]);
    expect(lan.stack.leaseHolderOf(GUEST_IP)).toBe(GUEST_MAC);
    lan.advance(LEASE_MS + 1);
    expect(lan.stack.leases()).toEqual([]);
    expect(lan.stack.leaseHolderOf(GUEST_IP)).toBeUndefined();
  });
});
