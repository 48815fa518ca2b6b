// The guest's serial console (ttyS0) in a real terminal: bytes from v86's `serial0-output-byte` go to
// xterm (batched: the event fires once per byte), and what the person types goes to
// `serial0_send`. xterm also answers the shell's terminal queries (cursor position) this way.

import { FitAddon } from '@xterm/addon-fit';
import { Terminal } from '@xterm/xterm';

export interface SerialEmulator {
  add_listener(event: 'serial0-output-byte', listener: (byte: number) => void): void;
  serial0_send(data: string): void;
}

export class GuestConsole {
  readonly term: Terminal;
  private readonly fit = new FitAddon();
  private pending = new Uint8Array(4096);
  private pendingLength = 0;
  private flushQueued = false;
  private readonly decoder = new TextDecoder();
  private emulator: SerialEmulator | undefined;

  constructor(container: HTMLElement) {
    this.term = new Terminal({
      cursorBlink: true,
      fontSize: 13,
      fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
      scrollback: 5000,
      theme: { background: '#0d1117', foreground: '#d6deeb', cursor: '#7fdbca' },
    });
    this.term.loadAddon(this.fit);
    this.term.open(container);
    this.refit();
    new ResizeObserver(() => this.refit()).observe(container);
  }

  /** Connects the terminal to the emulator's first serial port; `onText` sees the decoded output. */
  connect(emulator: SerialEmulator, onText: (text: string) => void): void {
    this.emulator = emulator;
    emulator.add_listener('serial0-output-byte', (byte) => {
      if (this.pendingLength === this.pending.length) {
        const bigger = new Uint8Array(this.pending.length * 2);
        bigger.set(this.pending);
        this.pending = bigger;
      }
      this.pending[this.pendingLength++] = byte;
      if (!this.flushQueued) {
        this.flushQueued = true;
        setTimeout(() => this.flush(onText), 4);
      }
    });
    this.term.onData((data) => emulator.serial0_send(data));
  }

  /** Types `text` into the guest's serial console as if from the keyboard; false before connect(). */
  send(text: string): boolean {
    if (!this.emulator) return false;
    this.emulator.serial0_send(text);
    return true;
  }

  focus(): void {
    this.term.focus();
  }

  /** The terminal's text (scrollback included), one string per line. */
  lines(): string[] {
    const buffer = this.term.buffer.active;
    const out: string[] = [];
    for (let i = 0; i < buffer.length; i++) out.push(buffer.getLine(i)?.translateToString(true) ?? '');
    return out;
  }

  private flush(onText: (text: string) => void): void {
    this.flushQueued = false;
    const chunk = this.pending.slice(0, this.pendingLength);
    this.pendingLength = 0;
    this.term.write(chunk);
    onText(this.decoder.decode(chunk, { stream: true }));
  }

  private refit(): void {
    // A hidden or zero-sized container has no geometry to fit to.
    if (this.term.element?.offsetParent === null) return;
    try {
      this.fit.fit();
    } catch {
      // the renderer is not ready yet; the next resize fits
    }
  }
}
