// WispUpstream against weft's own server state machine over an in-memory transport: the Upstream
// contract (connect, data, pause, close mapping), bounded buffering, and v1 fallback.
import { describe, expect, it } from 'vitest';
import { CloseReason } from '../../core/wisp/wisp-codec';
import { WispServerSession, type WispStreamRequest } from '../../core/wisp/wisp-server';
import { FLOW_CONTROLLED_BOUND } from '../../core/wisp/wisp-flows';
import type { UpstreamError, FlowMeta, TcpStreamHandlers } from '../../core/upstream';
import { parseIpv4 } from '../../core/wire/address';
import { upstreamErrorKind, WispUpstream, type WispTransport } from '../../node-host/wisp-upstream';

const META: FlowMeta = { protocol: 'tcp', guest: { ip: parseIpv4('10.0.2.15'), port: 1234 }, target: { ip: parseIpv4('1.2.3.4'), port: 80 } };
const tick = () => new Promise((r) => setTimeout(r, 5));

/** An in-memory Wisp server: `decide` answers each CONNECT; TCP data is echoed. */
/** `pauses`: the server offers weft's flow control and records each PAUSE/RESUME — and keeps echoing regardless. */
function fakeServer(decide: (r: WispStreamRequest) => 'connect' | number | 'hold', opts: { rejectV2?: boolean; pauses?: boolean[] } = {}) {
  const protocolsSeen: string[][] = [];
  const sessions: WispServerSession[] = [];
  const connect = (_url: string, protocols: string[]): WispTransport => {
    protocolsSeen.push(protocols);
    let session!: WispServerSession;
    const t: WispTransport = {
      onopen: () => {},
      onmessage: () => {},
      onclose: () => {},
      send: (data) => queueMicrotask(() => session.receive(data.slice(), 0)),
      close: () => queueMicrotask(() => t.onclose({ code: 1000, reason: '' })),
      bufferedAmount: 0,
    };
    if (opts.rejectV2 && protocols.length > 0) {
      queueMicrotask(() => t.onclose({ code: 1006, reason: '', rejected: true }));
      return t;
    }
    session = new WispServerSession(
      {
        version: protocols.length > 0 ? 2 : 1,
        bufferPackets: 8,
        udp: true,
        passwordRequired: false,
        maxStreams: 100,
        handshakeTimeoutMs: 1000,
        idleTimeoutMs: 0,
        flowControl: opts.pauses !== undefined,
      },
      {
        send: (m) => queueMicrotask(() => t.onmessage(m)),
        ready: () => {},
        openStream: (r) => {
          const d = decide(r);
          queueMicrotask(() => {
            if (d === 'connect') session.connected(r.id, 0);
            else if (typeof d === 'number') session.closeStream(r.id, d);
          });
        },
        streamData: (id, p) => {
          session.sendData(id, p, 0);
          session.released(id);
        },
        streamEnd: () => {},
        streamClosed: () => {},
        terminate: () => {},
        ...(opts.pauses ? { streamPaused: (_id: number, paused: boolean) => opts.pauses?.push(paused) } : {}),
      },
    );
    sessions.push(session);
    queueMicrotask(() => {
      t.onopen();
      session.start(0);
    });
    return t;
  };
  return { connect, protocolsSeen, sessions };
}

function recorder() {
  const events: string[] = [];
  let error: UpstreamError | undefined;
  const handlers: TcpStreamHandlers = {
    onConnect: () => events.push('connect'),
    onData: (d) => events.push(`data ${Buffer.from(d).toString()}`),
    onEnd: () => events.push('end'),
    onDrain: () => events.push('drain'),
    onClose: (e) => {
      error = e;
      events.push(e ? `close ${e.kind}` : 'close');
    },
  };
  return {
    events,
    handlers,
    get error() {
      return error;
    },
  };
}

describe('WispUpstream', () => {
  it('maps close reasons to UpstreamError kinds', () => {
    expect([0x44, 0x42, 0x43, 0x48, 0x49, 0x03, 0x47, 0x01, 0x5a].map(upstreamErrorKind)).toEqual([
      'refused',
      'unreachable',
      'timeout',
      'blocked',
      'throttled',
      'reset',
      'timeout',
      'error',
      'error',
    ]);
  });

  it('connects on open confirmation, echoes, and ends cleanly on CLOSE 0x02', async () => {
    const server = fakeServer(() => 'connect');
    const up = new WispUpstream({ url: 'wisp://relay.test/wisp/', connect: server.connect });
    const r = recorder();
    const s = up.openTcp({ ip: parseIpv4('1.2.3.4'), port: 80 }, META, r.handlers);
    expect(r.events).toEqual([]); // nothing synchronous
    await tick();
    expect(server.protocolsSeen).toEqual([['wisp-v2']]);
    expect(r.events).toEqual(['connect']);
    s.write(Buffer.from('hi'));
    await tick();
    expect(r.events).toEqual(['connect', 'data hi']);
    server.sessions[0].closeAllStreams(CloseReason.VOLUNTARY);
    await tick();
    expect(r.events).toEqual(['connect', 'data hi', 'end', 'close']);
    up.close();
  });

  it('reports a refusal as onClose(error) without onConnect', async () => {
    const server = fakeServer(() => CloseReason.BLOCKED);
    const up = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect });
    const r = recorder();
    up.openTcp({ ip: parseIpv4('10.0.0.1'), port: 22 }, META, r.handlers);
    await tick();
    expect(r.events).toEqual(['close blocked']);
    expect(r.error?.message).toContain('10.0.0.1:22');
    up.close();
  });

  it('holds data for a paused stream, delivers it on resume, and resets past the bound', async () => {
    const server = fakeServer(() => 'connect');
    const up = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect, maxPausedBytes: 10 });
    const r = recorder();
    const s = up.openTcp({ ip: parseIpv4('1.2.3.4'), port: 80 }, META, r.handlers);
    await tick();
    s.pause();
    s.write(Buffer.from('abc'));
    await tick();
    expect(r.events).toEqual(['connect']);
    s.resume();
    expect(r.events).toEqual(['connect', 'data abc']);
    s.pause();
    s.write(Buffer.from('0123456789ab'));
    await tick();
    expect(r.events).toEqual(['connect', 'data abc', 'close reset']);
    expect(server.sessions[0].openStreams).toBe(0); // the upstream closed the stream on the server too
    up.close();
  });

  // With flow control, what arrives after a PAUSE is what was on its way; under load that can be far
  // more than the buffers hold, and a healthy download must not be reset for it.
  it(`with flow control, holds up to ${FLOW_CONTROLLED_BOUND}x the bound for a paused stream before resetting it`, async () => {
    const pauses: boolean[] = [];
    const server = fakeServer(() => 'connect', { pauses });
    const up = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect, maxPausedBytes: 10 });
    const r = recorder();
    const s = up.openTcp({ ip: parseIpv4('1.2.3.4'), port: 80 }, META, r.handlers);
    await tick();
    s.pause();
    await tick();
    expect(pauses).toEqual([true]); // the server was asked to stop reading
    const held = 'x'.repeat(10 * FLOW_CONTROLLED_BOUND - 5);
    s.write(Buffer.from(held)); // echoed although paused: what was on its way
    await tick();
    expect(r.events).toEqual(['connect']);
    s.resume();
    expect(r.events).toEqual(['connect', `data ${held}`]);
    s.pause();
    s.write(Buffer.from('y'.repeat(10 * FLOW_CONTROLLED_BOUND + 1)));
    await tick();
    expect(r.events.at(-1)).toBe('close reset');
    up.close();
  });

  it('falls back to v1 when the server refuses the v2 subprotocol', async () => {
    const server = fakeServer(() => 'connect', { rejectV2: true });
    const up = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect });
    const r = recorder();
    up.openTcp({ ip: parseIpv4('1.2.3.4'), port: 80 }, META, r.handlers);
    await new Promise((res) => setTimeout(res, 50));
    expect(server.protocolsSeen).toEqual([['wisp-v2'], []]);
    expect(r.events).toEqual(['connect']); // v1: connected as soon as CONNECT went out
    up.close();
  });

  it('times out a connection that never confirms', async () => {
    const server = fakeServer(() => 'hold');
    const up = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect, connectTimeoutMs: 30 });
    const r = recorder();
    up.openTcp({ ip: parseIpv4('1.2.3.4'), port: 80 }, META, r.handlers);
    await new Promise((res) => setTimeout(res, 60));
    expect(r.events).toEqual(['close timeout']);
    up.close();
  });

  it('maps the gateway to 127.0.0.1 only with allowHostLoopback', async () => {
    const asked: string[] = [];
    const server = fakeServer((r) => {
      asked.push(r.hostname);
      return 'connect';
    });
    const gateway = parseIpv4('10.0.2.2');
    const closed = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect, gateway });
    const r1 = recorder();
    closed.openTcp({ ip: gateway, port: 8000 }, META, r1.handlers);
    const open = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect, gateway, allowHostLoopback: true });
    const r2 = recorder();
    open.openTcp({ ip: gateway, port: 8000 }, META, r2.handlers);
    await tick();
    expect(r1.events).toEqual(['close blocked']);
    expect(r2.events).toEqual(['connect']);
    expect(asked).toEqual(['127.0.0.1']);
    closed.close();
    open.close();
  });

  it('stops sending DATA while the WebSocket holds over 4 MiB and starts again on onbufferedamountlow, without polling', async () => {
    const server = fakeServer(() => 'connect');
    let buffered = 0;
    let sent = 0;
    let transport: WispTransport | undefined;
    const connect = (url: string, protocols: string[]): WispTransport => {
      const t = server.connect(url, protocols);
      const send = t.send;
      t.send = (d) => {
        buffered += d.length;
        sent += d.length;
        send(d);
      };
      Object.defineProperty(t, 'bufferedAmount', { get: () => buffered });
      t.bufferedAmountLowThreshold = 0;
      transport = t;
      return t;
    };
    const up = new WispUpstream({ url: 'ws://relay/', connect });
    const block = new Uint8Array(64 * 1024);
    const streams = Array.from({ length: 16 }, () => {
      const r = recorder();
      return { r, stream: up.openTcp({ ip: parseIpv4('1.2.3.4'), port: 80 }, META, r.handlers) };
    });
    await tick();
    // 16 streams x 8 credits x 64 KiB is 8 MiB: more than the 4 MiB the WebSocket may hold.
    for (const { stream } of streams) while (stream.write(block));
    await tick();
    expect(transport!.bufferedAmountLowThreshold).toBe(1024 * 1024);
    expect(sent).toBeGreaterThan(4 * 1024 * 1024);
    expect(sent).toBeLessThan(4 * 1024 * 1024 + 2 * block.length);
    const atBlock = sent;
    await new Promise((r) => setTimeout(r, 30));
    expect(sent).toBe(atBlock); // nothing polls and sends while the WebSocket is full
    buffered = 0;
    transport!.onbufferedamountlow!();
    expect(sent).toBeGreaterThan(atBlock);
    up.close();
  });

  it('sends UDP datagrams and delivers replies from the destination', async () => {
    const server = fakeServer(() => 'connect');
    const up = new WispUpstream({ url: 'ws://relay.test/', connect: server.connect });
    const got: string[] = [];
    const dst = { ip: parseIpv4('9.9.9.9'), port: 53 };
    const f = up.openUdp(
      dst,
      { ...META, protocol: 'udp' },
      {
        onDatagram: (d, from) => got.push(`${Buffer.from(d).toString()} from ${from.port}`),
        onError: (e) => got.push(`error ${e.kind}`),
      },
    );
    f.send(Buffer.from('q1'));
    await tick();
    f.send(Buffer.from('q2'));
    await tick();
    expect(got).toEqual(['q1 from 53', 'q2 from 53']);
    f.close();
    up.close();
  });
});

describe('WispUpstream state', () => {
  it('reports ready, then one disconnected per drop and per failed attempt, typed', async () => {
    const server = fakeServer(() => 'connect');
    const transports: WispTransport[] = [];
    const connect = (url: string, protocols: string[]): WispTransport => {
      if (transports.length === 0) {
        const t = server.connect(url, protocols);
        transports.push(t);
        return t;
      }
      // Later attempts fail before the socket opens (the relay is down).
      const t: WispTransport = { onopen: () => {}, onmessage: () => {}, onclose: () => {}, send: () => {}, close: () => {}, bufferedAmount: 0 };
      transports.push(t);
      queueMicrotask(() => t.onclose({ code: 1006, reason: '' }));
      return t;
    };
    const states: string[] = [];
    const up = new WispUpstream({
      url: 'ws://relay/',
      connect,
      backoffMs: { initial: 1, max: 2 },
      onState: (s) => states.push(s.state === 'disconnected' ? `disconnected ${s.message}` : s.state),
    });
    for (let i = 0; i < 50 && !states.includes('ready'); i++) await tick();
    expect(states).toEqual(['ready']);
    // The socket drops: closed socket and ended session are one change.
    transports[0].onclose({ code: 1006, reason: 'gone' });
    for (let i = 0; i < 50 && transports.length < 3; i++) await tick();
    up.close();
    expect(states[1]).toBe('disconnected WebSocket closed (1006 gone)');
    expect(states.slice(2).every((s) => s === 'disconnected WebSocket closed (1006)')).toBe(true);
    // One report per failed attempt (the last attempt may still be under way when close() ran).
    expect(states.length - 2).toBeGreaterThanOrEqual(transports.length - 2);
    expect(states.length - 2).toBeLessThanOrEqual(transports.length - 1);
  });
});
