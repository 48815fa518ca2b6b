// Randomness, like time, is passed in: core draws TCP ISN secrets and timestamp offsets, the first IP
// ID, DNS query IDs and reconnect jitter from it, and a test can seed it.

/** Fills `out` with random bytes (crypto.getRandomValues in a page, crypto.randomFillSync in Node). */
export type RandomSource = (out: Uint8Array) => void;
