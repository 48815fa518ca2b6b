// A Linux guest (a network namespace) behind the fault wire (fault-wire.ts) whose other end is
// `weft vm --tap-fd 3`, and the guest's two transfers with the host's HTTP test server: the set-up
// of the fault matrix (fault-wire-matrix.ts) and of the faults bench (test/bench/faults-bench.ts).
// Free of vitest, so the bench bundle can use it.

import { FaultWire } from './fault-wire';
import { describeExec, guestBash, shq } from './guest-tools';
import { Netns, UDHCPC_SCRIPT } from './netns';
import type { WeftProcess } from './weft-process';
import { expectedSha256, type UploadReply } from '../support/test-servers';

/** weft's gateway address, where `--allow-host-loopback` lets the guest reach this host's 127.0.0.1. */
export const GATEWAY = '10.0.2.2';

export interface FaultyLink {
  guestNs: Netns;
  wireNs: Netns;
  weft: WeftProcess;
  wire: FaultWire;
  /** Stops the wire, kills what still runs (by PID) and deletes both namespaces. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts weft (`weft vm --tap-fd 3 WEFTARGS…`) in one namespace, the wire (seeded, no faults yet)
 * between it and a TAP in the guest's namespace, and leases the guest its address by DHCP.
 * Cleans up after itself when a step fails.
 */
export async function startFaultyLink(o: { dir: string; seed: number; weftArgs: readonly string[] }): Promise<FaultyLink> {
  const wireNs = Netns.create('fwire');
  let guestNs: Netns | undefined;
  let wire: FaultWire | undefined;
  const close = async () => {
    wire?.stop();
    await guestNs?.cleanup();
    await wireNs.cleanup();
  };
  try {
    guestNs = Netns.create('fguest');
    const weft = await wireNs.spawnWeftOnTap(o.weftArgs);
    wire = await FaultWire.start({ dir: o.dir, guestNs, wireNs, seed: o.seed });
    await guestNs.bringUpTap('tap0');
    const dhcp = await guestNs.exec(['busybox', 'udhcpc', '-i', 'tap0', '-s', UDHCPC_SCRIPT, '-q', '-f', '-n', '-t', '5'], 40_000);
    if (dhcp.code !== 0) throw new Error(`udhcpc failed: ${describeExec(dhcp)}`);
    return { guestNs, wireNs, weft, wire, close };
  } catch (e) {
    await close();
    throw e;
  }
}

export interface GuestTransfer {
  /**
   * curl's own clock from the connection's establishment to the last byte (time_total −
   * time_connect): neither the namespace entry and process starts around it nor a lost SYN's
   * one-second retry count. NaN when curl did not report it.
   */
  seconds: number;
  /** What went wrong (curl's exit, a timeout, a wrong sha256), or undefined. */
  problem?: string;
}

/** Where curl's -w line goes (stderr: stdout carries the data or the server's reply). */
const CURL_TIMES = `-w ${shq('%{stderr}curl-times %{time_connect} %{time_total}\n')}`;

function curlSeconds(stderr: string): number {
  const m = /^curl-times ([\d.]+) ([\d.]+)$/m.exec(stderr);
  return m ? Number(m[2]) - Number(m[1]) : NaN;
}

const sha256Cache = new Map<number, string>();
function sha256Of(bytes: number): string {
  let h = sha256Cache.get(bytes);
  if (h === undefined) sha256Cache.set(bytes, (h = expectedSha256(bytes)));
  return h;
}

/**
 * The guest downloads `GET /bytes/N` from `server` (e.g. http://10.0.2.2:PORT) with curl into a
 * file on tmpfs and checks its sha256 once curl is done; curl gives up after `timeoutMs`. Hashing
 * after the transfer, not in a pipe behind curl, keeps coreutils' sha256sum (no SHA extensions,
 * a third of a core at 100 MB/s) off the measured path: the upload's hash runs in the host's
 * server on OpenSSL and costs a few per cent, so hashing inline charged the download, and with it
 * weft's sending, for CPU the 2-core machine then lacked.
 */
export async function guestDownload(ns: Netns, server: string, bytes: number, timeoutMs: number): Promise<GuestTransfer> {
  const r = await guestBash(
    ns,
    `f=$(mktemp -p /dev/shm weft-download.XXXXXX) && trap 'rm -f "$f"' EXIT && ` +
      `curl -sS --fail --max-time ${Math.ceil(timeoutMs / 1000)} ${CURL_TIMES} -o "$f" ${shq(`${server}/bytes/${bytes}`)} && sha256sum "$f"`,
    timeoutMs + 5_000,
  );
  const seconds = curlSeconds(r.stderr);
  if (r.code !== 0) return { seconds, problem: describeExec(r) };
  const got = r.stdout.split(' ')[0];
  return got === sha256Of(bytes) ? { seconds } : { seconds, problem: `download sha256 ${got}, expected ${sha256Of(bytes)}` };
}

/**
 * The guest uploads the deterministic stream of `bytes` (what the shell command `source` writes to
 * stdout) to `server`'s /upload with curl -T, and checks the sha256 the server saw.
 */
export async function guestUpload(ns: Netns, server: string, bytes: number, source: string, timeoutMs: number): Promise<GuestTransfer> {
  const r = await guestBash(
    ns,
    `${source} | curl -sS --fail --max-time ${Math.ceil(timeoutMs / 1000)} ${CURL_TIMES} -T - ${shq(`${server}/upload`)}`,
    timeoutMs + 5_000,
  );
  const seconds = curlSeconds(r.stderr);
  if (r.code !== 0) return { seconds, problem: describeExec(r) };
  let reply: UploadReply | undefined;
  try {
    reply = JSON.parse(r.stdout) as UploadReply;
  } catch {
    // reported below
  }
  if (reply?.sha256 === sha256Of(bytes) && reply.bytes === bytes) return { seconds };
  return { seconds, problem: `the server saw ${r.stdout.trim() || 'no reply'}, expected ${bytes} bytes with sha256 ${sha256Of(bytes)}` };
}
