// A capture held in the worker until the page asks for it: a pcap file written into chunks, which
// stops growing past a bound (the page can download it and start another).

import { PcapWriter } from '../core/pcap-writer';

/** Captures stop growing past this. */
const MAX_CAPTURE_BYTES = 64 * 1024 * 1024;

export class PcapCapture {
  private readonly chunks: Uint8Array[] = [];
  private bytes = 0;
  private readonly writer = new PcapWriter((c) => {
    this.chunks.push(c);
    this.bytes += c.length;
  });

  constructor() {
    this.writer.start();
  }

  /** Adds one frame, seen at `timeMs` (dropped once the capture is full). */
  write(frame: Uint8Array, timeMs: number): void {
    if (this.bytes < MAX_CAPTURE_BYTES) this.writer.write(frame, timeMs);
  }

  /** The whole pcap file so far, in one buffer. */
  file(): Uint8Array {
    const out = new Uint8Array(this.bytes);
    let off = 0;
    for (const chunk of this.chunks) {
      out.set(chunk, off);
      off += chunk.length;
    }
    return out;
  }
}
