// The relay's one spelling of a destination name (node-host/relay/hostname.ts).
import { describe, expect, it } from 'vitest';
import { normalizeHostname } from '../../node-host/relay/hostname';

describe('normalizeHostname', () => {
  it('maps what resolvers and browsers map: case, fullwidth letters, ideographic dots, a trailing dot, IDN', () => {
    expect(normalizeHostname('Example.COM.')).toBe('example.com');
    expect(normalizeHostname('ｄｅｎｉｅｄ.test')).toBe('denied.test');
    expect(normalizeHostname('sub。denied2.test')).toBe('sub.denied2.test');
    expect(normalizeHostname('bücher.example')).toBe('xn--bcher-kva.example');
    expect(normalizeHostname('0x7f.1')).toBe('127.0.0.1');
  });

  it('keeps address literals', () => {
    expect(normalizeHostname('127.0.0.1')).toBe('127.0.0.1');
    expect(normalizeHostname('::1')).toBe('::1');
    expect(normalizeHostname('FE80::1')).toBe('fe80::1');
  });

  it('refuses bytes no hostname has, and empty names', () => {
    for (const bad of ['localhost\0.example.com', 'denied.test\0', 'a b.com', 'tab\t.com', 'x\n.com', '', '.', 'a'.repeat(300)]) {
      expect(normalizeHostname(bad), JSON.stringify(bad)).toBeUndefined();
    }
  });
});
