// The rate-limit store: one small interface, one folder per backend (after
// Kysely's dialects). Each backend declares only the driver calls it makes,
// and its driver is loaded only when configured.
import type { Bucket, Limit } from './decide.js';

export interface ConsumeRequest {
  buckets: readonly Bucket[];
  /** Events this request adds (1, or the recipient count). */
  n: number;
  nowSec: number;
  /** false: only look (a request another check refuses is never counted). */
  commit: boolean;
}

export type ConsumeResult =
  | { ok: true }
  | { ok: false; key: string; limit: Limit; used: number };

export interface HitRow { key: string; seconds: number; hits: number }

export interface RateStore {
  readonly name: string;
  /**
   * Atomically, across every process sharing the store: sums each bucket's
   * events per window; if n more break no window, records n for every bucket
   * (when commit). Concurrent calls never both take the last slot.
   */
  consume(req: ConsumeRequest): Promise<ConsumeResult>;
  /** Limits for an id from the admin's own table (sql_limits_by_id); undefined = none there. */
  limitsFor(id: string): Promise<readonly Limit[] | undefined>;
  /** Counts a refusal for the report (report_limits windows only). */
  recordHit(key: string, seconds: number): Promise<void>;
  hits(): Promise<HitRow[]>;
  clearHits(): Promise<void>;
  /** Deletes events older than olderThanSec and compacts; returns the number of events deleted. */
  clean(olderThanSec: number): Promise<number>;
  close(): Promise<void>;
}

export class StoreError extends Error {
  override name = 'StoreError';
}

/** Version of the PostgreSQL and MariaDB/MySQL tables (SQLite has its own, SQLITE_SCHEMA_VERSION); bump with a migration step. */
export const SCHEMA_VERSION = 1;

/** A limits value from the admin's table: "[[10, 60], [150, 86400]]" (policyd-rate-limit's format). */
export function parseLimitsText(text: unknown): readonly Limit[] | undefined {
  if (typeof text !== 'string') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text.replace(/\(/g, '[').replace(/\)/g, ']'));
  } catch {
    throw new StoreError(`sql_limits_by_id returned "${text.slice(0, 80)}", not a list of [count, seconds]`);
  }
  if (!Array.isArray(v) || !v.every((p) => Array.isArray(p) && p.length === 2 && p.every((x) => Number.isSafeInteger(x) && x >= 0))) {
    throw new StoreError(`sql_limits_by_id returned "${text.slice(0, 80)}", not a list of [count, seconds]`);
  }
  return v as Limit[];
}

/**
 * policyd-rate-limit's window test: [count, seconds] is broken when the events
 * since now - seconds (inclusive, whole seconds), plus the n new ones, exceed count.
 */
export function breaks(used: number, n: number, limit: Limit): boolean {
  return used + n > limit[0];
}

/** Sorted, so that every process takes per-key locks in the same order (no deadlock). */
export function lockOrder(buckets: readonly Bucket[]): string[] {
  return [...new Set(buckets.map((b) => b.key))].sort();
}
