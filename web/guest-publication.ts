// network.publish(guestPort): the relay listens for the guest's server on a port of its own (weft's
// publish extension; `weft relay --publish-ports`), so anyone who can reach the relay reaches it.
// The worker owns the publication; the page holds its current port and URL.

import * as Comlink from 'comlink';
import type { PublishEvent, StackControlApi } from '../worker/worker-api';
import { WeftError } from './weft-error';

export interface PublishOptions {
  /** The relay port to ask for (default: any port of the relay's --publish-ports range). */
  relayPort?: number;
  /** Aborting stops waiting for the relay's answer (and the publication). */
  signal?: AbortSignal;
}

export interface GuestPublication {
  readonly guestPort: number;
  /** The relay's port; it may change after the relay connection drops and comes back. */
  readonly port: number;
  /** `http://<relay host>:<port>/` — for a web server; any TCP protocol works at that port. */
  readonly url: string;
  /** Stops the relay listening (connections already open stay). */
  close(): Promise<void>;
}

let nextId = 1;

export function publishGuestPort(
  api: Comlink.Remote<StackControlApi>,
  relayUrl: string | undefined,
  guestPort: number,
  options: PublishOptions,
  whenClosed: Promise<never>,
): Promise<GuestPublication> {
  if (!Number.isInteger(guestPort) || guestPort < 1 || guestPort > 65535) {
    return Promise.reject(new RangeError(`network.publish: guest port ${guestPort} is not a port number (1…65535)`));
  }
  if (!relayUrl) return Promise.reject(new WeftError('ERR_WEFT_NO_RELAY', 'network.publish needs a relay: createNetwork({ relayUrl })'));
  options.signal?.throwIfAborted();
  const host = new URL(relayUrl.replace(/^wisp(s?):/, 'ws$1:')).hostname;
  const id = nextId++;
  let port = 0;
  let settle: ((e: PublishEvent) => void) | undefined;
  const first = new Promise<PublishEvent>((resolve) => (settle = resolve));
  const onEvent = Comlink.proxy((e: PublishEvent) => {
    if (e.type === 'published') port = e.port;
    settle?.(e);
    settle = undefined;
  });
  const close = async () => {
    options.signal?.removeEventListener('abort', onAbort);
    await api.unpublish(id).catch(() => undefined);
  };
  const onAbort = () => void close();
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const aborted = new Promise<never>((_, reject) => options.signal?.addEventListener('abort', () => reject(options.signal!.reason), { once: true }));
  return Promise.race([api.publish(id, guestPort, options.relayPort ?? 0, onEvent).then(() => first), whenClosed, aborted]).then(async (e) => {
    if (e.type === 'refused') {
      await close();
      throw new WeftError(e.code, `network.publish(${guestPort}): ${e.message}`);
    }
    return {
      guestPort,
      get port() {
        return port;
      },
      get url() {
        return `http://${host.includes(':') ? `[${host}]` : host}:${port}/`;
      },
      close,
    };
  });
}
