// Property-based fuzzing of Wisp: the codec never throws and round-trips, and the server and client
// state machines, fed arbitrary packet sequences interleaved with host events, never throw, keep
// their stream bookkeeping consistent (every stream reported closed once, nothing after the end)
// and only ever send well-formed packets — the client never beyond its credits.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  encodeClose,
  encodeConnect,
  encodeContinue,
  encodeData,
  encodeEnd,
  encodeInfo,
  encodeMotd,
  encodePasswordClient,
  encodePasswordServer,
  ExtensionId,
  parseMotd,
  parsePasswordClient,
  parsePasswordServer,
  parseWispPacket,
  type WispExtension,
} from '../../core/wisp/wisp-codec';
import { WispClientSession } from '../../core/wisp/wisp-client';
import { WispProtocolError } from '../../core/wisp/wisp-errors';
import { WispServerSession } from '../../core/wisp/wisp-server';
import { runs } from '../support/fuzz';

const u8 = fc.integer({ min: 0, max: 0xff });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffff_ffff });
/** Stream ids: mostly a few small ones (so packets meet live streams), sometimes any. */
const streamId = fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 0, max: 4 }) }, { weight: 1, arbitrary: u32 });
const hostname = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('example.com', ' example.com ', '', ' ', '10.0.2.2', 'ünïcode.example') },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }) },
);
const extension: fc.Arbitrary<WispExtension> = fc.record({
  id: fc.oneof(fc.constantFrom(...Object.values(ExtensionId)), u8),
  payload: fc.oneof(
    fc.uint8Array({ maxLength: 20 }),
    fc.record({ username: fc.string({ maxLength: 10 }), password: fc.string({ maxLength: 10 }) }).map(encodePasswordClient),
    fc.boolean().map(encodePasswordServer),
  ),
});
/** Well-formed packets of every type (a peer can send any of them at any time). */
const packet = fc.oneof(
  fc
    .tuple(streamId, fc.oneof({ weight: 4, arbitrary: fc.constantFrom(1, 2) }, { weight: 1, arbitrary: u8 }), fc.oneof(fc.constant(80), u16), hostname)
    .map(([id, t, port, h]) => encodeConnect(id, t, port, h)),
  fc.tuple(streamId, fc.uint8Array({ maxLength: 64 })).map(([id, p]) => encodeData(id, p)),
  fc.tuple(streamId, fc.oneof(fc.integer({ min: 0, max: 8 }), u32)).map(([id, n]) => encodeContinue(id, n)),
  fc.tuple(streamId, u8).map(([id, r]) => encodeClose(id, r)),
  fc.tuple(fc.integer({ min: 1, max: 3 }), u8, fc.array(extension, { maxLength: 4 })).map(([major, minor, e]) => encodeInfo(major, minor, e)),
  streamId.map(encodeEnd),
);
/** What a peer sends: packets, cut-short packets, and noise. */
const message = fc.oneof(
  { weight: 8, arbitrary: packet },
  { weight: 1, arbitrary: fc.tuple(packet, fc.nat()).map(([p, n]) => p.subarray(0, n % (p.length + 1))) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 40 }) },
);

describe('Wisp codec', () => {
  it('parsers never throw on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.oneof(message, fc.uint8Array({ maxLength: 300 })), (b) => {
        parseWispPacket(b);
        parsePasswordClient(b);
        parsePasswordServer(b);
        parseMotd(b);
      }),
      runs(401, 3000),
    );
  });

  it('every packet round-trips', () => {
    const cases = fc.oneof(
      fc.tuple(u32, u8, u16, fc.string({ maxLength: 40 })).map(([streamId, streamType, port, hostname]) => ({
        bytes: encodeConnect(streamId, streamType, port, hostname),
        want: { type: 'connect', streamId, streamType, port, hostname },
      })),
      fc
        .tuple(u32, fc.uint8Array({ maxLength: 100 }))
        .map(([streamId, payload]) => ({ bytes: encodeData(streamId, payload), want: { type: 'data', streamId, payload } })),
      fc.tuple(u32, u32).map(([streamId, n]) => ({ bytes: encodeContinue(streamId, n), want: { type: 'continue', streamId, bufferRemaining: n } })),
      fc.tuple(u32, u8).map(([streamId, reason]) => ({ bytes: encodeClose(streamId, reason), want: { type: 'close', streamId, reason } })),
      u32.map((streamId) => ({ bytes: encodeEnd(streamId), want: { type: 'end', streamId } })),
      fc.tuple(u8, u8, fc.array(extension, { maxLength: 5 })).map(([major, minor, extensions]) => ({
        bytes: encodeInfo(major, minor, extensions),
        want: { type: 'info', streamId: 0, major, minor, extensions },
      })),
    );
    fc.assert(
      fc.property(cases, ({ bytes, want }) => {
        expect(parseWispPacket(bytes)).toEqual(want);
      }),
      runs(402, 1000),
    );
  });

  it('password and MOTD payloads round-trip', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 60 }), fc.string({ maxLength: 60 }), fc.boolean(), (username, password, required) => {
        fc.pre(new TextEncoder().encode(username).length <= 255);
        expect(parsePasswordClient(encodePasswordClient({ username, password }))).toContainEqual({ username, password });
        expect(parsePasswordServer(encodePasswordServer(required))).toEqual({ required });
        expect(parseMotd(encodeMotd(password))).toBe(password);
      }),
      runs(403, 1000),
    );
  });
});

/** Something the host or the clock does between two client messages. */
const serverHostEvent = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constantFrom('connected' as const, 'end' as const), id: streamId }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('data' as const), id: streamId, payload: fc.uint8Array({ maxLength: 16 }) }) },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('released' as const), id: streamId, count: fc.integer({ min: 0, max: 10 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('close' as const), id: streamId, reason: u8 }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('close-all' as const, 'lost' as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('time' as const), ms: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 20_000 })) }),
  },
);

describe('Wisp server state machine', () => {
  it('survives any packet sequence and keeps its streams consistent', () => {
    const options = fc.record({
      version: fc.constantFrom(1 as const, 2 as const),
      bufferPackets: fc.integer({ min: 1, max: 32 }),
      udp: fc.boolean(),
      motd: fc.option(fc.string({ maxLength: 10 }), { nil: undefined }),
      password: fc.boolean(),
      passwordRequired: fc.oneof({ weight: 3, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      maxStreams: fc.integer({ min: 1, max: 4 }),
      idleTimeoutMs: fc.constantFrom(0, 5000),
      halfClose: fc.boolean(),
      refuseOnOpen: fc.boolean(), // the host refuses streams from inside openStream (a policy block)
    });
    const step = fc.oneof({ weight: 3, arbitrary: message.map((m) => ({ kind: 'message' as const, m })) }, { weight: 1, arbitrary: serverHostEvent });
    fc.assert(
      fc.property(options, fc.boolean(), fc.array(step, { minLength: 5, maxLength: 80 }), (o, prelude, steps) => {
        const live = new Set<number>();
        let terminated: WispProtocolError | undefined;
        let now = 0;
        const session: WispServerSession = new WispServerSession(
          {
            version: o.version,
            bufferPackets: o.bufferPackets,
            udp: o.udp,
            motd: o.motd,
            passwordRequired: o.passwordRequired,
            maxStreams: o.maxStreams,
            handshakeTimeoutMs: 3000,
            idleTimeoutMs: o.idleTimeoutMs,
            halfClose: o.halfClose,
            checkPassword: o.password ? (c) => c.username === 'u' && c.password === 'p' : undefined,
          },
          {
            send: (m) => {
              expect(terminated, 'send after terminate').toBeUndefined();
              expect(typeof parseWispPacket(m), 'a malformed packet was sent').toBe('object');
            },
            ready: () => expect(terminated).toBeUndefined(),
            openStream: (r) => {
              expect(live.has(r.id), `stream ${r.id} opened twice`).toBe(false);
              expect(r.hostname.trim()).toBe(r.hostname);
              live.add(r.id);
              expect(live.size).toBeLessThanOrEqual(o.maxStreams);
              if (o.refuseOnOpen) session.closeStream(r.id, 0x48);
            },
            streamData: (id) => expect(live.has(id), `data for stream ${id}, which is not open`).toBe(true),
            streamEnd: (id) => expect(live.has(id), `end for stream ${id}, which is not open`).toBe(true),
            streamClosed: (id) => {
              expect(live.has(id), `stream ${id} closed but not open`).toBe(true);
              live.delete(id);
            },
            terminate: (e) => {
              expect(terminated, 'terminated twice').toBeUndefined();
              expect(live.size, 'streams left open at terminate').toBe(0);
              terminated = e;
            },
          },
        );
        session.start(now);
        if (prelude) {
          // A well-behaved client first, so the fuzzed packets meet open streams.
          const hello: WispExtension[] = [ExtensionId.UDP, ExtensionId.STREAM_OPEN_CONFIRMATION, ExtensionId.WEFT_HALF_CLOSE].map((id) => ({
            id,
            payload: new Uint8Array(0),
          }));
          hello.push({ id: ExtensionId.PASSWORD, payload: encodePasswordClient({ username: 'u', password: 'p' }) });
          if (o.version === 2) session.receive(encodeInfo(2, 0, hello), now);
          for (let id = 1; id <= 3; id++) {
            session.receive(encodeConnect(id, 1, 80, 'example.com'), now);
            session.connected(id, now);
          }
        }
        for (const s of steps) {
          switch (s.kind) {
            case 'message':
              session.receive(s.m, now);
              break;
            case 'connected':
              session.connected(s.id, now);
              break;
            case 'end':
              session.destinationEnded(s.id);
              break;
            case 'data':
              session.sendData(s.id, s.payload, now);
              break;
            case 'released':
              session.released(s.id, s.count);
              break;
            case 'close':
              session.closeStream(s.id, s.reason);
              break;
            case 'close-all':
              session.closeAllStreams(0x02);
              break;
            case 'lost':
              session.connectionLost();
              break;
            case 'time':
              now += s.ms;
              session.poll(now);
              break;
          }
          expect(session.openStreams).toBe(live.size);
        }
      }),
      runs(404, 800, 0.2),
    );
  });
});

const clientHostEvent = fc.oneof(
  { weight: 3, arbitrary: fc.record({ kind: fc.constant('open' as const), udp: fc.boolean(), hostname, port: u16 }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant('write' as const), id: streamId, size: fc.integer({ min: 0, max: 3000 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constantFrom('end' as const, 'close' as const), id: streamId }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('abort' as const) }) },
  {
    weight: 2,
    arbitrary: fc.record({ kind: fc.constant('time' as const), ms: fc.oneof(fc.integer({ min: 0, max: 1000 }), fc.integer({ min: 0, max: 20_000 })) }),
  },
);

describe('Wisp client state machine', () => {
  it('survives any server packet sequence and never sends DATA beyond its credits', () => {
    const options = fc.record({ version: fc.constantFrom(1 as const, 2 as const), udp: fc.boolean(), password: fc.boolean(), halfClose: fc.boolean() });
    const step = fc.oneof({ weight: 3, arbitrary: message.map((m) => ({ kind: 'message' as const, m })) }, { weight: 3, arbitrary: clientHostEvent });
    fc.assert(
      fc.property(options, fc.boolean(), fc.array(step, { minLength: 5, maxLength: 80 }), (o, prelude, steps) => {
        let terminated = false;
        let initialCredits: number | undefined;
        /** Credits the client holds per TCP stream it announced, by our count. */
        const credits = new Map<number, number>();
        const session: WispClientSession = new WispClientSession(
          {
            version: o.version,
            udp: o.udp,
            maxStreams: 4,
            maxDataPayload: 1000,
            maxQueuedBytes: 8000,
            handshakeTimeoutMs: 5000,
            halfClose: o.halfClose,
            password: o.password ? { username: 'u', password: 'p' } : undefined,
          },
          {
            send: (m) => {
              expect(terminated, 'send after terminate').toBe(false);
              const p = parseWispPacket(m);
              if (typeof p === 'string') throw new Error(`the client sent a malformed packet: ${p}`);
              if (p.type === 'connect' && p.streamType === 1) credits.set(p.streamId, initialCredits ?? 0);
              if (p.type === 'close') credits.delete(p.streamId);
              if (p.type === 'data' && credits.has(p.streamId)) {
                const left = (credits.get(p.streamId) as number) - 1;
                expect(left, `DATA on stream ${p.streamId} beyond its credits`).toBeGreaterThanOrEqual(0);
                credits.set(p.streamId, left);
              }
            },
            ready: (info) => {
              initialCredits = info.initialCredits;
            },
            streamConfirmed: () => {},
            streamData: () => {},
            streamEnded: () => {},
            streamWritable: () => {},
            streamClosed: (id) => credits.delete(id),
            terminate: () => {
              expect(terminated, 'terminated twice').toBe(false);
              terminated = true;
            },
          },
        );
        let now = 0;
        session.start(now);
        if (prelude) {
          // A well-behaved server first, so the fuzzed packets meet open streams with credits.
          const hello = [ExtensionId.UDP, ExtensionId.MOTD, ExtensionId.STREAM_OPEN_CONFIRMATION, ExtensionId.WEFT_HALF_CLOSE].map((id) => ({
            id,
            payload: new Uint8Array(0),
          }));
          if (o.version === 2) session.receive(encodeInfo(2, 0, hello), now);
          session.receive(encodeContinue(0, 4), now);
          session.openStream('tcp', 'example.com', 80);
          session.openStream('tcp', 'example.org', 443);
        }
        for (const s of steps) {
          switch (s.kind) {
            case 'message': {
              const p = parseWispPacket(s.m);
              // A CONTINUE to a live TCP stream replaces its credit (before the queued DATA it releases goes out).
              if (session.isOpen && typeof p === 'object' && p.type === 'continue' && credits.has(p.streamId)) credits.set(p.streamId, p.bufferRemaining);
              session.receive(s.m, now);
              break;
            }
            case 'open': {
              session.openStream(s.udp ? 'udp' : 'tcp', s.hostname, s.port);
              break;
            }
            case 'write':
              session.write(s.id, new Uint8Array(s.size));
              break;
            case 'end':
              session.end(s.id);
              break;
            case 'close':
              session.close(s.id);
              credits.delete(s.id);
              break;
            case 'abort':
              session.abort(new WispProtocolError('connection-lost', 'the WebSocket closed'));
              break;
            case 'time':
              now += s.ms;
              session.poll(now);
              break;
          }
          expect(session.openStreams).toBeLessThanOrEqual(4);
        }
      }),
      runs(405, 600, 0.2),
    );
  });
});
