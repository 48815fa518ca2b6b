// A LAN shared by the tabs of one origin (createNetwork({ lan: name })): it runs in a SharedWorker
// named after the LAN, so it belongs to no tab — it lives while any of its tabs does, and the tab
// that opened it may close first, with no election and nothing handed over. One stack routes for the
// LAN; each tab is a port of a learning switch whose router port is that stack (a tab switches its
// own guests in the page the same way, so a frame between two tabs' guests passes two switches and
// never the stack). Each tab has its own control session (LanTab): what it opened — connections
// into guests, publications, a capture — ends when it leaves.
//
// A tab leaves by close() (stop), or when it is gone: each tab holds a Web Lock while it lives and
// the worker asks for the same lock, which it is granted once the tab closed or crashed; a
// MessagePort 'close' event, where the browser has one, says the same sooner. The stack stops when
// the last tab left, and the next tab to join starts it again with its settings.

import { LearningSwitch, type SwitchPort } from '../core/link/learning-switch';
import { DEFAULT_NETWORK } from '../core/config';
import { monotonicClock } from '../platform/stack-timer';
import { LanChannel } from './lan-channel';
import { StackHost, type HostStats } from './stack-host';
import { StackSession } from './stack-session';
import type { LanJoinResult, LanWorkerApi, NetworkEvent, NetworkSettings, WorkerStats } from './worker-api';

/** Tabs on one LAN at most. */
export const MAX_LAN_TABS = 16;
/** MACs the LAN's switch holds, and for how long (a Linux bridge's default ageing time). */
const MAX_MACS = 1024;
const AGING_MS = 300_000;

interface Member {
  port: SwitchPort;
  channel: LanChannel;
  /** What the tab said of its guests and segmentation offload (undefined: nothing yet). */
  offload: boolean | undefined;
}

export class LanHost {
  private host: StackHost | undefined;
  private sw: LearningSwitch | undefined;
  private router: SwitchPort | undefined;
  /** The settings the stack runs with, as a canonical string (what a joining tab must match). */
  private running = '';
  private readonly members = new Map<LanTab, Member>();
  /** Joins and leaves, one after the other (starting and stopping the stack are not instant). */
  private queue: Promise<unknown> = Promise.resolve();
  private name = '';

  get tabs(): number {
    return this.members.size;
  }

  join(tab: LanTab, name: string, settings: NetworkSettings, framePort: MessagePort, lock: string | undefined): Promise<LanJoinResult> {
    return this.serial(async () => {
      if (this.members.has(tab)) return { ok: false, code: 'ERR_WEFT_START_FAILED', message: 'this tab has joined the LAN already' };
      if (this.members.size >= MAX_LAN_TABS) {
        return { ok: false, code: 'ERR_WEFT_LAN_FULL', message: `the LAN '${name}' has ${MAX_LAN_TABS} tabs, as many as it takes` };
      }
      const wanted = canonical(settings);
      if (this.host && wanted !== this.running) {
        return {
          ok: false,
          code: 'ERR_WEFT_LAN_MISMATCH',
          message: `the LAN '${name}' runs with other settings than this tab's (${differences(this.running, wanted)}): every tab must pass the settings the first one did`,
        };
      }
      const host = this.host ?? this.start(name, settings, wanted);
      const sw = this.sw as LearningSwitch;
      const channel = new LanChannel(framePort, {
        frame: (frame) => member.port.input(frame),
        batchEnd: () => host.inputDone(),
        around: host.measured,
      });
      // The channel copies what it sends (into a batch): the switch may hand it a frame another port also got.
      const member: Member = { port: sw.addPort(`tab${++tabSeq}`, (frame) => channel.push(frame)), channel, offload: undefined };
      this.members.set(tab, member);
      tab.opened(host);
      // Granted once the tab let go of it: closed, crashed, or navigated away.
      const locks = (globalThis as { navigator?: Partial<Navigator> }).navigator?.locks;
      if (lock && locks) locks.request(lock, () => this.leave(tab)).catch(() => undefined);
      framePort.addEventListener('close', () => void this.leave(tab));
      if (host.relayState !== 'none') channel.event({ type: 'relay', state: host.relayState, ...(settings.relayUrl ? { url: settings.relayUrl } : {}) });
      // The leases the other tabs' guests hold: a late tab hears them as the first tabs did.
      for (const e of host.leaseEvents()) channel.event(e);
      return { ok: true, relay: host.relayState };
    });
  }

  /** Takes the tab's port off the LAN (once); the stack stops with the last tab. */
  leave(tab: LanTab): Promise<void> {
    return this.serial(async () => {
      const member = this.members.get(tab);
      if (!member) return;
      this.members.delete(tab);
      member.port.remove();
      member.channel.close();
      await tab.ended();
      this.updateOffload();
      if (this.members.size === 0) this.stop();
    });
  }

  /** Segmentation offload for new connections: on while every tab that said anything says its guests take it. */
  setOffload(tab: LanTab, on: boolean): void {
    const member = this.members.get(tab);
    if (!member) return;
    member.offload = on;
    this.updateOffload();
  }

  /** This tab's part of the stats: its frames, its drops, and the LAN's. */
  tabStats(tab: LanTab): Omit<WorkerStats, keyof HostStats> {
    const member = this.members.get(tab);
    const c = member?.channel.counters();
    const p = member?.port.counters();
    return {
      framesToPage: c?.framesSent ?? 0,
      framesFromPage: c?.framesReceived ?? 0,
      framePath: 'transfer',
      ringDrops: { toWorker: 0, toPage: c?.framesDropped ?? 0 },
      sharedLan: { name: this.name, tabs: this.members.size, drops: { ...(p?.drops ?? {}) } as Record<string, number> },
    };
  }

  private start(name: string, settings: NetworkSettings, key: string): StackHost {
    const sw = new LearningSwitch({ maxMacs: MAX_MACS, agingMs: AGING_MS, now: () => monotonicClock.now() });
    let router: SwitchPort | undefined;
    // The stack's frames go into the switch at its router port; what the switch hands the router goes into the stack.
    const host = new StackHost(settings, (frame) => router?.input(frame), this.broadcast);
    router = sw.addRouterPort([DEFAULT_NETWORK.gatewayMac], (frame) => host.stack.input(frame));
    sw.guardLeases((ip) => host.stack.leaseHolderOf(ip));
    this.sw = sw;
    this.router = router;
    this.host = host;
    this.running = key;
    this.name = name;
    return host;
  }

  private stop(): void {
    this.router?.remove();
    this.host?.stop();
    this.host = this.sw = this.router = undefined;
    this.running = '';
  }

  /** Every event reaches every tab. */
  private readonly broadcast = (e: NetworkEvent): void => {
    for (const m of this.members.values()) m.channel.event(e);
  };

  private updateOffload(): void {
    const said = [...this.members.values()].map((m) => m.offload).filter((o) => o !== undefined);
    this.host?.setSegmentationOffload(said.length > 0 && said.every((o) => o));
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(op);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

let tabSeq = 0;

/** One tab's control session on the LAN: the comlink API its page talks to. */
export class LanTab extends StackSession implements LanWorkerApi {
  constructor(private readonly lan: LanHost) {
    super();
  }

  async join(name: string, settings: NetworkSettings, framePort: MessagePort, lock: string | undefined): Promise<LanJoinResult> {
    const joined = await this.lan.join(this, name, settings, framePort, lock);
    if (!joined.ok) framePort.close();
    return joined;
  }

  /** Called by the LAN when this tab joined. */
  opened(host: StackHost): void {
    this.open(host);
  }

  async stop(): Promise<void> {
    await this.lan.leave(this);
  }

  /** Called by the LAN when this tab left: ends what the tab opened. */
  ended(): Promise<void> {
    return this.release();
  }

  async setSegmentationOffload(on: boolean): Promise<void> {
    this.lan.setOffload(this, on);
  }

  async stats(): Promise<WorkerStats> {
    return { ...this.runningHost().stats(), ...this.lan.tabStats(this) };
  }
}

/** Settings as a string that is the same for equal settings (keys sorted at every level). */
function canonical(settings: NetworkSettings): string {
  const { lan: _lan, ...rest } = settings;
  return JSON.stringify(sortKeys(rest));
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v === null || typeof v !== 'object') return v;
  return Object.fromEntries(
    Object.entries(v)
      .filter(([, x]) => x !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, x]) => [k, sortKeys(x)]),
  );
}

/** The names of the top-level settings that differ (never their values: a password may be one). */
function differences(a: string, b: string): string {
  const x = JSON.parse(a) as Record<string, unknown>;
  const y = JSON.parse(b) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(x), ...Object.keys(y)])].filter((k) => JSON.stringify(x[k]) !== JSON.stringify(y[k]));
  return keys.length ? `${keys.join(', ')} differ` : 'they differ';
}
