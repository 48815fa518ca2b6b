// Runs the guest image builder (test/harness/guest-image/build.mjs) for one target from a test: a
// no-op when the cached image is current, a build from Debian packages when it is missing or stale.
// Its output goes to this process's stdout/stderr, so a first (slow) build shows its progress.

import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { HARNESS_DIR } from './repo-root';

export const GUEST_BUILD_SCRIPT = join(HARNESS_DIR, 'guest-image', 'build.mjs');
/** build.mjs's exit code for "this machine cannot build it" (no apt, not root). */
const EXIT_UNSUPPORTED = 3;

export type GuestBuildTarget = 'v86' | 'qemu';

/**
 * Builds `target` into `dir` (passed to the builder in `dirEnv`). Resolves `{ built: true }` when the
 * image is there, `{ skip }` with the builder's reason when this machine cannot build it; rejects when
 * a build fails. The builder is killed by PID after `timeoutMs`.
 */
export function runGuestImageBuild(
  target: GuestBuildTarget,
  dirEnv: Record<string, string>,
  timeoutMs = 15 * 60_000,
): Promise<{ built: true } | { skip: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [GUEST_BUILD_SCRIPT, '--target', target], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...dirEnv },
    });
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => process.stdout.write(s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s;
      process.stderr.write(s);
    });
    const timer = setTimeout(() => child.pid !== undefined && process.kill(child.pid, 'SIGKILL'), timeoutMs);
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ built: true });
      else if (code === EXIT_UNSUPPORTED) resolve({ skip: stderr.trim().replace(/^guest-image: /, '') });
      else reject(new Error(`${target} guest image build failed (exit ${code}): ${stderr.trim()}`));
    });
  });
}
