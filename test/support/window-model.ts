import type { ConsumeRequest, ConsumeResult } from '../../src/frontend/ratelimit/store.js';

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

/** The model of one consume(): each request against the events recorded before it, all-or-nothing over its buckets. */
export function modelConsume(events: Map<string, Map<number, number>>, req: ConsumeRequest): ConsumeResult {
  for (const b of req.buckets) {
    const ev = events.get(b.key) ?? new Map<number, number>();
    for (const limit of b.limits) {
      const used = modelUsed(ev, req.nowSec, limit[1]);
      if (used + req.n > limit[0]) return { ok: false, key: b.key, limit, used };
    }
  }
  if (req.commit)
    for (const b of req.buckets) {
      const ev = events.get(b.key) ?? new Map<number, number>();
      ev.set(req.nowSec, (ev.get(req.nowSec) ?? 0) + req.n);
      events.set(b.key, ev);
    }
  return { ok: true };
}
