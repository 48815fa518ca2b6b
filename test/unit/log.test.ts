// Every JSON log line carries its time (ISO 8601) and a level, before the event and its fields.

import { describe, expect, it } from 'vitest';
import { jsonLineLog } from '../../node-host/log';

describe('JSON line log', () => {
  it('adds time and level; a line may name its own level; problems are warn or error', () => {
    const lines: string[] = [];
    const log = jsonLineLog((l) => lines.push(l));
    log('ready', { port: 8080 });
    log('client-error', { code: 'credit-overrun' });
    log('error', { message: 'boom' });
    log('dns-no-resolver', { level: 'error', path: '/etc/resolv.conf' });
    expect(lines.every((l) => l.endsWith('\n') && !l.slice(0, -1).includes('\n'))).toBe(true);
    const parsed = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(Object.keys(parsed[0])).toEqual(['time', 'level', 'event', 'port']);
    expect(new Date(parsed[0].time as string).toISOString()).toBe(parsed[0].time);
    expect(Math.abs(Date.parse(parsed[0].time as string) - Date.now())).toBeLessThan(5000);
    expect(parsed.map((p) => [p.event, p.level])).toEqual([
      ['ready', 'info'],
      ['client-error', 'warn'],
      ['error', 'error'],
      ['dns-no-resolver', 'error'],
    ]);
  });
});
