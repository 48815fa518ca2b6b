// Node's timers for core pieces that take a Scheduler (the Wisp upstream).
import type { Scheduler } from '../core/scheduler';

export const nodeScheduler: Scheduler = {
  schedule: (fn, delayMs) => setTimeout(fn, delayMs),
  cancel: (handle) => clearTimeout(handle as NodeJS.Timeout),
  defer: (fn) => queueMicrotask(fn),
};
