// The rate-limit store: one small interface, one file per backend in stores/
// (after Kysely's dialects). Each backend declares only the driver calls it makes,
// and its driver is loaded only when configured.
import { createHash } from 'node:crypto';
import type { Bucket, Limit } from './decide.js';
import { QpError } from '../../shared/errors.js';

export interface ConsumeRequest {
  buckets: readonly Bucket[];
  /** Events this request adds (1, or the recipient count). */
  n: number;
  nowSec: number;
  /** false: only look (a request another check refuses is never counted). */
  commit: boolean;
}

export type ConsumeResult = { ok: true } | { ok: false; key: string; limit: Limit; used: number };

export interface HitRow {
  key: string;
  seconds: number;
  hits: number;
}

/** Events a key holds in one second. */
export interface EventRow {
  at: number;
  n: number;
}

export interface RateStore {
  readonly name: string;
  /**
   * Atomically, across every process sharing the store: sums each bucket's
   * events per window; if n more break no window, records n for every bucket
   * (when commit). Concurrent calls never both take the last slot.
   */
  consume(req: ConsumeRequest): Promise<ConsumeResult>;
  /**
   * The events a key holds from sinceSec on, per second, oldest first (for
   * `quotapolicy ratelimit show`). The key as decide.ts makes it; the store
   * maps it through storedKey() as consume() does.
   */
  events(key: string, sinceSec: number): Promise<EventRow[]>;
  /**
   * Deletes every event of one key (`quotapolicy ratelimit reset`): the next
   * request under it starts from nothing. Refusal hits for the report stay.
   * Returns the number of events deleted.
   */
  reset(key: string): Promise<number>;
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

export class StoreError extends QpError {
  override name = 'StoreError';
  constructor(message: string) {
    super('QP_STORE', message);
  }
}

/**
 * Version of the MariaDB/MySQL and PostgreSQL tables up to 2, shared by both
 * (SQLite has its own, SQLITE_SCHEMA_VERSION; from 3 on, each its own:
 * MYSQL_SCHEMA_VERSION, PG_SCHEMA_VERSION). 1: keys held as they
 * came (MySQL: VARCHAR(255), so a longer key failed every insert). 2: keys
 * held as storedKey() makes them (MySQL: VARBINARY, compared byte for byte);
 * version 1 keys that storedKey() changes are converted when opened.
 */
export const SCHEMA_VERSION = 2;

/**
 * The longest key, in UTF-8 bytes, a store holds as it is. Room for any RFC
 * 5321 address (254 bytes) with its kind ("sender:"), and far below what any
 * backend's index takes in one entry (PostgreSQL's btree about 2700 bytes,
 * InnoDB 3072). A protocol line may be 8 KiB (MAX_LINE_BYTES): longer keys
 * are hashed (storedKey).
 */
export const STORE_KEY_MAX_BYTES = 512;
/** UTF-8 bytes of a hashed key kept readable at its head, for reports and logs. */
export const STORE_KEY_PREFIX_BYTES = 128;
/**
 * Starts the hash in a hashed key. A key that contains it is hashed too,
 * however short, so a key held as it is never equals another key's hashed
 * form: two keys share a stored form only if their SHA-256 do.
 */
export const HASHED_KEY_MARK = '\u2026[sha256:';

const CONTROL = /[\u0000-\u001f\u007f-\u009f]/u;
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * How a store holds a key, the same on every backend and in every version
 * from schema 2 on (it is persisted). A key of at most STORE_KEY_MAX_BYTES
 * without NUL (PostgreSQL text cannot hold it) or HASHED_KEY_MARK is held as
 * it is. Any other becomes its first STORE_KEY_PREFIX_BYTES (whole
 * characters, control characters shown as U+FFFD), HASHED_KEY_MARK, the
 * SHA-256 of its UTF-8 bytes in hex, and its length:
 * "sender:aaaa…[sha256:1f0e…, 8000 bytes]". Reports list hits under it.
 * Keys come from the protocol parser, which decodes invalid UTF-8 to U+FFFD,
 * so they are well-formed; one that is not (a lone surrogate, which every
 * driver would turn into U+FFFD, merging it with another) is refused.
 */
export function storedKey(key: string): string {
  if (LONE_SURROGATE.test(key))
    throw new StoreError(`key ${JSON.stringify(key.slice(0, 64))} is not well-formed Unicode (a lone surrogate)`);
  const bytes = Buffer.byteLength(key, 'utf8');
  if (bytes <= STORE_KEY_MAX_BYTES && !key.includes('\0') && !key.includes(HASHED_KEY_MARK)) return key;
  let head = '';
  let headBytes = 0;
  for (const ch of key) {
    const shown = CONTROL.test(ch) ? '\ufffd' : ch;
    const b = Buffer.byteLength(shown, 'utf8');
    if (headBytes + b > STORE_KEY_PREFIX_BYTES) break;
    head += shown;
    headBytes += b;
  }
  return `${head}${HASHED_KEY_MARK}${createHash('sha256').update(key, 'utf8').digest('hex')}, ${bytes} bytes]`;
}

/**
 * The moves (old key -> stored key) that bring keys written before
 * storedKey() existed to their stored form, in an order where no move lands
 * on a key still to be moved (a stored form contains HASHED_KEY_MARK, and an
 * old key may too: someone may have sent another key's stored form).
 */
export function rekeyPlan(oldKeys: Iterable<string>): [from: string, to: string][] {
  const target = new Map<string, string>();
  for (const k of oldKeys) {
    const to = storedKey(k);
    if (to !== k) target.set(k, to);
  }
  const plan: [string, string][] = [];
  const done = new Set<string>();
  // A chain old -> to -> ... ends: a stored form that is its own key's stored form would be a SHA-256 fixed point.
  const visit = (k: string): void => {
    if (done.has(k)) return;
    done.add(k);
    const to = target.get(k)!;
    if (target.has(to)) visit(to);
    plan.push([k, to]);
  };
  for (const k of target.keys()) visit(k);
  return plan;
}

/** A limits value from the admin's table: "[[10, 60], [150, 86400]]" (policyd-rate-limit's format). */
export function parseLimitsText(text: unknown): readonly Limit[] | undefined {
  if (typeof text !== 'string') return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text.replace(/\(/g, '[').replace(/\)/g, ']'));
  } catch {
    throw new StoreError(`sql_limits_by_id returned "${text.slice(0, 80)}", not a list of [count, seconds]`);
  }
  if (
    !Array.isArray(v) ||
    !v.every((p) => Array.isArray(p) && p.length === 2 && p.every((x) => Number.isSafeInteger(x) && x >= 0))
  ) {
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
