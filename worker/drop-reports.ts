// Frames dropped outside the stack, reported to the page as 'drops' events at most once a second
// (a flood of drops is one event per second, not one per frame).

/** Drop counters are reported at most this often. */
const DROP_REPORT_MS = 1000;

export class DropReports {
  private pending: Record<string, number> = {};
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly report: (drops: Record<string, number>) => void) {}

  count(reason: string, count = 1): void {
    this.pending[reason] = (this.pending[reason] ?? 0) + count;
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const drops = this.pending;
      this.pending = {};
      this.report(drops);
    }, DROP_REPORT_MS);
  }

  /** Stops reporting (what is pending is not sent). */
  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }
}
