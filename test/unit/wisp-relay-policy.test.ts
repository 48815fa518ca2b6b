// The relay's address handling: IP parsing in every spelling, CIDR matching, embedded IPv4, the
// policy's order of rules, the rate limiter, and the relay's flag parsing.
import { describe, expect, it } from 'vitest';
import { DestinationPolicy, parsePolicyEntry, type PolicyConfig } from '../../node-host/relay/destination-policy';
import { canonicalIp, cidrContains, formatIp, parseCidr, parseIp } from '../../node-host/relay/ip-range';
import { parseRelayOptions } from '../../node-host/relay/relay-options';
import { KeyedRateLimiter, TokenBucket } from '../../node-host/relay/token-bucket';

const ip = (t: string) => parseIp(t)!;

describe('ip-range', () => {
  it('parses IPv4, IPv6 (compressed, embedded IPv4, brackets, zones) and formats them back', () => {
    expect([...ip('192.168.1.2').bytes]).toEqual([192, 168, 1, 2]);
    expect(formatIp(ip('0:0:0:0:0:ffff:7f00:0001'))).toBe('::ffff:7f00:1');
    expect(formatIp(ip('::ffff:127.0.0.1'))).toBe('::ffff:7f00:1');
    expect(formatIp(ip('[fe80::1%eth0]'))).toBe('fe80::1');
    expect(formatIp(ip('2001:db8:0:0:1:0:0:1'))).toBe('2001:db8::1:0:0:1');
    expect(formatIp(ip('::'))).toBe('::');
    for (const bad of ['1.2.3', '256.1.1.1', '1::2::3', 'example.com', '::g', '']) expect(parseIp(bad)).toBeUndefined();
  });

  it('unwraps IPv4-mapped, IPv4-compatible and NAT64 addresses, but not :: or ::1', () => {
    expect(formatIp(canonicalIp(ip('::ffff:10.0.0.1')))).toBe('10.0.0.1');
    expect(formatIp(canonicalIp(ip('::7f00:1')))).toBe('127.0.0.1');
    expect(formatIp(canonicalIp(ip('64:ff9b::a9fe:a9fe')))).toBe('169.254.169.254');
    expect(formatIp(canonicalIp(ip('::1')))).toBe('::1');
    expect(formatIp(canonicalIp(ip('::')))).toBe('::');
  });

  it('matches CIDR ranges bit by bit', () => {
    const c = parseCidr('100.64.0.0/10')!;
    expect(cidrContains(c, ip('100.127.255.255'))).toBe(true);
    expect(cidrContains(c, ip('100.128.0.0'))).toBe(false);
    expect(cidrContains(parseCidr('fe80::/10')!, ip('febf::1'))).toBe(true);
    expect(cidrContains(parseCidr('fe80::/10')!, ip('fec0::1'))).toBe(false);
    expect(cidrContains(parseCidr('0.0.0.0/0')!, ip('::1'))).toBe(false);
    expect(parseCidr('10.0.0.0/33')).toBeUndefined();
  });
});

describe('DestinationPolicy', () => {
  const policy = (over: Partial<PolicyConfig> = {}) =>
    new DestinationPolicy({ allow: [], deny: [], allowPrivate: false, allowLoopback: false, ports: [], ...over });
  const allowed = (p: DestinationPolicy, host: string, addr: string, port = 443) => p.check(host, ip(addr), port).allowed;

  it.each([
    '127.0.0.1',
    '0.0.0.0',
    '0.1.2.3',
    '10.0.0.1',
    '172.31.255.255',
    '192.168.0.1',
    '100.64.0.1',
    '169.254.169.254',
    '224.0.0.251',
    '239.255.255.250',
    '255.255.255.255',
    '240.0.0.1',
    '::1',
    '::',
    'fe80::1',
    'fc00::1',
    'fdff::1',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:192.168.0.1',
    '::ffff:169.254.169.254',
    '64:ff9b::7f00:1',
    '::7f00:1',
    // special-purpose and transition ranges: 6to4 wrapping 127.0.0.1 and 192.168.0.1, Teredo, local-use
    // NAT64, discard-only, benchmarking, documentation, SRv6, the 6to4 relay anycast
    '2002:7f00:1::1',
    '2002:c0a8:1::1',
    '2001:0:4136:e378:8000:63bf:3fff:fdd2',
    '64:ff9b:1::7f00:1',
    '100::1',
    '2001:2::1',
    '3fff::1',
    '5f00::1',
    '192.88.99.1',
  ])('denies %s by default', (addr) => {
    expect(allowed(policy(), 'x', addr)).toBe(false);
  });

  it('allows public addresses', () => {
    expect(allowed(policy(), 'x', '93.184.216.34')).toBe(true);
    expect(allowed(policy(), 'x', '2606:2800:220:1::1')).toBe(true);
    expect(allowed(policy(), 'x', '172.32.0.1')).toBe(true);
  });

  it('--allow-private and --allow-loopback open their groups only', () => {
    const p = policy({ allowPrivate: true });
    expect(allowed(p, 'x', '10.0.0.1')).toBe(true);
    expect(allowed(p, 'x', '::ffff:100.64.0.1')).toBe(true);
    expect(allowed(p, 'x', '169.254.169.254')).toBe(false);
    expect(allowed(p, 'x', '127.0.0.1')).toBe(false);
    const l = policy({ allowLoopback: true });
    expect(allowed(l, 'x', '127.0.0.1')).toBe(true);
    expect(allowed(l, 'x', '::ffff:127.0.0.1')).toBe(true);
    expect(allowed(l, 'x', '10.0.0.1')).toBe(false);
  });

  it('applies deny before allow, hostnames with subdomains, and ports', () => {
    const p = policy({
      allow: [parsePolicyEntry('169.254.169.254')!, parsePolicyEntry('db.internal')!],
      deny: [parsePolicyEntry('.example.com')!, parsePolicyEntry('93.184.216.0/24')!],
      ports: [
        [80, 80],
        [8000, 8999],
      ],
    });
    expect(allowed(p, 'x', '169.254.169.254', 80)).toBe(true);
    expect(allowed(p, 'DB.internal.', '10.1.1.1', 80)).toBe(true);
    expect(allowed(p, 'db.internal', '10.1.1.1', 443)).toBe(false);
    expect(allowed(p, 'www.example.com', '1.1.1.1', 80)).toBe(false);
    expect(allowed(p, 'example.com', '1.1.1.1', 8080)).toBe(false);
    expect(allowed(p, 'x', '93.184.216.34', 80)).toBe(false);
    expect(allowed(p, 'x', '1.1.1.1', 8500)).toBe(true);
    expect(p.check('x', ip('127.0.0.1'), 80)).toEqual({ allowed: false, why: '127.0.0.1 is loopback (127.0.0.0/8)' });
  });
});

describe('token buckets', () => {
  it('allows a burst, then the rate', () => {
    const b = new TokenBucket(10, 2, 0);
    expect([b.tryTake(0), b.tryTake(0), b.tryTake(0)]).toEqual([true, true, false]);
    expect(b.tryTake(100)).toBe(true);
    expect(b.tryTake(100)).toBe(false);
  });
  it('reports how long to pause after an overdraft', () => {
    const b = new TokenBucket(1000, 1000, 0);
    expect(b.consume(1000, 0)).toBe(0);
    expect(b.consume(500, 0)).toBe(500);
  });
  it('keys buckets per client and stays bounded', () => {
    const l = new KeyedRateLimiter(1, 1, 3);
    expect(l.tryTake('a', 0)).toBe(true);
    expect(l.tryTake('a', 0)).toBe(false);
    for (const k of ['b', 'c', 'd', 'e']) expect(l.tryTake(k, 0)).toBe(true);
  });
});

describe('relay flags', () => {
  it('has safe defaults', () => {
    expect(parseRelayOptions([])).toMatchObject({
      host: '127.0.0.1',
      port: 8080,
      path: '/wisp/',
      demo: false,
      rate: 200,
      bandwidth: 0,
      idleTimeoutMs: 0,
      firstStreamTimeoutMs: 120_000,
      maxClientsPerIp: 64,
      connectTimeoutMs: 10_000,
      policy: { allowPrivate: false, allowLoopback: false, allow: [], deny: [], ports: [] },
    });
  });
  it('parses every flag', () => {
    const o = parseRelayOptions([
      '--listen',
      '[::1]:9000',
      '--path',
      '/w/',
      '--demo',
      '--allow',
      '10.0.0.0/8,db.internal',
      '--deny',
      '10.0.0.1',
      '--allow-private',
      '--allow-loopback',
      '--ports',
      '80,443,8000-8999',
      '--password',
      'u:p:q',
      '--token',
      't',
      '--origin',
      'https://a.example,https://b.example',
      '--max-clients',
      '5',
      '--max-streams-per-client',
      '6',
      '--connect-timeout',
      '500ms',
      '--idle-timeout',
      '2m',
      '--first-stream-timeout',
      '0',
      '--rate',
      '7',
      '--bandwidth',
      '1.5M',
      '--dns-server',
      '1.1.1.1',
      '--dns-server',
      '[2606:4700::1111]:53',
    ]);
    expect(o).toMatchObject({
      host: '::1',
      port: 9000,
      path: '/w/',
      demo: true,
      password: { username: 'u', password: 'p:q' },
      token: 't',
      origins: ['https://a.example', 'https://b.example'],
      maxClients: 5,
      maxStreamsPerClient: 6,
      connectTimeoutMs: 500,
      idleTimeoutMs: 120_000,
      firstStreamTimeoutMs: 0,
      rate: 7,
      bandwidth: 1.5 * 1024 * 1024,
      dnsServers: ['1.1.1.1', '[2606:4700::1111]:53'],
    });
    expect(o.policy.allow.map((e) => e.kind)).toEqual(['range', 'host']);
    expect(o.policy.ports).toEqual([
      [80, 80],
      [443, 443],
      [8000, 8999],
    ]);
  });
  it.each([
    [['--listen', '8080'], /bad value for --listen/],
    [['--path', 'wisp'], /bad value for --path/],
    [['--allow', 'not a host!'], /bad value for --allow/],
    [['--ports', '0'], /bad value for --ports/],
    [['--ports', '9-3'], /bad value for --ports/],
    [['--password', 'nocolon'], /bad value for --password/],
    [['--connect-timeout', '0'], /bad value for --connect-timeout/],
    [['--bandwidth', 'fast'], /bad value for --bandwidth/],
    [['--dns-server', 'dns.google'], /bad value for --dns-server/],
    [['--bogus'], /unknown option --bogus/],
  ])('rejects %j', (argv, message) => {
    expect(() => parseRelayOptions(argv)).toThrow(message);
  });
});
