// UDP into the guest (`weft vm --forward udp:HOSTPORT:GUESTPORT`): a host side binds a port of
// weft's gateway address and talks to one guest port from it, as a connected UDP socket would.
// The guest's answers — datagrams to gateway:that port from that guest address and port — go to
// the binding instead of out through the UDP NAT.

import type { Ipv4Address } from '../wire/address';

export interface GuestUdpHandlers {
  onDatagram(payload: Uint8Array): void;
}

/** A connected UDP socket on weft's gateway address, to one guest port. */
export interface GuestUdpSocket {
  /** The gateway port it sends from. */
  readonly localPort: number;
  send(payload: Uint8Array): void;
  close(): void;
}

interface Binding {
  guestIp: Ipv4Address;
  guestPort: number;
  handlers: GuestUdpHandlers;
}

/** Where bindings live: the top of the port space, above what guests usually reach on the gateway. */
const FIRST_PORT = 49152;
const PORTS = 65536 - FIRST_PORT;

export class GuestUdpPorts {
  private readonly bindings = new Map<number, Binding>();

  constructor(
    private readonly send: (localPort: number, guestIp: Ipv4Address, guestPort: number, payload: Uint8Array) => void,
    private readonly random: (out: Uint8Array) => void,
    private readonly maxBindings: number,
  ) {}

  get size(): number {
    return this.bindings.size;
  }

  /** A free gateway port bound to guestIp:guestPort; undefined when none is left. */
  open(guestIp: Ipv4Address, guestPort: number, handlers: GuestUdpHandlers): GuestUdpSocket | undefined {
    if (this.bindings.size >= this.maxBindings) return undefined;
    const r = new Uint8Array(2);
    this.random(r);
    const start = (r[0] << 8) | r[1];
    for (let i = 0; i < PORTS; i++) {
      const localPort = FIRST_PORT + ((start + i) % PORTS);
      if (this.bindings.has(localPort)) continue;
      const binding: Binding = { guestIp, guestPort, handlers };
      this.bindings.set(localPort, binding);
      return {
        localPort,
        send: (payload) => {
          if (this.bindings.get(localPort) === binding) this.send(localPort, guestIp, guestPort, payload);
        },
        close: () => {
          if (this.bindings.get(localPort) === binding) this.bindings.delete(localPort);
        },
      };
    }
    return undefined;
  }

  /** A guest datagram to the gateway: true when a binding took it. */
  input(src: Ipv4Address, srcPort: number, dstPort: number, payload: Uint8Array): boolean {
    const b = this.bindings.get(dstPort);
    if (!b || b.guestIp !== src || b.guestPort !== srcPort) return false;
    b.handlers.onDatagram(payload);
    return true;
  }

  closeAll(): void {
    this.bindings.clear();
  }
}
