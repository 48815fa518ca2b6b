// The `weft` command line contract: help, version, exit codes for bad flags and unimplemented parts.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseForward } from '../../node-host/vm-options';
import { parseIpv4 } from '../../core/wire/address';
import { REPO_ROOT, weftBundle } from '../harness/weft-bundle';

function weft(...args: string[]) {
  const r = spawnSync(process.execPath, [weftBundle(), ...args], { encoding: 'utf8', timeout: 10_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('weft CLI', () => {
  it('prints its version', () => {
    const { version } = JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(weft('--version')).toMatchObject({ code: 0, stdout: `weft ${version}\n` });
  });

  it('documents every vm flag in weft vm --help', () => {
    const r = weft('vm', '--help');
    expect(r.code).toBe(0);
    for (const flag of [
      '--qemu unix:PATH',
      '--qemu tcp:HOST:PORT',
      '--dgram LPORT:RPORT',
      '--tap-fd N',
      '--upstream',
      '--mtu N',
      '--pcap FILE',
      '--pcap-snaplen N',
      '--allow-host-loopback',
      '--forward',
    ]) {
      expect(r.stdout).toContain(flag);
    }
  });

  it('has top-level and relay help', () => {
    expect(weft('--help')).toMatchObject({ code: 0, stdout: expect.stringContaining('weft vm --help') });
    expect(weft('relay', '--help')).toMatchObject({ code: 0, stdout: expect.stringContaining('--listen HOST:PORT') });
    expect(weft('start', '--help')).toMatchObject({ code: 0, stdout: expect.stringContaining('weft relay --demo') });
  });

  it.each([
    [['vm', '--tap-fd', '3', '--bogus'], /unknown option --bogus/],
    [['vm'], /a link is required/],
    [['vm', '--tap-fd', '3', '--tap-fd', '4', '--tap-vnet-hdr'], /--tap-vnet-hdr works with a single link/],
    [['vm', '--tap-fd', 'x'], /bad value for --tap-fd/],
    [['vm', '--dgram', '5555'], /bad value for --dgram/],
    [['vm', '--qemu', 'udp:1'], /bad value for --qemu/],
    [['vm', '--tap-fd', '3', '--mtu', '9999999'], /bad value for --mtu/],
    [['vm', '--dgram', '1:2', '--tap-vnet-hdr'], /--tap-vnet-hdr goes with --tap-fd/],
    [['vm', '--tap-fd', '3', '--tap-vnet-hdr', '--mtu', '65520'], /at most 65500/],
    [['vm', '--dgram', '5555:5556', '--mtu', '65494'], /too large with --dgram \(at most 65493: a frame travels as one UDP datagram/],
    [['vm', '--tap-fd', '3', '--pcap-snaplen', '128'], /--pcap-snaplen goes with --pcap FILE/],
    [['vm', '--tap-fd', '3', '--pcap', 'x.pcap', '--pcap-snaplen', '63'], /bad value for --pcap-snaplen: "63" \(expected an integer value in 64…262144\)/],
    [['vm', '--tap-fd', '3', '--pcap', 'x.pcap', '--pcap-snaplen', '262145'], /bad value for --pcap-snaplen/],
    [['vm', '--tap-fd', '3', '--upstream', 'socks'], /bad value for --upstream/],
    [['vm', '--tap-fd', '3', '--forward', '8080'], /bad value for --forward/],
    [['vm', '--tap-fd', '3', '--forward', '8080:10.0.3.5:80'], /bad value for --forward: "8080:10.0.3.5:80" \(expected a guest address in 10.0.2.0\/24\)/],
    [['vm', '--tap-fd', '3', '--forward', '8080:10.0.2.2:80'], /not the network's, its broadcast or weft's own \(10.0.2.2, 10.0.2.3\)/],
    [['vm', '--tap-fd', '3', '--upstream', 'wisp://127.0.0.1:8080/wisp'], /bad value for --upstream/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ])('exits 2 for %j', (args, message) => {
    const r = weft(...args);
    expect(r.stderr).toMatch(message);
    expect(r.code).toBe(2);
  });

  it('exits 1 with a clear error when --tap-fd is not a TAP', () => {
    const r = weft('vm', '--tap-fd', '0');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('is not a character device');
  });
});

describe('weft vm --forward', () => {
  it.each([
    ['8080:80', { protocol: 'tcp', host: '127.0.0.1', hostPort: 8080, guestPort: 80 }],
    ['0.0.0.0:8080:80', { protocol: 'tcp', host: '0.0.0.0', hostPort: 8080, guestPort: 80 }],
    ['8080:10.0.2.16:80', { protocol: 'tcp', host: '127.0.0.1', hostPort: 8080, guestPort: 80, guestIp: parseIpv4('10.0.2.16') }],
    ['[::1]:8080:10.0.2.16:80', { protocol: 'tcp', host: '::1', hostPort: 8080, guestPort: 80, guestIp: parseIpv4('10.0.2.16') }],
    ['udp:5353:10.0.2.17:53', { protocol: 'udp', host: '127.0.0.1', hostPort: 5353, guestPort: 53, guestIp: parseIpv4('10.0.2.17') }],
  ])('reads %s', (text, forward) => {
    expect(parseForward(text)).toEqual(forward);
  });
});
