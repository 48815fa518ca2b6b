// What /proc tells a benchmark about a process it started: CPU seconds and system calls.
import { readFileSync } from 'node:fs';

const CLOCK_TICKS = 100; // USER_HZ on Linux

/** utime + stime of `pid` (all its threads) in seconds, or NaN when it cannot be read. */
export function cpuSecondsOf(pid: number | undefined): number {
  if (pid === undefined) return NaN;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

/**
 * The read(v) and write(v) system calls `pid` has made (/proc/PID/io syscr, syscw; sendmsg and
 * recvmsg are not counted), NaN when they cannot be read.
 */
export function syscallCountsOf(pid: number | undefined): { reads: number; writes: number } {
  try {
    if (pid === undefined) throw new Error('no process');
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? NaN);
    return { reads: field('syscr'), writes: field('syscw') };
  } catch {
    return { reads: NaN, writes: NaN };
  }
}
