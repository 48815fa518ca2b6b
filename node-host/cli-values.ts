// What every weft command line shares: help detection, node:util's parse errors in one sentence,
// and the checked readers of flag values, each failing with the same "bad value for …" shape.

import { UsageError } from './cli-errors';

/** True when the arguments ask for help (checked before anything else is validated). */
export function wantsHelp(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).some((a) => a === '--help' || a === '-h');
}

/** Turns node:util's parse errors into one short sentence. */
export function parseArgsError(e: unknown): UsageError {
  const message = (e as Error).message ?? String(e);
  const code = (e as { code?: string }).code;
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') {
    const m = /'([^']+)'/.exec(message);
    return new UsageError(`unknown option ${m ? m[1] : message}`);
  }
  if (code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    const m = /'([^']+)'/.exec(message);
    return new UsageError(`unexpected argument ${m ? `'${m[1]}'` : message}`);
  }
  return new UsageError(message.split('. ')[0]);
}

export function badValue(flag: string, value: string, expected: string): never {
  throw new UsageError(`bad value for ${flag}: ${JSON.stringify(value)} (expected ${expected})`);
}

/** A whole number in min…max; `what` names it in the error ("an integer port in 1…65535"). */
export function parseInteger(flag: string, text: string, min: number, max: number, what = 'value'): number {
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    badValue(flag, text, `an integer ${what} in ${min}…${max}`);
  }
  return Number(text);
}

/** "10s", "500ms", "2m", "1h", or a bare number of seconds, in milliseconds. */
export function parseDuration(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text);
  if (!m) badValue(flag, text, 'a duration such as 500ms, 10s or 5m');
  const scale = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'] ?? 1000;
  return Math.round(Number(m[1]) * scale);
}
