// worker/guest-tcp.ts: the streams of a connection into the guest against scripted stack handlers.
// What the stack does is played by hand (resume = the guest accepted, pause = its send buffer is
// full, write/end/destroy(reason) = bytes, FIN and abort from the guest), so each back-pressure
// rule and each way a connection ends is one small case.

import { describe, expect, it } from 'vitest';
import type { TcpStreamHandlers, UpstreamError } from '../../core/upstream';
import { endFor, GuestTcpStream } from '../../worker/guest-tcp';
import type { GuestTcpEnd } from '../../worker/worker-api';

function setup() {
  const log: string[] = [];
  const sent: Uint8Array[] = [];
  const ends: GuestTcpEnd[] = [];
  let opened = 0;
  const closes: Array<UpstreamError | undefined> = [];
  const handlers: TcpStreamHandlers = {
    onConnect: () => log.push('connect'),
    onData: (d) => void sent.push(d.slice()),
    onEnd: () => log.push('end'),
    onDrain: () => log.push('drain'),
    onClose: (e) => void closes.push(e),
  };
  const s = new GuestTcpStream(
    1,
    'port 7000',
    () => opened++,
    (e) => ends.push(e),
  ).attach(handlers);
  return { s, log, sent, ends, closes, opened: () => opened };
}

const tick = () => new Promise((r) => setTimeout(r, 0));

describe('GuestTcpStream', () => {
  it('holds the page’s writes until the guest accepts, then hands them over in pieces of at most 64 KiB', async () => {
    const t = setup();
    const w = t.s.writable.getWriter();
    const done = w.write(new Uint8Array(150 * 1024));
    await tick();
    expect(t.sent).toEqual([]);
    t.s.resume();
    await done;
    expect(t.opened()).toBe(1);
    expect(t.sent.map((c) => c.length)).toEqual([65536, 65536, 22528]);
  });

  it('a write waits while the stack has paused the stream (its send buffer is full)', async () => {
    const t = setup();
    t.s.resume();
    const w = t.s.writable.getWriter();
    t.s.pause();
    let resolved = false;
    const p = w.write(new Uint8Array(10)).then(() => (resolved = true));
    await tick();
    expect(resolved).toBe(false);
    t.s.resume();
    await p;
    expect(t.sent.map((c) => c.length)).toEqual([10]);
  });

  it('guest bytes fill the readable’s queue; past 128 KiB write() says wait, and reading asks the stack to drain', async () => {
    const t = setup();
    t.s.resume();
    expect(t.s.write(new Uint8Array(100 * 1024))).toBe(true);
    expect(t.s.write(new Uint8Array(64 * 1024))).toBe(false);
    const r = t.s.readable.getReader();
    expect((await r.read()).value?.length).toBe(100 * 1024);
    await tick();
    expect(t.log).toContain('drain');
  });

  it('both directions ended: the stack hears a clean close, and the end has no code', async () => {
    const t = setup();
    t.s.resume();
    t.s.write(new TextEncoder().encode('hi'));
    t.s.end();
    await t.s.writable.close();
    expect(t.closes).toEqual([undefined]);
    expect(t.ends).toEqual([{ message: 'closed' }]);
    const r = t.s.readable.getReader();
    expect(new TextDecoder().decode((await r.read()).value)).toBe('hi');
    expect((await r.read()).done).toBe(true);
  });

  it('the page cancels the readable: the stack is told to reset (RST to the guest), the writable errors', async () => {
    const t = setup();
    t.s.resume();
    await t.s.readable.cancel();
    expect(t.closes.map((e) => e?.kind)).toEqual(['reset']);
    await expect(t.s.writable.getWriter().write(new Uint8Array(1))).rejects.toThrow();
  });

  it('the stack destroys the stream with its reason: both streams error with the code it maps to', async () => {
    const t = setup();
    t.s.resume();
    t.s.destroy('guest-reset');
    expect(t.ends).toEqual([endFor('guest-reset', 'port 7000')]);
    expect(t.ends[0].code).toBe('ERR_WEFT_GUEST_RESET');
    await expect(t.s.readable.getReader().read()).rejects.toThrow(/ERR_WEFT_GUEST_RESET/);
    expect(t.closes).toEqual([]); // nothing goes back to the stack that ended it
  });

  it('refused or unreachable before the guest accepted: the attempt ends with that code at once', () => {
    for (const [reason, code] of [
      ['guest-refused', 'ERR_WEFT_GUEST_REFUSED'],
      ['guest-unreachable', 'ERR_WEFT_GUEST_UNREACHABLE'],
    ] as const) {
      const t = setup();
      t.s.destroy(reason);
      expect(t.opened()).toBe(0);
      expect(t.ends.map((e) => e.code)).toEqual([code]);
      expect(t.ends[0].message).toContain('port 7000');
    }
  });

  it('a stream destroyed without a reason (an older caller) ends as reset', () => {
    const t = setup();
    t.s.resume();
    t.s.destroy();
    expect(t.ends).toEqual([{ code: 'ERR_WEFT_GUEST_RESET', message: 'weft ended the connection to port 7000 (aborted)' }]);
  });

  it('close reasons map to codes', () => {
    expect(endFor('guest-refused', 'p').code).toBe('ERR_WEFT_GUEST_REFUSED');
    expect(endFor('guest-unreachable', 'p').code).toBe('ERR_WEFT_GUEST_UNREACHABLE');
    expect(endFor('shutdown', 'p').code).toBe('ERR_WEFT_CLOSED');
    expect(endFor('retransmit-limit', 'p')).toMatchObject({ code: 'ERR_WEFT_GUEST_RESET', message: expect.stringContaining('retransmit-limit') });
  });
});
