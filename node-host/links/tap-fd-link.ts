// `--tap-fd N`: a Linux TAP fd a launcher opened for us (as QEMU's `-netdev tap,fd=N`).
// On a TAP one read() is one frame and one write() is one frame.
//
// Reading: libuv's pipe handle makes the fd non-blocking and watches it with epoll, so every
// 'data' event is exactly one read() — one frame — and destroy() stops it at once. A blocking
// fs.read would park a threadpool thread that Node joins at exit (it then hangs, and the TAP stays
// attached). libuv returns to the event loop after every short read, i.e. after every frame, so
// after the first frame we drain the queue ourselves with non-blocking reads into one reused
// buffer: a burst becomes one batch (one coalesced ACK) and costs no allocation per frame.
// Writing: fs.writeSync per frame; the socket's own writev could merge frames. A long TCP payload
// comes in two parts (sendGathered): the headers and the payload where the stack keeps it, written
// with one writev (one frame), so it is never copied into a frame.
//
// With `--tap-vnet-hdr` the launcher opened the TAP with IFF_VNET_HDR and turned on checksum and
// TCP segmentation offload (TUNSETOFFLOAD TUN_F_CSUM|TUN_F_TSO4), as QEMU's `vnet_hdr=on` does.
// Every frame then carries a 10-byte virtio_net_hdr in front. The guest kernel hands us TCP
// segments of up to 64 KiB with partial checksums (flag NEEDS_CSUM: the kernel built them, so
// there is nothing to verify), and weft writes TCP segments of up to 64 KiB that the guest takes
// whole, as if its NIC had coalesced them (GRO): one syscall and one pass through the guest's
// receive path per 64 KiB instead of per 1.5 KiB, which is where plain TAP spends its time.

import fs from 'node:fs';
import type net from 'node:net';
import { bytesView } from '../../core/wire/bytes';
import { tcpGsoFields } from '../../core/wire/tcp-segmentation';
import { FrameLinkBase, type FrameLink } from './frame-link';
import { watchFd } from './fd-socket';
import { LinkError } from './link-error';

/** What libuv's stream read asks for (uv__read's 64 KiB). */
const LIBUV_READ_SIZE = 65536;
/** Frames drained per wake-up before yielding to the event loop (keeps other sockets served). */
const MAX_BATCH = 128;

/** struct virtio_net_hdr (include/uapi/linux/virtio_net.h), little-endian on a TAP. */
const VNET_HDR_LENGTH = 10;
const VNET_F_NEEDS_CSUM = 1;
const VNET_F_DATA_VALID = 2;
const VNET_GSO_TCPV4 = 1;
const ETHERTYPE_IPV4_HI = 0x08;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

export interface TapFdLinkOptions {
  /** The fd was opened with IFF_VNET_HDR and TSO/checksum offload (see above). */
  vnetHdr?: boolean;
  /** The link MTU: TCP frames longer than this go out as one segmentation-offload frame. */
  mtu?: number;
}

const WRITE_DROP_REASONS: Record<string, string> = {
  EAGAIN: 'tap-full',
  ENOBUFS: 'tap-no-buffers',
  EIO: 'tap-down',
};

export class TapFdLink extends FrameLinkBase implements FrameLink {
  readonly description: Record<string, unknown>;
  private readonly socket: net.Socket;
  private closed = false;
  private readonly writeErrorsLogged = new Set<string>();
  /** 64 KiB + headroom: the largest frame a TAP can hand us at MTU 65520 (or one GSO frame). */
  private readonly readBuffer = Buffer.allocUnsafe(65536 + 256);
  /** Frames carry a virtio_net_hdr, and TCP segments may exceed the MTU (segmentation offload). */
  readonly segmentationOffload: boolean;
  private readonly mtu: number;
  private readonly vnetHdr = Buffer.alloc(VNET_HDR_LENGTH);
  private readonly writeParts: Uint8Array[] = [this.vnetHdr, this.vnetHdr];

  constructor(
    private readonly fd: number,
    options: TapFdLinkOptions = {},
  ) {
    super();
    let stat: fs.Stats;
    try {
      stat = fs.fstatSync(fd);
    } catch (e) {
      throw new LinkError(`--tap-fd ${fd} is not an open file descriptor (${(e as Error).message})`);
    }
    if (!stat.isCharacterDevice()) {
      throw new LinkError(`--tap-fd ${fd} is not a character device; expected a TAP fd opened from /dev/net/tun`);
    }
    this.segmentationOffload = options.vnetHdr === true;
    this.mtu = options.mtu ?? 1500;
    this.description = { link: 'tap-fd', fd, ...(this.segmentationOffload ? { vnetHdr: true } : {}) };
    this.socket = watchFd(fd);
    this.socket.on('data', (frame: Buffer) => this.onReadable(frame));
    this.socket.on('error', (e) => {
      if (!this.closed) this.fail(new LinkError(`reading the TAP fd failed: ${e.message}`));
    });
    this.socket.on('end', () => {
      if (!this.closed) this.fail(new LinkError('the TAP fd reached end of file'));
    });
  }

  private onReadable(first: Buffer): void {
    // libuv reads at most 64 KiB: a frame that filled it may have been cut short.
    if (first.length >= LIBUV_READ_SIZE) this.drop('tap-frame-truncated');
    else this.deliver(first, first.length);
    for (let i = 1; i < MAX_BATCH && !this.closed; i++) {
      let n: number;
      try {
        n = fs.readSync(this.fd, this.readBuffer, 0, this.readBuffer.length, null);
      } catch {
        break; // EAGAIN: the queue is empty (other errors surface through the pipe handle)
      }
      if (n <= 0) break;
      this.deliver(this.readBuffer, n);
    }
    this.batchEndListener();
  }

  private deliver(buf: Uint8Array, n: number): void {
    if (!this.segmentationOffload) return this.frameListener(bytesView(buf, 0, n));
    if (n <= VNET_HDR_LENGTH) return this.drop('vnet-hdr-truncated');
    // NEEDS_CSUM: built by the guest's kernel with a partial checksum; DATA_VALID: already checked.
    const trusted = (buf[0] & (VNET_F_NEEDS_CSUM | VNET_F_DATA_VALID)) !== 0;
    this.frameListener(bytesView(buf, VNET_HDR_LENGTH, n - VNET_HDR_LENGTH), trusted);
  }

  send(frame: Uint8Array): void {
    if (this.closed) return this.drop('link-closed');
    try {
      if (this.segmentationOffload) {
        this.fillVnetHdr(frame);
        this.writeParts[1] = frame;
        fs.writevSync(this.fd, this.writeParts);
      } else {
        fs.writeSync(this.fd, frame);
      }
    } catch (e) {
      this.writeFailed(e);
    }
  }

  /** One frame from two parts, in one writev: done before this returns, so the payload is free again. */
  sendGathered(head: Uint8Array, payload: Uint8Array): void {
    if (this.closed) return this.drop('link-closed');
    try {
      if (this.segmentationOffload) {
        this.fillVnetHdr(head); // it reads only headers, and all of them are in the head
        fs.writevSync(this.fd, [this.vnetHdr, head, payload]);
      } else {
        fs.writevSync(this.fd, [head, payload]);
      }
    } catch (e) {
      this.writeFailed(e);
    }
  }

  private writeFailed(e: unknown): void {
    const code = (e as NodeJS.ErrnoException).code ?? 'unknown';
    this.drop(WRITE_DROP_REASONS[code] ?? 'tap-write-error');
    if (!this.writeErrorsLogged.has(code)) {
      this.writeErrorsLogged.add(code);
      this.log('link-write-error', { link: 'tap-fd', code, message: (e as Error).message });
    }
  }

  /**
   * The virtio_net_hdr for an outgoing frame. An IPv4 TCP segment longer than the MTU goes out as
   * GSO (TCPV4, gso_size = the MTU's payload) with a partial checksum — the stack wrote only the
   * pseudo-header sum there (StackOptions.segmentationOffload) — which the guest's kernel treats as
   * verified (the data never leaves the host). Other TCP and UDP frames carry complete checksums
   * and are marked DATA_VALID.
   */
  private fillVnetHdr(frame: Uint8Array): void {
    const h = this.vnetHdr;
    h.fill(0);
    if (frame.length < 34 || frame[12] !== ETHERTYPE_IPV4_HI || frame[13] !== 0) return;
    const ihl = (frame[14] & 0x0f) * 4;
    const protocol = frame[23];
    if (protocol === IPPROTO_UDP) {
      h[0] = VNET_F_DATA_VALID;
      return;
    }
    if (protocol !== IPPROTO_TCP || frame.length < 14 + ihl + 20) return;
    const totalLength = (frame[16] << 8) | frame[17];
    if (totalLength <= this.mtu) {
      h[0] = VNET_F_DATA_VALID;
      return;
    }
    const gso = tcpGsoFields(frame, this.mtu);
    if (!gso) return;
    h[0] = VNET_F_NEEDS_CSUM;
    h[1] = VNET_GSO_TCPV4;
    h.writeUInt16LE(gso.headerLength, 2);
    h.writeUInt16LE(gso.segmentSize, 4);
    h.writeUInt16LE(gso.checksumStart, 6);
    h.writeUInt16LE(gso.checksumOffset, 8);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve) => {
      // The pipe handle owns the fd: destroying the socket closes it.
      if (this.socket.destroyed && this.socket.closed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.destroy();
    });
  }
}
