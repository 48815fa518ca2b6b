// `--dgram LPORT:RPORT`: one frame per UDP datagram on loopback, as QEMU's `-netdev dgram`
// (local.port=RPORT, remote.port=LPORT). We bind 127.0.0.1:LPORT and send to 127.0.0.1:RPORT.
// The socket is connected to that port, so the kernel drops datagrams from any other source: only
// the configured peer is the guest.
//
// `--dgram LPORT:RPORT1,RPORT2,…`: several QEMUs send to one port of ours (each its own
// remote.port=LPORT), each peer a link of its own on the LAN (DgramPeerLink). The socket cannot be
// connected to several peers, so the same fence is kept by hand: a datagram from any port or
// address not in the list is dropped and counted (dgram-unknown-peer), never taken for a guest.

import dgram from 'node:dgram';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { LinkError } from './link-error';

const LOOPBACK = '127.0.0.1';
/** Datagrams queued in the socket before further frames are dropped. */
const MAX_QUEUED_SENDS = 1024;

export class DgramLink extends FrameLinkBase implements FrameLink {
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly localPort: number,
    private readonly remotePort: number,
  ) {
    super();
    // libuv delivers up to 32 datagrams per wake-up, one callback each: the batch ends after them.
    socket.on('message', (msg) => this.receiveInBatch(msg));
    socket.on('error', (e: NodeJS.ErrnoException) => {
      // The socket is connected to QEMU's port: while QEMU is not there (starting, rebooting) the
      // kernel reports its ICMP port unreachable as ECONNREFUSED. Frames sent then are lost, as on
      // a cable nobody has plugged in; the socket keeps working.
      if (e.code === 'ECONNREFUSED') {
        this.drop('dgram-peer-unreachable');
        return;
      }
      if (e.syscall === 'send') {
        this.drop(`dgram-send-${e.code ?? 'error'}`);
        return;
      }
      if (!this.closing) this.fail(new LinkError(`UDP socket failed: ${e.message}`));
    });
  }

  /** Binds the local port; resolves once frames can flow. */
  static async open(localPort: number, remotePort: number): Promise<DgramLink> {
    const socket = dgram.createSocket({ type: 'udp4' });
    await new Promise<void>((resolve, reject) => {
      socket.once('error', (e) => {
        socket.close();
        reject(new LinkError(`cannot bind ${LOOPBACK}:${localPort}: ${e.message}`));
      });
      // Connected to the peer: each send skips the address lookup Node does per datagram, and the
      // kernel delivers only the peer's datagrams.
      socket.bind(localPort, LOOPBACK, () =>
        socket.connect(remotePort, LOOPBACK, () => {
          socket.removeAllListeners('error');
          resolve();
        }),
      );
    });
    const bound = socket.address().port;
    return new DgramLink(socket, bound, remotePort);
  }

  get description(): Record<string, unknown> {
    return { link: 'dgram', local: `${LOOPBACK}:${this.localPort}`, remote: `${LOOPBACK}:${this.remotePort}` };
  }

  send(frame: Uint8Array): void {
    if (this.closing) {
      this.drop('link-closed');
      return;
    }
    if (this.socket.getSendQueueCount() > MAX_QUEUED_SENDS) {
      this.drop('dgram-backlog');
      return;
    }
    // dgram may send after this call returns; the stack does not reuse a frame, so no copy is needed.
    // No callback: a failed send comes as an 'error' event (counted above), and a closure per frame
    // is what most of this call cost.
    this.socket.send(frame);
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => this.socket.close(() => resolve()));
    return this.closing;
  }
}

/** One of the peers of a shared socket: what QEMU at 127.0.0.1:remotePort sends and is sent. */
export class DgramPeerLink extends FrameLinkBase implements FrameLink {
  constructor(
    private readonly shared: SharedDgramSocket,
    readonly remotePort: number,
  ) {
    super();
  }

  get description(): Record<string, unknown> {
    return { link: 'dgram', local: `${LOOPBACK}:${this.shared.localPort}`, remote: `${LOOPBACK}:${this.remotePort}` };
  }

  /** A datagram from this peer (the shared socket dispatches by source port). */
  received(msg: Uint8Array): void {
    this.receiveInBatch(msg);
  }

  send(frame: Uint8Array): void {
    const reason = this.shared.send(frame, this.remotePort);
    if (reason) this.drop(reason);
  }

  override drops(): Record<string, number> {
    // The socket's own drops (strangers) are told once, with its first peer.
    const own = { ...this.dropCounts };
    if (this.shared.firstPeer === this) for (const [k, n] of Object.entries(this.shared.drops)) own[k] = (own[k] ?? 0) + n;
    return own;
  }

  close(): Promise<void> {
    return this.shared.release(this);
  }

  /** Passes on a failure of the shared socket. */
  failed(e: Error): void {
    this.fail(e);
  }
}

/** `--dgram LPORT:RPORT1,RPORT2,…`: one unconnected socket, datagrams sorted by peer. */
class SharedDgramSocket {
  readonly drops: Record<string, number> = {};
  private readonly peers = new Map<number, DgramPeerLink>();
  private open: number;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly socket: dgram.Socket,
    readonly localPort: number,
    remotePorts: readonly number[],
  ) {
    for (const port of remotePorts) this.peers.set(port, new DgramPeerLink(this, port));
    this.open = this.peers.size;
    socket.on('message', (msg, rinfo) => {
      const peer = rinfo.address === LOOPBACK ? this.peers.get(rinfo.port) : undefined;
      if (peer) peer.received(msg);
      else this.drop('dgram-unknown-peer');
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      if (e.syscall === 'send') return this.drop(`dgram-send-${e.code ?? 'error'}`);
      if (!this.closing) for (const p of this.peers.values()) p.failed(new LinkError(`UDP socket failed: ${e.message}`));
    });
  }

  get links(): DgramPeerLink[] {
    return [...this.peers.values()];
  }

  get firstPeer(): DgramPeerLink | undefined {
    return this.peers.values().next().value;
  }

  /** Sends to one peer; returns why not when the frame was dropped. */
  send(frame: Uint8Array, port: number): string | undefined {
    if (this.closing) return 'link-closed';
    // One queue for every peer: a peer that stopped reading fills it for all, so the bound is shared.
    if (this.socket.getSendQueueCount() > MAX_QUEUED_SENDS) return 'dgram-backlog';
    this.socket.send(frame, port, LOOPBACK);
    return undefined;
  }

  /** The socket closes with its last peer. */
  release(_peer: DgramPeerLink): Promise<void> {
    if (--this.open <= 0) this.closing ??= new Promise<void>((resolve) => this.socket.close(() => resolve()));
    return this.closing ?? Promise.resolve();
  }

  private drop(reason: string): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
  }
}

/**
 * Binds 127.0.0.1:`localPort` for several QEMU peers at once (each a link of its own, for a LAN);
 * resolves once frames can flow.
 */
export async function openDgramPeers(localPort: number, remotePorts: readonly number[]): Promise<DgramPeerLink[]> {
  const socket = dgram.createSocket({ type: 'udp4' });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', (e) => {
      socket.close();
      reject(new LinkError(`cannot bind ${LOOPBACK}:${localPort}: ${e.message}`));
    });
    socket.bind(localPort, LOOPBACK, () => {
      socket.removeAllListeners('error');
      resolve();
    });
  });
  return new SharedDgramSocket(socket, socket.address().port, remotePorts).links;
}
