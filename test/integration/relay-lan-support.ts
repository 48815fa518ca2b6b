// A LAN room member for the relay tests: a real WebSocket to `weft relay --lan` speaking the room
// protocol (core/wire/room-protocol.ts), and a hand-made guest on it that builds real DHCP, ARP,
// ICMP, UDP and DNS frames (the browser test uses real v86 guests; this one drives the protocol and
// its bounds precisely).

import { WebSocket } from 'ws';
import { BROADCAST_MAC, formatIpv4, IPV4_ANY, IPV4_BROADCAST, parseIpv4, readIpv4, type Ipv4Address, type MacAddress } from '../../core/wire/address';
import { ARP_REPLY, ARP_REQUEST, parseArp } from '../../core/wire/arp';
import { DhcpMessageType, parseDhcp, type DhcpMessage } from '../../core/wire/dhcp';
import { encodeDnsName, parseDnsMessage } from '../../core/wire/dns';
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, parseEthernet } from '../../core/wire/ethernet';
import { ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, parseIcmp } from '../../core/wire/icmpv4';
import { IPPROTO_ICMP, IPPROTO_UDP, parseIpv4Packet } from '../../core/wire/ipv4';
import { isDrop } from '../../core/wire/parse-result';
import { packRoomFrames, parseRoomJoined, readRoomFrames, ROOM_PROTOCOL_VERSION, type RoomJoined } from '../../core/wire/room-protocol';
import { parseUdp } from '../../core/wire/udp';
import { arpFrame, dhcpFrame, GATEWAY_MAC, icmpEcho, ipv4Frame, udpPayload } from '../support/frames';
import { withTimeout } from './relay-support';

export const GATEWAY = parseIpv4('10.0.2.2');
export const DNS = parseIpv4('10.0.2.3');

export interface MemberOptions {
  /** The relay's Wisp URL the room's path goes under (default ws://127.0.0.1:PORT/wisp/); a wss: one is not verified. */
  base?: string;
  /** The relay's token, put on the URL as ?token= (default: none). */
  token?: string;
  /** The client's own address (any of 127/8), for per-IP bounds. */
  localAddress?: string;
  /** Extra fields of the join message (username, password), or the whole text to send instead. */
  join?: Record<string, unknown> | string;
}

/** A member's WebSocket: the join, then frames both ways, with waiters. */
export class RoomMember {
  readonly frames: Uint8Array[] = [];
  joined: RoomJoined | undefined;
  /** Text messages after the join (leases of this member's guests). */
  readonly notices: Record<string, unknown>[] = [];
  close: { code: number; reason: string } | undefined;
  private waiters: Array<() => void> = [];

  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (!isBinary && this.joined) this.notices.push(JSON.parse(data.toString()) as Record<string, unknown>);
      else if (!isBinary) this.joined = parseRoomJoined(data.toString());
      else
        readRoomFrames(
          new Uint8Array(data),
          0xffff,
          (f) => this.frames.push(f.slice()),
          () => undefined,
        );
      this.notify();
    });
    ws.on('close', (code, reason) => {
      this.close = { code, reason: reason.toString() };
      this.notify();
    });
    ws.on('error', () => {});
  }

  /** Opens the room's WebSocket and sends the join; resolves once the upgrade is through (not the join). */
  static open(relayPort: number, room: string, key: string, options: MemberOptions = {}): Promise<RoomMember> {
    const base = options.base ?? `ws://127.0.0.1:${relayPort}/wisp/`;
    const url = `${base}lan/${encodeURIComponent(room)}${options.token ? `?token=${options.token}` : ''}`;
    const ws = new WebSocket(url, {
      ...(options.localAddress ? { localAddress: options.localAddress } : {}),
      perMessageDeflate: false,
      rejectUnauthorized: false,
    });
    return withTimeout(
      new Promise((resolve, reject) => {
        ws.once('open', () => {
          const m = new RoomMember(ws);
          ws.send(typeof options.join === 'string' ? options.join : JSON.stringify({ type: 'join', v: ROOM_PROTOCOL_VERSION, key, ...options.join }));
          resolve(m);
        });
        ws.once('unexpected-response', (_req, res) => {
          reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), { status: res.statusCode }));
          ws.terminate();
        });
        ws.once('error', reject);
      }),
      5000,
      `room WebSocket to ${url}`,
    );
  }

  /** Opens and waits for `joined` (or throws with the close code). */
  static async join(relayPort: number, room: string, key: string, options: MemberOptions = {}): Promise<RoomMember> {
    const m = await RoomMember.open(relayPort, room, key, options);
    await m.until(() => m.joined !== undefined, `joined ${room}`);
    return m;
  }

  /** The close code the relay ended this member with (waits for it). */
  async closed(ms = 5000): Promise<{ code: number; reason: string }> {
    await this.until(() => false, 'close', ms, true);
    return this.close as { code: number; reason: string };
  }

  send(...frames: Uint8Array[]): void {
    for (const m of packRoomFrames(frames, 64 * 1024)) this.ws.send(m);
  }

  /** Resolves with the first frame received from `from` on that matches, or rejects after `ms`. */
  async waitFrame<T>(match: (f: Uint8Array) => T | undefined, what: string, ms = 5000, from = 0): Promise<T> {
    let found: T | undefined;
    let i = from;
    await this.until(
      () => {
        for (; i < this.frames.length; i++) {
          found = match(this.frames[i]);
          if (found !== undefined) return true;
        }
        return false;
      },
      what,
      ms,
    );
    return found as T;
  }

  /** Waits for `ok()`; rejects if the socket closes first (unless `closeIsOk`) or after `ms`. */
  until(ok: () => boolean, what: string, ms = 5000, closeIsOk = false): Promise<void> {
    return withTimeout(
      new Promise((resolve, reject) => {
        const check = () => {
          if (ok() || (closeIsOk && this.close !== undefined)) resolve();
          else if (this.close !== undefined) reject(new Error(`closed (${this.close.code} ${this.close.reason}) while waiting for ${what}`));
          else this.waiters.push(check);
        };
        check();
      }),
      ms,
      what,
    );
  }

  end(): void {
    this.ws.close();
  }

  terminate(): void {
    this.ws.terminate();
  }

  private notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}

interface Udp {
  src: Ipv4Address;
  dst: Ipv4Address;
  srcPort: number;
  dstPort: number;
  payload: Uint8Array;
  srcMac: MacAddress;
}

function udpOf(f: Uint8Array): Udp | undefined {
  const eth = parseEthernet(f);
  if (isDrop(eth) || eth.ethertype !== ETHERTYPE_IPV4) return undefined;
  const ip = parseIpv4Packet(eth.payload);
  if (isDrop(ip) || ip.protocol !== IPPROTO_UDP) return undefined;
  const udp = parseUdp(ip.payload, ip.src, ip.dst);
  if (isDrop(udp)) return undefined;
  return { src: ip.src, dst: ip.dst, srcPort: udp.srcPort, dstPort: udp.dstPort, payload: udp.payload, srcMac: eth.src };
}

/** A guest on a member's link: a MAC, and an address once DHCP gave it one. */
export class SimGuest {
  ip: Ipv4Address = IPV4_ANY;
  private xid = Math.floor(Math.random() * 0xffffff);

  constructor(
    readonly member: RoomMember,
    readonly mac: MacAddress,
  ) {}

  /** DISCOVER, OFFER, REQUEST, ACK: the address (and the ACK). */
  async dhcp(hostname?: string): Promise<{ ip: Ipv4Address; ack: DhcpMessage }> {
    const xid = ++this.xid;
    const name = hostname ? [12, hostname.length, ...Buffer.from(hostname)] : [];
    const reply = (type: number) => (f: Uint8Array) => {
      const u = udpOf(f);
      if (u?.dstPort !== 68) return undefined;
      const d = parseDhcp(u.payload);
      return !isDrop(d) && d.xid === xid && d.messageType === type && d.chaddr === this.mac ? d : undefined;
    };
    const from = this.member.frames.length;
    this.member.send(dhcpFrame(DhcpMessageType.DISCOVER, this.mac, xid, name));
    const offer = await this.member.waitFrame(reply(DhcpMessageType.OFFER), `DHCP OFFER for ${this.mac.toString(16)}`, 5000, from);
    const ip = offer.yiaddr;
    const ipBytes = [(ip >>> 24) & 0xff, (ip >>> 16) & 0xff, (ip >>> 8) & 0xff, ip & 0xff];
    const from2 = this.member.frames.length;
    this.member.send(dhcpFrame(DhcpMessageType.REQUEST, this.mac, xid, [50, 4, ...ipBytes, 54, 4, 10, 0, 2, 2, ...name]));
    const ack = await this.member.waitFrame(reply(DhcpMessageType.ACK), `DHCP ACK for ${formatIpv4(ip)}`, 5000, from2);
    this.ip = ack.yiaddr;
    return { ip: this.ip, ack };
  }

  /** ARP for `ip` (broadcast): the MAC that answered. */
  async arp(ip: Ipv4Address, ms = 5000): Promise<MacAddress> {
    const from = this.member.frames.length;
    this.member.send(arpFrame({ operation: ARP_REQUEST, senderMac: this.mac, senderIp: this.ip, targetMac: BROADCAST_MAC, targetIp: ip }));
    return this.member.waitFrame(
      (f) => {
        const eth = parseEthernet(f);
        if (isDrop(eth) || eth.ethertype !== ETHERTYPE_ARP || eth.dst !== this.mac) return undefined;
        const a = parseArp(eth.payload);
        return !isDrop(a) && a.operation === ARP_REPLY && a.senderIp === ip ? a.senderMac : undefined;
      },
      `ARP reply for ${formatIpv4(ip)}`,
      ms,
      from,
    );
  }

  /** Answers ARP requests for this guest's address that arrived since `from` (as a kernel would). */
  answerArp(from = 0): number {
    let n = 0;
    for (const f of this.member.frames.slice(from)) {
      const eth = parseEthernet(f);
      if (isDrop(eth) || eth.ethertype !== ETHERTYPE_ARP) continue;
      const a = parseArp(eth.payload);
      if (isDrop(a) || a.operation !== ARP_REQUEST || a.targetIp !== this.ip) continue;
      this.member.send(arpFrame({ operation: ARP_REPLY, senderMac: this.mac, senderIp: this.ip, targetMac: a.senderMac, targetIp: a.senderIp }, a.senderMac));
      n++;
    }
    return n;
  }

  echoRequest(dstMac: MacAddress, dst: Ipv4Address, seq: number, size = 56): Uint8Array {
    const data = new Uint8Array(size).map((_, i) => i & 0xff);
    return ipv4Frame({ src: this.ip, dst, protocol: IPPROTO_ICMP, id: seq }, icmpEcho(0x4242, seq, data), this.mac, dstMac);
  }

  /** An ICMP echo request or reply to this guest with sequence `seq`, received since `from`. */
  waitIcmp(type: typeof ICMP_ECHO_REQUEST | typeof ICMP_ECHO_REPLY, seq: number, from = 0, ms = 5000): Promise<{ src: Ipv4Address; srcMac: MacAddress }> {
    return this.member.waitFrame(
      (f) => {
        const eth = parseEthernet(f);
        if (isDrop(eth) || eth.ethertype !== ETHERTYPE_IPV4 || eth.dst !== this.mac) return undefined;
        const ip = parseIpv4Packet(eth.payload);
        if (isDrop(ip) || ip.protocol !== IPPROTO_ICMP || ip.dst !== this.ip) return undefined;
        const icmp = parseIcmp(ip.payload);
        return !isDrop(icmp) && icmp.type === type && (icmp.restOfHeader & 0xffff) === seq ? { src: ip.src, srcMac: eth.src } : undefined;
      },
      `ICMP ${type === ICMP_ECHO_REQUEST ? 'request' : 'reply'} ${seq} for ${formatIpv4(this.ip)}`,
      ms,
      from,
    );
  }

  /** Answers the echo requests to this guest that arrived since `from`. */
  answerEchoes(from = 0): number {
    let n = 0;
    for (const f of this.member.frames.slice(from)) {
      const eth = parseEthernet(f);
      if (isDrop(eth) || eth.ethertype !== ETHERTYPE_IPV4 || eth.dst !== this.mac) continue;
      const ip = parseIpv4Packet(eth.payload);
      if (isDrop(ip) || ip.protocol !== IPPROTO_ICMP || ip.dst !== this.ip) continue;
      const icmp = parseIcmp(ip.payload);
      if (isDrop(icmp) || icmp.type !== ICMP_ECHO_REQUEST) continue;
      const reply = new Uint8Array(8 + icmp.data.length);
      reply.set(ip.payload.subarray(0, 8 + icmp.data.length));
      reply[0] = ICMP_ECHO_REPLY;
      reply[2] = reply[3] = 0;
      let sum = 0;
      for (let k = 0; k < reply.length; k += 2) sum += (reply[k] << 8) | (reply[k + 1] ?? 0);
      while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
      const c = ~sum & 0xffff;
      reply[2] = c >> 8;
      reply[3] = c & 0xff;
      this.member.send(ipv4Frame({ src: this.ip, dst: ip.src, protocol: IPPROTO_ICMP, id: 7 }, reply, this.mac, eth.src));
      n++;
    }
    return n;
  }

  /** A UDP datagram through the room's router (to its MAC). */
  udpFrame(dst: Ipv4Address, dstPort: number, srcPort: number, data: Uint8Array): Uint8Array {
    return ipv4Frame({ src: this.ip, dst, protocol: IPPROTO_UDP, id: srcPort }, udpPayload(this.ip, dst, srcPort, dstPort, data), this.mac, GATEWAY_MAC);
  }

  /** A datagram to this guest's `port` received since `from`. */
  waitUdp(port: number, from = 0, ms = 5000): Promise<Udp> {
    return this.member.waitFrame(
      (f) => {
        const u = udpOf(f);
        return u && u.dst === this.ip && u.dstPort === port ? u : undefined;
      },
      `UDP to port ${port}`,
      ms,
      from,
    );
  }

  /** Asks the room's DNS (10.0.2.3) for `name`'s A record: the addresses answered (empty: none). */
  async resolve(name: string, port = 40053): Promise<string[]> {
    const q = new Uint8Array([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, ...encodeDnsName(name), 0, 1, 0, 1]);
    const from = this.member.frames.length;
    this.member.send(this.udpFrame(DNS, 53, port, q));
    const u = await this.waitUdp(port, from);
    const m = parseDnsMessage(u.payload);
    if (isDrop(m)) throw new Error(`bad DNS answer: ${m}`);
    return m.answers.filter((a) => a.type === 1).map((a) => formatIpv4(readIpv4(a.rdata, 0)));
  }
}

export { BROADCAST_MAC, IPV4_BROADCAST, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST };
