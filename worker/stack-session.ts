// One page's control of a running stack: its connections into the guests (connectTcp), its
// publications through the relay, its capture, and the stack's stats and flows. A dedicated worker
// has one such session; a shared LAN's worker has one per tab, all on the same StackHost, so a
// tab that leaves ends only what it opened.

import * as Comlink from 'comlink';
import { publishGuestPort } from '../core/wisp/guest-publication';
import { formatIpv4 } from '../core/wire/address';
import type { Publication } from '../core/wisp/wisp-upstream';
import { GuestConnector } from './guest-tcp';
import { PcapCapture } from './pcap-capture';
import type { StackHost } from './stack-host';
import {
  summarizeFlow,
  type FlowSummary,
  type GuestConnectRequest,
  type GuestConnectResult,
  type GuestTcpEnd,
  type PublishEvent,
  type StackControlApi,
  type WorkerStats,
} from './worker-api';

export abstract class StackSession implements StackControlApi {
  protected host: StackHost | undefined;
  private guests: GuestConnector | undefined;
  /** The page's publications (network.publish), by the page's id. */
  private readonly publications = new Map<number, { publication: Publication; onEvent: (e: PublishEvent) => void }>();
  private capture: { file: PcapCapture; untap: () => void } | undefined;

  abstract stop(): Promise<void>;
  abstract setSegmentationOffload(on: boolean): Promise<void>;
  abstract stats(): Promise<WorkerStats>;

  /** The session now uses `host` (its stack runs). */
  protected open(host: StackHost): void {
    this.host = host;
    this.guests = new GuestConnector(host.stack);
  }

  /** Ends what this page opened on the host: its connections, publications and capture. */
  protected async release(): Promise<void> {
    this.guests?.close();
    this.guests = undefined;
    this.capture?.untap();
    this.capture = undefined;
    for (const id of [...this.publications.keys()]) await this.unpublish(id);
    this.host = undefined;
  }

  protected runningHost(): StackHost {
    if (!this.host) throw new Error('the network is not started');
    return this.host;
  }

  async flows(): Promise<FlowSummary[]> {
    return (this.host?.stack.flows() ?? []).map((f) => summarizeFlow(f, formatIpv4));
  }

  async startCapture(): Promise<void> {
    const host = this.runningHost();
    this.capture?.untap();
    const file = new PcapCapture();
    this.capture = { file, untap: host.tap((frame, timeMs) => file.write(frame, timeMs)) };
  }

  async stopCapture(): Promise<Uint8Array> {
    const c = this.capture;
    this.capture = undefined;
    if (!c) throw new Error('no capture is running');
    c.untap();
    const out = c.file.file();
    return Comlink.transfer(out, [out.buffer]);
  }

  async connectTcp(request: GuestConnectRequest, onEnd: (end: GuestTcpEnd) => void): Promise<GuestConnectResult> {
    if (!this.guests) throw new Error('the network is not started');
    const r = await this.guests.connect(request, (end) => {
      // onEnd is the page's function behind a comlink proxy: called once, then let go.
      onEnd(end);
      (onEnd as unknown as Comlink.Remote<unknown>)[Comlink.releaseProxy]();
    });
    // The streams move to the page (see guest-tcp.ts for why transferable streams).
    return r.ok ? Comlink.transfer(r, [r.readable, r.writable]) : r;
  }

  async abortTcp(id: number): Promise<void> {
    this.guests?.abort(id);
  }

  async publish(id: number, guestPort: number, relayPort: number, onEvent: (e: PublishEvent) => void): Promise<void> {
    const host = this.host;
    if (!host?.upstream) {
      onEvent({ type: 'refused', code: 'ERR_WEFT_NO_RELAY', message: 'publish needs a relay: createNetwork({ relayUrl })' });
      return;
    }
    await this.unpublish(id);
    const publication = publishGuestPort(host.upstream, host.stack, guestPort, relayPort, {
      published: (_guestPort, port) => onEvent({ type: 'published', port }),
      refused: (_guestPort, message) => onEvent({ type: 'refused', code: 'ERR_WEFT_PUBLISH_REFUSED', message }),
    });
    this.publications.set(id, { publication, onEvent });
  }

  async unpublish(id: number): Promise<void> {
    const p = this.publications.get(id);
    if (!p) return;
    this.publications.delete(id);
    p.publication.close();
    // onEvent is the page's function behind a comlink proxy: let it go with the publication.
    (p.onEvent as unknown as Comlink.Remote<unknown>)[Comlink.releaseProxy]();
  }
}
