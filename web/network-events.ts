// The events a WeftNetwork dispatches (it is an EventTarget): one DOM event per NetworkEvent, named
// by its type and carrying it whole as `detail`, with the map that types addEventListener.

import type { NetworkEvent } from '../worker/worker-api';

/** The names of the events a WeftNetwork dispatches: 'relay', 'lease', 'flow-open', 'flow-close', 'drops', 'error'. */
export type NetworkEventType = NetworkEvent['type'];

/** The NetworkEvent of one type, e.g. `NetworkEventOf<'lease'>` is `{ type: 'lease'; mac; ip; hostname? }`. */
export type NetworkEventOf<T extends NetworkEventType> = Extract<NetworkEvent, { type: T }>;

/** A network event as a DOM event: `type` is the NetworkEvent's type, `detail` the NetworkEvent itself. */
export class WeftEvent<T extends NetworkEventType = NetworkEventType> extends Event {
  /** The event's name, the same as detail.type. */
  declare readonly type: T;
  /** The NetworkEvent, as on() listeners get it. */
  readonly detail: NetworkEventOf<T>;

  constructor(detail: NetworkEventOf<T>) {
    super(detail.type);
    this.detail = detail;
  }
}

/** Event names → the event a WeftNetwork dispatches for each (as HTMLElementEventMap for elements). */
export interface WeftNetworkEventMap {
  /** The relay connection changed state (detail.state; detail.message says why, when there is a why). */
  relay: WeftEvent<'relay'>;
  /** A guest took an address from weft's DHCP (detail.ip, detail.mac, detail.hostname when it sent one). */
  lease: WeftEvent<'lease'>;
  /** A guest's TCP or UDP flow opened (detail.flow: addresses, protocol). */
  'flow-open': WeftEvent<'flow-open'>;
  /** A flow closed (detail.flow: bytes each way, and detail.flow.reason, why it closed). */
  'flow-close': WeftEvent<'flow-close'>;
  /** Frames dropped since the last report, counted by reason (at most one report a second). */
  drops: WeftEvent<'drops'>;
  /** Something went wrong that no call can reject with (detail.message, and detail.code when it has one). */
  error: WeftEvent<'error'>;
}
