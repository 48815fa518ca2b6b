// weft's ICMP (RFC 792): it answers echo requests to the router's own addresses (a guest pings the
// gateway or the DNS address), and tells a guest what could not be delivered — a UDP port nobody
// listens on, a destination the upstream refused, blocked or could not reach — as destination
// unreachable, so its clients fail fast instead of waiting for a timeout.

import type { Ipv4Output } from '../ip/ipv4-output';
import type { FlowEndpoint, UpstreamError } from '../upstream';
import type { Ipv4Address, MacAddress } from '../wire/address';
import {
  emitIcmp,
  ICMP_DEST_UNREACHABLE,
  ICMP_ECHO_REPLY,
  ICMP_ECHO_REQUEST,
  ICMP_HEADER_LENGTH,
  ICMP_UNREACH_ADMIN,
  ICMP_UNREACH_HOST,
  ICMP_UNREACH_PORT,
  parseIcmp,
} from '../wire/icmpv4';
import { emitIpv4Header, IPPROTO_ICMP, IPPROTO_UDP, IPV4_HEADER_LENGTH } from '../wire/ipv4';
import { isDrop, type DropReason } from '../wire/parse-result';

export class IcmpResponder {
  constructor(
    private readonly ip: Ipv4Output,
    /** True for the addresses the router answers for on the link. */
    private readonly ownsAddress: (ip: Ipv4Address) => boolean,
    private readonly drop: (reason: DropReason) => void,
  ) {}

  /** An ICMP message from a guest: echo requests to our addresses are answered, the rest dropped. */
  input(src: Ipv4Address, dst: Ipv4Address, payload: Uint8Array, srcMac: MacAddress): void {
    const icmp = parseIcmp(payload);
    if (isDrop(icmp)) return this.drop(icmp);
    if (!this.ownsAddress(dst)) return this.drop('icmp-no-route');
    if (icmp.type !== ICMP_ECHO_REQUEST) return this.drop('icmp-unhandled-type');
    if (icmp.code !== 0) return this.drop('icmp-bad-code');
    const reply = { type: ICMP_ECHO_REPLY, code: 0, restOfHeader: icmp.restOfHeader, data: icmp.data };
    this.ip.send(dst, src, IPPROTO_ICMP, ICMP_HEADER_LENGTH + icmp.data.length, (buf, off) => emitIcmp(reply, buf, off), srcMac);
  }

  /** Nothing listens on the port `transport` (a whole transport packet from the guest) was sent to. */
  portUnreachable(guest: Ipv4Address, from: Ipv4Address, protocol: number, transport: Uint8Array, guestMac: MacAddress): void {
    this.unreachable(ICMP_UNREACH_PORT, guest, from, protocol, transport, transport.length, guestMac);
  }

  /** The upstream could not carry a guest's UDP flow; `udpHeader` is the guest datagram's header. */
  udpUnreachable(guest: FlowEndpoint, target: FlowEndpoint, error: UpstreamError, udpHeader: Uint8Array): void {
    const code = error.kind === 'refused' ? ICMP_UNREACH_PORT : error.kind === 'blocked' ? ICMP_UNREACH_ADMIN : ICMP_UNREACH_HOST;
    const length = (udpHeader[4] << 8) | udpHeader[5];
    this.unreachable(code, guest.ip, target.ip, IPPROTO_UDP, udpHeader, length);
  }

  private unreachable(
    code: number,
    guest: Ipv4Address,
    from: Ipv4Address,
    protocol: number,
    transportHead: Uint8Array,
    transportLength: number,
    guestMac?: MacAddress,
  ): void {
    // Quote the offending header and the first 8 bytes of its payload (RFC 792); the original
    // header is rebuilt since reassembly may have consumed the fragments' own headers.
    const head = transportHead.subarray(0, 8);
    const quoted = new Uint8Array(IPV4_HEADER_LENGTH + head.length);
    emitIpv4Header({ src: guest, dst: from, protocol, payloadLength: transportLength, id: 0 }, quoted, 0);
    quoted.set(head, IPV4_HEADER_LENGTH);
    const msg = { type: ICMP_DEST_UNREACHABLE, code, restOfHeader: 0, data: quoted };
    this.ip.send(from, guest, IPPROTO_ICMP, ICMP_HEADER_LENGTH + quoted.length, (buf, off) => emitIcmp(msg, buf, off), guestMac);
  }
}
