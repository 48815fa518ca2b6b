// weft-net/node: the stack for Node programs that drive a VM of their own. Open a link to the guest
// (a QEMU socket, a TAP fd, a UDP pair), pick an upstream (direct sockets, or a Wisp relay), and
// runStack() wires them together:
//
//     const link = await QemuStreamLink.listen({ kind: 'unix', path: '/tmp/vm.sock' });
//     const upstream = new DirectUpstream({ gateway: parseIpv4('10.0.2.2') });
//     const { stack, close } = runStack(link, { upstream });
//     stack.on('lease', (e) => console.log('guest got', formatIpv4(e.ip)));

export { Stack } from '../core/stack';
export type { StackOptions, StackDnsOptions } from '../core/stack-options';
export type { StackEvents, StackCounters, LeaseEvent, FlowEvent, DropEvent } from '../core/stack-events';
export { instant, type Clock, type Instant } from '../core/clock';
export type { RandomSource } from '../core/random';
export type { NetworkConfig, StackLimits, TcpConfig, UdpConfig } from '../core/config';
export { UpstreamError } from '../core/upstream';
export type {
  Upstream,
  UpstreamErrorKind,
  FlowEndpoint,
  FlowMeta,
  TcpCloseReason,
  TcpStream,
  TcpStreamHandlers,
  UdpFlow,
  UdpFlowHandlers,
} from '../core/upstream';
// Addresses and clock readings are branded numbers: these make them (from text, or from a number).
export { formatIpv4, parseIpv4, formatMac, parseMac, ipv4, mac } from '../core/wire/address';
export type { Ipv4Address, MacAddress } from '../core/wire/address';
export type { GuestUdpHandlers, GuestUdpSocket } from '../core/udp/guest-udp-ports';
export type { InboundConnection, Publication, PublishHandlers } from '../core/wisp/wisp-upstream';
export { publishGuestPort, type GuestPublicationEvents } from '../core/wisp/guest-publication';
export { runStack, nodeClock, nodeRandom, StackTimer, type NodeStackOptions, type RunningStack } from './stack-driver';
export { DirectUpstream, type DirectUpstreamOptions } from './direct-upstream';
export { WispUpstream, type NodeWispUpstreamOptions } from './wisp-upstream';
export { connectWsTransport } from './ws-transport';
export type { FrameLink, FrameLinkEvents } from './links/frame-link';
export { QemuStreamLink, type QemuStreamOptions, type StreamEndpoint } from './links/qemu-stream-link';
export type { RouterAddresses } from './links/lan-switch';
export { TapFdLink, type TapFdLinkOptions } from './links/tap-fd-link';
export { DgramLink } from './links/dgram-link';
export { LinkError } from './links/link-error';
