// The one rule for which addresses a guest may hold: the stack learns sources by it, DHCP leases by
// it and `weft vm --forward` checks a guest address by it.
import { describe, expect, it } from 'vitest';
import { DEFAULT_NETWORK, guestAddressProblem, resolveNetworkConfig } from '../../core/config';
import { parseIpv4 } from '../../core/wire/address';

const at = (text: string) => guestAddressProblem(DEFAULT_NETWORK, parseIpv4(text));

describe('guestAddressProblem', () => {
  it('accepts any host address of the network that weft does not answer for', () => {
    for (const ip of ['10.0.2.1', '10.0.2.4', '10.0.2.15', '10.0.2.254']) expect(at(ip)).toBeUndefined();
  });

  it("names what is wrong with the rest: outside, the network's own, its broadcast, weft's", () => {
    expect(at('10.0.3.15')).toBe('outside-network');
    expect(at('192.168.1.2')).toBe('outside-network');
    expect(at('10.0.2.0')).toBe('network-address');
    expect(at('10.0.2.255')).toBe('broadcast');
    expect(at('10.0.2.2')).toBe('weft-address');
    expect(at('10.0.2.3')).toBe('weft-address');
  });

  it("follows the network's prefix and weft's addresses", () => {
    const wide = resolveNetworkConfig({
      network: parseIpv4('10.8.0.0'),
      prefixLength: 16,
      gateway: parseIpv4('10.8.0.1'),
      dns: parseIpv4('10.8.0.1'),
      firstLease: parseIpv4('10.8.0.100'),
    });
    expect(guestAddressProblem(wide, parseIpv4('10.8.2.255'))).toBeUndefined();
    expect(guestAddressProblem(wide, parseIpv4('10.8.255.255'))).toBe('broadcast');
    expect(guestAddressProblem(wide, parseIpv4('10.8.0.1'))).toBe('weft-address');
    expect(guestAddressProblem(wide, parseIpv4('10.0.2.15'))).toBe('outside-network');
  });
});
