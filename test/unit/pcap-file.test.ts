// `weft vm --pcap FILE`'s file: by default a whole 64 KiB offloaded segment is kept (snaplen 262144,
// the writer's maximum), and --pcap-snaplen cuts frames to the bytes asked for.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PcapFile } from '../../node-host/pcap-file';

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

/** Writes one frame of `n` bytes; returns the file's snaplen and the record's captured and real lengths. */
function capture(n: number, snaplen?: number) {
  dir = mkdtempSync(join(tmpdir(), 'weft-pcap-file-'));
  const path = join(dir, 'x.pcap');
  const f = new PcapFile(path, undefined, snaplen);
  f.write(new Uint8Array(n).fill(7), 1000);
  f.close();
  const b = readFileSync(path);
  return { snaplen: b.readUInt32LE(16), captured: b.readUInt32LE(24 + 8), original: b.readUInt32LE(24 + 12), size: b.length };
}

describe('pcap file', () => {
  it('keeps a 64 KiB offloaded segment whole by default', () => {
    expect(capture(65_550)).toEqual({ snaplen: 262_144, captured: 65_550, original: 65_550, size: 24 + 16 + 65_550 });
  });

  it('cuts frames to --pcap-snaplen, keeping their real length', () => {
    expect(capture(1514, 128)).toEqual({ snaplen: 128, captured: 128, original: 1514, size: 24 + 16 + 128 });
  });
});
