// `--dgram LPORT:RPORT`: one frame per UDP datagram on loopback, as QEMU's `-netdev dgram`
// (local.port=RPORT, remote.port=LPORT). We bind 127.0.0.1:LPORT and send to 127.0.0.1:RPORT.
// The socket is connected to that port, so the kernel drops datagrams from any other source: only
// the configured peer is the guest.

import dgram from 'node:dgram';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { LinkError } from './link-error';

const LOOPBACK = '127.0.0.1';
/** Datagrams queued in the socket before further frames are dropped. */
const MAX_QUEUED_SENDS = 1024;

export class DgramLink extends FrameLinkBase implements FrameLink {
  private batchPending: boolean;
  private closing: Promise<void> | undefined;

  private constructor(
    private readonly socket: dgram.Socket,
    private readonly localPort: number,
    private readonly remotePort: number,
  ) {
    super();
    this.batchPending = false;
    socket.on('message', (msg) => {
      this.frameListener(msg);
      // libuv delivers up to 32 datagrams per wake-up, one callback each: end the batch after them.
      if (!this.batchPending) {
        this.batchPending = true;
        setImmediate(() => {
          this.batchPending = false;
          this.batchEndListener();
        });
      }
    });
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
