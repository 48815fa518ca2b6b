// A WebSocket inside the relay process: a LAN room's router (a weft Stack with a WispUpstream)
// talks Wisp to a RelayConnection of this very relay through it, so the room's traffic to the
// internet passes the same policy, caps (streams, --rate, --bandwidth, unread answers) and metrics
// as any client's, with no second implementation of them. The two ends pass whole messages with a
// turn of the event loop between (no re-entrancy), each end may stop reading (pause), and what one
// end has sent and the other not yet taken is the sender's bufferedAmount / unsent bytes, which is
// what both sides' own bounds act on.

import { EventEmitter } from 'node:events';
import type { WispTransport } from '../../core/wisp/wisp-upstream';
import type { ClientSocket } from './relay-connection';

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

interface Pending {
  data: Uint8Array;
  done?: () => void;
}

/** One direction: messages waiting for the reader, delivered on a later turn unless it paused. */
class MessageQueue {
  private readonly queue: Pending[] = [];
  bytes = 0;
  paused = false;
  private scheduled = false;

  constructor(private readonly deliver: (data: Uint8Array) => void) {}

  push(p: Pending): void {
    this.queue.push(p);
    this.bytes += p.data.length;
    this.schedule();
  }

  schedule(): void {
    if (this.scheduled || this.paused || this.queue.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.drain();
    });
  }

  private drain(): void {
    // Only what was queued before this turn: a reader that answers at once waits for the next one.
    for (let n = this.queue.length; n > 0 && !this.paused; n--) {
      const p = this.queue.shift() as Pending;
      this.bytes -= p.data.length;
      this.deliver(p.data);
      p.done?.();
    }
    this.schedule();
  }

  clear(): void {
    for (const p of this.queue.splice(0)) p.done?.();
    this.bytes = 0;
  }
}

/** The relay's end: what RelayConnection takes as its WebSocket. */
class ServerEnd extends EventEmitter implements ClientSocket {
  readonly OPEN = OPEN;
  readyState = CONNECTING;

  constructor(private readonly link: MemoryWispLink) {
    super();
  }

  get isPaused(): boolean {
    return this.link.toServer.paused;
  }

  send(data: Uint8Array, _options: { binary: boolean }, cb: (err?: Error) => void): void {
    if (this.readyState !== OPEN) return;
    this.link.toClient.push({ data, done: () => cb() });
  }

  close(code = 1000, reason = ''): void {
    this.link.end(code, reason);
  }

  terminate(): void {
    this.link.end(1006, '');
  }

  pause(): void {
    this.link.toServer.paused = true;
  }

  resume(): void {
    this.link.toServer.paused = false;
    this.link.toServer.schedule();
  }
}

export class MemoryWispLink {
  readonly server: ServerEnd;
  readonly client: WispTransport;
  readonly toServer: MessageQueue;
  readonly toClient: MessageQueue;
  private closed = false;

  constructor() {
    this.server = new ServerEnd(this);
    this.toServer = new MessageQueue((data) => this.server.emit('message', Buffer.from(data.buffer, data.byteOffset, data.length), true));
    this.toClient = new MessageQueue((data) => this.client.onmessage(data));
    const link = this;
    this.client = {
      onopen: () => {},
      onmessage: () => {},
      onclose: () => {},
      bufferedAmountLowThreshold: 0,
      send(data) {
        if (link.closed) return;
        const length = data.length;
        // The upstream may reuse nothing it sent, but copy anyway: the relay keeps what it reads.
        link.toServer.push({
          data: data.slice(),
          done: () => {
            const low = this.bufferedAmountLowThreshold ?? 0;
            if (link.toServer.bytes <= low && link.toServer.bytes + length > low) this.onbufferedamountlow?.();
          },
        });
      },
      close(code = 1000, reason = '') {
        link.end(code, reason);
      },
      get bufferedAmount() {
        return link.toServer.bytes;
      },
      pause: () => {
        this.toClient.paused = true;
      },
      resume: () => {
        this.toClient.paused = false;
        this.toClient.schedule();
      },
    };
  }

  /**
   * Opens both ends on the next turn (as a WebSocket's open event comes later): the server's end
   * first, handed to `accept` (whose first messages then wait for the client), then the client's.
   */
  open(accept: (server: ServerEnd) => void): void {
    setImmediate(() => {
      if (this.closed) return;
      this.server.readyState = OPEN;
      accept(this.server);
      this.client.onopen();
    });
  }

  /** Closes both ends: each hears it once, on a later turn; what was queued is dropped. */
  end(code: number, reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.server.readyState = CLOSED;
    this.toServer.clear();
    this.toClient.clear();
    setImmediate(() => {
      this.server.emit('close', code);
      this.client.onclose({ code, reason });
    });
  }
}
