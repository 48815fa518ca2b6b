import { describe, expect, it } from 'vitest';
import { ratioOfMediansInterval } from '../bench/ratio-interval';
import { median } from '../bench/sample-stats';

// Transfers as a TCG guest gives them: the same stack spreads about ±30% around its median.
const spreadAround = (centre: number, n: number) => Array.from({ length: n }, (_, i) => centre * (0.7 + (0.6 * ((i * 7) % n)) / (n - 1)));

describe('the bench ratio interval', () => {
  it('takes the median of odd and even counts', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
  });

  it('spans 1.0 for two stacks drawn from the same spread, and holds the point ratio', () => {
    const a = spreadAround(250, 20);
    const b = spreadAround(250, 20).reverse();
    const i = ratioOfMediansInterval(a, b);
    expect(i).toBeDefined();
    expect(i!.low).toBeLessThan(1);
    expect(i!.high).toBeGreaterThan(1);
    expect(i!.low).toBeLessThanOrEqual(median(a) / median(b));
    expect(i!.high).toBeGreaterThanOrEqual(median(a) / median(b));
  });

  it('stays above 1.0 when one side is clearly faster', () => {
    const i = ratioOfMediansInterval(spreadAround(400, 20), spreadAround(250, 20));
    expect(i!.low).toBeGreaterThan(1.2);
    expect(i!.high).toBeLessThan(2);
  });

  it('narrows as transfers add up', () => {
    const few = ratioOfMediansInterval(spreadAround(260, 6), spreadAround(250, 6))!;
    const many = ratioOfMediansInterval(spreadAround(260, 60), spreadAround(250, 60))!;
    expect(many.high - many.low).toBeLessThan(few.high - few.low);
  });

  it('gives the same interval for the same figures, and none from fewer than three', () => {
    const a = spreadAround(240, 12);
    const b = spreadAround(255, 12);
    expect(ratioOfMediansInterval(a, b)).toEqual(ratioOfMediansInterval(a, b));
    expect(ratioOfMediansInterval([1, 2], [1, 2, 3])).toBeUndefined();
  });
});
