// /metrics of a relay with several workers: each worker renders its own Prometheus text, and the
// primary serves one exposition in which every sample carries worker="K". Labelling rather than
// summing keeps gauges such as RSS and event-loop lag meaningful (a sum of two lags is not a lag),
// and `sum without (worker) (…)` gives the totals.

/** One metric family: its `# HELP`/`# TYPE` lines and its samples. */
interface Family {
  head: string[];
  samples: string[];
}

function families(text: string): Map<string, Family> {
  const out = new Map<string, Family>();
  let current: Family | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const help = /^# HELP (\S+)/.exec(line);
    if (help) {
      current = out.get(help[1]) ?? { head: [], samples: [] };
      if (current.head.length === 0) current.head.push(line);
      out.set(help[1], current);
      continue;
    }
    if (!current) continue;
    if (line.startsWith('# ')) {
      if (current.head.length < 2) current.head.push(line);
    } else {
      current.samples.push(line);
    }
  }
  return out;
}

/** `name{a="b"} 1` → `name{worker="K",a="b"} 1`; `name 1` → `name{worker="K"} 1`. */
export function withLabel(sample: string, label: string, value: string): string {
  const pair = `${label}="${value}"`;
  const brace = sample.indexOf('{');
  const space = sample.indexOf(' ');
  if (brace >= 0 && (space < 0 || brace < space)) {
    const rest = sample.slice(brace + 1);
    return `${sample.slice(0, brace)}{${pair}${rest.startsWith('}') ? '' : ','}${rest}`;
  }
  return space < 0 ? sample : `${sample.slice(0, space)}{${pair}}${sample.slice(space)}`;
}

/**
 * One exposition from several: `parts` maps a worker label ("0", "1", … or "primary") to its
 * text. A family's samples stay together, as the text format requires.
 */
export function mergeExpositions(parts: ReadonlyArray<{ worker: string; text: string }>): string {
  const merged = new Map<string, Family>();
  for (const { worker, text } of parts) {
    for (const [name, fam] of families(text)) {
      let into = merged.get(name);
      if (!into) merged.set(name, (into = { head: fam.head, samples: [] }));
      for (const s of fam.samples) into.samples.push(withLabel(s, 'worker', worker));
    }
  }
  const lines: string[] = [];
  for (const fam of merged.values()) lines.push(...fam.head, ...fam.samples);
  return `${lines.join('\n')}\n`;
}
