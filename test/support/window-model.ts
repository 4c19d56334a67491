// The exact sliding window, as a model to check the stores' running totals
// against, and a small seeded PRNG so that random sequences repeat exactly.

/** mulberry32: the same sequence for the same seed on every run. */
export function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Events a window of `seconds` holds at now: those at now - seconds or later (events: second -> count). */
export function modelUsed(events: ReadonlyMap<number, number>, now: number, seconds: number): number {
  let c = 0;
  for (const [at, n] of events) if (at >= now - seconds) c += n;
  return c;
}
