// The line above the terminal that says how far the guest is: downloading (v86's download-progress),
// then the boot stages the default image prints on its serial console (WEFT-* markers from its
// /init), until the shell prompt. Other images print no markers: they are "running" once they print
// anything. The stage is also on the element (data-stage) for tests.

export type BootStage = 'loading' | 'booting' | 'ready' | 'failed';

interface Marker {
  pattern: RegExp;
  percent: number;
  text: (m: RegExpExecArray) => string;
  stage?: BootStage;
}

const MARKERS: Marker[] = [
  { pattern: /WEFT-INIT/, percent: 55, text: () => 'Linux is running; loading the network card driver…' },
  { pattern: /WEFT-BOOT-OK nic=(\S+)/, percent: 70, text: (m) => `Network card up (${m[1]}); asking weft's DHCP server for an address…` },
  { pattern: /WEFT-LEASE ip=(\S+)/, percent: 85, text: (m) => `Leased ${m[1]} from weft; starting the shell…` },
  { pattern: /WEFT-LEASE-FAIL/, percent: 85, text: () => 'No DHCP lease (the shell still starts; type weft-dhcp to retry)…' },
  { pattern: /WEFT-SHELL-READY/, percent: 100, text: () => 'Ready. The terminal is yours: try the commands below.', stage: 'ready' },
];

export class BootProgress {
  private tail = '';
  private seen = new Set<Marker>();
  private files = new Map<number, { loaded: number; total: number }>();
  stage: BootStage = 'loading';

  constructor(
    private readonly box: HTMLElement,
    private readonly bar: HTMLProgressElement,
    private readonly label: HTMLElement,
    private readonly markers: boolean,
  ) {
    this.set('loading', 'Loading the emulator and the guest image…', undefined);
  }

  download(e: { file_index: number; loaded: number; total: number; lengthComputable: boolean; file_name: string }): void {
    if (this.stage !== 'loading') return;
    this.files.set(e.file_index, { loaded: e.loaded, total: e.lengthComputable ? e.total : 0 });
    let loaded = 0;
    let total = 0;
    for (const f of this.files.values()) {
      loaded += f.loaded;
      total += f.total;
    }
    const mb = (n: number) => (n / (1024 * 1024)).toFixed(1);
    // Downloads are the first 40 % of the bar; the boot is the rest.
    this.set(
      'loading',
      `Downloading ${e.file_name.replace(/^.*\//, '')}: ${mb(loaded)}${total ? ` of ${mb(total)}` : ''} MB…`,
      total ? (40 * loaded) / total : undefined,
    );
  }

  started(): void {
    this.set('booting', this.markers ? 'Booting Linux (about 10 s)…' : 'Started; waiting for the guest on its serial console…', this.markers ? 45 : undefined);
  }

  /** Serial output, decoded. */
  text(chunk: string): void {
    if (this.stage === 'failed' || (this.stage === 'ready' && !this.markers)) return;
    if (!this.markers) {
      this.set('ready', "Running. This page shows the guest's serial console (ttyS0).", 100);
      return;
    }
    if (this.stage === 'ready') return;
    // Markers can be split across chunks: look at a short rolling window.
    this.tail = (this.tail + chunk).slice(-2048);
    for (const m of MARKERS) {
      if (this.seen.has(m)) continue;
      const match = m.pattern.exec(this.tail);
      if (!match) continue;
      this.seen.add(m);
      this.set(m.stage ?? 'booting', m.text(match), m.percent);
    }
    const fail = /WEFT-BOOT-FAIL reason=(\S+)/.exec(this.tail);
    if (fail) this.fail(`The guest booted but found no network card (${fail[1]}).`);
  }

  fail(message: string): void {
    this.set('failed', message, undefined);
  }

  private set(stage: BootStage, text: string, percent: number | undefined): void {
    this.stage = stage;
    this.box.dataset.stage = stage;
    this.label.textContent = text;
    if (percent === undefined) this.bar.removeAttribute('value');
    else this.bar.value = percent;
    this.bar.hidden = stage === 'ready' || stage === 'failed';
  }
}
