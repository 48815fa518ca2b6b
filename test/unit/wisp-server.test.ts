// The Wisp server state machine at packet level: handshake, v1 fallback, credits, hostile input.
import { describe, expect, it } from 'vitest';
import {
  CloseReason,
  encodeClose,
  encodeConnect,
  encodeContinue,
  encodeData,
  encodeEnd,
  encodeFlow,
  encodeInfo,
  encodePasswordClient,
  parseWispPacket,
  type WispPacket,
} from '../../core/wisp/wisp-codec';
import type { WispProtocolError } from '../../core/wisp/wisp-errors';
import { WispServerSession, type WispServerOptions, type WispStreamRequest } from '../../core/wisp/wisp-server';

function harness(overrides: Partial<WispServerOptions> = {}) {
  const sent: WispPacket[] = [];
  const opened: WispStreamRequest[] = [];
  const data: Array<[number, number[]]> = [];
  const closed: Array<[number, number, string]> = [];
  const ready: unknown[] = [];
  let terminated: WispProtocolError | undefined;
  const session = new WispServerSession(
    {
      version: 1,
      bufferPackets: 4,
      udp: true,
      passwordRequired: false,
      maxStreams: 8,
      handshakeTimeoutMs: 1000,
      idleTimeoutMs: 0,
      ...overrides,
    },
    {
      send: (m) => sent.push(parseWispPacket(m) as WispPacket),
      ready: (i) => ready.push(i),
      openStream: (r) => opened.push(r),
      streamData: (id, p) => data.push([id, [...p]]),
      streamEnd: (id) => data.push([id, []]),
      streamPaused: (id, paused) => data.push([id, [paused ? 1 : 0, 0xf1]]),
      streamClosed: (id, reason, by) => closed.push([id, reason, by]),
      terminate: (e) => (terminated = e),
    },
  );
  return {
    session,
    sent,
    opened,
    data,
    closed,
    ready,
    get terminated() {
      return terminated;
    },
  };
}

const ext = (id: number, payload: Uint8Array = new Uint8Array(0)) => ({ id, payload });

describe('WispServerSession', () => {
  it('v1: grants the initial buffer on stream 0 and opens streams', () => {
    const h = harness();
    h.session.start(0);
    expect(h.sent).toEqual([{ type: 'continue', streamId: 0, bufferRemaining: 4 }]);
    h.session.receive(encodeConnect(1, 1, 80, ' example.com '), 0);
    expect(h.opened).toEqual([{ id: 1, type: 'tcp', hostname: 'example.com', port: 80 }]);
    h.session.receive(encodeData(1, Uint8Array.of(7)), 0);
    expect(h.data).toEqual([[1, [7]]]);
  });

  it('v2: sends INFO first, then CONTINUE after the client INFO; negotiates common extensions', () => {
    const h = harness({ version: 2, motd: 'hi' });
    h.session.start(0);
    expect(h.sent[0]).toMatchObject({ type: 'info', major: 2, minor: 0 });
    expect((h.sent[0] as { extensions: { id: number }[] }).extensions.map((e) => e.id)).toEqual([1, 4, 5]);
    expect(h.session.isOpen).toBe(false);
    h.session.receive(encodeInfo(2, 0, [ext(1), ext(5), ext(0x77)]), 0);
    expect(h.sent[1]).toEqual({ type: 'continue', streamId: 0, bufferRemaining: 4 });
    expect(h.ready).toEqual([{ version: 2, extensions: [1, 5] }]);
  });

  it('v2 with stream-open confirmation sends CONTINUE when the destination connects', () => {
    const h = harness({ version: 2 });
    h.session.start(0);
    h.session.receive(encodeInfo(2, 0, [ext(5)]), 0);
    h.session.receive(encodeConnect(3, 1, 80, 'x'), 0);
    h.sent.length = 0;
    h.session.connected(3, 0);
    expect(h.sent).toEqual([{ type: 'continue', streamId: 3, bufferRemaining: 4 }]);
  });

  it('falls back to v1 when a client with a subprotocol sends no INFO', () => {
    const h = harness({ version: 2 });
    h.session.start(0);
    h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
    expect(h.sent[1]).toEqual({ type: 'continue', streamId: 0, bufferRemaining: 4 });
    expect(h.opened).toHaveLength(1);
  });

  it('times out a v2 handshake', () => {
    const h = harness({ version: 2 });
    h.session.start(0);
    expect(h.session.nextDeadline()).toBe(1000);
    h.session.poll(999);
    expect(h.terminated).toBeUndefined();
    h.session.poll(1000);
    expect(h.terminated?.code).toBe('handshake-timeout');
  });

  describe('password', () => {
    const pw = {
      version: 2 as const,
      passwordRequired: true,
      checkPassword: (c: { username: string; password: string }) => c.username === 'u' && c.password === 'p',
    };
    it('accepts matching credentials', () => {
      const h = harness(pw);
      h.session.start(0);
      h.session.receive(encodeInfo(2, 0, [ext(2, encodePasswordClient({ username: 'u', password: 'p' }))]), 0);
      expect(h.ready).toEqual([{ version: 2, extensions: [2], username: 'u' }]);
    });
    it('rejects wrong credentials with 0xc0 and missing ones with 0xc2', () => {
      const bad = harness(pw);
      bad.session.start(0);
      bad.session.receive(encodeInfo(2, 0, [ext(2, encodePasswordClient({ username: 'u', password: 'x' }))]), 0);
      expect(bad.sent.at(-1)).toEqual({ type: 'close', streamId: 0, reason: 0xc0 });
      expect(bad.terminated?.code).toBe('auth-failed');
      const none = harness(pw);
      none.session.start(0);
      none.session.receive(encodeInfo(2, 0, []), 0);
      expect(none.sent.at(-1)).toEqual({ type: 'close', streamId: 0, reason: 0xc2 });
    });
    it('refuses v1 clients when a password is required', () => {
      const h = harness({ ...pw, version: 1 });
      h.session.start(0);
      expect(h.terminated?.code).toBe('auth-required');
    });
  });

  describe('credits', () => {
    it('grants B − queued after half a buffer is released', () => {
      const h = harness();
      h.session.start(0);
      h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      for (let i = 0; i < 4; i++) h.session.receive(encodeData(1, Uint8Array.of(i)), 0);
      h.sent.length = 0;
      h.session.released(1);
      expect(h.sent).toEqual([]);
      h.session.released(1);
      expect(h.sent).toEqual([{ type: 'continue', streamId: 1, bufferRemaining: 2 }]);
      // The client may now send 2 more: granted = 4 + 2.
      h.session.receive(encodeData(1, Uint8Array.of(9)), 0);
      h.session.receive(encodeData(1, Uint8Array.of(9)), 0);
      expect(h.terminated).toBeUndefined();
    });

    it('ends the connection for DATA beyond credits, reporting every stream', () => {
      const h = harness();
      h.session.start(0);
      h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      h.session.receive(encodeConnect(2, 1, 80, 'y'), 0);
      for (let i = 0; i < 4; i++) h.session.receive(encodeData(1, Uint8Array.of(i)), 0);
      expect(h.terminated).toBeUndefined();
      h.session.receive(encodeData(1, Uint8Array.of(5)), 0);
      expect(h.terminated?.code).toBe('credit-overrun');
      expect(h.closed.map((c) => c[0]).sort()).toEqual([1, 2]);
      expect(h.data).toHaveLength(4);
    });

    it('does not count UDP datagrams against credits', () => {
      const h = harness();
      h.session.start(0);
      h.session.receive(encodeConnect(1, 2, 53, 'x'), 0);
      for (let i = 0; i < 20; i++) h.session.receive(encodeData(1, Uint8Array.of(i)), 0);
      expect(h.terminated).toBeUndefined();
      expect(h.data).toHaveLength(20);
    });
  });

  describe('hostile input', () => {
    it.each([
      ['empty host', encodeConnect(1, 1, 80, '   '), CloseReason.INVALID_INFO],
      ['port 0', encodeConnect(1, 1, 0, 'x'), CloseReason.INVALID_INFO],
      ['bad stream type', encodeConnect(1, 9, 80, 'x'), CloseReason.INVALID_INFO],
      ['short CONNECT', Uint8Array.of(1, 1, 0, 0, 0, 1), CloseReason.INVALID_INFO],
    ])('refuses a CONNECT with %s', (_name, packet, reason) => {
      const h = harness();
      h.session.start(0);
      h.session.receive(packet, 0);
      expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: 1, reason });
      expect(h.opened).toEqual([]);
      expect(h.terminated).toBeUndefined();
    });

    it('ignores DATA for unknown streams, CONTINUE from clients and unknown types', () => {
      const h = harness();
      h.session.start(0);
      h.session.receive(encodeData(42, Uint8Array.of(1)), 0);
      h.session.receive(encodeContinue(1, 5), 0);
      h.session.receive(Uint8Array.of(0x99, 0, 0, 0, 0), 0);
      h.session.receive(encodeClose(77, 2), 0);
      expect(h.terminated).toBeUndefined();
      expect(Object.fromEntries(h.session.ignored)).toEqual({
        'data-unknown-stream': 1,
        'client-continue': 1,
        'unknown-packet-type': 1,
        'close-unknown-stream': 1,
      });
    });

    it('ends the connection on a message shorter than the header', () => {
      const h = harness();
      h.session.start(0);
      h.session.receive(Uint8Array.of(2, 0), 0);
      expect(h.terminated?.code).toBe('malformed-packet');
    });

    it('throttles CONNECTs beyond maxStreams with 0x49', () => {
      const h = harness({ maxStreams: 2 });
      h.session.start(0);
      for (let id = 1; id <= 3; id++) h.session.receive(encodeConnect(id, 1, 80, 'x'), 0);
      expect(h.opened).toHaveLength(2);
      expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: 3, reason: 0x49 });
    });

    it('closes a stream whose id is reused while open', () => {
      const h = harness();
      h.session.start(0);
      h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      h.session.receive(encodeConnect(1, 1, 80, 'y'), 0);
      expect(h.closed).toEqual([[1, 0x41, 'server']]);
      expect(h.opened).toHaveLength(1);
    });
  });

  describe('weft half-close extension', () => {
    it('passes END both ways when both ends offer it', () => {
      const h = harness({ version: 2, halfClose: true });
      h.session.start(0);
      h.session.receive(encodeInfo(2, 0, [ext(0xf0)]), 0);
      expect(h.session.halfCloses).toBe(true);
      h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      h.session.receive(encodeEnd(1), 0);
      expect(h.data).toEqual([[1, []]]); // streamEnd
      h.session.receive(encodeData(1, Uint8Array.of(1)), 0); // DATA after END is ignored
      expect(h.data).toEqual([[1, []]]);
      h.session.destinationEnded(1);
      expect(h.sent.at(-1)).toEqual({ type: 'end', streamId: 1 });
      expect(h.session.openStreams).toBe(1);
    });

    it('closes the stream with 0x02 on the destination FIN when the client did not offer it', () => {
      const h = harness({ version: 2, halfClose: true });
      h.session.start(0);
      h.session.receive(encodeInfo(2, 0, []), 0);
      h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      h.session.receive(encodeEnd(1), 0);
      expect(h.data).toEqual([]);
      h.session.destinationEnded(1);
      expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: 1, reason: 2 });
      expect(h.closed).toEqual([[1, 2, 'server']]);
    });
  });

  describe('weft flow control extension', () => {
    it('passes PAUSE and RESUME of TCP streams to the host when both ends offer it, and ignores them otherwise', () => {
      const h = harness({ version: 2, flowControl: true });
      h.session.start(0);
      expect((h.sent[0] as { extensions: { id: number }[] }).extensions.map((e) => e.id)).toContain(0xf1);
      h.session.receive(encodeInfo(2, 0, [ext(0xf1)]), 0);
      expect(h.session.controlsFlow).toBe(true);
      h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      h.session.receive(encodeFlow(1, true), 0);
      h.session.receive(encodeFlow(1, false), 0);
      h.session.receive(encodeFlow(7, true), 0); // unknown stream
      expect(h.data).toEqual([
        [1, [1, 0xf1]],
        [1, [0, 0xf1]],
      ]);
      const plain = harness({ version: 2, flowControl: true });
      plain.session.start(0);
      plain.session.receive(encodeInfo(2, 0, []), 0);
      plain.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
      plain.session.receive(encodeFlow(1, true), 0);
      expect(plain.data).toEqual([]);
      expect(plain.session.ignored.get('flow-ignored')).toBe(1);
    });
  });

  it('closes idle streams with 0x47', () => {
    const h = harness({ idleTimeoutMs: 100 });
    h.session.start(0);
    h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
    h.session.receive(encodeConnect(2, 1, 80, 'x'), 50);
    expect(h.session.nextDeadline()).toBe(100);
    h.session.poll(100);
    expect(h.closed).toEqual([[1, 0x47, 'server']]);
    expect(h.session.nextDeadline()).toBe(150);
  });

  it('reports client CLOSE once and closeAllStreams sends CLOSE 0x02', () => {
    const h = harness();
    h.session.start(0);
    h.session.receive(encodeConnect(1, 1, 80, 'x'), 0);
    h.session.receive(encodeConnect(2, 1, 80, 'x'), 0);
    h.session.receive(encodeClose(1, 0x02), 0);
    expect(h.closed).toEqual([[1, 2, 'client']]);
    h.session.closeAllStreams(CloseReason.VOLUNTARY);
    expect(h.closed).toEqual([
      [1, 2, 'client'],
      [2, 2, 'server'],
    ]);
    expect(h.sent.at(-1)).toEqual({ type: 'close', streamId: 2, reason: 2 });
  });
});
