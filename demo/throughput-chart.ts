// The live throughput chart: bytes per second to and from the guest over the last minute, counted
// from the frames that cross the virtual wire (the frame tap), sampled once a second and drawn with
// uPlot (small, and cheap to redraw every second).

import uPlot from 'uplot';

const WINDOW_SECONDS = 60;

export function formatRate(bytesPerSecond: number): string {
  if (bytesPerSecond >= 1024 * 1024) return `${(bytesPerSecond / (1024 * 1024)).toFixed(1)} MB/s`;
  if (bytesPerSecond >= 1024) return `${(bytesPerSecond / 1024).toFixed(1)} KB/s`;
  return `${Math.round(bytesPerSecond)} B/s`;
}

export class ThroughputChart {
  private readonly times: number[] = [];
  private readonly down: number[] = [];
  private readonly up: number[] = [];
  private pendingDown = 0;
  private pendingUp = 0;
  private lastSample = performance.now();
  private peak = 0;
  private readonly plot: uPlot;

  constructor(
    private readonly container: HTMLElement,
    private readonly readout: HTMLElement,
  ) {
    // Start with a full, flat minute so the axis does not jump as the first samples arrive.
    const now = Date.now() / 1000;
    for (let i = WINDOW_SECONDS; i > 0; i--) {
      this.times.push(now - i);
      this.down.push(0);
      this.up.push(0);
    }
    const css = getComputedStyle(document.documentElement);
    const color = (name: string, fallback: string) => css.getPropertyValue(name).trim() || fallback;
    this.plot = new uPlot(
      {
        width: Math.max(200, container.clientWidth),
        height: 140,
        legend: { show: false },
        cursor: { show: false },
        scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(1024, max * 1.1)] } },
        axes: [
          {
            stroke: color('--muted', '#999'),
            grid: { stroke: color('--grid', '#333'), width: 1 },
            ticks: { show: false },
            // Seconds ago read better than clock times here (and need one line, not two).
            values: (_u, splits) => splits.map((t) => `${Math.round(t - Date.now() / 1000)}s`),
          },
          {
            stroke: color('--muted', '#999'),
            grid: { stroke: color('--grid', '#333'), width: 1 },
            ticks: { show: false },
            size: 70,
            values: (_u, splits) => splits.map(formatRate),
          },
        ],
        series: [
          {},
          { label: 'to guest', stroke: color('--down', '#4fc3f7'), fill: color('--down-fill', 'rgba(79,195,247,0.15)'), width: 1.5, points: { show: false } },
          { label: 'from guest', stroke: color('--up', '#ffb74d'), fill: color('--up-fill', 'rgba(255,183,77,0.12)'), width: 1.5, points: { show: false } },
        ],
      },
      [this.times, this.down, this.up],
      container,
    );
    new ResizeObserver(() => this.plot.setSize({ width: Math.max(200, container.clientWidth), height: 140 })).observe(container);
  }

  count(bytes: number, toGuest: boolean): void {
    if (toGuest) this.pendingDown += bytes;
    else this.pendingUp += bytes;
  }

  /** Closes the current interval (call about once a second) and redraws. */
  sample(): void {
    const now = performance.now();
    const seconds = Math.max(0.001, (now - this.lastSample) / 1000);
    this.lastSample = now;
    const down = this.pendingDown / seconds;
    const up = this.pendingUp / seconds;
    this.pendingDown = this.pendingUp = 0;
    this.times.push(Date.now() / 1000);
    this.down.push(down);
    this.up.push(up);
    if (this.times.length > WINDOW_SECONDS) {
      this.times.shift();
      this.down.shift();
      this.up.shift();
    }
    this.peak = Math.max(this.peak, down, up);
    this.plot.setData([this.times, this.down, this.up]);
    this.readout.textContent = `▼ ${formatRate(down)}  ▲ ${formatRate(up)}  · peak ${formatRate(this.peak)}`;
    // Tests (and curious people with devtools) read the numbers from here.
    this.container.dataset.down = String(Math.round(down));
    this.container.dataset.up = String(Math.round(up));
    this.container.dataset.peak = String(Math.round(this.peak));
  }
}
