// The page API of createNetwork() against a fake worker: a MessageChannel whose far end exposes a
// scripted WeftWorkerApi through comlink, as weft-worker.js does. Events as an EventTarget (typed
// addEventListener, and on() as before), WeftError codes, and AbortSignal for the network and its ports.
import * as Comlink from 'comlink';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FrameBatcher, unpackFrames } from '../../worker/frame-batch';
import type {
  FlowSummary,
  GuestConnectRequest,
  GuestConnectResult,
  NetworkEvent,
  NetworkSettings,
  NetworkStats,
  PublishEvent,
  WeftWorkerApi,
} from '../../worker/worker-api';
import { createNetwork, WeftError, WeftEvent, type FramePort, type WeftNetwork } from '../../web/index';
import { tcpToGuestFrame } from '../support/frames';

/** What the fake worker does when the page starts it. */
type StartMode = 'ok' | 'hang' | 'throw';

/** The worker side: records what the page sent, and plays events and frames on request. */
class FakeStack implements WeftWorkerApi {
  settings: NetworkSettings | undefined;
  onEvent: ((e: NetworkEvent) => void) | undefined;
  port: MessagePort | undefined;
  readonly fromPage: Uint8Array[] = [];
  stopped = 0;

  constructor(private readonly mode: StartMode) {}

  async start(settings: NetworkSettings, framePort: MessagePort, onEvent: (e: NetworkEvent) => void): Promise<void> {
    this.settings = settings;
    this.onEvent = onEvent;
    this.port = framePort;
    framePort.onmessage = (e: MessageEvent) => unpackFrames(e.data as ArrayBuffer, (f) => void this.fromPage.push(f.slice()));
    if (this.mode === 'throw') throw new RangeError('MTU must be an integer in 576…65520, got 9');
    if (this.mode === 'hang') await new Promise(() => undefined);
  }
  async stop(): Promise<void> {
    this.stopped++;
  }
  async setSegmentationOffload(): Promise<void> {}
  stats(): Promise<NetworkStats> {
    return new Promise(() => undefined); // answers never: a call the page must give up on when it closes
  }
  async flows(): Promise<FlowSummary[]> {
    return [];
  }
  async startCapture(): Promise<void> {}
  async stopCapture(): Promise<Uint8Array> {
    return new Uint8Array(24);
  }
  async connectTcp(request: GuestConnectRequest): Promise<GuestConnectResult> {
    return { ok: false, code: 'ERR_WEFT_GUEST_REFUSED', message: `the guest refused the connection to port ${request.port}` };
  }
  async abortTcp(): Promise<void> {}
  readonly unpublished: number[] = [];
  /** A relay that publishes guest port 80 on 47001 and refuses anything else. */
  async publish(_id: number, guestPort: number, _relayPort: number, onEvent: (e: PublishEvent) => void): Promise<void> {
    if (guestPort === 80) onEvent({ type: 'published', port: 47001 });
    else onEvent({ type: 'refused', code: 'ERR_WEFT_PUBLISH_REFUSED', message: 'the relay refused to listen (throttled)' });
  }
  async unpublish(id: number): Promise<void> {
    this.unpublished.push(id);
  }

  event(e: NetworkEvent): void {
    void this.onEvent!(e);
  }
  toPage(frames: Uint8Array[]): void {
    const batcher = new FrameBatcher(
      (batch) => this.port!.postMessage(batch, [batch]),
      () => undefined,
    );
    for (const f of frames) batcher.push(f);
    batcher.send();
  }
}

/** Stands in for `Worker`: 'refuse' throws as a browser does for a cross-origin script, 'no-script' fires 'error' as for a 404. */
class FakeWorker extends EventTarget {
  static created: FakeWorker[] = [];
  static behaviour: StartMode | 'refuse' | 'no-script' = 'ok';
  readonly stack: FakeStack;
  terminated = false;
  private readonly port: MessagePort;

  constructor(readonly url: string | URL) {
    super();
    if (FakeWorker.behaviour === 'refuse') throw new DOMException('Script at a cross-origin URL cannot be accessed', 'SecurityError');
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.stack = new FakeStack(FakeWorker.behaviour === 'no-script' ? 'hang' : FakeWorker.behaviour);
    if (FakeWorker.behaviour === 'no-script') setTimeout(() => this.dispatchEvent(new Event('error')), 1);
    else Comlink.expose(this.stack, port2);
    port1.addEventListener('message', (e) => this.dispatchEvent(new MessageEvent('message', { data: (e as MessageEvent).data })));
    port1.start();
    FakeWorker.created.push(this);
  }
  postMessage(message: unknown, transfer: Transferable[] = []): void {
    this.port.postMessage(message, transfer);
  }
  terminate(): void {
    this.terminated = true;
    this.port.close();
  }
}

/** Resolves with the next event of `type` the network dispatches. */
function nextEvent<K extends 'relay' | 'lease' | 'error'>(net: WeftNetwork, type: K): Promise<WeftEvent<K>> {
  return new Promise((resolve) => net.addEventListener(type, (e) => resolve(e as WeftEvent<K>), { once: true }));
}

async function expectCode(p: Promise<unknown>, code: WeftError['code']): Promise<WeftError> {
  const e = await p.then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e).toBeInstanceOf(WeftError);
  expect((e as WeftError).code).toBe(code);
  return e as WeftError;
}

/** Every wait here takes milliseconds: a test that waits longer waits for something that will not come. */
const QUICK = { timeout: 10_000 };

const lease: NetworkEvent = { type: 'lease', mac: '52:54:00:12:34:56', ip: '10.0.2.15', hostname: 'guest' };

let networks: WeftNetwork[] = [];
function network(options: Parameters<typeof createNetwork>[0] = {}): WeftNetwork {
  const net = createNetwork(options);
  networks.push(net);
  return net;
}
const stackOf = () => FakeWorker.created.at(-1)!.stack;

const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
/** weft's MAC (the stack's, behind the worker). */
const GATEWAY = [0x52, 0x55, 0x0a, 0x00, 0x02, 0x02];
const MAC_A = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_C = [0x02, 0, 0, 0, 0, 0x0c];

/** A 60-byte IPv4-typed Ethernet frame whose first payload byte is `tag` (what the tests follow). */
function frame(dst: number[], src: number[], tag: number): Uint8Array {
  const f = new Uint8Array(60);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = 0x08;
  f[14] = tag;
  return f;
}

/** The tags of the frames the fake stack received from the page. */
const tagsFromPage = () => stackOf().fromPage.map((f) => f[14]);

/** A port that records the tags of the frames weft sends it and can send frames as its guest (with `mac`). */
function recordingPort(mac: number[]): FramePort & { got: number[]; frames: Uint8Array[]; guestSends(tag: number, dst?: number[]): Uint8Array } {
  let cb: ((frame: Uint8Array) => void) | undefined;
  const got: number[] = [];
  const frames: Uint8Array[] = [];
  return {
    got,
    frames,
    send: (f) => {
      got.push(f[14]);
      frames.push(f);
    },
    onFrame: (f) => void (cb = f),
    guestSends: (tag, dst = GATEWAY) => {
      const f = frame(dst, mac, tag);
      cb?.(f);
      return f;
    },
  };
}

beforeEach(() => {
  FakeWorker.created = [];
  FakeWorker.behaviour = 'ok';
  vi.stubGlobal('Worker', FakeWorker);
});
afterEach(async () => {
  await Promise.allSettled(networks.map((n) => n.close()));
  networks = [];
  vi.unstubAllGlobals();
  vi.restoreAllMocks();
});

describe('WeftNetwork events', QUICK, () => {
  it('dispatches each NetworkEvent as a typed event whose detail is the NetworkEvent', async () => {
    const net = network({ relayUrl: 'ws://relay.test/wisp/' });
    await net.ready;
    const got = nextEvent(net, 'lease');
    const ips: string[] = [];
    net.addEventListener('lease', (e) => ips.push(e.detail.ip));
    // @ts-expect-error a relay event has no ip: the event map types each event's detail
    net.addEventListener('relay', (e) => e.detail.ip);
    stackOf().event(lease);
    const e = await got;
    expect(e).toBeInstanceOf(WeftEvent);
    expect(e).toBeInstanceOf(Event);
    expect(e.type).toBe('lease');
    expect(e.detail).toEqual(lease);
    expect(ips).toEqual(['10.0.2.15']);
  });

  it('keeps on(): the listener gets the NetworkEvent itself, one that throws is logged and the others still run, and unsubscribe works', async () => {
    const logged = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    const net = network();
    await net.ready;
    const seen: string[] = [];
    net.on('relay', () => {
      throw new Error('a page bug');
    });
    const off = net.on('relay', (e) => seen.push(e.state));
    stackOf().event({ type: 'relay', state: 'connecting', url: 'ws://relay.test/wisp/' });
    await vi.waitFor(() => expect(seen).toEqual(['connecting']));
    expect(logged).toHaveBeenCalledWith('weft: an event listener threw', expect.any(Error));
    off();
    const last = nextEvent(net, 'relay');
    stackOf().event({ type: 'relay', state: 'connected' });
    expect((await last).detail).toEqual({ type: 'relay', state: 'connected' });
    expect(seen).toEqual(['connecting']);
    expect(net.relayState).toBe('connected');
  });

  it('removeEventListener takes a listener off', async () => {
    const net = network();
    await net.ready;
    const seen: string[] = [];
    const listener = (e: WeftEvent<'lease'>) => void seen.push(e.detail.ip);
    net.addEventListener('lease', listener);
    net.removeEventListener('lease', listener);
    const got = nextEvent(net, 'lease');
    stackOf().event(lease);
    await got;
    expect(seen).toEqual([]);
  });

  it('sends the worker only the network settings (not the signal, worker URL or frame path)', async () => {
    const net = network({
      relayUrl: 'ws://relay.test/wisp/',
      mtu: 1400,
      allowHostLoopback: true,
      signal: new AbortController().signal,
      framePath: 'transfer',
      workerUrl: '/w.js',
    });
    await net.ready;
    expect(stackOf().settings).toEqual({ relayUrl: 'ws://relay.test/wisp/', mtu: 1400, allowHostLoopback: true });
    expect(String(FakeWorker.created[0].url)).toBe('/w.js');
  });
});

describe('WeftError codes', QUICK, () => {
  it("framePath 'sab' on a page that is not cross-origin isolated throws ERR_WEFT_SAB_UNAVAILABLE, before any worker starts", () => {
    let thrown: unknown;
    try {
      createNetwork({ framePath: 'sab' });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(WeftError);
    expect(thrown).toMatchObject({ name: 'WeftError', code: 'ERR_WEFT_SAB_UNAVAILABLE', message: expect.stringContaining('cross-origin isolated') });
    expect(FakeWorker.created).toEqual([]);
  });

  it('a stack that cannot start rejects ready with ERR_WEFT_START_FAILED (the cause kept) and reports an error event with the code', async () => {
    FakeWorker.behaviour = 'throw';
    const net = network();
    const event = nextEvent(net, 'error');
    const e = await expectCode(net.ready, 'ERR_WEFT_START_FAILED');
    expect(e.message).toContain('MTU must be an integer');
    expect(e.cause).toBeInstanceOf(Error);
    expect((await event).detail).toEqual({ type: 'error', code: 'ERR_WEFT_START_FAILED', message: e.message });
  });

  it('a worker script that does not load rejects ready with ERR_WEFT_START_FAILED naming workerUrl, and close() still ends', async () => {
    FakeWorker.behaviour = 'no-script';
    const net = network({ workerUrl: '/assets/weft-worker.js' });
    const e = await expectCode(net.ready, 'ERR_WEFT_START_FAILED');
    expect(e.message).toContain('/assets/weft-worker.js');
    expect(e.message).toContain('workerUrl');
    await net.close();
    expect(FakeWorker.created[0].terminated).toBe(true);
  });

  it('a worker the browser refuses to create makes createNetwork throw ERR_WEFT_START_FAILED', () => {
    FakeWorker.behaviour = 'refuse';
    expect(() => createNetwork({ workerUrl: 'https://cdn.test/weft-worker.js' })).toThrowError(
      expect.objectContaining({ code: 'ERR_WEFT_START_FAILED', cause: expect.objectContaining({ name: 'SecurityError' }) }),
    );
  });

  it('an error the worker throws after it started is an error event with ERR_WEFT_WORKER_ERROR', async () => {
    const net = network();
    await net.ready;
    const event = nextEvent(net, 'error');
    FakeWorker.created[0].dispatchEvent(Object.assign(new Event('error'), { message: 'Uncaught TypeError: x is undefined' }));
    expect((await event).detail).toEqual({
      type: 'error',
      code: 'ERR_WEFT_WORKER_ERROR',
      message: 'the weft worker threw: Uncaught TypeError: x is undefined',
    });
  });

  it('close(): ready and calls under way reject with ERR_WEFT_CLOSED, later calls too, attach throws it, and the worker ends', async () => {
    FakeWorker.behaviour = 'hang';
    const net = network();
    const stats = expectCode(net.stats(), 'ERR_WEFT_CLOSED');
    const closing = net.close();
    expect(net.close()).toBe(closing);
    await closing;
    await expectCode(net.ready, 'ERR_WEFT_CLOSED');
    await stats;
    await expectCode(net.flows(), 'ERR_WEFT_CLOSED');
    await expectCode(net.stopCapture(), 'ERR_WEFT_CLOSED');
    expect(() => net.attach({ send() {}, onFrame() {} })).toThrowError(expect.objectContaining({ code: 'ERR_WEFT_CLOSED' }));
    expect(FakeWorker.created[0].terminated).toBe(true);
    expect(stackOf().stopped).toBe(1);
  });
});

describe('publish', QUICK, () => {
  it('resolves with the relay port and a URL on the relay host; refusals and a missing relay are WeftErrors; close() unpublishes', async () => {
    const net = network({ relayUrl: 'wss://relay.example:8443/wisp/' });
    await net.ready;
    const p = await net.publish(80);
    expect([p.guestPort, p.port, p.url]).toEqual([80, 47001, 'http://relay.example:47001/']);
    await expectCode(net.publish(81), 'ERR_WEFT_PUBLISH_REFUSED');
    await p.close();
    expect(stackOf().unpublished.length).toBe(2); // the refused one, then the closed one
    await expect(net.publish(0)).rejects.toThrow(RangeError);
    const without = network();
    await without.ready;
    await expectCode(without.publish(80), 'ERR_WEFT_NO_RELAY');
  });
});

describe('AbortSignal', QUICK, () => {
  it('createNetwork with an aborted signal throws its reason and starts no worker', () => {
    const reason = new Error('the user left');
    expect(() => createNetwork({ signal: AbortSignal.abort(reason) })).toThrow(reason);
    expect(FakeWorker.created).toEqual([]);
  });

  it('aborting closes the network: ready rejects with the reason, the worker stops and ends, attach throws ERR_WEFT_CLOSED', async () => {
    FakeWorker.behaviour = 'hang';
    const controller = new AbortController();
    const net = network({ signal: controller.signal });
    const reason = new DOMException('the page is done with it', 'AbortError');
    const stats = expect(net.stats()).rejects.toBe(reason);
    controller.abort(reason);
    await expect(net.ready).rejects.toBe(reason);
    await stats;
    await vi.waitFor(() => expect(FakeWorker.created[0].terminated).toBe(true));
    expect(stackOf().stopped).toBe(1);
    expect(() => net.attach({ send() {}, onFrame() {} })).toThrowError(expect.objectContaining({ code: 'ERR_WEFT_CLOSED' }));
    // Aborting after close, or closing after aborting, does nothing more.
    await net.close();
    expect(stackOf().stopped).toBe(1);
  });

  it('aborting after ready leaves ready resolved', async () => {
    const controller = new AbortController();
    const net = network({ signal: controller.signal });
    await net.ready;
    controller.abort();
    await expect(net.ready).resolves.toBeUndefined();
    await vi.waitFor(() => expect(FakeWorker.created[0].terminated).toBe(true));
  });

  it('attach(port, { signal }): aborting detaches the port in both directions; the other port stays', async () => {
    const net = network();
    await net.ready;
    const controller = new AbortController();
    const a = recordingPort(MAC_A);
    const b = recordingPort(MAC_B);
    net.attach(a, { signal: controller.signal });
    net.attach(b);
    stackOf().toPage([frame(BROADCAST, GATEWAY, 1)]);
    await vi.waitFor(() => expect(b.got).toEqual([1]));
    expect(a.got).toEqual([1]);
    a.guestSends(2);
    await vi.waitFor(() => expect(tagsFromPage()).toEqual([2]));

    controller.abort();
    stackOf().toPage([frame(BROADCAST, GATEWAY, 3)]);
    await vi.waitFor(() => expect(b.got).toEqual([1, 3]));
    expect(a.got, 'nothing reaches the detached port').toEqual([1]);
    a.guestSends(4);
    b.guestSends(5);
    await vi.waitFor(() => expect(tagsFromPage()).toEqual([2, 5]));
  });

  it('attach with an already aborted signal attaches nothing', async () => {
    const net = network();
    await net.ready;
    const onFrame = vi.fn();
    const detach = net.attach({ send() {}, onFrame }, { signal: AbortSignal.abort() });
    expect(onFrame).not.toHaveBeenCalled();
    expect(() => detach()).not.toThrow();
  });
});

describe('one LAN in the page: the attached ports are switched', QUICK, () => {
  it('guest-to-guest unicast goes port to port, as a copy: not through the worker, not to a third port', async () => {
    const net = network();
    await net.ready;
    const [a, b, c] = [recordingPort(MAC_A), recordingPort(MAC_B), recordingPort(MAC_C)];
    for (const p of [a, b, c]) net.attach(p);
    b.guestSends(1); // b's MAC is learned on its port
    const sent = a.guestSends(2, MAC_B);
    // The sender may reuse its buffer once onFrame returned (an emulator's ring).
    sent.fill(0xee);
    expect(b.got).toEqual([2]);
    expect(b.frames[0][14], 'b got its own copy').toBe(2);
    a.guestSends(3); // to the gateway: the worker gets it, and (in order) would have got 2 before it
    await vi.waitFor(() => expect(tagsFromPage()).toEqual([1, 3]));
    expect(c.got).toEqual([]);
  });

  it('frames from the worker reach only the port their destination was seen on; unknown destinations and broadcasts are flooded', async () => {
    const net = network();
    await net.ready;
    const [a, b] = [recordingPort(MAC_A), recordingPort(MAC_B)];
    net.attach(a);
    net.attach(b);
    stackOf().toPage([frame(MAC_A, GATEWAY, 1)]); // not learned yet: flooded
    await vi.waitFor(() => expect(b.got).toEqual([1]));
    expect(a.got).toEqual([1]);
    a.guestSends(2);
    b.guestSends(3);
    await vi.waitFor(() => expect(tagsFromPage()).toEqual([2, 3]));
    stackOf().toPage([frame(MAC_A, GATEWAY, 4), frame(MAC_B, GATEWAY, 5), frame(BROADCAST, GATEWAY, 6)]);
    await vi.waitFor(() => expect(b.got).toEqual([1, 5, 6]));
    expect(a.got).toEqual([1, 4, 6]);
  });

  it('a broadcast from a guest reaches the other ports and the worker', async () => {
    const net = network();
    await net.ready;
    const [a, b] = [recordingPort(MAC_A), recordingPort(MAC_B)];
    net.attach(a);
    net.attach(b);
    a.guestSends(7, BROADCAST);
    expect(b.got).toEqual([7]);
    expect(a.got).toEqual([]);
    await vi.waitFor(() => expect(tagsFromPage()).toEqual([7]));
  });

  it("a guest sending with weft's MAC is dropped: neither the worker nor another guest gets it", async () => {
    const net = network();
    await net.ready;
    const [spoofer, b] = [recordingPort(GATEWAY), recordingPort(MAC_B)];
    net.attach(spoofer);
    net.attach(b);
    spoofer.guestSends(8, BROADCAST);
    b.guestSends(9);
    await vi.waitFor(() => expect(tagsFromPage()).toEqual([9]));
    expect(b.got).toEqual([]);
  });

  it('with one port, a frame from the worker is handed over as it came (no copy)', async () => {
    const net = network();
    await net.ready;
    const a = recordingPort(MAC_A);
    net.attach(a);
    stackOf().toPage([frame(BROADCAST, GATEWAY, 1)]);
    await vi.waitFor(() => expect(a.got).toEqual([1]));
    // A view into the transferred batch, after its 4-byte length.
    expect(a.frames[0].byteOffset).toBe(4);
  });

  it('an oversized TCP segment is split for a port whose guest does not take it whole, and goes whole to one that does', async () => {
    const net = network();
    await net.ready;
    const guestMac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56]; // tcpToGuestFrame's destination
    const plain = recordingPort(guestMac);
    const offloading = { ...recordingPort(guestMac), offloadSegments: (_mtu: number, accepts: (on: boolean) => void) => accepts(true) };
    net.attach(plain);
    net.attach(offloading);
    const big = tcpToGuestFrame(new Uint8Array(4000).fill(0x42));
    plain.guestSends(1); // the guest's MAC is behind `plain`
    stackOf().toPage([big]);
    await vi.waitFor(() => expect(plain.frames.length).toBe(3));
    expect(plain.frames.every((f) => f.length <= 14 + 1500)).toBe(true);
    offloading.guestSends(2); // now behind `offloading`
    stackOf().toPage([big]);
    await vi.waitFor(() => expect(offloading.frames.length).toBe(1));
    expect(offloading.frames[0].length).toBe(big.length);
    expect(plain.frames.length).toBe(3);
  });

  it('a port attached twice is a TypeError', async () => {
    const net = network();
    const a = recordingPort(MAC_A);
    net.attach(a);
    expect(() => net.attach(a)).toThrowError(TypeError);
  });
});

describe('createNetwork({ lan }) where it cannot be', QUICK, () => {
  it('throws ERR_WEFT_LAN_UNAVAILABLE in a browser without SharedWorker, and starts no worker', () => {
    vi.stubGlobal('SharedWorker', undefined);
    expect(() => createNetwork({ lan: 'x' })).toThrowError(expect.objectContaining({ name: 'WeftError', code: 'ERR_WEFT_LAN_UNAVAILABLE' }));
    expect(FakeWorker.created).toHaveLength(0);
  });

  it("throws ERR_WEFT_SAB_UNAVAILABLE for framePath 'sab' with lan (a SharedWorker cannot share memory with the page), and a RangeError for an empty name", () => {
    expect(() => createNetwork({ lan: 'x', framePath: 'sab' })).toThrowError(expect.objectContaining({ code: 'ERR_WEFT_SAB_UNAVAILABLE' }));
    expect(() => createNetwork({ lan: '' })).toThrowError(RangeError);
    expect(FakeWorker.created).toHaveLength(0);
  });
});
