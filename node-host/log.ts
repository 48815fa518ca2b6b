// `weft vm` and `weft relay` report as one JSON object per line:
// {"time":"2026-12-06T16:00:00.000Z","level":"info","event":"…", …fields}.
// Stderr to a pipe or file is synchronous in Node, so a line written just before exit is not lost.

export type EventLog = (event: string, fields?: Record<string, unknown>) => void;

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** Events that say something went wrong; the rest are 'info' unless a line names its own level. */
const LEVELS: Record<string, LogLevel> = {
  error: 'error',
  'pcap-error': 'error',
  'link-write-error': 'error',
  'dns-no-resolver': 'error',
  warning: 'warn',
  'client-error': 'warn',
  'forward-error': 'warn',
  'dns-resolver-error': 'warn',
  'dns-resolver-skipped': 'warn',
};

export function jsonLineLog(write: (line: string) => void = (l) => process.stderr.write(l)): EventLog {
  return (event, fields = {}) => {
    const { level: own, ...rest } = fields;
    const level = typeof own === 'string' ? own : (LEVELS[event] ?? 'info');
    write(`${JSON.stringify({ time: new Date().toISOString(), level, event, ...rest })}\n`);
  };
}
