// Property-based fuzzing of the DHCP codec and server: parsing never throws, replies parse back to
// what was emitted, and the server answers any sequence of client messages with a reply, a drop
// reason (which the stack counts) or — only where RFC 2131 says so — deliberate silence, while its
// lease table stays consistent.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_NETWORK } from '../../core/config';
import { DhcpServer } from '../../core/services/dhcp-server';
import { BOOTREPLY, DhcpMessageType as T, DhcpOption, emitDhcp, parseDhcp, type DhcpReplyRepr } from '../../core/wire/dhcp';
import { isDrop } from '../../core/wire/parse-result';
import { ipv4, mac } from '../../core/wire/address';
import { dhcpClientPayload } from '../support/frames';
import { runs } from '../support/fuzz';

const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
const cfg = { ...DEFAULT_NETWORK, leaseCount: 8 };
const poolIp = fc.integer({ min: 0, max: cfg.leaseCount + 1 }).map((k) => cfg.firstLease - 1 + k);
/** An address: mostly in or near the pool, sometimes ours, sometimes anything. */
const address = fc.oneof(poolIp, fc.constantFrom(0, cfg.gateway, cfg.dns, 0xffff_ffff), u32);
const macs = fc.constantFrom(0x5254_0000_0001, 0x5254_0000_0002, 0x5254_0000_0003, 0x0200_0000_0004);

function put(out: number[], code: number, value: ArrayLike<number>): void {
  out.push(code, value.length, ...Array.from(value));
}
const ip4 = (ip: number) => [ip >>> 24, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];

/** A client message: a well-formed BOOTREQUEST with a random mix of the options the server reads. */
const clientMessage = fc
  .record({
    op: fc.oneof(fc.constant(1), fc.integer({ min: 0, max: 3 })),
    hw: fc.oneof(fc.constant([1, 6]), fc.tuple(fc.integer({ min: 0, max: 3 }), fc.integer({ min: 0, max: 16 }))),
    xid: u32,
    flags: fc.constantFrom(0, 0x8000),
    ciaddr: fc.oneof(fc.constant(0), address),
    giaddr: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u32 }),
    mac: macs,
    type: fc.oneof({ weight: 9, arbitrary: fc.integer({ min: 1, max: 8 }) }, { weight: 1, arbitrary: fc.integer({ min: 0, max: 255 }) }),
    requestedIp: fc.option(address),
    serverId: fc.option(fc.oneof(fc.constant(cfg.gateway), address)),
    clientId: fc.option(fc.uint8Array({ minLength: 2, maxLength: 8 })),
    hostname: fc.option(fc.uint8Array({ minLength: 1, maxLength: 20 })),
    maxSize: fc.option(u16),
  })
  .map((m) => {
    const b = dhcpClientPayload(m.type, m.mac, m.xid, []);
    b[0] = m.op;
    b[1] = m.hw[0];
    b[2] = m.hw[1];
    b[10] = m.flags >>> 8;
    b.set(ip4(m.ciaddr), 12);
    b.set(ip4(m.giaddr), 24);
    const opts: number[] = [];
    put(opts, DhcpOption.MESSAGE_TYPE, [m.type]);
    if (m.requestedIp !== null) put(opts, DhcpOption.REQUESTED_IP, ip4(m.requestedIp));
    if (m.serverId !== null) put(opts, DhcpOption.SERVER_ID, ip4(m.serverId));
    if (m.clientId !== null) put(opts, DhcpOption.CLIENT_ID, m.clientId);
    if (m.hostname !== null) put(opts, DhcpOption.HOSTNAME, m.hostname);
    if (m.maxSize !== null) put(opts, DhcpOption.MAX_MESSAGE_SIZE, [m.maxSize >>> 8, m.maxSize & 0xff]);
    opts.push(255);
    const out = new Uint8Array(240 + opts.length);
    out.set(b.subarray(0, 240));
    out.set(opts, 240);
    return out;
  });

/** A client message with some bytes overwritten (the options area most often). */
const mutated = fc.tuple(clientMessage, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.boolean()), { maxLength: 6 })).map(([b, edits]) => {
  const out = b.slice();
  for (const [pos, value, inOptions] of edits) out[inOptions ? 240 + (pos % (out.length - 240)) : pos % out.length] = value;
  return out;
});

describe('DHCP codec', () => {
  it('parseDhcp never throws on arbitrary or mutated messages', () => {
    const input = fc.oneof(fc.uint8Array({ maxLength: 600 }), mutated);
    fc.assert(
      fc.property(input, (b) => void parseDhcp(b)),
      runs(201, 3000),
    );
  });

  it('emitDhcp → parseDhcp round-trips a reply', () => {
    const label = fc.stringMatching(/^[a-z0-9-]{1,20}$/);
    const domain = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));
    const reply = fc.record(
      {
        messageType: fc.constantFrom(T.OFFER, T.ACK, T.NAK),
        xid: u32,
        flags: u16,
        yiaddr: u32.map(ipv4),
        chaddr: fc.integer({ min: 0, max: 2 ** 48 - 1 }).map(mac),
        serverId: u32.map(ipv4),
        leaseTimeSeconds: u32,
        subnetMask: u32,
        dnsServers: fc.array(u32.map(ipv4), { minLength: 1, maxLength: 70 }), // > 255 bytes splits the option (RFC 3396)
        domainName: domain,
        searchDomains: fc.array(domain, { maxLength: 30 }),
        mtu: u16,
        message: fc.stringMatching(/^[ -~]{1,300}$/),
      },
      { requiredKeys: ['messageType', 'xid', 'flags', 'chaddr', 'serverId'] },
    );
    fc.assert(
      fc.property(reply, (r: DhcpReplyRepr) => {
        const m = parseDhcp(emitDhcp(r));
        if (isDrop(m)) throw new Error(m);
        expect(m.op).toBe(BOOTREPLY);
        expect(m).toMatchObject({ xid: r.xid, flags: r.flags, yiaddr: r.yiaddr ?? 0, chaddr: r.chaddr, messageType: r.messageType, serverId: r.serverId });
        if (r.dnsServers) expect(Array.from(m.options.get(DhcpOption.DNS_SERVERS) ?? [])).toEqual(r.dnsServers.flatMap(ip4));
        if (r.message) expect(new TextDecoder().decode(m.options.get(DhcpOption.MESSAGE))).toBe(r.message);
        if (r.leaseTimeSeconds !== undefined) expect(Array.from(m.options.get(DhcpOption.LEASE_TIME) ?? [])).toEqual(ip4(r.leaseTimeSeconds));
      }),
      runs(202, 300, 0.2),
    );
  });
});

describe('DHCP server', () => {
  it('answers every message sequence with a reply, a drop reason or a silence RFC 2131 asks for', () => {
    const step = fc.tuple(fc.oneof({ weight: 3, arbitrary: clientMessage }, { weight: 1, arbitrary: mutated }), fc.integer({ min: 0, max: 120_000 }));
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 40 }), (steps) => {
        const server = new DhcpServer(cfg, () => {});
        let now = 0;
        for (const [bytes, dt] of steps) {
          now += dt;
          const msg = parseDhcp(bytes);
          if (isDrop(msg)) continue;
          const r = server.handle(msg, now);
          if (typeof r === 'string') {
            expect(r).toMatch(/^dhcp-[a-z-]+$/);
          } else if (r === null) {
            const foreignRequest = msg.messageType === T.REQUEST && msg.serverId !== undefined && msg.serverId !== cfg.gateway;
            expect(msg.messageType === T.DECLINE || msg.messageType === T.RELEASE || foreignRequest, `silence for type ${msg.messageType}`).toBe(true);
          } else {
            const reply = parseDhcp(r.payload);
            if (isDrop(reply)) throw new Error(reply);
            expect(reply.op).toBe(BOOTREPLY);
            expect(reply.xid).toBe(msg.xid);
            expect([T.OFFER, T.ACK, T.NAK]).toContain(reply.messageType);
            if (reply.messageType !== T.NAK && msg.messageType !== T.INFORM) {
              expect(reply.yiaddr - cfg.firstLease).toBeGreaterThanOrEqual(0);
              expect(reply.yiaddr - cfg.firstLease).toBeLessThan(cfg.leaseCount);
            }
          }
          // The lease table: pool addresses only, never one address twice.
          const ips = server.leases().map((l) => l.ip);
          expect(new Set(ips).size).toBe(ips.length);
          expect(ips.length).toBeLessThanOrEqual(cfg.leaseCount);
        }
      }),
      runs(203, 300, 0.1),
    );
  });
});
