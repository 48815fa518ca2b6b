// A pcap file for `--pcap FILE`: frames are buffered in memory and written in batches (when the
// buffer passes a bound, once a second, and on close), so capturing does not cost a syscall per frame.

import fs from 'node:fs';
import { PcapWriter } from '../core/pcap-writer';

const FLUSH_BYTES = 256 * 1024;
const FLUSH_INTERVAL_MS = 1000;

export class PcapFile {
  private readonly writer: PcapWriter;
  private chunks: Uint8Array[] = [];
  private pendingBytes = 0;
  private readonly timer: NodeJS.Timeout;
  private fd: number | undefined;
  /** Set when a write failed; capturing then stops (the network keeps running). */
  error: Error | undefined;

  constructor(
    readonly path: string,
    private readonly onError: (error: Error) => void = () => {},
    /** Bytes kept of each frame; the writer's default (262144) keeps offloaded 64 KiB segments whole. */
    snaplen?: number,
  ) {
    try {
      this.fd = fs.openSync(path, 'w');
    } catch (e) {
      throw new Error(`cannot open --pcap ${path}: ${(e as Error).message}`);
    }
    this.writer = new PcapWriter((chunk) => this.append(chunk), snaplen);
    this.writer.start();
    this.timer = setInterval(() => this.flush(), FLUSH_INTERVAL_MS);
    this.timer.unref();
  }

  get framesWritten(): number {
    return this.writer.framesWritten;
  }

  write(frame: Uint8Array, timeMs: number): void {
    if (this.fd === undefined) return;
    this.writer.write(frame, timeMs);
  }

  private append(chunk: Uint8Array): void {
    this.chunks.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= FLUSH_BYTES) this.flush();
  }

  flush(): void {
    if (this.fd === undefined || this.chunks.length === 0) return;
    const data = Buffer.concat(this.chunks);
    this.chunks = [];
    this.pendingBytes = 0;
    try {
      for (let off = 0; off < data.length; ) off += fs.writeSync(this.fd, data, off);
    } catch (e) {
      this.error = new Error(`writing --pcap ${this.path} failed: ${(e as Error).message}; capture stopped`);
      this.closeFd();
      this.onError(this.error);
    }
  }

  /** Writes what is buffered and closes the file. Idempotent. */
  close(): void {
    clearInterval(this.timer);
    this.flush();
    this.closeFd();
  }

  private closeFd(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    fs.closeSync(fd);
  }
}
