// Shared settings of the property-based fuzz tests: CI runs a fixed number of cases with fixed
// seeds; `npm run fuzz` (WEFT_FUZZ_RUNS) runs many more, and WEFT_FUZZ_SEED shifts every seed.
const FUZZ_RUNS = Number(process.env.WEFT_FUZZ_RUNS ?? 0);
const FUZZ_SEED = Number(process.env.WEFT_FUZZ_SEED ?? 0);

/** fast-check parameters: `ci` cases with `seed` in CI, WEFT_FUZZ_RUNS × `weight` when fuzzing. */
export function runs(seed: number, ci: number, weight = 1): { seed: number; numRuns: number } {
  return { seed: seed + FUZZ_SEED, numRuns: FUZZ_RUNS > 0 ? Math.max(ci, Math.round(FUZZ_RUNS * weight)) : ci };
}
