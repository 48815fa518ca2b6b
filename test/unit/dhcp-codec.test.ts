import { describe, expect, it } from 'vitest';
import { ipv4, mac, parseIpv4, parseMac } from '../../core/wire/address';
import { writeU32 } from '../../core/wire/bytes';
import { DhcpMessageType, DhcpOption, emitDhcp, encodeDomainSearch, parseDhcp, type DhcpMessage, type DhcpReplyRepr } from '../../core/wire/dhcp';
import { isDrop } from '../../core/wire/parse-result';
import { seededRandom } from '../support/frames';

const hex = (s: string) =>
  Uint8Array.from(
    s
      .replace(/\s+/g, '')
      .match(/../g)!
      .map((b) => parseInt(b, 16)),
  );
const toHex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
const ascii = (b: Uint8Array) => String.fromCharCode(...b);

function parsed(b: Uint8Array): DhcpMessage {
  const r = parseDhcp(b);
  if (isDrop(r)) throw new Error(`unexpected drop ${r}`);
  return r;
}

// The UDP payload of a DHCPDISCOVER captured from busybox 1.35.0 `udhcpc -i va` (MAC 52:54:00:12:34:56):
// 300 bytes; options 53, 57 (576), 55, 60 ("udhcp 1.35.0"), 61 (type 1 + MAC), END, zero padding.
const UDHCPC_DISCOVER = (() => {
  const b = new Uint8Array(300);
  b.set(hex('01010600 d7d5901d 00000000 00000000 00000000 00000000 00000000 525400123456'), 0);
  b.set(hex('63825363 350101 39020240 3707 0103060c0f1c2a 3c0c 756468637020312e33352e30 3d07 01525400123456 ff'), 236);
  return b;
})();

/** A minimal BOOTREQUEST with the given options area (after the cookie). */
function request(options: Uint8Array, patch: (b: Uint8Array) => void = () => {}): Uint8Array {
  const b = new Uint8Array(240 + options.length);
  b.set([1, 1, 6, 0]);
  b.set(hex('525400aabbcc'), 28);
  writeU32(b, 236, 0x63825363);
  b.set(options, 240);
  patch(b);
  return b;
}

describe('parseDhcp', () => {
  it('reads a busybox udhcpc DISCOVER', () => {
    const m = parsed(UDHCPC_DISCOVER);
    expect(m).toMatchObject({ op: 1, htype: 1, hlen: 6, hops: 0, xid: 0xd7d5901d, secs: 0, flags: 0, ciaddr: 0, yiaddr: 0, siaddr: 0, giaddr: 0 });
    expect(m.chaddr).toBe(parseMac('52:54:00:12:34:56'));
    expect(toHex(m.chaddrRaw)).toBe(`525400123456${'00'.repeat(10)}`);
    expect(m.messageType).toBe(DhcpMessageType.DISCOVER);
    expect(m.maxMessageSize).toBe(576);
    expect(Array.from(m.parameterRequestList!)).toEqual([1, 3, 6, 12, 15, 28, 42]);
    expect(toHex(m.clientId!)).toBe('01525400123456');
    expect(ascii(m.options.get(60)!)).toBe('udhcp 1.35.0');
    expect(m.hostname).toBeUndefined();
    expect(m.requestedIp).toBeUndefined();
    expect(m.clientId!.buffer).toBe(UDHCPC_DISCOVER.buffer); // a view, not a copy
  });

  it('reads requested IP, server id and hostname (trailing NUL removed), and tolerates a missing END', () => {
    const m = parsed(request(hex('350103 3204 0a00020f 3604 0a000202 0c06 677565737400')));
    expect(m.messageType).toBe(DhcpMessageType.REQUEST);
    expect(m.requestedIp).toBe(parseIpv4('10.0.2.15'));
    expect(m.serverId).toBe(parseIpv4('10.0.2.2'));
    expect(m.hostname).toBe('guest');
  });

  it('joins repeated options in order (RFC 3396)', () => {
    const m = parsed(request(hex('3702 0103 350101 3703 060c0f ff')));
    expect(Array.from(m.parameterRequestList!)).toEqual([1, 3, 6, 12, 15]);
  });

  it('reads options overloaded into file, then sname (RFC 2131 order)', () => {
    const b = request(hex('340103 3701 01 ff'), (x) => {
      x.set(hex('3701 03 350101 3401 01 ff'), 108); // file; a nested option 52 is ignored
      x.set(hex('3701 06 0c02 6869 ff'), 44); // sname
    });
    const m = parsed(b);
    expect(m.overload).toBe(3);
    expect(Array.from(m.parameterRequestList!)).toEqual([1, 3, 6]);
    expect(m.messageType).toBe(1);
    expect(m.hostname).toBe('hi');
    expect(Array.from(m.options.get(DhcpOption.OVERLOAD)!)).toEqual([3]);
  });

  it('ignores sname and file when not overloaded', () => {
    const m = parsed(request(hex('350101 ff'), (x) => x.set(hex('3701 01'), 108)));
    expect(m.parameterRequestList).toBeUndefined();
    expect(m.overload).toBeUndefined();
  });

  it('gives no MAC for a non-Ethernet chaddr', () => {
    expect(parsed(request(hex('ff'), (x) => (x[1] = 6))).chaddr).toBeNull();
    expect(parsed(request(hex('ff'), (x) => (x[2] = 16))).chaddr).toBeNull();
  });

  it('reports every drop reason', () => {
    expect(parseDhcp(new Uint8Array(239))).toBe('dhcp-truncated');
    expect(parseDhcp(request(hex('ff'), (x) => (x[239] = 0x64)))).toBe('dhcp-bad-cookie');
    expect(parseDhcp(request(hex('3505 01')))).toBe('dhcp-option-overrun');
    expect(parseDhcp(request(hex('0000 35')))).toBe('dhcp-option-overrun');
    expect(parseDhcp(request(hex('340101 ff'), (x) => x.set(hex('3705 01'), 108 + 125)))).toBe('dhcp-option-overrun');
    expect(parseDhcp(request(hex('340102 ff'), (x) => x.set(hex('0c40'), 44)))).toBe('dhcp-option-overrun');
    for (const bad of ['35020101', '320300000a', '36050a0002020a', '3d0101', '390105', '34020101', '340101 340101']) {
      expect(parseDhcp(request(hex(`${bad}ff`)))).toBe('dhcp-option-bad-length');
    }
  });

  it('returns a drop reason or a message for every truncation, never throws', () => {
    for (let len = 0; len <= UDHCPC_DISCOVER.length; len++) {
      const r = parseDhcp(UDHCPC_DISCOVER.subarray(0, len));
      if (len < 240) expect(r).toBe('dhcp-truncated');
      else if (isDrop(r)) expect(r).toBe('dhcp-option-overrun');
    }
  });

  it('never throws on 20,000 random inputs', () => {
    const rand = seededRandom(0xd4c9).next;
    let parsedCount = 0;
    for (let k = 0; k < 20_000; k++) {
      const b = new Uint8Array(Math.floor(rand() * 400));
      for (let i = 0; i < b.length; i++) b[i] = Math.floor(rand() * 256);
      // Mostly valid cookies and small option codes/lengths, so the option walker is what gets fuzzed.
      if (b.length >= 240 && rand() < 0.8) writeU32(b, 236, 0x63825363);
      // [code, usual length]; PAD and END take no length byte.
      const codes = [
        [0, 0],
        [1, 4],
        [12, 5],
        [50, 4],
        [52, 1],
        [53, 1],
        [54, 4],
        [55, 3],
        [57, 2],
        [61, 7],
        [255, 0],
      ];
      const r = rand();
      if (r < 0.5) {
        // A plausible option stream in the options area and both overloadable fields.
        for (const [start, end] of [
          [240, b.length],
          [44, 108],
          [108, 236],
        ]) {
          for (let i = start; i < Math.min(end, b.length); ) {
            const [code, usual] = codes[Math.floor(rand() * codes.length)];
            b[i] = code;
            if (code === 0 || code === 255 || i + 1 >= b.length) {
              i++;
              continue;
            }
            b[i + 1] = rand() < 0.9 ? usual : Math.floor(rand() * 8);
            i += 2 + b[i + 1];
          }
        }
      } else if (r < 0.7) {
        for (let i = 44; i < b.length; i++) if (rand() < 0.5) b[i] = codes[Math.floor(rand() * codes.length)][0];
      }
      if (!isDrop(parseDhcp(b))) parsedCount++;
    }
    expect(parsedCount).toBeGreaterThan(100);
  });
});

const ACK: DhcpReplyRepr = {
  messageType: DhcpMessageType.ACK,
  xid: 0xd7d5901d,
  flags: 0,
  yiaddr: parseIpv4('10.0.2.15'),
  chaddr: parseMac('52:54:00:12:34:56'),
  serverId: parseIpv4('10.0.2.2'),
  leaseTimeSeconds: 86400,
  subnetMask: parseIpv4('255.255.255.0'),
  router: parseIpv4('10.0.2.2'),
  dnsServers: [parseIpv4('10.0.2.3')],
  domainName: 'weft.internal',
  mtu: 1500,
  broadcastAddress: parseIpv4('10.0.2.255'),
};

describe('emitDhcp', () => {
  it('builds an ACK byte for byte', () => {
    const b = emitDhcp(ACK);
    expect(b.length).toBe(311);
    expect(toHex(b.subarray(0, 44))).toBe(toHex(hex('02010600 d7d5901d 00000000 00000000 0a00020f 00000000 00000000 525400123456 00000000000000000000')));
    expect(b.subarray(44, 236).every((x) => x === 0)).toBe(true);
    const options = hex(`63825363 350105 3604 0a000202 3304 00015180 3a04 0000a8c0 3b04 00012750 0104 ffffff00 0304 0a000202
      0604 0a000203 0f0d ${toHex(new TextEncoder().encode('weft.internal'))} 1a02 05dc 1c04 0a0002ff ff`);
    expect(toHex(b.subarray(236, 236 + options.length))).toBe(toHex(options));
    expect(b.subarray(236 + options.length).every((x) => x === 0)).toBe(true);
  });

  it('round-trips through parseDhcp', () => {
    const m = parsed(emitDhcp({ ...ACK, flags: 0x8000, ciaddr: ipv4(1), siaddr: ipv4(2), giaddr: ipv4(3), searchDomains: ['weft.internal', 'example.com'] }));
    expect(m).toMatchObject({ op: 2, htype: 1, hlen: 6, xid: ACK.xid, flags: 0x8000, ciaddr: 1, yiaddr: ACK.yiaddr, siaddr: 2, giaddr: 3, chaddr: ACK.chaddr });
    expect(m.messageType).toBe(DhcpMessageType.ACK);
    expect(m.serverId).toBe(ACK.serverId);
    expect(toHex(m.options.get(DhcpOption.DOMAIN_SEARCH)!)).toBe('047765667408696e7465726e616c00076578616d706c6503636f6d00');
    expect(ascii(m.options.get(DhcpOption.DOMAIN_NAME)!)).toBe('weft.internal');
  });

  it('sends a NAK with a message and no lease', () => {
    const m = parsed(emitDhcp({ messageType: DhcpMessageType.NAK, xid: 9, flags: 0, chaddr: mac(1), serverId: ipv4(2), message: 'no' }));
    expect(m.messageType).toBe(DhcpMessageType.NAK);
    expect(ascii(m.options.get(DhcpOption.MESSAGE)!)).toBe('no');
    expect(m.options.has(DhcpOption.LEASE_TIME)).toBe(false);
    expect(m.yiaddr).toBe(0);
  });

  it('pads a short reply to the BOOTP minimum of 300 bytes', () => {
    const b = emitDhcp({ messageType: DhcpMessageType.NAK, xid: 9, flags: 0, chaddr: mac(1), serverId: ipv4(2) });
    expect(b.length).toBe(300);
    expect(toHex(b.subarray(236, 250))).toBe('63825363350106360400000002ff');
    expect(b.subarray(250).every((x) => x === 0)).toBe(true);
  });

  it('splits a value over 255 bytes into consecutive options (RFC 3396)', () => {
    const domains = Array.from({ length: 30 }, (_, i) => `domain${i}.example.org`);
    const b = emitDhcp({ ...ACK, searchDomains: domains });
    expect(b.length).toBeGreaterThan(300);
    const encoded = encodeDomainSearch(domains);
    expect(encoded.length).toBeGreaterThan(510);
    let count = 0;
    for (let i = 240; b[i] !== 0xff; i += 2 + b[i + 1]) if (b[i] === DhcpOption.DOMAIN_SEARCH) count++;
    expect(count).toBe(3);
    expect(toHex(parsed(b).options.get(DhcpOption.DOMAIN_SEARCH)!)).toBe(toHex(encoded));
  });

  it('rejects names that cannot be encoded', () => {
    expect(() => encodeDomainSearch(['a..b'])).toThrow(RangeError);
    expect(() => encodeDomainSearch(['x'.repeat(64)])).toThrow(RangeError);
    expect(() => encodeDomainSearch([Array.from({ length: 5 }, () => 'y'.repeat(60)).join('.')])).toThrow(RangeError);
    expect(() => encodeDomainSearch(['caf\u00e9.example'])).toThrow(RangeError);
    expect(toHex(encodeDomainSearch(['example.com.']))).toBe('076578616d706c6503636f6d00');
  });
});
