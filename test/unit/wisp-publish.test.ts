// weft's publish extension (LISTEN, LISTEN_RESULT, ACCEPT, UNLISTEN) at packet level: the codec,
// the server session (offered only when asked, caps, server-opened streams with credits, the id
// space split) and the client session (accepted streams, its own ids kept below the server's).
import { describe, expect, it } from 'vitest';
import {
  CloseReason,
  ExtensionId,
  SERVER_STREAM_ID_BASE,
  encodeAccept,
  encodeConnect,
  encodeContinue,
  encodeData,
  encodeInfo,
  encodeListen,
  encodeListenResult,
  encodePublishServer,
  encodeUnlisten,
  parseWispPacket,
  type WispPacket,
} from '../../core/wisp/wisp-codec';
import { WispClientSession } from '../../core/wisp/wisp-client';
import { WispServerSession, type WispServerOptions } from '../../core/wisp/wisp-server';

const ext = (id: number, payload: Uint8Array = new Uint8Array(0)) => ({ id, payload });

function server(overrides: Partial<WispServerOptions> = {}) {
  const sent: WispPacket[] = [];
  const listens: Array<[number, number]> = [];
  const unlistens: number[] = [];
  const data: Array<[number, number[]]> = [];
  let terminated: string | undefined;
  const session = new WispServerSession(
    { version: 2, bufferPackets: 2, udp: true, passwordRequired: false, maxStreams: 3, handshakeTimeoutMs: 1000, idleTimeoutMs: 0, ...overrides },
    {
      send: (m) => sent.push(parseWispPacket(m) as WispPacket),
      ready: () => {},
      openStream: () => {},
      streamData: (id, p) => data.push([id, [...p]]),
      streamEnd: () => {},
      streamClosed: () => {},
      listen: (id, port) => listens.push([id, port]),
      unlisten: (id) => unlistens.push(id),
      terminate: (e) => (terminated = e.code),
    },
  );
  session.start(0);
  return {
    session,
    sent,
    listens,
    unlistens,
    data,
    get terminated() {
      return terminated;
    },
  };
}

describe('publish codec', () => {
  it('round-trips every packet', () => {
    expect(parseWispPacket(encodeListen(7, 1, 8080))).toEqual({ type: 'listen', streamId: 7, streamType: 1, port: 8080 });
    expect(parseWispPacket(encodeListenResult(7, 0, 47001))).toEqual({ type: 'listen-result', streamId: 7, status: 0, port: 47001 });
    expect(parseWispPacket(encodeAccept(0x8000_0005, 7, 128, 51234, '203.0.113.9'))).toEqual({
      type: 'accept',
      streamId: 0x8000_0005,
      listenerId: 7,
      bufferRemaining: 128,
      remotePort: 51234,
      remoteAddress: '203.0.113.9',
    });
    expect(parseWispPacket(encodeUnlisten(7))).toEqual({ type: 'unlisten', streamId: 7 });
  });

  it('pins the byte layout (what other implementations follow)', () => {
    expect([...encodeListen(1, 1, 0x1f90)]).toEqual([0xf3, 1, 0, 0, 0, 1, 0x90, 0x1f]);
    expect([...encodeListenResult(1, 0x49, 0)]).toEqual([0xf4, 1, 0, 0, 0, 0x49, 0, 0]);
    expect([...encodeAccept(0x8000_0000, 1, 2, 0x0102, 'a')]).toEqual([0xf5, 0, 0, 0, 0x80, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 0x61]);
    expect([...encodePublishServer(4)]).toEqual([4, 0]);
  });

  it('reports short and malformed packets as drops', () => {
    expect(parseWispPacket(Uint8Array.of(0xf3, 1, 0, 0, 0, 1))).toBe('wisp-listen-short');
    expect(parseWispPacket(Uint8Array.of(0xf4, 1, 0, 0, 0))).toBe('wisp-listen-result-short');
    expect(parseWispPacket(Uint8Array.of(0xf5, 0, 0, 0, 0x80, 1, 0, 0, 0))).toBe('wisp-accept-short');
    expect(parseWispPacket(Uint8Array.of(0xf5, 0, 0, 0, 0x80, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0xff))).toBe('wisp-accept-bad-utf8');
  });
});

describe('WispServerSession with publish', () => {
  it('offers the extension only when configured, and refuses LISTEN from a client that did not negotiate it', () => {
    const off = server();
    expect(off.sent[0]).toMatchObject({ type: 'info' });
    expect((off.sent[0] as { extensions: Array<{ id: number }> }).extensions.map((e) => e.id)).not.toContain(ExtensionId.WEFT_PUBLISH);
    const on = server({ publish: { maxListeners: 2 } });
    expect(
      (on.sent[0] as { extensions: Array<{ id: number; payload: Uint8Array }> }).extensions.find((e) => e.id === ExtensionId.WEFT_PUBLISH)?.payload,
    ).toEqual(encodePublishServer(2));
    on.session.receive(encodeInfo(2, 0, []), 0); // the client does not offer it
    on.session.receive(encodeListen(1, 1, 0), 0);
    expect(on.listens).toEqual([]);
    expect(on.sent.at(-1)).toEqual({ type: 'listen-result', streamId: 1, status: CloseReason.BLOCKED, port: 0 });
  });

  it('passes LISTEN to the host, caps listeners, refuses UDP and a reused id, and forwards UNLISTEN', () => {
    const h = server({ publish: { maxListeners: 2 } });
    h.session.receive(encodeInfo(2, 0, [ext(ExtensionId.WEFT_PUBLISH)]), 0);
    expect(h.session.publishes).toBe(true);
    h.session.receive(encodeListen(1, 1, 8080), 0);
    h.session.receive(encodeListen(1, 1, 8081), 0);
    h.session.receive(encodeListen(2, 2, 0), 0);
    h.session.receive(encodeListen(3, 1, 0), 0);
    h.session.receive(encodeListen(4, 1, 0), 0);
    expect(h.listens).toEqual([
      [1, 8080],
      [3, 0],
    ]);
    expect(h.sent.slice(-3)).toEqual([
      { type: 'listen-result', streamId: 1, status: CloseReason.INVALID_INFO, port: 0 },
      { type: 'listen-result', streamId: 2, status: CloseReason.BLOCKED, port: 0 },
      { type: 'listen-result', streamId: 4, status: CloseReason.THROTTLED, port: 0 },
    ]);
    h.session.listenResult(1, 0, 47001);
    expect(h.sent.at(-1)).toEqual({ type: 'listen-result', streamId: 1, status: 0, port: 47001 });
    h.session.receive(encodeUnlisten(1), 0);
    h.session.receive(encodeUnlisten(9), 0);
    expect(h.unlistens).toEqual([1]);
    expect(h.session.ignored.get('unlisten-unknown')).toBe(1);
  });

  it('opens server streams from SERVER_STREAM_ID_BASE with credits, and enforces them', () => {
    const h = server({ publish: { maxListeners: 2 } });
    h.session.receive(encodeInfo(2, 0, [ext(ExtensionId.WEFT_PUBLISH)]), 0);
    h.session.receive(encodeListen(1, 1, 0), 0);
    h.session.listenResult(1, 0, 47001);
    expect(h.session.acceptStream(2, '198.51.100.1', 1000, 0)).toBeUndefined(); // no such listener
    const id = h.session.acceptStream(1, '198.51.100.1', 1000, 0)!;
    expect(id).toBe(SERVER_STREAM_ID_BASE);
    expect(h.sent.at(-1)).toEqual({ type: 'accept', streamId: id, listenerId: 1, bufferRemaining: 2, remotePort: 1000, remoteAddress: '198.51.100.1' });
    expect(h.session.acceptStream(1, '198.51.100.1', 1001, 0)).toBe(SERVER_STREAM_ID_BASE + 1);
    h.session.receive(encodeData(id, Uint8Array.of(1)), 0);
    h.session.receive(encodeData(id, Uint8Array.of(2)), 0);
    expect(h.data).toEqual([
      [id, [1]],
      [id, [2]],
    ]);
    h.session.receive(encodeData(id, Uint8Array.of(3)), 0);
    expect(h.terminated).toBe('credit-overrun');
  });

  it("refuses a client CONNECT in the server's id space once publish is on", () => {
    const h = server({ publish: { maxListeners: 2 } });
    h.session.receive(encodeInfo(2, 0, [ext(ExtensionId.WEFT_PUBLISH)]), 0);
    h.session.receive(encodeConnect(SERVER_STREAM_ID_BASE + 9, 1, 80, 'example.com'), 0);
    expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: SERVER_STREAM_ID_BASE + 9, reason: CloseReason.INVALID_INFO });
  });
});

describe('WispClientSession with publish', () => {
  function client(hostAccepts = true) {
    const sent: WispPacket[] = [];
    const accepted: Array<[number, number, string]> = [];
    const results: Array<[number, number, number]> = [];
    const session = new WispClientSession(
      { version: 2, udp: true, maxStreams: 4, maxDataPayload: 1000, maxQueuedBytes: 10_000, handshakeTimeoutMs: 1000, publish: true },
      {
        send: (m) => sent.push(parseWispPacket(m) as WispPacket),
        ready: () => {},
        streamConfirmed: () => {},
        streamData: () => {},
        streamEnded: () => {},
        streamWritable: () => {},
        streamClosed: () => {},
        terminate: () => {},
        listenResult: (id, status, port) => results.push([id, status, port]),
        ...(hostAccepts ? { streamAccepted: (l: number, id: number, r: { address: string }) => accepted.push([l, id, r.address]) } : {}),
      },
    );
    session.start(0);
    session.receive(encodeInfo(2, 0, [ext(ExtensionId.WEFT_PUBLISH, encodePublishServer(4))]), 0);
    session.receive(encodeContinue(0, 8), 0);
    return { session, sent, accepted, results };
  }

  it('offers publish, sends LISTEN, hands over listen results and accepted streams that can be written at once', () => {
    const c = client();
    expect(c.session.publishes).toBe(true);
    expect(c.session.listen(5, 8000)).toBeUndefined();
    expect(c.sent.at(-1)).toEqual({ type: 'listen', streamId: 5, streamType: 1, port: 8000 });
    c.session.receive(encodeListenResult(5, 0, 47003), 0);
    expect(c.results).toEqual([[5, 0, 47003]]);
    c.session.receive(encodeAccept(SERVER_STREAM_ID_BASE, 5, 2, 4000, '192.0.2.4'), 0);
    expect(c.accepted).toEqual([[5, SERVER_STREAM_ID_BASE, '192.0.2.4']]);
    expect(c.session.write(SERVER_STREAM_ID_BASE, Uint8Array.of(9))).toBe(true);
    expect(c.sent.at(-1)).toMatchObject({ type: 'data', streamId: SERVER_STREAM_ID_BASE });
  });

  it('refuses an ACCEPT in its own id space, or when nobody takes inbound streams', () => {
    const c = client();
    c.session.receive(encodeAccept(7, 5, 2, 4000, '192.0.2.4'), 0);
    expect(c.sent.at(-1)).toEqual({ type: 'close', streamId: 7, reason: CloseReason.INVALID_INFO });
    const d = client(false);
    d.session.receive(encodeAccept(SERVER_STREAM_ID_BASE, 5, 2, 4000, '192.0.2.4'), 0);
    expect(d.sent.at(-1)).toEqual({ type: 'close', streamId: SERVER_STREAM_ID_BASE, reason: CloseReason.BLOCKED });
  });

  it('keeps its own stream ids below SERVER_STREAM_ID_BASE', () => {
    const c = client();
    const ids: number[] = [];
    for (let i = 0; i < 3; i++) {
      const id = c.session.openStream('tcp', 'example.com', 80) as number;
      ids.push(id);
      c.session.close(id);
    }
    expect(ids.every((id) => id > 0 && id < SERVER_STREAM_ID_BASE)).toBe(true);
  });
});
