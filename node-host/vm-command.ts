// `weft vm`: one Stack, its link to the guests (one, or a LAN of several), an optional pcap, and the
// timers that drive the stack.
// It runs until SIGINT/SIGTERM (exit 0) or until the link fails (exit 1), and leaves nothing open.

import type { FlowEvent } from '../core/stack-events';
import { nodeClock, runStack } from './stack-driver';
import { DEFAULT_NETWORK } from '../core/config';
import { DirectUpstream } from './direct-upstream';
import { WispUpstream } from './wisp-upstream';
import { RELAY_RESOLVER } from '../core/wisp/wisp-upstream';
import { connectWsTransport } from './ws-transport';
import { PortForwarder } from './port-forward';
import { publishGuestPort } from '../core/wisp/guest-publication';
import { dnsResolvers } from './dns-config';
import { UpstreamDnsForwarder } from '../core/services/dns-upstream-forwarder';
import { formatIpv4, formatMac, parseIpv4 } from '../core/wire/address';
import { jsonLineLog, type EventLog } from './log';
import { PcapFile } from './pcap-file';
import { DgramLink, openDgramPeers } from './links/dgram-link';
import type { FrameLink } from './links/frame-link';
import { QemuStreamLink } from './links/qemu-stream-link';
import { LanLink } from './links/lan-link';
import { DEFAULT_ROUTER } from './links/lan-switch';
import { TapFdLink } from './links/tap-fd-link';
import { parseVmOptions, type LinkChoice, type VmOptions } from './vm-options';

export { VM_HELP } from './vm-options';

/** After a clean shutdown nothing should hold the event loop; if something does, exit anyway. */
const EXIT_GRACE_MS = 500;
/** The gateway address the upstreams answer the guest from (DEFAULT_NETWORK's: weft vm takes no other). */
const GATEWAY = parseIpv4('10.0.2.2');
/** Upstream → guest bytes held per TCP connection (see runStack below). */
const VM_SEND_BUFFER_BYTES = 1024 * 1024;
/** How far that grows past the guest's largest window (a TCG guest at MTU 65520 offers about 1.8 MB). */
const VM_SEND_BUFFER_MAX_BYTES = 4 * 1024 * 1024;

/** The links of one flag: one, or one per peer of a --dgram with several. */
async function openLinks(choice: LinkChoice, opts: VmOptions): Promise<FrameLink[]> {
  switch (choice.kind) {
    case 'tap-fd':
      return [new TapFdLink(choice.fd, { vnetHdr: choice.vnetHdr, mtu: opts.mtu ?? DEFAULT_NETWORK.mtu })];
    case 'qemu':
      return [await QemuStreamLink.listen(choice.endpoint, { router: DEFAULT_ROUTER, maxClients: opts.maxGuests })];
    case 'dgram':
      if (choice.remotePorts.length === 1) return [await DgramLink.open(choice.localPort, choice.remotePorts[0])];
      return openDgramPeers(choice.localPort, choice.remotePorts);
  }
}

/** Parses the arguments and runs; resolves with the exit code. Throws UsageError for bad arguments. */
export async function runVmCommand(argv: readonly string[], log: EventLog = jsonLineLog()): Promise<number> {
  return runVm(parseVmOptions(argv), log);
}

export async function runVm(opts: VmOptions, log: EventLog): Promise<number> {
  let pcap: PcapFile | undefined;
  let link: FrameLink;
  try {
    if (opts.pcap) pcap = new PcapFile(opts.pcap, (e) => log('pcap-error', { message: e.message }), opts.pcapSnaplen);
    const links: FrameLink[] = [];
    try {
      for (const choice of opts.links) links.push(...(await openLinks(choice, opts)));
    } catch (e) {
      await Promise.all(links.map((l) => l.close()));
      throw e;
    }
    link = links.length === 1 ? links[0] : new LanLink(links, DEFAULT_ROUTER);
  } catch (e) {
    pcap?.close();
    log('error', { message: (e as Error).message });
    return 1;
  }

  const network = {
    ...(opts.mtu === undefined ? {} : { mtu: opts.mtu }),
    searchDomains: opts.dnsSearch ?? ['weft.internal'],
  };
  const upstreamLog = (fields: object) => log('upstream', fields as Record<string, unknown>);
  const relay = opts.upstream.kind === 'wisp' ? relayCredentials(opts.upstream.url) : undefined;
  const upstream = relay
    ? new WispUpstream({
        url: relay.url,
        ...(relay.password ? { password: relay.password } : {}),
        connect: connectWsTransport,
        gateway: GATEWAY,
        allowHostLoopback: opts.allowHostLoopback,
        log: upstreamLog,
      })
    : new DirectUpstream({ gateway: GATEWAY, allowHostLoopback: opts.allowHostLoopback, log: upstreamLog });
  // DNS: through a Wisp relay, its own resolver (unless --dns-server says otherwise); directly,
  // through an upstream of its own — resolvers are weft's choice (127.0.0.53 is common), not the
  // guest's, so loopback is fine there while guest flows stay fenced off.
  const dnsUpstream = new DirectUpstream({
    gateway: GATEWAY,
    allowHostLoopback: false,
    trustedDestinations: true,
    log: (fields) => log('dns-upstream', fields as Record<string, unknown>),
  });
  const viaRelay = upstream instanceof WispUpstream && opts.dnsServers.length === 0;
  const resolvers = viaRelay ? [RELAY_RESOLVER] : dnsResolvers(opts.dnsServers, log);
  const dnsForwarder =
    resolvers.length > 0
      ? new UpstreamDnsForwarder({
          upstream: viaRelay ? upstream : dnsUpstream,
          resolvers,
          onResolverError: (resolver, reason) =>
            log('dns-resolver-error', { resolver: viaRelay ? 'relay' : `${formatIpv4(resolver.ip)}:${resolver.port}`, reason }),
        })
      : undefined;
  const running = runStack(link, {
    network,
    // An emulated guest answers slowly (its ACKs wait for its CPU), so a download needs more bytes
    // in flight than the stack's 256 KiB default: at MTU 1500 that capped a TCG QEMU guest near
    // 90 MB/s, and 1 MiB gave 110. The bound is per connection, and only a guest slower than its
    // upstream fills it. It grows with the guest's window, so that a 1 MiB burst in flight does not
    // leave the upstream paused and the guest idle until the burst is acknowledged.
    tcp: { sendBufferBytes: VM_SEND_BUFFER_BYTES, sendBufferMaxBytes: VM_SEND_BUFFER_MAX_BYTES },
    upstream,
    dns: { forwarder: dnsForwarder, records: new Map(opts.dnsRecords.map((r) => [r.name, r.ip])) },
    capture: pcap ? (frame, _direction, timeMs) => pcap.write(frame, timeMs) : undefined,
  });
  const { stack } = running;
  const describeFlow = (e: FlowEvent) => ({
    protocol: e.protocol,
    guest: `${formatIpv4(e.guest.ip)}:${e.guest.port}`,
    target: `${formatIpv4(e.target.ip)}:${e.target.port}`,
    bytesFromGuest: e.bytesFromGuest,
    bytesToGuest: e.bytesToGuest,
    durationMs: Math.round(nodeClock.now() - e.openedAt),
    ...(e.reason === undefined ? {} : { reason: e.reason }),
    ...(e.protocol === 'tcp' ? { retransmits: e.retransmits, timeouts: e.timeouts, lossProbes: e.lossProbes, spuriousUndone: e.spuriousUndone } : {}),
  });
  if (opts.logFlows) stack.on('flow-close', (e) => log('flow-close', describeFlow(e)));

  stack.on('lease', (e) => {
    log('lease', {
      mac: formatMac(e.mac),
      ip: formatIpv4(e.ip),
      ...(e.hostname === undefined ? {} : { hostname: e.hostname }),
      expiresAt: new Date(e.expiresAt).toISOString(),
    });
  });
  link.on('log', (event, fields) => log(event, fields));
  const forwarder = new PortForwarder(stack, opts.forwards, log);
  const publications =
    upstream instanceof WispUpstream
      ? opts.publishes.map((p) =>
          publishGuestPort(upstream, stack, p.guestPort, p.relayPort, {
            published: (guestPort, relayPort) => log('published', { guestPort, relayPort }),
            refused: (guestPort, reason) => log('publish-refused', { level: 'warn', guestPort, message: reason }),
            dropped: (guestPort, from, why) => log('publish-dropped', { guestPort, from, message: why }),
          }),
        )
      : [];
  try {
    await forwarder.start();
  } catch (e) {
    log('error', { message: (e as Error).message });
    await forwarder.close();
    await running.close();
    pcap?.close();
    return 1;
  }

  return new Promise<number>((resolve) => {
    let stopping = false;
    const stop = async (reason: Record<string, unknown>, code: number) => {
      if (stopping) return;
      stopping = true;
      // Read before shutting down: shutdown() empties the flow table the counters describe.
      const atStop = stack.counters();
      for (const p of publications) p.close();
      await forwarder.close();
      await running.close();
      upstream.closeAll();
      dnsUpstream.closeAll();
      pcap?.close();
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      log('stopped', {
        ...reason,
        counters: atStop,
        linkDrops: link.drops(),
        ...(link.stats ? { linkStats: link.stats() } : {}),
        ...(pcap ? { pcapFrames: pcap.framesWritten } : {}),
      });
      setTimeout(() => {
        log('warning', { message: `handles still open ${EXIT_GRACE_MS} ms after shutdown; forcing exit` });
        process.exit(code);
      }, EXIT_GRACE_MS).unref();
      resolve(code);
    };
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) process.exit(130); // a second signal: the user does not want to wait
      void stop({ signal }, 0);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    link.on('fatal', (e) => {
      log('error', { message: e.message });
      void stop({ error: e.message }, 1);
    });

    log('ready', {
      ...link.description,
      gateway: formatIpv4(stack.config.gateway),
      dns: formatIpv4(stack.config.dns),
      mtu: stack.config.mtu,
      upstream: opts.upstream.kind === 'wisp' ? opts.upstream.url : 'direct',
      ...(opts.pcap ? { pcap: opts.pcap } : {}),
    });
  });
}

/** USER:PASS@ in a relay URL is Wisp v2 password authentication, not HTTP's: it leaves the URL. */
function relayCredentials(url: string): { url: string; password?: { username: string; password: string } } {
  const u = new URL(url.replace(/^wisp(s?):/, 'ws$1:'));
  if (u.username === '') return { url };
  const password = { username: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  u.username = '';
  u.password = '';
  return { url: u.toString(), password };
}
