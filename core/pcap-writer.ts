// Classic libpcap capture format (not pcapng): every tool reads it, tshark and Wireshark included.
// The writer produces byte chunks for a sink, so it works for a file in Node and a Blob in a page.

const LINKTYPE_ETHERNET = 1;
const GLOBAL_HEADER_LENGTH = 24;
const RECORD_HEADER_LENGTH = 16;

export type PcapSink = (chunk: Uint8Array) => void;

export class PcapWriter {
  private started = false;
  framesWritten = 0;

  constructor(
    private readonly sink: PcapSink,
    // tcpdump's default: whole frames, offloaded 64 KiB TCP segments (14 + 65535 bytes) included.
    private readonly snaplen = 262144,
  ) {}

  /** Writes the global header; called implicitly by the first frame. */
  start(): void {
    if (this.started) return;
    this.started = true;
    const h = new Uint8Array(GLOBAL_HEADER_LENGTH);
    const v = new DataView(h.buffer);
    v.setUint32(0, 0xa1b2c3d4, true); // magic, microsecond timestamps, little-endian
    v.setUint16(4, 2, true);
    v.setUint16(6, 4, true);
    v.setInt32(8, 0, true); // thiszone
    v.setUint32(12, 0, true); // sigfigs
    v.setUint32(16, this.snaplen, true);
    v.setUint32(20, LINKTYPE_ETHERNET, true);
    this.sink(h);
  }

  /** Records one frame seen at `timeMs` (Unix epoch milliseconds, fractions kept to the microsecond). */
  write(frame: Uint8Array, timeMs: number): void {
    this.start();
    const captured = Math.min(frame.length, this.snaplen);
    const rec = new Uint8Array(RECORD_HEADER_LENGTH + captured);
    const v = new DataView(rec.buffer);
    const seconds = Math.floor(timeMs / 1000);
    const micros = Math.min(999_999, Math.round((timeMs - seconds * 1000) * 1000));
    v.setUint32(0, seconds >>> 0, true);
    v.setUint32(4, micros, true);
    v.setUint32(8, captured, true);
    v.setUint32(12, frame.length, true);
    rec.set(frame.subarray(0, captured), RECORD_HEADER_LENGTH);
    this.sink(rec);
    this.framesWritten++;
  }
}
