// The load generator of the relay-load suite (relay-load-bench.ts), run as a child process of its
// own so that it never shares an event loop with the relay or with the bench that reads its
// figures. It speaks raw Wisp v2 over `ws`: each client is one WebSocket from its own loopback
// source address (127.1.x.y), completes the INFO handshake (offering stream-open confirmation
// only) and may open TCP streams to the echo server; a busy stream sends 64 bytes of DATA, waits
// for all 64 to come back, and sends again, recording each round trip.
//
// Commands arrive on stdin and answers leave on stdout, one JSON object a line each:
//   {"cmd":"open", …OpenCommand}  → {"ev":"opened", …}   (every client handshaken and every stream confirmed, or given up on)
//   {"cmd":"start"}               → {"ev":"started"}     (busy streams send their first request)
//   {"cmd":"mark"}                → {"ev":"marked"}      (counters and histogram start again from zero)
//   {"cmd":"report"}              → {"ev":"report", …}   (exchanges and round-trip histogram since the mark)
//   {"cmd":"close"}               → {"ev":"closed"}      (every WebSocket closed; the process then exits)
// Built by relay-load-bench.ts with esbuild into dist/ (so `ws` and bufferutil resolve from
// node_modules, as for the relay itself).
import { createInterface } from 'node:readline';
import { WebSocket } from 'ws';
import { ExtensionId, StreamType, encodeConnect, encodeData, encodeInfo, parseWispPacket } from '../../core/wisp/wisp-codec';

export interface OpenCommand {
  url: string;
  /** Global index of the first client: client i connects from loopbackSource(i). */
  first: number;
  clients: number;
  /** Streams per client (0: the client only completes its handshake and idles). */
  streams: number;
  echoPort: number;
  /** New WebSockets per second, at most. */
  rate: number;
  /** Handshakes in progress at once, at most. */
  inFlight: number;
  /** A client (or stream) not ready by then counts as failed. */
  timeoutMs: number;
}

export interface OpenedEvent {
  ev: 'opened';
  handshakes: number;
  streams: number;
  failed: number;
  ms: number;
  firstError?: string;
}

export interface ReportEvent {
  ev: 'report';
  exchanges: number;
  ms: number;
  /** Round-trip histogram: [bucket, count] pairs; bucket b holds times in [b, b + 1) × bucketMs. */
  histogram: Array<[number, number]>;
  bucketMs: number;
  /** WebSockets open now. */
  open: number;
  /** Streams alive now (confirmed and not closed). */
  streamsAlive: number;
  /** Streams closed by the relay and WebSockets closed or failed since the start. */
  errors: number;
  firstError?: string;
}

/** Histogram resolution and range: 10 µs buckets up to 10 s, then one overflow bucket. */
const BUCKET_MS = 0.01;
const BUCKETS = 1_000_000;
const REQUEST_BYTES = 64;

/** Client i's source address: 127.1.0.1, 127.1.0.2, … (one per client, 65,534 at most). */
export function loopbackSource(i: number): string {
  const n = i + 1;
  if (n > 0xfffe) throw new Error(`client ${i}: 127.1.0.0/16 has no address left for it`);
  return `127.1.${n >> 8}.${n & 255}`;
}

interface Stream {
  id: number;
  client: Client;
  credit: number;
  confirmed: boolean;
  closed: boolean;
  waitingForCredit: boolean;
  sentAt: number;
  received: number;
  packet: Buffer;
}

interface Client {
  ws: WebSocket;
  open: boolean;
  ready: boolean;
  streams: Map<number, Stream>;
}

const histogram = new Uint32Array(BUCKETS + 1);
let exchanges = 0;
let markedAt = performance.now();
let errors = 0;
let firstError: string | undefined;
const clients: Client[] = [];
/** Set by the close command: closes from then on are ours, not failures. */
let closing = false;
/**
 * Set by the start command: confirmed streams send requests from then on. Not before, so that
 * opening thousands of clients does not compete with the exchanges of those already open.
 */
let exchanging = false;

function fail(why: string): void {
  errors++;
  firstError ??= why;
}

function reply(ev: object): void {
  process.stdout.write(`${JSON.stringify(ev)}\n`);
}

function sendRequest(s: Stream): void {
  if (s.closed || !s.client.open) return;
  if (s.credit <= 0) {
    s.waitingForCredit = true;
    return;
  }
  s.credit--;
  s.received = 0;
  s.sentAt = performance.now();
  s.client.ws.send(s.packet);
}

function onStreamData(s: Stream, length: number): void {
  s.received += length;
  if (s.received < REQUEST_BYTES) return;
  const ms = performance.now() - s.sentAt;
  histogram[Math.min(BUCKETS, Math.floor(ms / BUCKET_MS))]++;
  exchanges++;
  sendRequest(s);
}

/** Opens one client; resolves once it is handshaken and its streams confirmed (or it failed). */
function openClient(index: number, c: OpenCommand): Promise<{ ok: boolean; streams: number }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(c.url, 'wisp-v2', { localAddress: loopbackSource(index), perMessageDeflate: false, handshakeTimeout: c.timeoutMs });
    const client: Client = { ws, open: false, ready: false, streams: new Map() };
    clients.push(client);
    let settled = false;
    let confirmed = 0;
    const settle = (ok: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve({ ok, streams: confirmed });
    };
    const timer = setTimeout(() => {
      fail(`client ${index}: not ready within ${c.timeoutMs} ms (${confirmed} of ${c.streams} streams confirmed)`);
      settle(false);
    }, c.timeoutMs);
    ws.binaryType = 'nodebuffer';
    ws.on('open', () => {
      client.open = true;
    });
    ws.on('error', (e) => {
      fail(`client ${index}: ${e.message}`);
      settle(false);
    });
    ws.on('close', (code) => {
      if (client.open && !closing) fail(`client ${index}: WebSocket closed (${code})`);
      client.open = false;
      settle(false);
    });
    ws.on('message', (data: Buffer) => {
      const p = parseWispPacket(data);
      if (typeof p === 'string') return fail(`client ${index}: ${p}`);
      if (p.type === 'info') {
        ws.send(encodeInfo(2, 0, [{ id: ExtensionId.STREAM_OPEN_CONFIRMATION, payload: new Uint8Array(0) }]));
        return;
      }
      if (p.type === 'continue' && p.streamId === 0) {
        if (client.ready) return;
        client.ready = true;
        if (c.streams === 0) return settle(true);
        for (let k = 1; k <= c.streams; k++) {
          const s: Stream = {
            id: k,
            client,
            credit: 0,
            confirmed: false,
            closed: false,
            waitingForCredit: false,
            sentAt: 0,
            received: 0,
            packet: Buffer.from(encodeData(k, new Uint8Array(REQUEST_BYTES).fill(0x61))),
          };
          client.streams.set(k, s);
          ws.send(encodeConnect(k, StreamType.TCP, c.echoPort, '127.0.0.1'));
        }
        return;
      }
      const s = client.streams.get(p.streamId);
      if (!s) return;
      if (p.type === 'continue') {
        s.credit = p.bufferRemaining;
        if (!s.confirmed) {
          s.confirmed = true;
          if (++confirmed === c.streams) settle(true);
          if (exchanging) sendRequest(s);
        } else if (s.waitingForCredit && s.credit > 0) {
          s.waitingForCredit = false;
          sendRequest(s);
        }
      } else if (p.type === 'data') {
        onStreamData(s, p.payload.length);
      } else if (p.type === 'close') {
        s.closed = true;
        if (!closing) fail(`client ${index} stream ${s.id}: closed by the relay (reason 0x${p.reason.toString(16)})`);
        if (!s.confirmed) settle(false);
      }
    });
  });
}

async function open(c: OpenCommand): Promise<OpenedEvent> {
  const started = performance.now();
  let handshakes = 0;
  let streams = 0;
  let failed = 0;
  let inFlight = 0;
  const errorsBefore = errors;
  await new Promise<void>((resolve) => {
    let next = 0;
    let done = 0;
    const pump = () => {
      // Never ahead of `rate` per second since the start, never more than `inFlight` at once.
      const allowed = Math.min(c.clients, Math.floor(((performance.now() - started) / 1000) * c.rate) + 1);
      while (next < allowed && inFlight < c.inFlight) {
        const i = next++;
        inFlight++;
        void openClient(c.first + i, c).then((r) => {
          inFlight--;
          if (r.ok) handshakes++;
          else failed++;
          streams += r.streams;
          if (++done === c.clients) resolve();
          else pump();
        });
      }
      if (next < c.clients && inFlight < c.inFlight) setTimeout(pump, 5);
    };
    if (c.clients === 0) resolve();
    else pump();
  });
  return { ev: 'opened', handshakes, streams, failed, ms: performance.now() - started, ...(errors > errorsBefore && firstError ? { firstError } : {}) };
}

function report(): ReportEvent {
  const pairs: Array<[number, number]> = [];
  for (let b = 0; b <= BUCKETS; b++) if (histogram[b] !== 0) pairs.push([b, histogram[b]]);
  let streamsAlive = 0;
  for (const c of clients) for (const s of c.streams.values()) if (s.confirmed && !s.closed) streamsAlive++;
  return {
    ev: 'report',
    exchanges,
    ms: performance.now() - markedAt,
    histogram: pairs,
    bucketMs: BUCKET_MS,
    open: clients.filter((c) => c.open).length,
    streamsAlive,
    errors,
    ...(firstError ? { firstError } : {}),
  };
}

async function closeAll(): Promise<void> {
  closing = true;
  await Promise.all(
    clients.map(
      (c) =>
        new Promise<void>((resolve) => {
          if (c.ws.readyState === WebSocket.CLOSED) return resolve();
          c.ws.once('close', () => resolve());
          c.ws.close(1000);
          // A relay that never answers the close frame does not hold the bench up.
          setTimeout(() => {
            c.ws.terminate();
            resolve();
          }, 2000).unref();
        }),
    ),
  );
}

createInterface({ input: process.stdin }).on('line', (line) => {
  const m = JSON.parse(line) as { cmd: string } & Partial<OpenCommand>;
  if (m.cmd === 'open') void open(m as OpenCommand).then(reply);
  else if (m.cmd === 'start') {
    exchanging = true;
    for (const c of clients) for (const s of c.streams.values()) if (s.confirmed) sendRequest(s);
    reply({ ev: 'started' });
  } else if (m.cmd === 'mark') {
    histogram.fill(0);
    exchanges = 0;
    markedAt = performance.now();
    reply({ ev: 'marked' });
  } else if (m.cmd === 'report') reply(report());
  else if (m.cmd === 'close')
    void closeAll().then(() => {
      reply({ ev: 'closed' });
      process.exit(0);
    });
});
// The bench gone (stdin closed): nothing will ask for more.
process.stdin.on('end', () => process.exit(0));
