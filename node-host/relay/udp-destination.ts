// The relay's socket for a UDP stream: one connected datagram socket, so only the chosen
// destination's replies come back. Datagrams sent before it is connected wait in a short queue.

import dgram from 'node:dgram';
import { CloseReason } from '../../core/wisp/wisp-codec';
import { formatIp, type IpAddress } from './ip-range';
import type { DestinationEvents } from './tcp-destination';

/** The largest UDP payload: 65 535 − 8 (UDP header) − 20 (IPv4 header). */
const MAX_DATAGRAM = 65_507;
const MAX_EARLY_DATAGRAMS = 16;

export class UdpDestination {
  private readonly socket: dgram.Socket;
  private connected = false;
  private done = false;
  private early: Uint8Array[] = [];
  /** Datagrams dropped: too large, or sent while still connecting with the queue full. */
  dropped = 0;

  constructor(
    address: IpAddress,
    port: number,
    private readonly events: DestinationEvents,
  ) {
    const text = formatIp(address);
    this.socket = dgram.createSocket(address.family === 4 ? 'udp4' : 'udp6');
    this.socket.on('message', (data: Buffer) => {
      if (!this.done) this.events.data(data);
    });
    this.socket.on('error', (e: NodeJS.ErrnoException) => {
      // A connected UDP socket reports ICMP port unreachable as ECONNREFUSED.
      this.finish(e.code === 'ECONNREFUSED' ? CloseReason.REFUSED : this.connected ? CloseReason.NETWORK_ERROR : CloseReason.UNREACHABLE, e.code);
    });
    this.socket.connect(port, text, () => {
      if (this.done) return;
      this.connected = true;
      for (const d of this.early.splice(0)) this.transmit(d);
      this.events.connected(text);
    });
  }

  send(data: Uint8Array): void {
    if (this.done) return;
    if (data.length > MAX_DATAGRAM) {
      this.dropped++;
      return;
    }
    if (this.connected) this.transmit(data);
    else if (this.early.length < MAX_EARLY_DATAGRAMS) this.early.push(data);
    else this.dropped++;
  }

  close(): void {
    if (this.done) return;
    this.done = true;
    this.early = [];
    try {
      this.socket.close();
    } catch {
      // already closed
    }
  }

  private transmit(data: Uint8Array): void {
    this.socket.send(data, (e) => {
      if (e) this.finish(CloseReason.NETWORK_ERROR, (e as NodeJS.ErrnoException).code);
    });
  }

  private finish(reason: number, detail?: string): void {
    if (this.done) return;
    this.close();
    this.events.closed(reason, detail);
  }
}
