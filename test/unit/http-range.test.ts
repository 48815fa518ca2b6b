// Range and ETag rules of the demo's static server (RFC 9110 §13–14).

import { describe, expect, it } from 'vitest';
import { etagMatches, fileEtag, parseRange } from '../../node-host/relay/http-range';

describe('Range', () => {
  it.each([
    [undefined, { kind: 'whole' }],
    ['bytes=0-99', { kind: 'part', start: 0, end: 99 }],
    ['bytes=900-', { kind: 'part', start: 900, end: 999 }],
    ['bytes=900-5000', { kind: 'part', start: 900, end: 999 }],
    ['bytes=-100', { kind: 'part', start: 900, end: 999 }],
    ['bytes=-5000', { kind: 'part', start: 0, end: 999 }],
    ['bytes=1000-', { kind: 'unsatisfiable' }],
    ['bytes=-0', { kind: 'unsatisfiable' }],
    ['bytes=5-2', { kind: 'whole' }],
    ['bytes=0-1,5-6', { kind: 'whole' }],
    ['items=0-1', { kind: 'whole' }],
    ['bytes=-', { kind: 'whole' }],
  ] as const)('%s on 1000 bytes', (header, answer) => {
    expect(parseRange(header, 1000)).toEqual(answer);
  });
  it('nothing of an empty file can be asked for', () => {
    expect(parseRange('bytes=0-', 0)).toEqual({ kind: 'unsatisfiable' });
    expect(parseRange('bytes=-1', 0)).toEqual({ kind: 'unsatisfiable' });
  });
});

describe('ETag', () => {
  it('changes with size or time, and If-None-Match compares weakly', () => {
    const e = fileEtag(1000, 1_700_000_000_123.456);
    expect(fileEtag(1001, 1_700_000_000_123.456)).not.toBe(e);
    expect(fileEtag(1000, 1_700_000_000_123.457)).not.toBe(e);
    expect(etagMatches(e, e)).toBe(true);
    expect(etagMatches(`"x", W/${e}`, e)).toBe(true);
    expect(etagMatches('*', e)).toBe(true);
    expect(etagMatches('"other"', e)).toBe(false);
    expect(etagMatches(undefined, e)).toBe(false);
  });
});
