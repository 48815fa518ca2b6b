// `weft vm --forward [udp:]HOSTPORT:GUESTPORT` with a real Linux guest (a network namespace on a
// TAP): a server in the guest, a client on the host's 127.0.0.1, bytes checked end to end; a guest
// port with nothing listening makes the host connection fail at once (and the log says why); UDP
// answers find their peer.

import dgram from 'node:dgram';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec } from '../harness/guest-tools';
import { Netns, requireRoot, UDHCPC_SCRIPT } from '../harness/netns';
import type { WeftProcess } from '../harness/weft-process';
import { deterministicBytes, sha256Hex, tcpExchange } from '../support/test-servers';

const TITLE = 'weft vm --forward into a real guest';
const root = requireRoot(TITLE);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

describe.skipIf(!root.ok)(TITLE, () => {
  let ns: Netns | undefined;
  let weft: WeftProcess;
  let echoPort: number;
  let closedPort: number;
  let udpPort: number;

  beforeAll(async () => {
    [echoPort, closedPort, udpPort] = [await freePort(), await freePort(), await freePort()];
    ns = Netns.create('forward');
    weft = await ns.spawnWeftOnTap(['--forward', `${echoPort}:7000`, '--forward', `${closedPort}:7001`, '--forward', `udp:${udpPort}:7002`]);
    const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
    if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
    // A guest UDP server that answers each datagram with "echo:" and the datagram, to its sender.
    const udpEcho =
      'import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(("0.0.0.0", 7002))\nwhile True:\n    d, a = s.recvfrom(65535)\n    s.sendto(b"echo:" + d, a)\n';
    ns.track((await import('node:child_process')).spawn('ip', ['netns', 'exec', ns.name, 'python3', '-c', udpEcho], { stdio: 'ignore' }));
    // A guest server that echoes the sha256 of what it received, after the client's FIN.
    const server = ns.track(
      (await import('node:child_process')).spawn('ip', ['netns', 'exec', ns.name, 'socat', 'TCP-LISTEN:7000,reuseaddr,fork,backlog=64', 'SYSTEM:sha256sum'], {
        stdio: 'ignore',
      }),
    );
    for (let i = 0; i < 50 && server.exitCode === null; i++) {
      if ((await ns.exec(['sh', '-c', 'ss -ltn | grep -q ":7000 "'])).code === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error('the guest server did not start');
  }, 60_000);

  afterAll(async () => {
    await ns?.cleanup();
  });

  it('carries a host connection to the guest server and back, bytes intact', async () => {
    const data = deterministicBytes(3 * 1024 * 1024 + 17);
    const reply = await tcpExchange(echoPort, data);
    expect(reply.toString().split(' ')[0]).toBe(sha256Hex(data));
  }, 60_000);

  it('serves several forwarded connections at once', async () => {
    const inputs = Array.from({ length: 20 }, (_, i) => deterministicBytes(10_000 + i * 1000));
    const replies = await Promise.all(inputs.map((d) => tcpExchange(echoPort, d)));
    replies.forEach((r, i) => {
      expect(r.toString().split(' ')[0]).toBe(sha256Hex(inputs[i]));
    });
  }, 60_000);

  it('fails the host connection at once when nothing listens on the guest port', async () => {
    const started = Date.now();
    const outcome = await new Promise<string>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: closedPort });
      s.on('data', () => resolve('data'));
      s.on('close', () => resolve('closed'));
      s.on('error', () => undefined);
    });
    expect(outcome).toBe('closed');
    expect(Date.now() - started).toBeLessThan(2000);
    // The log says why: the guest answered RST (the stack's reason, passed to the host socket's stream).
    const line = await weft.waitForEvent('forward-refused', (e) => typeof e.flow === 'string' && e.flow.endsWith('guest:7001'));
    expect(line).toMatchObject({ reason: 'guest-refused' });
  });

  it('forwards UDP: each host peer gets its own answers', async () => {
    const ask = async (text: string): Promise<string> => {
      const sock = dgram.createSocket('udp4');
      try {
        await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
        const reply = new Promise<string>((resolve) => sock.once('message', (m) => resolve(m.toString())));
        // UDP may be lost before the guest's socat has bound: ask again until it answers.
        for (let i = 0; i < 20; i++) {
          sock.send(`${text}\n`, udpPort, '127.0.0.1');
          const got = await Promise.race([reply, new Promise<undefined>((r) => setTimeout(r, 250))]);
          if (got !== undefined) return got;
        }
        throw new Error('no UDP answer from the guest');
      } finally {
        sock.close();
      }
    };
    const [a, b] = await Promise.all([ask('first peer'), ask('second peer')]);
    expect(a).toBe('echo:first peer\n');
    expect(b).toBe('echo:second peer\n');
  }, 30_000);
});
