// weft's publish extension with real parts: `weft relay --publish-ports` and `weft vm --upstream
// wisp://… --publish GUESTPORT` on a real Linux guest (a network namespace on a TAP). A server in
// the guest — socat hashing what it gets, and busybox httpd — is reached at the relay's port from
// this host; the relay refuses publishing without authentication, outside its range and past the
// per-client cap.

import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { describeExec } from '../harness/guest-tools';
import { Netns, requireRoot, UDHCPC_SCRIPT } from '../harness/netns';
import type { WeftProcess } from '../harness/weft-process';
import { spawnWeft } from '../harness/weft-process';
import { deterministicBytes, sha256Hex, tcpExchange } from '../support/test-servers';
import { WispUpstream } from '../../node-host/wisp-upstream';
import { connectWsTransport } from '../../node-host/ws-transport';
import { startRelay, type RunningRelay } from './relay-support';

const TITLE = 'weft vm --publish through weft relay --publish-ports into a real guest';
const root = requireRoot(TITLE);
const TOKEN = 'publish-test-token';
const RANGE = [47000, 47019] as const;

async function waitForListen(ns: Netns, port: number): Promise<void> {
  for (let i = 0; i < 50; i++) {
    if ((await ns.exec(['sh', '-c', `ss -ltn | grep -q ":${port} "`])).code === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`nothing listens on guest port ${port}`);
}

/** What a WispUpstream's publish() comes to: the port, or the refusal. */
function publishOutcome(up: WispUpstream, port: number): Promise<{ port: number } | { refused: string }> {
  return new Promise((resolve) => {
    up.publish(port, { onPublished: (p) => resolve({ port: p }), onRefused: (r) => resolve({ refused: r }), onConnection: (c) => c.refuse() });
  });
}

describe.skipIf(!root.ok)(TITLE, () => {
  let ns: Netns | undefined;
  let relay: RunningRelay | undefined;
  let weft: WeftProcess | undefined;
  const relayPortOf = new Map<number, number>();

  beforeAll(async () => {
    relay = await startRelay(['--allow-loopback', '--token', TOKEN, '--publish-ports', `${RANGE[0]}-${RANGE[1]}`, '--max-published-per-client', '3']);
    ns = Netns.create('publish');
    weft = await ns.spawnWeftOnTap(['--upstream', `ws://127.0.0.1:${relay.port}/wisp/?token=${TOKEN}`, '--publish', '7000', '--publish', '8000']);
    const dhcp = await ns.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
    if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
    // A guest server that answers with the sha256 of what it received, after the client's FIN.
    // backlog=64: socat's default of 5 overflowed under a loaded suite when the ten connections
    // below arrived at once; the guest kernel then answered from SYN cookies and reset a
    // connection whose first ACK it had dropped (a real client would meet the same server so).
    ns.track(spawn('ip', ['netns', 'exec', ns.name, 'socat', 'TCP-LISTEN:7000,reuseaddr,fork,backlog=64', 'SYSTEM:sha256sum'], { stdio: 'ignore' }));
    const www = await ns.exec(['sh', '-c', 'd=$(mktemp -d) && printf "<h1>served by the guest</h1>\\n" > "$d/index.html" && echo "$d"']);
    ns.track(spawn('ip', ['netns', 'exec', ns.name, 'busybox', 'httpd', '-f', '-p', '8000', '-h', www.stdout.trim()], { stdio: 'ignore' }));
    await waitForListen(ns, 7000);
    await waitForListen(ns, 8000);
    for (const guestPort of [7000, 8000]) {
      const e = await weft.waitForEvent('published', (x) => x.guestPort === guestPort, 15_000);
      relayPortOf.set(guestPort, e.relayPort as number);
    }
  }, 90_000);

  afterAll(async () => {
    await ns?.cleanup();
    await relay?.stop();
  });

  it('logs the relay port of each guest port, inside --publish-ports', () => {
    for (const port of relayPortOf.values()) {
      expect(port).toBeGreaterThanOrEqual(RANGE[0]);
      expect(port).toBeLessThanOrEqual(RANGE[1]);
    }
    expect(new Set(relayPortOf.values()).size).toBe(2);
    expect(relay!.proc.events.filter((e) => e.event === 'published')).toHaveLength(2);
  });

  it('carries connections to the relay port into the guest server, bytes intact both ways', async () => {
    const data = deterministicBytes(4 * 1024 * 1024 + 13);
    const reply = await tcpExchange(relayPortOf.get(7000)!, data);
    expect(reply.toString().split(' ')[0]).toBe(sha256Hex(data));
    const several = Array.from({ length: 10 }, (_, i) => deterministicBytes(20_000 + i * 777));
    const replies = await Promise.all(several.map((d) => tcpExchange(relayPortOf.get(7000)!, d)));
    replies.forEach((r, i) => {
      expect(r.toString().split(' ')[0]).toBe(sha256Hex(several[i]));
    });
  }, 60_000);

  it("serves the guest's web server at the relay's port", async () => {
    const res = await fetch(`http://127.0.0.1:${relayPortOf.get(8000)}/`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('served by the guest');
  }, 30_000);

  it('refuses a port outside the range and a publication past the per-client cap; an unauthenticated relay cannot offer it', async () => {
    const up = new WispUpstream({ url: `ws://127.0.0.1:${relay!.port}/wisp/?token=${TOKEN}`, connect: connectWsTransport });
    try {
      expect(await publishOutcome(up, RANGE[1] + 1)).toMatchObject({ refused: expect.stringContaining('blocked') });
      const ok = await publishOutcome(up, 0);
      expect(ok).toMatchObject({ port: expect.any(Number) });
      await publishOutcome(up, 0);
      await publishOutcome(up, 0);
      expect(await publishOutcome(up, 0)).toMatchObject({ refused: expect.stringContaining('throttled') });
    } finally {
      up.close();
    }
    const open = spawnWeft(['relay', '--listen', '127.0.0.1:0', '--publish-ports', '47100-47110']);
    expect((await open.waitForExit(5000)).code).toBe(2);
    expect(open.stderr).toContain('--publish-ports needs --token or --password');
    // A relay without --publish-ports does not offer the extension: weft says so and keeps running.
    const plain = await startRelay(['--allow-loopback']);
    try {
      const up2 = new WispUpstream({ url: plain.wisp, connect: connectWsTransport });
      try {
        expect(await publishOutcome(up2, 0)).toMatchObject({ refused: expect.stringContaining('does not offer publishing') });
      } finally {
        up2.close();
      }
    } finally {
      await plain.stop();
    }
  }, 30_000);

  it('a published port closes with the client: the relay stops listening', async () => {
    const up = new WispUpstream({ url: `ws://127.0.0.1:${relay!.port}/wisp/?token=${TOKEN}`, connect: connectWsTransport });
    const outcome = await publishOutcome(up, 0);
    up.close();
    if (!('port' in outcome)) throw new Error(`not published: ${outcome.refused}`);
    await new Promise((r) => setTimeout(r, 300));
    await expect(tcpExchange(outcome.port, new Uint8Array(1))).rejects.toThrow(/ECONNREFUSED/);
  }, 30_000);
});
