// Relay throughput: weft's Wisp client (the upstream `weft vm --upstream wisp://` uses) downloading
// and uploading through `weft relay` and through the @mercuryworkshop/wisp-js server, side by side
// in one run, each relay in its own process. Also 8 parallel streams, with Jain's fairness index
// over their throughputs (1.0 = perfectly even).
//
// Loopback throughput on a shared machine swings by 2–3x from one second to the next, so each figure
// is the median of WEFT_RELAY_BENCH_ROUNDS rounds (default 5), and the two relays take turns (weft
// first in odd rounds, wisp-js first in even ones) so a noisy spell hits both alike.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIpv4 } from '../../core/wire/address';
import { WispUpstream } from '../../node-host/wisp-upstream';
import { connectWsTransport } from '../../node-host/ws-transport';
import { REPO_ROOT, weftBundle } from '../harness/weft-bundle';

export interface RelayBenchRow {
  peer: string;
  /** One stream, relay → client (Mbit/s, median over the rounds). */
  downloadMbit: number;
  /** One stream, client → relay. */
  uploadMbit: number;
  /** 8 streams at once: all their bytes over the time until the last one finished. */
  parallelMbit: number;
  /** Jain's index over the 8 streams' own throughputs (1.0 = perfectly even). */
  fairness: number;
}

/** Bytes per download and per parallel run (split over the 8 streams); uploads move half. */
export const RELAY_BENCH_BYTES = Number(process.env.WEFT_RELAY_BENCH_BYTES ?? 128 * 1024 * 1024);
export const RELAY_BENCH_ROUNDS = Math.max(1, Number(process.env.WEFT_RELAY_BENCH_ROUNDS ?? 5));
const PARALLEL = 8;
/** A transfer slower than this fails the bench instead of hanging it. */
const TRANSFER_TIMEOUT_MS = 60_000;
const GATEWAY = parseIpv4('10.0.2.2');
const BLOCK = Buffer.alloc(64 * 1024, 0x5a);
const PAYLOAD = Buffer.alloc(RELAY_BENCH_BYTES, 0x5a);

/**
 * A server that sends `n` bytes to each client (`GET n\n`), or counts `n` bytes and answers OK
 * (`PUT n\n`). The command line may arrive split, or in one segment with the first upload bytes
 * (the client writes the command and its first block back to back): those bytes count too.
 *
 * A GET is not followed by FIN: the client closes the stream once it has all `n` bytes. wisp-js 0.5's
 * server loses the data it still has queued when its destination sends FIN while its WebSocket is
 * backed up (NodeTCPSocket destroys the socket on 'end', which empties its receive queue), and then
 * never closes the stream either (AsyncQueue.get() after close() waits forever): with 8 parallel
 * downloads that hung this bench. Ending the download from the client side keeps the comparison fair.
 */
async function startSource(): Promise<{ port: number; close(): void }> {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    let head = Buffer.alloc(0);
    const onHead = (d: Buffer) => {
      head = Buffer.concat([head, d]);
      const nl = head.indexOf(0x0a);
      if (nl < 0) {
        if (head.length > 64) s.destroy();
        return;
      }
      s.off('data', onHead);
      const m = /^(GET|PUT) (\d+)$/.exec(head.subarray(0, nl).toString());
      if (!m) return s.destroy();
      const n = Number(m[2]);
      if (m[1] === 'PUT') {
        let got = 0;
        const count = (chunk: Buffer) => {
          if (got >= n) return;
          got += chunk.length;
          if (got >= n) s.end('OK');
        };
        s.on('data', count);
        count(head.subarray(nl + 1));
        return;
      }
      // One big write: the socket queues it and paces itself by the reader. No FIN (see above):
      // the client's close ends the socket (allowHalfOpen is off).
      s.write(n <= PAYLOAD.length ? PAYLOAD.subarray(0, n) : Buffer.alloc(n, 0x5a));
    };
    s.on('data', onHead);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as net.AddressInfo).port, close: () => server.close() };
}

/** One stream: GET downloads `n` bytes, PUT uploads them (until the OK); resolves with Mbit/s. */
function transfer(up: WispUpstream, port: number, mode: 'GET' | 'PUT', n: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let got = 0;
    let sent = 0;
    let done = false;
    const meta = { protocol: 'tcp' as const, guest: { ip: 1, port: 1 }, target: { ip: GATEWAY, port } };
    const fail = (why: string) => {
      if (done) return;
      done = true;
      clearTimeout(watchdog);
      stream.destroy();
      reject(new Error(`${mode} ${n}: ${why} (received ${got}, sent ${sent})`));
    };
    const finish = () => {
      if (done) return;
      if (mode === 'GET' && got < n) return fail('the stream ended early');
      done = true;
      clearTimeout(watchdog);
      stream.destroy();
      resolve((n * 8) / ((performance.now() - started) / 1000) / 1e6);
    };
    const watchdog = setTimeout(() => fail(`not done after ${TRANSFER_TIMEOUT_MS} ms`), TRANSFER_TIMEOUT_MS);
    const stream = up.openTcp({ ip: GATEWAY, port }, meta, {
      onConnect: () => {
        stream.write(Buffer.from(`${mode} ${n}\n`));
        if (mode === 'PUT') push();
      },
      onData: (d) => {
        got += d.length;
        if (got >= (mode === 'GET' ? n : 2)) finish();
      },
      onEnd: () => fail('the server ended the stream early'),
      onDrain: () => (mode === 'PUT' ? push() : undefined),
      onClose: (e) => (e ? fail(`stream closed: ${e.kind} ${e.message}`) : finish()),
    });
    const push = () => {
      while (sent < n && !done) {
        const chunk = n - sent >= BLOCK.length ? BLOCK : BLOCK.subarray(0, n - sent);
        sent += chunk.length;
        if (!stream.write(chunk)) return;
      }
    };
  });
}

interface Sample {
  downloadMbit: number;
  uploadMbit: number;
  parallelMbit: number;
  fairness: number;
}

async function round(up: WispUpstream, sourcePort: number): Promise<Sample> {
  const downloadMbit = await transfer(up, sourcePort, 'GET', RELAY_BENCH_BYTES);
  const uploadMbit = await transfer(up, sourcePort, 'PUT', Math.floor(RELAY_BENCH_BYTES / 2));
  const each = Math.floor(RELAY_BENCH_BYTES / PARALLEL);
  const started = performance.now();
  const rates = await Promise.all(Array.from({ length: PARALLEL }, () => transfer(up, sourcePort, 'GET', each)));
  const parallelMbit = (each * PARALLEL * 8) / ((performance.now() - started) / 1000) / 1e6;
  const sum = rates.reduce((a, b) => a + b, 0);
  const fairness = (sum * sum) / (rates.length * rates.reduce((a, b) => a + b * b, 0));
  return { downloadMbit, uploadMbit, parallelMbit, fairness };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function summarize(peer: string, samples: Sample[]): RelayBenchRow {
  const pick = (k: keyof Sample) => median(samples.map((s) => s[k]));
  return { peer, downloadMbit: pick('downloadMbit'), uploadMbit: pick('uploadMbit'), parallelMbit: pick('parallelMbit'), fairness: pick('fairness') };
}

function waitForLine(child: ChildProcess, re: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const on = (d: Buffer) => {
      buf += d.toString();
      const m = re.exec(buf);
      if (m) resolve(m);
    };
    child.stdout?.on('data', on);
    child.stderr?.on('data', on);
    child.once('exit', (code) => reject(new Error(`relay exited (${code}) before it was ready: ${buf.slice(-500)}`)));
  });
}

export async function runRelayBench(): Promise<[RelayBenchRow, RelayBenchRow]> {
  const source = await startSource();
  const dir = mkdtempSync(join(tmpdir(), 'weft-relay-bench-'));
  const wispJs = join(dir, 'wisp-js-server.mjs');
  // The wisp-js server in its own process, configured like weft relay --allow-loopback.
  writeFileSync(wispJs, `
import http from 'node:http';
import { server as wisp, logging } from ${JSON.stringify(join(REPO_ROOT, 'node_modules/@mercuryworkshop/wisp-js/src/entrypoints/server.mjs'))};
logging.set_level(logging.ERROR);
wisp.options.allow_loopback_ips = true;
wisp.options.allow_private_ips = true;
const s = http.createServer();
s.on('upgrade', (req, socket, head) => wisp.routeRequest(req, socket, head));
s.listen(0, '127.0.0.1', () => console.log('listening ' + s.address().port));
`);
  const weft = spawn(process.execPath, [weftBundle(), 'relay', '--listen', '127.0.0.1:0', '--allow-loopback', '--rate', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const js = spawn(process.execPath, [wispJs], { stdio: ['ignore', 'pipe', 'pipe'] });
  const peers: Array<{ name: string; up?: WispUpstream; samples: Sample[] }> = [
    { name: 'weft relay', samples: [] },
    { name: 'wisp-js server', samples: [] },
  ];
  try {
    const weftPort = (await waitForLine(weft, /"port":(\d+)/))[1];
    const jsPort = (await waitForLine(js, /listening (\d+)/))[1];
    const urls = [`ws://127.0.0.1:${weftPort}/wisp/`, `ws://127.0.0.1:${jsPort}/`];
    peers.forEach((p, i) => {
      p.up = new WispUpstream({ url: urls[i], connect: connectWsTransport, gateway: GATEWAY, allowHostLoopback: true });
    });
    const named = <T>(peer: string, p: Promise<T>) => p.catch((e: Error) => Promise.reject(new Error(`${peer}: ${e.message}`)));
    for (const p of peers) await named(p.name, transfer(p.up!, source.port, 'GET', Math.min(RELAY_BENCH_BYTES, 8 << 20))); // warm-up
    for (let r = 0; r < RELAY_BENCH_ROUNDS; r++) {
      for (const p of r % 2 === 0 ? peers : [...peers].reverse()) p.samples.push(await named(p.name, round(p.up!, source.port)));
    }
    return [summarize(peers[0].name, peers[0].samples), summarize(peers[1].name, peers[1].samples)];
  } finally {
    for (const p of peers) p.up?.close();
    weft.kill('SIGTERM');
    js.kill('SIGTERM');
    source.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
