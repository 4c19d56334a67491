// One group commit of the MariaDB/MySQL store: the requests that arrived
// together, checked and recorded one after another in one transaction, so
// each sees the ones before it. The plan is pure (what to read, then what
// each request gets and what to write), the SQL around it is in mysql.ts.
//
// Per key: counts per second (qp_rate_counts), and beside them running
// totals per window length (qp_rate_totals: the window's start, edge, and
// the events from edge on). For a window of `seconds` checked at now, the
// group reads the stored total once and moves it to the group's earliest
// start (lo = min now - seconds) by summing only the seconds between the
// stored edge and lo, and reads the few per-second counts between lo and the
// latest start (hi) when the group's clocks differ. Each request is then
// answered from memory; at the end every window is written at hi with the
// group's additions, so a key with a day of busy seconds costs a check what
// a fresh one does.
import type { ConsumeRequest, ConsumeResult } from '../store.js';
import { breaks } from '../store.js';

/** A stored running total: the events of a key from edge on. */
export interface StoredTotal {
  edge: number;
  total: number;
}

/** A sum of one key's counts over [from, to), asked of the server. */
export interface SumQuery {
  key: string;
  from: number;
  /** Exclusive; Number.MAX_SAFE_INTEGER for "from on". */
  to: number;
}

interface Window {
  lo: number;
  hi: number;
  /** Events from lo on, as the group goes. */
  base: number;
  /** How base is built from what is stored: a total, plus or minus a sum. */
  stored?: StoredTotal;
  sum?: { index: number; sign: 1 | -1 };
}

interface KeyState {
  minNow: number;
  maxNow: number;
  /** The group's windows, by length. */
  windows: Map<number, Window>;
  /** Stored totals of windows no request of the group asks for: kept true with its additions. */
  others: Map<number, StoredTotal & { changed: boolean }>;
  /** Per second: the counts read for [lo, hi) of each window, and the group's additions. */
  counts: Map<number, number>;
  added: Map<number, number>;
}

export interface GroupPlan {
  /** Every key the group touches, sorted (bytes of the stored key: its hex), locked in this order. */
  keys: string[];
  /** The latest clock of each key's requests (its lock row remembers when it was last checked). */
  lastNow: Map<string, number>;
  /** Windows to read, once the stored totals are known (call windowsToRead). */
  states: Map<string, KeyState>;
}

const sumOver = (counts: ReadonlyMap<number, number>, from: number, to: number): number => {
  let s = 0;
  if (to <= from) return 0;
  for (const [at, n] of counts) if (at >= from && at < to) s += n;
  return s;
};

/** keys: each request's buckets' stored keys, as hex of their bytes. */
export function planGroup(reqs: readonly { req: ConsumeRequest; keys: readonly string[] }[]): GroupPlan {
  const states = new Map<string, KeyState>();
  for (const { req, keys } of reqs) {
    for (const [j, b] of req.buckets.entries()) {
      const k = keys[j]!;
      let st = states.get(k);
      if (st === undefined) {
        st = {
          minNow: req.nowSec,
          maxNow: req.nowSec,
          windows: new Map(),
          others: new Map(),
          counts: new Map(),
          added: new Map(),
        };
        states.set(k, st);
      }
      st.minNow = Math.min(st.minNow, req.nowSec);
      st.maxNow = Math.max(st.maxNow, req.nowSec);
      for (const [, seconds] of b.limits)
        if (!st.windows.has(seconds)) st.windows.set(seconds, { lo: 0, hi: 0, base: 0 });
    }
  }
  const keys = [...states.keys()].sort();
  return { keys, lastNow: new Map(keys.map((k) => [k, states.get(k)!.maxNow])), states };
}

/**
 * Given the stored totals of the group's keys (key -> seconds -> total),
 * what must be read: sums that bring each window to its lo, and the ranges
 * [lo, hi) whose per-second counts the group needs when its clocks differ.
 */
export function windowsToRead(
  plan: GroupPlan,
  stored: ReadonlyMap<string, ReadonlyMap<number, StoredTotal>>,
): { sums: SumQuery[]; ranges: SumQuery[] } {
  const sums: SumQuery[] = [];
  const ranges: SumQuery[] = [];
  for (const [key, st] of plan.states) {
    const rows = stored.get(key) ?? new Map<number, StoredTotal>();
    for (const [seconds, row] of rows) if (!st.windows.has(seconds)) st.others.set(seconds, { ...row, changed: false });
    for (const [seconds, w] of st.windows) {
      w.lo = st.minNow - seconds;
      w.hi = st.maxNow - seconds;
      const row = rows.get(seconds);
      w.stored = row;
      if (row === undefined) {
        w.sum = { index: sums.length, sign: 1 };
        sums.push({ key, from: w.lo, to: Number.MAX_SAFE_INTEGER });
      } else if (row.edge < w.lo) {
        w.sum = { index: sums.length, sign: -1 };
        sums.push({ key, from: row.edge, to: w.lo });
      } else if (row.edge > w.lo) {
        w.sum = { index: sums.length, sign: 1 };
        sums.push({ key, from: w.lo, to: row.edge });
      }
      if (w.hi > w.lo) ranges.push({ key, from: w.lo, to: w.hi });
    }
  }
  return { sums, ranges };
}

/** What the group writes: counts to add per key and second, totals to set. */
export interface GroupWrites {
  counts: [key: string, at: number, n: number][];
  totals: [key: string, seconds: number, edge: number, total: number][];
}

/**
 * Answers every request in order, from the stored totals, the sums
 * (windowsToRead's order) and the per-second counts read for its ranges.
 */
export function answerGroup(
  plan: GroupPlan,
  reqs: readonly { req: ConsumeRequest; keys: readonly string[] }[],
  sums: readonly number[],
  counts: readonly [key: string, at: number, n: number][],
): { results: ConsumeResult[]; writes: GroupWrites } {
  for (const [key, at, n] of counts) plan.states.get(key)!.counts.set(at, n);
  for (const st of plan.states.values())
    for (const w of st.windows.values())
      w.base = (w.stored?.total ?? 0) + (w.sum === undefined ? 0 : w.sum.sign * sums[w.sum.index]!);
  const results = reqs.map(({ req, keys }): ConsumeResult => {
    for (const [j, b] of req.buckets.entries()) {
      const st = plan.states.get(keys[j]!)!;
      for (const limit of b.limits) {
        const w = st.windows.get(limit[1])!;
        const used = w.base - sumOver(st.counts, w.lo, req.nowSec - limit[1]);
        if (breaks(used, req.n, limit)) return { ok: false, key: b.key, limit, used };
      }
    }
    if (req.commit)
      for (const k of keys) {
        const st = plan.states.get(k)!;
        const at = req.nowSec;
        st.counts.set(at, (st.counts.get(at) ?? 0) + req.n);
        st.added.set(at, (st.added.get(at) ?? 0) + req.n);
        for (const w of st.windows.values()) if (at >= w.lo) w.base += req.n;
        for (const o of st.others.values())
          if (at >= o.edge) {
            o.total += req.n;
            o.changed = true;
          }
      }
    return { ok: true };
  });
  const writes: GroupWrites = { counts: [], totals: [] };
  for (const key of plan.keys) {
    const st = plan.states.get(key)!;
    for (const [at, n] of [...st.added].sort((a, b) => a[0] - b[0])) writes.counts.push([key, at, n]);
    const totals: GroupWrites['totals'] = [];
    for (const [seconds, w] of st.windows) totals.push([key, seconds, w.hi, w.base - sumOver(st.counts, w.lo, w.hi)]);
    for (const [seconds, o] of st.others) if (o.changed) totals.push([key, seconds, o.edge, o.total]);
    writes.totals.push(...totals.sort((a, b) => a[1] - b[1]));
  }
  return { results, writes };
}
