// A guest port published through the relay (weft's publish extension): the relay listens on a port
// of its own, and each connection it accepts there is carried into the guest's port as an active
// open from the gateway — the path `weft vm --forward` takes for a host socket. Shared by `weft vm
// --publish` and the page's network.publish().

import type { Stack } from '../stack';
import type { Ipv4Address } from '../wire/address';
import type { Publication, WispUpstream } from './wisp-upstream';

export interface GuestPublicationEvents {
  /** The relay listens on `relayPort` for guest port `guestPort` (again after each reconnect). */
  published(guestPort: number, relayPort: number): void;
  refused(guestPort: number, reason: string): void;
  /** A connection arrived and could not be carried (no lease, connection table full). */
  dropped?(guestPort: number, from: string, why: string): void;
}

/**
 * Asks the relay to listen for `guestPort` (on `relayPort`, or any port of its range for 0) and
 * carries its connections to the guest at `guestIp` (default: the guest's current lease).
 */
export function publishGuestPort(
  upstream: WispUpstream,
  stack: Stack,
  guestPort: number,
  relayPort: number,
  events: GuestPublicationEvents,
  guestIp?: Ipv4Address,
): Publication {
  return upstream.publish(relayPort, {
    onPublished: (port) => events.published(guestPort, port),
    onRefused: (reason) => events.refused(guestPort, reason),
    onConnection: (c) => {
      const opened = stack.connectToGuest(
        guestPort,
        (handlers) =>
          c.adopt(
            { protocol: 'tcp', guest: { ip: guestIp ?? stack.config.firstLease, port: guestPort }, target: { ip: stack.config.gateway, port: 0 } },
            handlers,
          ),
        guestIp,
      );
      if (!opened) {
        c.refuse();
        events.dropped?.(guestPort, `${c.remote.address}:${c.remote.port}`, 'no guest to carry it to, or the connection table is full');
      }
    },
  });
}
