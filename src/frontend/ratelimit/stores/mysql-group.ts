// One group commit of the MariaDB/MySQL store: the requests that arrived
// together, checked and recorded one after another in one transaction, so
// each sees the ones before it. The plan is pure (what to read, then what
// each request gets and what to write), the SQL around it is in mysql.ts.
//
// Per key: counts per second (qp_rate_counts), and beside them running
// totals per window length (qp_rate_totals: the window's start, edge, and
// the events from edge on). For a window of `seconds` checked at now, the
// group reads the stored total and moves it to the group's earliest start
// (lo = min now - seconds) with the per-second counts between the stored
// edge and lo (a key checked a second ago: one second's row), and reads the
// counts between lo and the latest start (hi) when the group's clocks
// differ. A window without a stored total is summed from lo on, by the
// server, for all such keys at once. Each request is then answered from
// memory; at the end every window is written at hi with the group's
// additions, so a key with a day of busy seconds costs a check what a fresh
// one does.
import type { ConsumeRequest, ConsumeResult } from '../store.js';
import { breaks } from '../store.js';

/** A range of one key's seconds, [from, to). */
export interface KeyRange {
  key: string;
  from: number;
  to: number;
}

/** Windows without a stored total that start at the same second: summed from there on, per key, in one query. */
export interface FromOn {
  lo: number;
  keys: string[];
}

/** What the group reads once its keys are locked and their stored totals are known. */
export interface GroupReads {
  /** Seconds whose counts are read one by one (OR-ed ranges of the primary key). */
  ranges: KeyRange[];
  fromOn: FromOn[];
}

/** What the server answered for them. */
export interface GroupRead {
  counts: [key: string, at: number, n: number][];
  /** Per FromOn, in order: key -> the sum of its counts from lo on (a key without any: absent). */
  sums: Map<string, number>[];
}

interface Window {
  lo: number;
  hi: number;
  /** Events from lo on, as the group goes. */
  base: number;
  /** The stored total, when there is one. */
  stored?: { edge: number; total: number };
  /** Else: which FromOn sums it. */
  fromOn?: number;
}

interface KeyState {
  minNow: number;
  maxNow: number;
  /** The group's windows, by length. */
  windows: Map<number, Window>;
  /** Stored totals of windows no request of the group asks for: kept true with its additions. */
  others: Map<number, { edge: number; total: number; changed: boolean }>;
  /** Per second: the counts read, and the group's additions. */
  counts: Map<number, number>;
  added: Map<number, number>;
}

export interface GroupPlan {
  /** Every key the group touches, sorted (bytes of the stored key: its hex), locked in this order. */
  keys: string[];
  /** The latest clock of each key's requests (its lock row remembers when it was last checked). */
  lastNow: Map<string, number>;
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
  for (const st of states.values())
    for (const [seconds, w] of st.windows) {
      w.lo = st.minNow - seconds;
      w.hi = st.maxNow - seconds;
    }
  const keys = [...states.keys()].sort();
  return { keys, lastNow: new Map(keys.map((k) => [k, states.get(k)!.maxNow])), states };
}

/** Given every stored total of the group's keys, what to read. */
export function readsFor(
  plan: GroupPlan,
  stored: readonly [key: string, seconds: number, edge: number, total: number][],
): GroupReads {
  for (const [key, seconds, edge, total] of stored) {
    const st = plan.states.get(key)!;
    const w = st.windows.get(seconds);
    if (w === undefined) st.others.set(seconds, { edge, total, changed: false });
    else w.stored = { edge, total };
  }
  const ranges: KeyRange[] = [];
  const fromOn = new Map<number, string[]>();
  for (const key of plan.keys)
    for (const w of plan.states.get(key)!.windows.values()) {
      if (w.stored === undefined) {
        if (!fromOn.has(w.lo)) fromOn.set(w.lo, []);
        fromOn.get(w.lo)!.push(key);
      } else if (w.stored.edge !== w.lo)
        ranges.push({ key, from: Math.min(w.stored.edge, w.lo), to: Math.max(w.stored.edge, w.lo) });
      if (w.hi > w.lo) ranges.push({ key, from: w.lo, to: w.hi });
    }
  const groups = [...fromOn].map(([lo, keys]) => ({ lo, keys }));
  for (const [i, g] of groups.entries())
    for (const key of g.keys)
      for (const w of plan.states.get(key)!.windows.values()) if (w.stored === undefined && w.lo === g.lo) w.fromOn = i;
  return { ranges, fromOn: groups };
}

/** What the group writes: counts to add per key and second, totals to set. */
export interface GroupWrites {
  counts: [key: string, at: number, n: number][];
  totals: [key: string, seconds: number, edge: number, total: number][];
}

/** Answers every request in order, from what was read, and says what to write. */
export function answerGroup(
  plan: GroupPlan,
  reqs: readonly { req: ConsumeRequest; keys: readonly string[] }[],
  read: GroupRead,
): { results: ConsumeResult[]; writes: GroupWrites } {
  for (const [key, at, n] of read.counts) plan.states.get(key)!.counts.set(at, n);
  for (const [key, st] of plan.states)
    for (const w of st.windows.values()) {
      if (w.stored === undefined) w.base = read.sums[w.fromOn!]!.get(key) ?? 0;
      else if (w.stored.edge <= w.lo) w.base = w.stored.total - sumOver(st.counts, w.stored.edge, w.lo);
      else w.base = w.stored.total + sumOver(st.counts, w.lo, w.stored.edge);
    }
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
