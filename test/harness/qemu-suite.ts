// A vitest suite of real QEMU guests (qemu-guest.ts): the image and acceleration, chosen once in
// beforeAll (or why the suite cannot run here), and the weft processes and temporary folders its
// tests start, all stopped and removed in afterAll, and by PID on an interrupted run. Also what
// the suites' guest scripts share: variables and shell functions before the body, and reading the
// WEFT-RESULT lines back.
//
//   const suite = QemuSuite.use('weft vm with …', 'qemu');   // inside describe(), before other hooks
//   it('…', async ({ skip }) => {
//     if (suite.skipReason) skip(suite.skipReason);
//     const weft = await suite.startWeft(['vm', '--qemu', `unix:${join(suite.tempDir('x'), 'sock')}`]);
//     const run = await suite.finish(suite.boot({ label, link, script, mac }));
//   });

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { shq } from './guest-tools';
import {
  bootQemuGuest,
  chooseAccel,
  cleanupOnExit,
  describeRun,
  killAllQemuGuests,
  qemuGuestImageFor,
  type AccelChoice,
  type GuestRun,
  type QemuBootOptions,
  type QemuGuest,
  type QemuGuestImage,
} from './qemu-guest';
import { spawnWeft, type WeftProcess } from './weft-process';

export class QemuSuite {
  image: QemuGuestImage | undefined;
  accel: AccelChoice | undefined;
  /** Set in beforeAll when the suite cannot run here (each test then skips with it). */
  skipReason: string | undefined;
  private readonly wefts: WeftProcess[] = [];
  private readonly dirs: string[] = [];

  private constructor(private readonly tag: string) {}

  /** Registers the suite's beforeAll and afterAll in the describe() it is called in. */
  static use(title: string, tag: string): QemuSuite {
    const suite = new QemuSuite(tag);
    // Also on an interrupted run: weft by PID, then its sockets and pcaps.
    const unregister = cleanupOnExit(() => {
      for (const w of suite.wefts) w.kill('SIGKILL');
      suite.removeDirs();
    });
    beforeAll(async () => {
      const built = await qemuGuestImageFor(title);
      if (built.skipReason !== undefined) {
        suite.skipReason = built.skipReason;
        return;
      }
      suite.image = built.image;
      const t0 = performance.now();
      suite.accel = await chooseAccel(built.image);
      const took = ((performance.now() - t0) / 1000).toFixed(1);
      console.log(`[${tag}] ${built.image.kernelPackage}, ${suite.accel.accel}: ${suite.accel.reason} (choice took ${took} s)`);
    }, 15 * 60_000);
    afterAll(async () => {
      killAllQemuGuests();
      await Promise.all(
        suite.wefts.map(async (w) => {
          w.kill('SIGTERM');
          await w.waitForExit(5_000).catch(() => w.kill('SIGKILL'));
        }),
      );
      suite.removeDirs();
      unregister();
    });
    return suite;
  }

  /** A temporary folder, removed after the suite. */
  tempDir(prefix: string): string {
    const dir = mkdtempSync(join(tmpdir(), `weft-${prefix}-`));
    this.dirs.push(dir);
    return dir;
  }

  /** `weft ARGS…`, stopped after the suite if still running; resolves once it is ready. */
  async startWeft(args: string[], prepare?: (weft: WeftProcess) => void): Promise<WeftProcess> {
    const weft = spawnWeft(args);
    prepare?.(weft);
    this.wefts.push(weft);
    await weft.waitForEvent('ready');
    return weft;
  }

  /** Boots the suite's image with its acceleration. */
  boot(opts: Omit<QemuBootOptions, 'image' | 'accel'>): QemuGuest {
    if (!this.image || !this.accel) throw new Error(`no QEMU guest image here: ${this.skipReason}`);
    return bootQemuGuest({ ...opts, image: this.image, accel: this.accel.accel });
  }

  /** Waits for the boot, logs its timings and checks that its script ran to the end and QEMU exited cleanly. */
  async finish(guest: QemuGuest): Promise<GuestRun> {
    const run = await guest.finished;
    console.log(
      `[${this.tag}] ${run.label} (${run.accel}): script started ${((run.bootMs ?? Number.NaN) / 1000).toFixed(1)} s after launch, QEMU exited after ${(run.elapsedMs / 1000).toFixed(1)} s`,
    );
    expect(run.scriptRc, describeRun(run)).toBe(0);
    expect(run.code, describeRun(run)).toBe(0);
    return run;
  }

  private removeDirs(): void {
    for (const dir of this.dirs) rmSync(dir, { recursive: true, force: true });
  }
}

/** A guest script: `vars` as shell variables, then `functions`, then `body`. */
export function guestScript(functions: string, vars: Record<string, string | number>, body: string): string {
  const assignments = Object.entries(vars)
    .map(([k, v]) => `${k}=${shq(String(v))}`)
    .join('\n');
  return `${assignments}\n${functions}\n${body.trim()}\n`;
}

/** The fields of `WEFT-RESULT NAME …`, failing with the run's serial output when the guest printed none. */
export function resultOf(run: GuestRun, name: string): Record<string, string> {
  const r = run.results[name];
  if (!r) throw new Error(`the guest printed no WEFT-RESULT ${name}: ${describeRun(run)}`);
  return r;
}
