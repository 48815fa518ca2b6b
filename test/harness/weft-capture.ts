// Every `weft vm` an integration test starts on a TAP (Netns.spawnWeftOnTap) writes a pcap, and
// when it stops the pcap is scanned: weft must never send a byte past its FIN (pcap-tcp-check.ts).
// The capture keeps 128 bytes of each frame (`--pcap-snaplen`): every header of a TCP/IPv4 frame,
// so a gigabyte transfer costs a few hundred MB of /tmp for a few seconds, not gigabytes.
//
// So that the scan cannot pass by seeing nothing, it is held against what weft itself logged when
// it stopped: the scan must read every frame weft wrote (`pcapFrames`), and see at least as many
// connection attempts as weft opened connections (`tcpConnectionsOpened`).
//
// Who fails: a test that stops weft may call assertCleanCapture() and fail by name; otherwise
// Netns.cleanup() checks, and the problems fail the test file from vitest-setup.ts's afterAll, once
// every suite's own cleanup has run.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describeFinViolation, describeScan, scanPcapFile, type PcapTcpScan } from './pcap-tcp-check';
import type { WeftProcess } from './weft-process';

/** Bytes kept per frame: Ethernet 14 + IPv4 20 + TCP up to 60, with room to spare. */
export const CAPTURE_SNAPLEN = 128;
/** Violations quoted in a failure message (all are counted). */
const QUOTED_VIOLATIONS = 20;

export interface CaptureReport {
  path: string;
  /** Undefined when the file could not be read at all. */
  scan: PcapTcpScan | undefined;
  /** Empty when all is well. */
  problems: string[];
}

/** What weft logs when it stops (node-host/vm-command.ts), as far as the check uses it. */
interface StoppedEvent {
  pcapFrames?: number;
  counters?: { tcpConnectionsOpened?: number };
}

/** Scans `path` and holds the scan against weft's own final counters (if it logged them). */
export async function checkCapture(path: string, weft: WeftProcess | undefined): Promise<CaptureReport> {
  let scan: PcapTcpScan;
  try {
    scan = await scanPcapFile(path);
  } catch (e) {
    return { path, scan: undefined, problems: [`cannot scan weft's capture ${path}: ${(e as Error).message}`] };
  }
  const problems: string[] = [];
  if (scan.violationsTotal > 0) {
    problems.push(
      `weft sent ${scan.violationsTotal} TCP segment(s) past its FIN (${path}):\n` +
        scan.violations
          .slice(0, QUOTED_VIOLATIONS)
          .map((v) => `  ${describeFinViolation(v)}`)
          .join('\n') +
        (scan.violationsTotal > QUOTED_VIOLATIONS ? `\n  … and ${scan.violationsTotal - QUOTED_VIOLATIONS} more` : ''),
    );
  }
  if (scan.unreadableFromWeft > 0) {
    problems.push(`${scan.unreadableFromWeft} TCP frames from weft in ${path} could not be read, so they were not checked`);
  }
  if (weft) {
    const stopped = weft.events.find((e) => e.event === 'stopped') as StoppedEvent | undefined;
    if (!stopped) {
      problems.push(`weft (pid ${weft.pid}) did not log "stopped", so its capture cannot be known complete; scan: ${describeScan(scan)}`);
    } else {
      if (stopped.pcapFrames !== scan.frames) {
        problems.push(`the scan read ${scan.frames} frames of the ${stopped.pcapFrames} weft wrote to ${path}`);
      }
      const opened = stopped.counters?.tcpConnectionsOpened ?? 0;
      if (scan.connectionAttempts < opened) {
        problems.push(`weft opened ${opened} TCP connections but the scan of ${path} saw ${scan.connectionAttempts} SYNs: ${describeScan(scan)}`);
      }
    }
  }
  return { path, scan, problems };
}

/** The capture of one weft process. */
export class WeftCapture {
  private report: Promise<CaptureReport> | undefined;
  /** Set once a test or the file's afterAll has been given the problems. */
  reported = false;

  private constructor(
    readonly path: string,
    /** A directory of our own to delete after the check; undefined for a file the caller named. */
    private readonly tempDir: string | undefined,
  ) {}

  /** A capture weft writes to a file its caller named (checked, never deleted here). */
  static ofFile(path: string): WeftCapture {
    return new WeftCapture(path, undefined);
  }

  /**
   * The weft arguments with a capture: the caller's `--pcap FILE` if there is one (checked, kept),
   * else a temporary header-only file (checked, then deleted).
   */
  static forArgs(weftArgs: readonly string[]): { args: string[]; capture: WeftCapture } {
    const given = weftArgs.indexOf('--pcap');
    if (given >= 0 && weftArgs[given + 1] !== undefined) {
      return { args: [...weftArgs], capture: WeftCapture.ofFile(weftArgs[given + 1]) };
    }
    const dir = mkdtempSync(join(tmpdir(), 'weft-capture-'));
    const path = join(dir, 'weft.pcap');
    return { args: [...weftArgs, '--pcap', path, '--pcap-snaplen', String(CAPTURE_SNAPLEN)], capture: new WeftCapture(path, dir) };
  }

  /**
   * After weft has exited: scans once and resolves with the report. A temporary file is deleted
   * if all is well, and kept for inspection (the report says where) if not.
   */
  check(weft: WeftProcess): Promise<CaptureReport> {
    this.report ??= checkCapture(this.path, weft).then((report) => {
      if (report.problems.length === 0) this.discardSync();
      else if (this.tempDir) report.problems.push(`the capture is kept for inspection: ${this.path} (delete ${this.tempDir} when done)`);
      return report;
    });
    return this.report;
  }

  /** Deletes a temporary capture (also from process-exit hooks, where nothing asynchronous runs). */
  discardSync(): void {
    if (this.tempDir) rmSync(this.tempDir, { recursive: true, force: true });
  }
}

const unreported: string[] = [];

/** Problems found by Netns.cleanup() that no test has reported yet (records them for the file's afterAll). */
export function recordCaptureProblems(report: CaptureReport): void {
  unreported.push(...report.problems);
}

/** Takes the recorded problems (vitest-setup.ts fails the test file with them). */
export function takeUnreportedCaptureProblems(): string[] {
  return unreported.splice(0);
}

/**
 * For a test that has stopped weft: throws with the capture's problems, and returns the scan (to
 * assert that it saw the connections the test made). Without a capture, throws too.
 */
export async function assertCleanCapture(weft: WeftProcess): Promise<PcapTcpScan> {
  if (!weft.capture) throw new Error('this weft process has no capture (started without one)');
  if (!weft.exit) throw new Error('weft is still running: stop it before checking its capture');
  const report = await weft.capture.check(weft);
  weft.capture.reported = true;
  if (report.problems.length > 0 || !report.scan) throw new Error(report.problems.join('\n'));
  return report.scan;
}
