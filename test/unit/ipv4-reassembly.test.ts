import { describe, expect, it } from 'vitest';
import { Ipv4Reassembler, type FragmentInput } from '../../core/ip/ipv4-reassembly';
import { DEFAULT_LIMITS } from '../../core/config';
import { ipv4 } from '../../core/wire/address';

function harness(limits = {}) {
  const drops: Record<string, number> = {};
  const r = new Ipv4Reassembler({ ...DEFAULT_LIMITS, ...limits }, (reason, n = 1) => (drops[reason] = (drops[reason] ?? 0) + n));
  return { r, drops };
}

function frag(id: number, offset: number, len: number, more: boolean, src = ipv4(1), fill = 0): FragmentInput {
  return { src, dst: ipv4(2), protocol: 17, id, fragmentOffset: offset, moreFragments: more, payload: new Uint8Array(len).fill(fill) };
}

describe('Ipv4Reassembler', () => {
  it('reassembles fragments in any order into the exact payload', () => {
    const { r } = harness();
    const data = new Uint8Array(3000).map((_, i) => i % 251);
    const parts = [0, 1480, 2960].map((o) => ({ ...frag(1, o, 0, o + 1480 < 3000), payload: data.subarray(o, Math.min(3000, o + 1480)) }));
    expect(r.add(parts[1], 0)).toBeNull();
    expect(r.add(parts[2], 0)).toBeNull();
    const whole = r.add(parts[0], 0);
    expect(whole?.payload).toEqual(data);
    expect(r.bytesHeld).toBe(0);
    expect(r.datagramsPending).toBe(0);
  });

  it('ignores exact duplicates but discards the datagram on a partial overlap', () => {
    const { r, drops } = harness();
    r.add(frag(1, 0, 16, true), 0);
    expect(r.add(frag(1, 0, 16, true), 0)).toBeNull();
    expect(drops['ipv4-fragment-duplicate']).toBe(1);
    expect(r.add(frag(1, 16, 8, false), 0)?.payload.length).toBe(24);

    r.add(frag(2, 0, 16, true), 0);
    expect(r.add(frag(2, 8, 16, false), 0)).toBeNull();
    expect(drops['ipv4-fragment-overlap']).toBe(2);
    expect(r.bytesHeld).toBe(0);
  });

  it('rejects malformed fragments', () => {
    const { r, drops } = harness();
    r.add(frag(1, 0, 12, true), 0); // not a multiple of 8
    r.add(frag(1, 65512, 8, false), 0); // past 65535
    r.add(frag(1, 8, 0, true), 0);
    expect(drops).toEqual({ 'ipv4-fragment-bad-length': 1, 'ipv4-fragment-too-large': 1, 'ipv4-fragment-empty': 1 });
  });

  it('rejects a last fragment that contradicts what was received', () => {
    const { r, drops } = harness();
    r.add(frag(1, 64, 8, true), 0);
    r.add(frag(1, 0, 8, false), 0);
    expect(drops['ipv4-fragment-inconsistent']).toBe(2);
  });

  it('bounds memory per source by evicting the oldest incomplete datagram', () => {
    const { r, drops } = harness({ reassemblyBytesPerSource: 10_000, reassemblyBytesTotal: 100_000 });
    for (let id = 0; id < 100; id++) r.add(frag(id, 0, 1480, true), 0);
    expect(r.bytesHeld).toBeLessThanOrEqual(10_000);
    expect(drops['ipv4-reassembly-evicted']).toBeGreaterThan(0);
    // The newest datagram is still there and can complete.
    expect(r.add(frag(99, 1480, 8, false), 0)?.payload.length).toBe(1488);
  });

  it('bounds the datagram count per source and the total across sources', () => {
    const { r } = harness({ reassemblyDatagramsPerSource: 4, reassemblyBytesTotal: 50_000, reassemblyBytesPerSource: 50_000 });
    for (let id = 0; id < 50; id++) r.add(frag(id, 0, 8, true), 0);
    expect(r.datagramsPending).toBe(4);
    for (let src = 10; src < 200; src++) r.add(frag(1, 0, 1480, true, ipv4(src)), 0);
    expect(r.bytesHeld).toBeLessThanOrEqual(50_000);
  });

  it('expires datagrams at the timeout and reports the next deadline', () => {
    const { r, drops } = harness();
    r.add(frag(1, 0, 8, true), 100);
    r.add(frag(2, 0, 8, true), 200);
    expect(r.nextDeadline()).toBe(30_100);
    r.poll(30_100);
    expect(drops['ipv4-reassembly-timeout']).toBe(1);
    expect(r.nextDeadline()).toBe(30_200);
    r.poll(40_000);
    expect(r.datagramsPending).toBe(0);
    expect(r.nextDeadline()).toBeUndefined();
  });
});
