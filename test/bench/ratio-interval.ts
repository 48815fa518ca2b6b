// How sure a ratio of two medians is. A QEMU guest under TCG moves from 170 to 360 MB/s between
// transfers through the same stack, so a ratio of 0.94 or 1.06 from one run says little by itself.
// A percentile bootstrap (resampling each side's transfers with replacement) gives the interval
// that ratio would fall in across runs like this one. The generator is seeded, so one set of
// figures always prints the same interval.

import { median } from './sample-stats';

/** Resamples drawn: enough for steady 2.5th and 97.5th percentiles. */
const RESAMPLES = 2000;

export interface RatioInterval {
  low: number;
  high: number;
}

/**
 * The 95% bootstrap interval of median(a) / median(b); undefined when either side has fewer than
 * three values (an interval from one or two transfers would only look precise).
 */
export function ratioOfMediansInterval(a: readonly number[], b: readonly number[], seed = 1): RatioInterval | undefined {
  if (a.length < 3 || b.length < 3) return undefined;
  const random = mulberry32(seed);
  const draw = (values: readonly number[], into: number[]) => {
    for (let i = 0; i < values.length; i++) into[i] = values[Math.floor(random() * values.length)];
    return median(into);
  };
  const bufA = new Array<number>(a.length);
  const bufB = new Array<number>(b.length);
  const ratios: number[] = [];
  for (let i = 0; i < RESAMPLES; i++) ratios.push(draw(a, bufA) / draw(b, bufB));
  ratios.sort((x, y) => x - y);
  return { low: ratios[Math.floor(0.025 * RESAMPLES)], high: ratios[Math.ceil(0.975 * RESAMPLES) - 1] };
}

/** A small seeded generator (mulberry32): the same figures give the same interval. */
function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
