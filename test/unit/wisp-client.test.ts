// The Wisp client state machine at packet level: handshake (v2 and v1 fallback), credits, queues.
import { describe, expect, it } from 'vitest';
import {
  encodeClose,
  encodeContinue,
  encodeData,
  encodeEnd,
  encodeFlow,
  encodeInfo,
  encodePasswordServer,
  encodeMotd,
  parsePasswordClient,
  parseWispPacket,
  type WispPacket,
} from '../../core/wisp/wisp-codec';
import { WispClientSession, type WispClientOptions, type WispReadyInfo } from '../../core/wisp/wisp-client';
import { WispProtocolError } from '../../core/wisp/wisp-errors';

function harness(overrides: Partial<WispClientOptions> = {}) {
  const sent: WispPacket[] = [];
  const ready: WispReadyInfo[] = [];
  const events: string[] = [];
  let terminated: WispProtocolError | undefined;
  const session = new WispClientSession(
    { version: 2, udp: true, maxStreams: 4, maxDataPayload: 4, maxQueuedBytes: 16, handshakeTimeoutMs: 100, ...overrides },
    {
      send: (m) => sent.push(parseWispPacket(m) as WispPacket),
      ready: (i) => ready.push(i),
      streamConfirmed: (id) => events.push(`confirmed ${id}`),
      streamData: (id, p) => events.push(`data ${id} ${[...p]}`),
      streamWritable: (id) => events.push(`writable ${id}`),
      streamEnded: (id) => events.push(`ended ${id}`),
      streamClosed: (id, r) => events.push(`closed ${id} ${r}`),
      terminate: (e) => (terminated = e),
    },
  );
  session.start(0);
  return {
    session,
    sent,
    ready,
    events,
    get terminated() {
      return terminated;
    },
  };
}

const ext = (id: number, payload: Uint8Array = new Uint8Array(0)) => ({ id, payload });
const dataPackets = (sent: WispPacket[]) => sent.filter((p) => p.type === 'data') as Extract<WispPacket, { type: 'data' }>[];

describe('WispClientSession', () => {
  it('v2: answers INFO with its extensions, opens on CONTINUE, then sends queued CONNECTs', () => {
    const h = harness();
    const id = h.session.openStream('tcp', '10.0.0.1', 80);
    expect(id).toBe(1);
    expect(h.sent).toEqual([]);
    h.session.receive(encodeInfo(2, 0, [ext(1), ext(4, encodeMotd('welcome')), ext(5)]), 0);
    expect(h.sent[0]).toMatchObject({ type: 'info', major: 2 });
    h.session.receive(encodeContinue(0, 3), 0);
    expect(h.ready).toEqual([{ version: 2, extensions: [1, 4, 5], motd: 'welcome', initialCredits: 3 }]);
    expect(h.sent[1]).toEqual({ type: 'connect', streamId: 1, streamType: 1, port: 80, hostname: '10.0.0.1' });
    expect(h.session.confirmsOpens).toBe(true);
    h.session.receive(encodeContinue(1, 3), 0);
    expect(h.events).toEqual(['confirmed 1']);
  });

  it('falls back to v1 when CONTINUE comes first', () => {
    const h = harness();
    h.session.receive(encodeContinue(0, 10), 0);
    expect(h.ready).toEqual([{ version: 1, extensions: [], initialCredits: 10 }]);
    expect(h.sent).toEqual([]);
  });

  it('sends its password when the server offers the extension', () => {
    const h = harness({ password: { username: 'u', password: 'p' } });
    h.session.receive(encodeInfo(2, 0, [ext(2, encodePasswordServer(true))]), 0);
    const info = h.sent[0] as Extract<WispPacket, { type: 'info' }>;
    const pw = info.extensions.find((e) => e.id === 2)!;
    expect(parsePasswordClient(pw.payload)).toContainEqual({ username: 'u', password: 'p' });
  });

  it('rejects a server that requires a password it does not have (0xc2)', () => {
    const h = harness();
    h.session.openStream('tcp', 'x', 1);
    h.session.receive(encodeInfo(2, 0, [ext(2, encodePasswordServer(true))]), 0);
    expect(h.sent).toEqual([{ type: 'close', streamId: 0, reason: 0xc2 }]);
    expect(h.terminated?.code).toBe('auth-required');
    expect(h.events).toEqual(['closed 1 3']);
  });

  it('reports a rejected handshake (CLOSE on stream 0)', () => {
    const h = harness();
    h.session.receive(encodeInfo(2, 0, []), 0);
    h.session.receive(encodeClose(0, 0xc0), 0);
    expect(h.terminated?.code).toBe('auth-failed');
  });

  it('times out a handshake', () => {
    const h = harness();
    h.session.poll(99);
    expect(h.terminated).toBeUndefined();
    h.session.poll(100);
    expect(h.terminated?.code).toBe('handshake-timeout');
  });

  it('never sends DATA beyond its credits; queues, then drains on CONTINUE', () => {
    const h = harness();
    h.session.receive(encodeContinue(0, 2), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    // 10 bytes in pieces of at most 4: 3 packets, only 2 credits.
    expect(
      h.session.write(
        id,
        Uint8Array.from({ length: 10 }, (_, i) => i),
      ),
    ).toBe(false);
    expect(dataPackets(h.sent).map((p) => p.payload.length)).toEqual([4, 4]);
    h.session.receive(encodeContinue(id, 1), 0);
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([
      [0, 1, 2, 3],
      [4, 5, 6, 7],
      [8, 9],
    ]);
    expect(h.events).toEqual(['writable 1']);
    expect(h.session.write(id, Uint8Array.of(1))).toBe(false); // credit is 0 again
  });

  it('copies queued data, even from a Node Buffer whose slice() would share memory', () => {
    const h = harness();
    h.session.receive(encodeContinue(0, 0), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    const buf = Buffer.from([1, 2, 3]);
    h.session.write(id, buf);
    buf.fill(9); // the link reuses its buffer for the next frame
    h.session.receive(encodeContinue(id, 1), 0);
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([[1, 2, 3]]);
  });

  it('fails a stream whose writer ignores back-pressure past maxQueuedBytes', () => {
    const h = harness();
    h.session.receive(encodeContinue(0, 0), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    h.session.write(id, new Uint8Array(16));
    expect(h.events).toEqual([]);
    h.session.write(id, new Uint8Array(1));
    expect(h.events).toEqual(['closed 1 129']);
    expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: 1, reason: 0x81 });
  });

  it('half-closes in order behind queued data, and reports the server END', () => {
    const h = harness({ halfClose: true });
    h.session.receive(encodeInfo(2, 0, [ext(0xf0)]), 0);
    h.session.receive(encodeContinue(0, 1), 0);
    expect(h.session.halfCloses).toBe(true);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    h.session.write(id, Uint8Array.of(1, 2, 3, 4, 5)); // two pieces, one credit
    expect(h.session.end(id)).toBe(true);
    expect(h.sent.filter((p) => p.type === 'end')).toEqual([]);
    h.session.receive(encodeContinue(id, 1), 0);
    expect(h.sent.slice(-2)).toEqual([
      { type: 'data', streamId: id, payload: Uint8Array.of(5) },
      { type: 'end', streamId: id },
    ]);
    expect(h.session.write(id, Uint8Array.of(9))).toBe(true); // ignored after end
    expect(dataPackets(h.sent)).toHaveLength(2);
    h.session.receive(encodeEnd(id), 0);
    expect(h.events).toContain(`ended ${id}`);
  });

  it('cannot half-close against a server without the extension', () => {
    const h = harness({ halfClose: true });
    h.session.receive(encodeInfo(2, 0, []), 0);
    h.session.receive(encodeContinue(0, 1), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    expect(h.session.end(id)).toBe(false);
    h.session.receive(encodeEnd(id), 0);
    expect(h.events).toEqual([]);
  });

  it('sends UDP without credits and holds a few datagrams until the handshake', () => {
    const h = harness();
    const id = h.session.openStream('udp', 'x', 53) as number;
    h.session.write(id, Uint8Array.of(1));
    h.session.receive(encodeInfo(2, 0, [ext(1)]), 0);
    h.session.receive(encodeContinue(0, 0), 0);
    h.session.write(id, Uint8Array.of(2));
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([[1], [2]]);
  });

  it('refuses UDP when a v2 server did not offer it, and too many streams', () => {
    const h = harness({ maxStreams: 1 });
    h.session.receive(encodeInfo(2, 0, []), 0);
    h.session.receive(encodeContinue(0, 1), 0);
    expect(h.session.openStream('udp', 'x', 53)).toBe('wisp-udp-unsupported');
    h.session.openStream('tcp', 'x', 1);
    expect(h.session.openStream('tcp', 'x', 1)).toBe('wisp-too-many-streams');
  });

  it('delivers DATA and CLOSE, ignores packets for unknown streams, and aborts every stream', () => {
    const h = harness();
    h.session.receive(encodeContinue(0, 1), 0);
    const a = h.session.openStream('tcp', 'x', 1) as number;
    const b = h.session.openStream('tcp', 'x', 2) as number;
    h.session.receive(encodeData(a, Uint8Array.of(5)), 0);
    h.session.receive(encodeData(99, Uint8Array.of(5)), 0);
    h.session.receive(encodeClose(a, 0x44), 0);
    h.session.close(b);
    expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: b, reason: 2 });
    const c = h.session.openStream('tcp', 'x', 3) as number;
    h.session.abort(new WispProtocolError('connection-lost', 'gone'));
    expect(h.events).toEqual([`data ${a} 5`, `closed ${a} 68`, `closed ${c} 3`]);
    expect(h.session.isClosed).toBe(true);
  });

  it('coalesces queued writes into packets of up to maxDataPayload, each costing one credit', () => {
    const h = harness({ maxDataPayload: 8, maxQueuedBytes: 64 });
    h.session.receive(encodeContinue(0, 0), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    for (let i = 0; i < 5; i++) h.session.write(id, Uint8Array.of(3 * i, 3 * i + 1, 3 * i + 2)); // 15 bytes
    h.session.receive(encodeContinue(id, 1), 0);
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([[0, 1, 2, 3, 4, 5, 6, 7]]);
    h.session.receive(encodeContinue(id, 5), 0);
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([
      [0, 1, 2, 3, 4, 5, 6, 7],
      [8, 9, 10, 11, 12, 13, 14],
    ]);
    expect(h.events).toEqual([`writable ${id}`]);
  });

  it('between cork() and uncork() writes coalesce, report writable within credits, and keep their order with END and CLOSE', () => {
    const h = harness({ maxDataPayload: 8, maxQueuedBytes: 16, halfClose: true });
    h.session.receive(encodeInfo(2, 0, [ext(0xf0)]), 0);
    h.session.receive(encodeContinue(0, 2), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    h.session.cork();
    expect(h.session.write(id, Uint8Array.of(1, 2, 3))).toBe(true);
    expect(h.session.write(id, Uint8Array.of(4, 5, 6))).toBe(true);
    expect(h.session.write(id, Uint8Array.of(7, 8, 9, 10))).toBe(true); // 10 bytes: 2 packets, 2 credits
    expect(h.session.write(id, Uint8Array.of(11, 12, 13, 14, 15, 16, 17))).toBe(false); // 3 packets: more than the credits
    expect(h.events).toEqual([]); // 17 bytes queued, over maxQueuedBytes 16 but only 1 beyond the credits
    h.session.end(id);
    expect(dataPackets(h.sent)).toEqual([]);
    h.session.uncork();
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([
      [1, 2, 3, 4, 5, 6, 7, 8],
      [9, 10, 11, 12, 13, 14, 15, 16],
    ]);
    h.session.receive(encodeContinue(id, 1), 0);
    expect(h.sent.slice(-2)).toEqual([
      { type: 'data', streamId: id, payload: Uint8Array.of(17) },
      { type: 'end', streamId: id },
    ]);
    expect(h.events).toEqual([`writable ${id}`]);
    // A voluntary close in the same batch sends what was written first.
    const b = h.session.openStream('tcp', 'x', 2) as number;
    h.session.cork();
    h.session.write(b, Uint8Array.of(42));
    h.session.close(b);
    h.session.uncork();
    expect(h.sent.slice(-2)).toEqual([
      { type: 'data', streamId: b, payload: Uint8Array.of(42) },
      { type: 'close', streamId: b, reason: 2 },
    ]);
  });

  it('while the host has blocked sending, a corked write is queued but not accepted; unblocking sends it', () => {
    const h = harness({ maxDataPayload: 8, maxQueuedBytes: 64 });
    h.session.receive(encodeContinue(0, 4), 0);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    h.session.setSendBlocked(true);
    h.session.cork();
    expect(h.session.write(id, Uint8Array.of(1, 2, 3))).toBe(false); // credits would carry it, the WebSocket is full
    h.session.uncork();
    expect(dataPackets(h.sent)).toEqual([]);
    h.session.setSendBlocked(false);
    expect(dataPackets(h.sent).map((p) => [...p.payload])).toEqual([[1, 2, 3]]);
    expect(h.events).toEqual([`writable ${id}`]);
  });

  it('asks a server with the flow control extension to pause and resume a stream, and no other server', () => {
    const h = harness({ flowControl: true });
    h.session.receive(encodeInfo(2, 0, [ext(0xf1)]), 0);
    h.session.receive(encodeContinue(0, 1), 0);
    expect(h.session.controlsFlow).toBe(true);
    const id = h.session.openStream('tcp', 'x', 1) as number;
    expect(h.session.pauseStream(id, true)).toBe(true);
    expect(h.session.pauseStream(id, true)).toBe(true); // once
    expect(h.session.pauseStream(id, false)).toBe(true);
    expect(h.sent.slice(-2)).toEqual([
      { type: 'pause', streamId: id },
      { type: 'resume', streamId: id },
    ]);
    expect(parseWispPacket(encodeFlow(id, true))).toEqual({ type: 'pause', streamId: id });
    const plain = harness({ flowControl: true });
    plain.session.receive(encodeInfo(2, 0, []), 0);
    plain.session.receive(encodeContinue(0, 1), 0);
    const other = plain.session.openStream('tcp', 'x', 1) as number;
    expect(plain.session.pauseStream(other, true)).toBe(false);
    expect(plain.sent.filter((p) => p.type === 'pause')).toEqual([]);
  });
});
