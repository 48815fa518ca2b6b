// `weft vm --forward [udp:]HOSTPORT:[GUESTIP:]GUESTPORT`: a host listener whose traffic the stack carries
// to a port on the guest (the one at GUESTIP, else the one that leased last).
// TCP: each accepted socket stays paused until the guest accepts the forwarded connection (the
// stack resumes it), and is reset if the guest refuses or never answers (a `forward-refused` line
// with the stack's reason: guest-refused, guest-unreachable) or resets it later (`forward-close`,
// reason guest-reset).
// UDP: each host peer (address and port) gets a UDP socket of its own on the gateway address,
// connected to the guest port, so the guest's answers find their way back to that peer; a peer
// quiet for UDP_IDLE_MS is forgotten, and at most MAX_UDP_PEERS are kept (the oldest goes first).

import dgram from 'node:dgram';
import net from 'node:net';
import type { Stack } from '../core/stack';
import type { GuestUdpSocket } from '../core/udp/guest-udp-ports';
import { formatIpv4 } from '../core/wire/address';
import { DirectTcpStream } from './direct-upstream';
import type { PortForward } from './vm-options';

const UDP_IDLE_MS = 60_000;
const MAX_UDP_PEERS = 256;

type Log = (event: string, fields: Record<string, unknown>) => void;

interface UdpPeer {
  socket: GuestUdpSocket;
  timer: NodeJS.Timeout;
}

export class PortForwarder {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();
  private readonly udpSockets: dgram.Socket[] = [];
  private readonly udpPeers = new Map<string, UdpPeer>();

  constructor(
    private readonly stack: Stack,
    private readonly forwards: readonly PortForward[],
    private readonly log: Log,
  ) {}

  /** Listens on every forward; rejects with a clear message if a port cannot be bound. */
  async start(): Promise<void> {
    for (const f of this.forwards) {
      if (f.protocol === 'udp') await this.startUdp(f);
      else await this.startTcp(f);
      this.log('forward', {
        protocol: f.protocol,
        listen: `${f.host}:${f.hostPort}`,
        ...(f.guestIp === undefined ? {} : { guestIp: formatIpv4(f.guestIp) }),
        guestPort: f.guestPort,
      });
    }
  }

  private async startTcp(f: PortForward): Promise<void> {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.accept(socket, f));
    this.servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => reject(cannotListen(f, e)));
      server.listen(f.hostPort, f.host, () => resolve());
    });
    server.on('error', (e) => this.log('forward-error', { host: f.host, hostPort: f.hostPort, message: e.message }));
  }

  private async startUdp(f: PortForward): Promise<void> {
    const socket = dgram.createSocket(net.isIPv6(f.host) ? 'udp6' : 'udp4');
    this.udpSockets.push(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (e: NodeJS.ErrnoException) => reject(cannotListen(f, e)));
      socket.bind(f.hostPort, f.host, () => resolve());
    });
    socket.on('error', (e) => this.log('forward-error', { protocol: 'udp', host: f.host, hostPort: f.hostPort, message: e.message }));
    socket.on('message', (msg, rinfo) => this.datagram(socket, f, msg, rinfo));
  }

  private accept(socket: net.Socket, f: PortForward): void {
    const flow = `forward ${socket.remoteAddress}:${socket.remotePort} → ${guestOf(f)}:${f.guestPort}`;
    const log = (e: object) => {
      // The stream's own line, under this forward's event name: refused when the guest never took
      // the connection (the reason says how), closed otherwise.
      const { event: _event, ...fields } = e as Record<string, unknown>;
      const refused = fields.reason === 'guest-refused' || fields.reason === 'guest-unreachable';
      this.log(refused ? 'forward-refused' : 'forward-close', fields);
    };
    const opened = this.stack.connectToGuest(f.guestPort, (handlers) => new DirectTcpStream(socket, flow, handlers, this.sockets, log), f.guestIp);
    if (!opened) {
      this.log('forward-refused', { flow, reason: 'no free port or connection table full' });
      socket.destroy();
    }
  }

  private datagram(socket: dgram.Socket, f: PortForward, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    const key = `${f.hostPort}|${rinfo.address}|${rinfo.port}`;
    let peer = this.udpPeers.get(key);
    if (peer) {
      // Most recently used last: the Map's order is the eviction order.
      this.udpPeers.delete(key);
      this.udpPeers.set(key, peer);
      peer.timer.refresh();
    } else {
      if (this.udpPeers.size >= MAX_UDP_PEERS) this.forget(this.udpPeers.keys().next().value as string);
      const guest = this.stack.openGuestUdp(
        f.guestPort,
        {
          onDatagram: (payload) => {
            const p = this.udpPeers.get(key);
            if (!p) return;
            p.timer.refresh();
            socket.send(payload, rinfo.port, rinfo.address);
          },
        },
        f.guestIp,
      );
      if (!guest) {
        this.log('forward-refused', { protocol: 'udp', flow: `${rinfo.address}:${rinfo.port} → ${guestOf(f)}:${f.guestPort}`, reason: 'no free gateway port' });
        return;
      }
      peer = { socket: guest, timer: setTimeout(() => this.forget(key), UDP_IDLE_MS).unref() };
      this.udpPeers.set(key, peer);
    }
    peer.socket.send(msg);
  }

  private forget(key: string): void {
    const peer = this.udpPeers.get(key);
    if (!peer) return;
    this.udpPeers.delete(key);
    clearTimeout(peer.timer);
    peer.socket.close();
  }

  /** Stops listening and closes every forwarded socket. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    for (const key of [...this.udpPeers.keys()]) this.forget(key);
    for (const s of this.udpSockets) s.close();
    await Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}

function cannotListen(f: PortForward, e: NodeJS.ErrnoException): Error {
  const prefix = f.protocol === 'udp' ? 'udp:' : '';
  return new Error(
    `--forward ${prefix}${f.hostPort}:${f.guestPort}: cannot listen on ${f.host}:${f.hostPort}${f.protocol === 'udp' ? '/udp' : ''} (${e.code ?? e.message})`,
  );
}

/** How a forward's flows name their guest: its address when the forward names one, else "guest" (the last lease). */
function guestOf(f: PortForward): string {
  return f.guestIp === undefined ? 'guest' : formatIpv4(f.guestIp);
}
