// A benchmark's child process whose stdout and stderr are kept (the last 64 KiB) and searched as
// they come: the relay, the wisp-js server, the echo server and the load generator all announce
// themselves with lines the suites wait for.

import type { ChildProcess } from 'node:child_process';

export class WatchedChild {
  private buf = '';
  private waiters: Array<() => void> = [];

  /** `live`: a set the child's PID is in while it runs (a suite's list of what to kill at the end). */
  constructor(
    readonly name: string,
    readonly proc: ChildProcess,
    live?: Set<number>,
  ) {
    if (proc.pid !== undefined) live?.add(proc.pid);
    const on = (d: Buffer) => {
      this.buf = (this.buf + d.toString()).slice(-64 * 1024);
      for (const w of this.waiters.splice(0)) w();
    };
    proc.stdout?.on('data', on);
    proc.stderr?.on('data', on);
    proc.once('exit', () => {
      if (proc.pid !== undefined) live?.delete(proc.pid);
      for (const w of this.waiters.splice(0)) w();
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get exited(): boolean {
    return this.proc.exitCode !== null || this.proc.signalCode !== null;
  }

  /** Resolves with the first match of `re` in the output not yet consumed, and consumes up to it. */
  waitFor(re: RegExp, timeoutMs = 15_000): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.name}: no ${re} within ${timeoutMs} ms: ${this.buf.slice(-400)}`)), timeoutMs);
      const check = () => {
        const m = re.exec(this.buf);
        if (m) {
          clearTimeout(timer);
          this.buf = this.buf.slice(m.index + m[0].length);
          resolve(m);
        } else if (this.exited) {
          clearTimeout(timer);
          reject(new Error(`${this.name} exited (${this.proc.exitCode ?? this.proc.signalCode}): ${this.buf.slice(-600)}`));
        } else {
          this.waiters.push(check);
        }
      };
      check();
    });
  }
}
