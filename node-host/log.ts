// `weft vm` reports to stderr as one JSON object per line: {"event":"…", …fields}.
// Stderr to a pipe or file is synchronous in Node, so a line written just before exit is not lost.

export type EventLog = (event: string, fields?: Record<string, unknown>) => void;

export function jsonLineLog(write: (line: string) => void = (l) => process.stderr.write(l)): EventLog {
  return (event, fields = {}) => write(`${JSON.stringify({ event, ...fields })}\n`);
}
