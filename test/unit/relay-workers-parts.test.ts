// The pieces of `weft relay --workers` and `--trust-proxy` that need no processes: whose address
// X-Forwarded-For may name, merging the workers' /metrics, and the flags' checks.

import { describe, expect, it } from 'vitest';
import { UsageError } from '../../node-host/cli-errors';
import { TrustedProxies } from '../../node-host/relay/client-address';
import { mergeExpositions, withLabel } from '../../node-host/relay/metrics-merge';
import { parseRelayOptions } from '../../node-host/relay/relay-options';

function proxies(...cidrs: string[]): TrustedProxies {
  const p = TrustedProxies.parse(cidrs);
  if ('invalid' in p) throw new Error(p.invalid);
  return p;
}

describe('TrustedProxies', () => {
  const p = proxies('127.0.0.1', '10.0.0.0/8', '::1');

  it('ignores X-Forwarded-For from a peer it does not trust', () => {
    expect(p.clientAddress('192.0.2.7', '203.0.113.5')).toBe('192.0.2.7');
    expect(TrustedProxies.NONE.clientAddress('127.0.0.1', '203.0.113.5')).toBe('127.0.0.1');
  });

  it('takes the rightmost address that is not a trusted proxy', () => {
    expect(p.clientAddress('127.0.0.1', '203.0.113.5')).toBe('203.0.113.5');
    // The client wrote the first entry itself; the proxy appended the second.
    expect(p.clientAddress('127.0.0.1', '192.0.2.1, 203.0.113.5')).toBe('203.0.113.5');
    // Two trusted hops (an outer balancer, then nginx at 10.1.2.3).
    expect(p.clientAddress('127.0.0.1', '203.0.113.5, 10.1.2.3')).toBe('203.0.113.5');
    // Several header lines count as one list.
    expect(p.clientAddress('127.0.0.1', ['192.0.2.1', '203.0.113.8'])).toBe('203.0.113.8');
  });

  it('normalises spellings, so one client is one key', () => {
    expect(p.clientAddress('::ffff:127.0.0.1', '203.0.113.5')).toBe('203.0.113.5');
    expect(p.clientAddress('::ffff:192.0.2.9', undefined)).toBe('192.0.2.9');
    expect(p.clientAddress('::1', '[2001:db8::1]:4711')).toBe('2001:db8::1');
    expect(p.clientAddress('127.0.0.1', '203.0.113.5:1234')).toBe('203.0.113.5');
  });

  it('stops at an entry it cannot read, using the last one a trusted hop vouched for', () => {
    expect(p.clientAddress('127.0.0.1', 'garbage, 10.9.9.9')).toBe('10.9.9.9');
    expect(p.clientAddress('127.0.0.1', 'unknown')).toBe('127.0.0.1');
  });

  it('refuses what is not an address or a range', () => {
    expect(TrustedProxies.parse(['10.0.0.0/33'])).toEqual({ invalid: '10.0.0.0/33' });
    expect(() => parseRelayOptions(['--trust-proxy', 'nginx'])).toThrow(UsageError);
    expect(parseRelayOptions(['--trust-proxy', '127.0.0.1,10.0.0.0/8']).trustProxy.describe()).toEqual(['127.0.0.1/32', '10.0.0.0/8']);
  });
});

describe('--workers', () => {
  it('takes a count or auto, and refuses anything else with the range', () => {
    expect(parseRelayOptions([]).workers).toBe(1);
    expect(parseRelayOptions(['--workers', '3']).workers).toBe(3);
    expect(parseRelayOptions(['--workers', 'auto']).workers).toBeGreaterThanOrEqual(1);
    expect(() => parseRelayOptions(['--workers', '0'])).toThrow(/1…64/);
    expect(() => parseRelayOptions(['--workers', 'many'])).toThrow(/or auto/);
  });
});

describe('mergeExpositions', () => {
  const worker = (clients: number, rss: number) =>
    [
      '# HELP weft_relay_clients WebSocket clients connected now.',
      '# TYPE weft_relay_clients gauge',
      `weft_relay_clients ${clients}`,
      '# HELP weft_relay_bytes_total Payload bytes.',
      '# TYPE weft_relay_bytes_total counter',
      `weft_relay_bytes_total{direction="upload"} ${clients * 10}`,
      '# HELP weft_relay_process_resident_memory_bytes RSS.',
      '# TYPE weft_relay_process_resident_memory_bytes gauge',
      `weft_relay_process_resident_memory_bytes ${rss}`,
    ].join('\n');

  it('labels every sample with its worker and keeps each family together under one HELP and TYPE', () => {
    const out = mergeExpositions([
      { worker: '0', text: worker(2, 100) },
      { worker: '1', text: worker(5, 200) },
    ]);
    expect(out.split('\n').filter((l) => l !== '')).toEqual([
      '# HELP weft_relay_clients WebSocket clients connected now.',
      '# TYPE weft_relay_clients gauge',
      'weft_relay_clients{worker="0"} 2',
      'weft_relay_clients{worker="1"} 5',
      '# HELP weft_relay_bytes_total Payload bytes.',
      '# TYPE weft_relay_bytes_total counter',
      'weft_relay_bytes_total{worker="0",direction="upload"} 20',
      'weft_relay_bytes_total{worker="1",direction="upload"} 50',
      '# HELP weft_relay_process_resident_memory_bytes RSS.',
      '# TYPE weft_relay_process_resident_memory_bytes gauge',
      'weft_relay_process_resident_memory_bytes{worker="0"} 100',
      'weft_relay_process_resident_memory_bytes{worker="1"} 200',
    ]);
  });

  it('adds the label to histogram samples with and without labels', () => {
    expect(withLabel('x_bucket{le="0.5"} 3', 'worker', '1')).toBe('x_bucket{worker="1",le="0.5"} 3');
    expect(withLabel('x_sum 1.5', 'worker', '1')).toBe('x_sum{worker="1"} 1.5');
    expect(withLabel('x{} 1', 'worker', '1')).toBe('x{worker="1"} 1');
  });
});
