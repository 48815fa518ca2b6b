// The one internal Node binding weft uses (node-host/links/fd-socket.ts), checked on the Node that
// runs the tests: a pollable fd (a FIFO here, a TAP in use) reads through it, one read per event,
// and destroy() lets the process go on.

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { watchFd } from '../../node-host/links/fd-socket';

describe.skipIf(process.platform !== 'linux')('watching an inherited fd', () => {
  it(`reads a pollable fd through libuv on Node ${process.version}, without a deprecation warning`, async () => {
    const dir = fs.mkdtempSync(join(tmpdir(), 'weft-fd-'));
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const warnings: unknown[] = [];
    const onWarning = (w: unknown) => warnings.push(w);
    process.on('warning', onWarning);
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    try {
      const socket = watchFd(fd);
      const got = new Promise<string>((resolve) => socket.once('data', (d: Buffer) => resolve(d.toString())));
      fs.writeSync(fd, 'frame');
      expect(await got).toBe('frame');
      socket.destroy();
      await new Promise((r) => setTimeout(r, 10));
      expect(warnings).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
