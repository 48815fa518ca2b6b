// The scrolling packet log: one summary line per frame (frame-summary.ts), the newest at the bottom.
// Lines go into a bounded ring and the view is redrawn at most four times a second, so a fast
// download costs the page a string per frame, not a DOM node. Pausing freezes the view (lines keep
// arriving in the ring) so a person can read it.

import type { FrameDirection } from './frame-tap';

const MAX_LINES = 400;
const REDRAW_MS = 250;

function clock(d: Date): string {
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

export class PacketLog {
  private readonly lines: string[] = [];
  private total = 0;
  private totalAtPause = 0;
  private paused = false;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly view: HTMLElement,
    private readonly pauseButton: HTMLButtonElement,
    private readonly status: HTMLElement,
  ) {
    pauseButton.addEventListener('click', () => this.setPaused(!this.paused));
    this.redraw();
  }

  add(direction: FrameDirection, text: string): void {
    this.total++;
    this.lines.push(`${clock(new Date())} ${direction === 'from-guest' ? '▲' : '▼'} ${text}`);
    if (this.lines.length > MAX_LINES) this.lines.splice(0, this.lines.length - MAX_LINES);
    if (this.timer === undefined) this.timer = setTimeout(() => this.redraw(), REDRAW_MS);
  }

  setPaused(paused: boolean): void {
    this.paused = paused;
    this.totalAtPause = this.total;
    this.pauseButton.textContent = paused ? 'Resume' : 'Pause';
    this.pauseButton.setAttribute('aria-pressed', String(paused));
    this.redraw();
  }

  private redraw(): void {
    this.timer = undefined;
    if (this.paused) {
      this.status.textContent = `paused · ${this.total - this.totalAtPause} frames since`;
      return;
    }
    this.status.textContent = `${this.total} frames · ▲ from guest ▼ to guest`;
    this.view.textContent = this.lines.length ? this.lines.join('\n') : 'No frames yet.';
    this.view.scrollTop = this.view.scrollHeight;
  }
}
