// Reading a V8 CPU profile (`node --cpu-prof`: a .cpuprofile) for a benchmark: self time per
// function inside labelled time windows, with bundle positions mapped back to the TypeScript sources
// through the bundle's source map, and the time spent below weft's code (native bindings such as a
// socket write, node:* internals) charged to the nearest weft function on the stack, which says who
// asked for it.
import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { isAbsolute, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number; columnNumber: number };
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  /** µs on V8's clock: CLOCK_MONOTONIC on Linux, the clock of process.hrtime. */
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** A span of the profiled process's life to sum, in CLOCK_MONOTONIC µs. */
export interface ProfileWindow {
  label: string;
  fromUs: number;
  toUs: number;
}

export interface ProfileEntry {
  /** The function's name, or for `callers` the weft function and its source line. */
  name: string;
  /** Source file:line through the source map, a node:* module, or '' for native code. */
  where: string;
  /** Milliseconds by window label. */
  ms: Record<string, number>;
  totalMs: number;
}

export interface ProfileSummary {
  /** Whether the profile's clock covered the windows (else the whole profile is summed, under the label 'all'). */
  windowed: boolean;
  windows: Array<{ label: string; wallMs: number; busyMs: number }>;
  /** Self time per function, most first; idle time left out. */
  functions: ProfileEntry[];
  /** Self time per source file ('(native)' for bindings and builtins without a script). */
  files: ProfileEntry[];
  /** Self time outside weft's sources, by the nearest weft function above it. */
  callers: ProfileEntry[];
}

export function readCpuProfile(path: string): CpuProfile {
  return JSON.parse(readFileSync(path, 'utf8')) as CpuProfile;
}

interface Location {
  file: string;
  line: number;
}

/** Maps a script position to its TypeScript source through `<script>.map`, when there is one. */
function sourceLocator(root: string): (url: string, line: number, column: number) => Location | undefined {
  const maps = new Map<string, { map: SourceMap; dir: string } | undefined>();
  return (url, line, column) => {
    if (!url.startsWith('file://') || line < 0) return undefined;
    if (!maps.has(url)) {
      const script = fileURLToPath(url);
      try {
        const payload = JSON.parse(readFileSync(`${script}.map`, 'utf8')) as ConstructorParameters<typeof SourceMap>[0];
        maps.set(url, { map: new SourceMap(payload), dir: resolve(script, '..') });
      } catch {
        maps.set(url, undefined);
      }
    }
    const m = maps.get(url);
    if (!m) return undefined;
    const entry = m.map.findEntry(line, column) as { originalSource?: string; originalLine?: number };
    if (!entry.originalSource) return undefined;
    const source = entry.originalSource.startsWith('file://') ? fileURLToPath(entry.originalSource) : resolve(m.dir, entry.originalSource);
    return { file: isAbsolute(source) ? relative(root, source) : source, line: (entry.originalLine ?? 0) + 1 };
  };
}

class Tally {
  private readonly entries = new Map<string, ProfileEntry>();

  add(key: string, make: () => Omit<ProfileEntry, 'ms' | 'totalMs'>, label: string, ms: number): void {
    let e = this.entries.get(key);
    if (!e) {
      e = { ...make(), ms: {}, totalMs: 0 };
      this.entries.set(key, e);
    }
    e.ms[label] = (e.ms[label] ?? 0) + ms;
    e.totalMs += ms;
  }

  sorted(): ProfileEntry[] {
    return [...this.entries.values()].sort((a, b) => b.totalMs - a.totalMs);
  }
}

/**
 * Sums the samples that fall in `windows`. `root` is the repository: mapped sources under it are
 * weft's code (node_modules excepted), and are shown relative to it.
 */
export function summariseProfile(profile: CpuProfile, windows: readonly ProfileWindow[], root: string): ProfileSummary {
  const windowed = windows.length > 0 && windows.every((w) => w.fromUs >= profile.startTime && w.toUs <= profile.endTime + 1e6);
  const spans = windowed ? windows : [{ label: 'all', fromUs: profile.startTime, toUs: profile.endTime }];
  const labelAt = (t: number) => spans.find((w) => t >= w.fromUs && t <= w.toUs)?.label;

  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const locate = sourceLocator(root);
  const location = new Map<number, Location | undefined>();
  const locationOf = (n: ProfileNode) => {
    if (!location.has(n.id)) location.set(n.id, locate(n.callFrame.url, n.callFrame.lineNumber, n.callFrame.columnNumber));
    return location.get(n.id);
  };
  const isWeft = (loc: Location | undefined) => loc !== undefined && !isAbsolute(loc.file) && !loc.file.startsWith('..') && !loc.file.includes('node_modules');
  const nearestWeft = (id: number): ProfileNode | undefined => {
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) {
      const n = nodes.get(p)!;
      if (isWeft(locationOf(n))) return n;
    }
    return undefined;
  };

  const functions = new Tally();
  const files = new Tally();
  const callers = new Tally();
  const busy = new Map<string, number>();
  let t = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    // A sample's delta is the time since the one before: charged to this sample's function.
    const delta = profile.timeDeltas[i] ?? 0;
    t += delta;
    const label = labelAt(t);
    if (label === undefined) continue;
    const node = nodes.get(profile.samples[i]);
    if (!node) continue;
    const f = node.callFrame;
    const special = f.url === '' && f.functionName.startsWith('(');
    if (special && f.functionName === '(idle)') continue;
    const ms = delta / 1000;
    busy.set(label, (busy.get(label) ?? 0) + ms);
    const loc = locationOf(node);
    const name = f.functionName || '(anonymous)';
    const file = loc ? loc.file : f.url === '' ? (special ? name : '(native)') : f.url.replace(/^file:\/\//, '');
    const where = loc ? `${loc.file}:${loc.line}` : f.url === '' ? '' : `${file}:${f.lineNumber + 1}`;
    functions.add(`${name}\0${f.url}\0${f.lineNumber}\0${f.columnNumber}`, () => ({ name, where }), label, ms);
    files.add(file, () => ({ name: file, where: '' }), label, ms);
    if (!special && !isWeft(loc)) {
      const caller = nearestWeft(node.id);
      if (caller) {
        const cloc = locationOf(caller)!;
        const cname = caller.callFrame.functionName || '(anonymous)';
        callers.add(`${caller.id}`, () => ({ name: cname, where: `${cloc.file}:${cloc.line}` }), label, ms);
      }
    }
  }
  // Callers are per call-tree node: merge the nodes of one function.
  const merged = new Tally();
  for (const c of callers.sorted())
    for (const [label, ms] of Object.entries(c.ms)) merged.add(`${c.name}\0${c.where}`, () => ({ name: c.name, where: c.where }), label, ms);
  return {
    windowed,
    windows: spans.map((w) => ({ label: w.label, wallMs: (w.toUs - w.fromUs) / 1000, busyMs: busy.get(w.label) ?? 0 })),
    functions: functions.sorted(),
    files: files.sorted(),
    callers: merged.sorted(),
  };
}
