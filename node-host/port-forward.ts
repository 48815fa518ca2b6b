// `weft vm --forward HOSTPORT:GUESTPORT`: a host TCP listener whose connections the stack carries
// to a port on the guest. Each accepted socket stays paused until the guest accepts the forwarded
// connection (the stack resumes it), and is destroyed if the guest refuses or never answers.

import net from 'node:net';
import type { Stack } from '../core/stack';
import { DirectTcpStream } from './direct-upstream';
import type { PortForward } from './vm-options';

export class PortForwarder {
  private readonly servers: net.Server[] = [];
  private readonly sockets = new Set<net.Socket>();

  constructor(
    private readonly stack: Stack,
    private readonly forwards: readonly PortForward[],
    private readonly log: (event: string, fields: Record<string, unknown>) => void,
  ) {}

  /** Listens on every forward; rejects with a clear message if a port cannot be bound. */
  async start(): Promise<void> {
    for (const f of this.forwards) {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.accept(socket, f));
      this.servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', (e: NodeJS.ErrnoException) =>
          reject(new Error(`--forward ${f.hostPort}:${f.guestPort}: cannot listen on ${f.host}:${f.hostPort} (${e.code ?? e.message})`)),
        );
        server.listen(f.hostPort, f.host, () => resolve());
      });
      server.on('error', (e) => this.log('forward-error', { host: f.host, hostPort: f.hostPort, message: e.message }));
      this.log('forward', { listen: `${f.host}:${f.hostPort}`, guestPort: f.guestPort });
    }
  }

  private accept(socket: net.Socket, f: PortForward): void {
    const flow = `forward ${socket.remoteAddress}:${socket.remotePort} → guest:${f.guestPort}`;
    const opened = this.stack.connectToGuest(f.guestPort, (handlers) =>
      new DirectTcpStream(socket, flow, handlers, this.sockets, (e) => this.log('forward-close', e as Record<string, unknown>)),
    );
    if (!opened) {
      this.log('forward-refused', { flow, reason: 'no free port or connection table full' });
      socket.destroy();
    }
  }

  /** Stops listening and closes every forwarded socket. */
  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await Promise.all(this.servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
}
