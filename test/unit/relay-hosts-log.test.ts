// The relay's own /etc/hosts reading and its per-IP throttle of refusal log lines.

import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { HostsFile, parseHosts } from '../../node-host/relay/hosts-file';
import { formatIp } from '../../node-host/relay/ip-range';
import { LogThrottle } from '../../node-host/relay/log-throttle';

const texts = (list: ReturnType<HostsFile['lookup']>) => list?.map(formatIp);

describe('hosts file', () => {
  it('maps every name and alias to its addresses, without case, comments or bad lines', () => {
    const hosts = parseHosts(
      '# comment\n127.0.0.1\tlocalhost Local.Example.  # trailing\n::1 localhost ip6-localhost\nnot-an-ip name\n10.0.0.1 local.example\n127.0.0.1 localhost\n',
    );
    expect(texts(hosts.get('localhost'))).toEqual(['127.0.0.1', '::1']);
    expect(texts(hosts.get('local.example'))).toEqual(['127.0.0.1', '10.0.0.1']);
    expect(texts(hosts.get('ip6-localhost'))).toEqual(['::1']);
    expect(hosts.has('name')).toBe(false);
  });

  it('is read again when it changes, and a missing file lists nothing', () => {
    const dir = mkdtempSync(join(tmpdir(), 'weft-hosts-'));
    try {
      const path = join(dir, 'hosts');
      writeFileSync(path, '192.0.2.1 a.test\n');
      const h = new HostsFile(path);
      expect(texts(h.lookup('A.test.', 0))).toEqual(['192.0.2.1']);
      writeFileSync(path, '192.0.2.2 a.test\n');
      utimesSync(path, new Date(), new Date(Date.now() + 10_000));
      expect(texts(h.lookup('a.test', 1000)), 'not looked at again within 5 s').toEqual(['192.0.2.1']);
      expect(texts(h.lookup('a.test', 6000))).toEqual(['192.0.2.2']);
      rmSync(path);
      expect(h.lookup('a.test', 12_000)).toBeUndefined();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('refusal log throttle', () => {
  it('lets a burst through per IP, then a few a second, and says how many it skipped', () => {
    let suppressed = 0;
    const t = new LogThrottle(() => suppressed++);
    let written = 0;
    for (let i = 0; i < 1000; i++) if (t.admit('198.51.100.1', 0)) written++;
    expect(written).toBe(50);
    expect(suppressed).toBe(950);
    expect(t.admit('198.51.100.2', 0), 'another IP has its own budget').toEqual({});
    expect(t.admit('198.51.100.1', 1000)).toEqual({ suppressed: 950 });
    expect(t.admit('198.51.100.1', 1000)).toEqual({});
  });
});
