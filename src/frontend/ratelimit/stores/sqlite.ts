// SQLite (better-sqlite3, WAL): the embedded default. One file, nothing to
// run. BEGIN IMMEDIATE makes check-and-record atomic across every process
// sharing the file. Group commit: the requests that arrive together (one turn
// of the event loop) are checked and recorded one after another inside one
// transaction, so each still sees the ones before it, and the commit, the
// costly part, is paid once per group. A reply waits for its group's commit.
// Counts are held per key and second, with running totals per key and window
// length beside them (qp_rate_totals, kept by triggers on every write to the
// counts, whichever process or release makes it): a check moves a window's
// start to now - seconds and subtracts only the seconds it passes, so a key
// with a day of busy seconds costs what a fresh one does.
import type { RateStore, ConsumeRequest, ConsumeResult, HitRow, EventRow } from '../store.js';
import {
  StoreError,
  breaks,
  parseLimitsText,
  storedKey,
  rekeyPlan,
  STORE_KEY_MAX_BYTES,
  HASHED_KEY_MARK,
} from '../store.js';
import type { Limit } from '../decide.js';
import type BetterSqlite3 from 'better-sqlite3';

/** The driver calls this backend makes. */
interface Stmt {
  run(...a: unknown[]): { changes: number };
  get(...a: unknown[]): unknown;
  all(...a: unknown[]): unknown[];
  raw(on: boolean): Stmt;
}
interface Db {
  pragma(s: string): unknown;
  exec(s: string): void;
  prepare(s: string): Stmt;
  /** f wrapped in BEGIN ... COMMIT; .immediate begins with BEGIN IMMEDIATE. Generic: the driver's own type. */
  transaction: BetterSqlite3.Database['transaction'];
  close(): void;
}

/** Wait this long for another process's write lock before failing (db_error_action). */
export const SQLITE_BUSY_TIMEOUT_MS = 2000;
/**
 * Page cache, KiB. better-sqlite3 defaults to 16 MB, which the front's RSS
 * slowly grows into as counts accumulate; the hot set (recent events of
 * active ids, through the (key, at) index) is far smaller.
 */
export const SQLITE_CACHE_KIB = 2048;
/**
 * Version of this file's tables. 1: one row per event (qp_rate_events), so a
 * check summed every event in its longest window and slowed as history grew.
 * 2: one row per key and second (qp_rate_counts), counts added in place; the
 * same sums, at most one row per second of a window. 3: keys held as
 * storedKey() makes them (long ones hashed, as on every backend). 4: running
 * totals (qp_rate_totals: per key and window length, the window's start and
 * the events from it on), kept by triggers on qp_rate_counts, so a check
 * reads the seconds its windows moved past, not every second of its longest
 * window. Older files are converted when opened. A process of the version 3
 * release still running on a converted file stays exact (the triggers keep
 * the totals whoever writes the counts); one started on it refuses to open it
 * (a newer schema), so old and new never disagree on a count.
 */
export const SQLITE_SCHEMA_VERSION = 4;
/** Requests in one transaction at most: bounds how long the write lock is held (~10 us each). */
export const SQLITE_GROUP_MAX = 256;

/**
 * Opens an existing file read-only, creating and changing nothing, and checks
 * that its tables are not newer than this version: what check-config and the
 * start-up warning try (see startup/store-probe.ts).
 */
export async function probeSqlite(path: string): Promise<void> {
  const { default: Database } = await import('better-sqlite3');
  let db: Db | undefined;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true, timeout: SQLITE_BUSY_TIMEOUT_MS });
    const t = db
      .prepare("SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'qp_schema'")
      .get() as {
      n: number;
    };
    if (t.n > 0) {
      const v = (db.prepare('SELECT max(version) AS v FROM qp_schema').get() as { v: number | null }).v;
      if (v !== null && v > SQLITE_SCHEMA_VERSION)
        throw new StoreError(`${path}: schema version ${v} is newer than this quotapolicy (${SQLITE_SCHEMA_VERSION})`);
    }
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`sqlite ${path}: ${(e as Error).message}`);
  } finally {
    db?.close();
  }
}

export async function openSqlite(path: string, sqlLimitsById: string): Promise<RateStore> {
  const { default: Database } = await import('better-sqlite3');
  let db: Db;
  try {
    // Typed as the calls this file makes; tsc checks better-sqlite3's own types fit them.
    db = new Database(path, { timeout: SQLITE_BUSY_TIMEOUT_MS });
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
    db.transaction(() => {
      db.exec(`CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS qp_rate_counts (key TEXT NOT NULL, at INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS qp_rate_hits (key TEXT NOT NULL, seconds INTEGER NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (key, seconds));`);
      const v = db.prepare('SELECT version FROM qp_schema').get() as { version: number } | undefined;
      if (v === undefined) db.prepare('INSERT INTO qp_schema (version) VALUES (?)').run(SQLITE_SCHEMA_VERSION);
      else if (v.version > SQLITE_SCHEMA_VERSION)
        throw new StoreError(
          `${path}: schema version ${v.version} is newer than this quotapolicy (${SQLITE_SCHEMA_VERSION})`,
        );
      else if (v.version < SQLITE_SCHEMA_VERSION) {
        if (v.version === 1) {
          db.exec(`INSERT INTO qp_rate_counts (key, at, n) SELECT key, at, SUM(n) FROM qp_rate_events WHERE true GROUP BY key, at
              ON CONFLICT (key, at) DO UPDATE SET n = n + excluded.n;
            DROP TABLE qp_rate_events;`);
        }
        // 2 -> 3: only keys storedKey() changes (long, NUL, or containing its mark) move; every other keeps its rows.
        const long =
          "length(CAST(key AS BLOB)) > ? OR instr(CAST(key AS BLOB), X'00') > 0 OR instr(CAST(key AS BLOB), CAST(? AS BLOB)) > 0";
        const old = db
          .prepare(`SELECT key FROM qp_rate_counts WHERE ${long} UNION SELECT key FROM qp_rate_hits WHERE ${long}`)
          .raw(true)
          .all(STORE_KEY_MAX_BYTES, HASHED_KEY_MARK, STORE_KEY_MAX_BYTES, HASHED_KEY_MARK) as [string][];
        const counts = db.prepare('UPDATE qp_rate_counts SET key = ? WHERE key = ?');
        const hits = db.prepare('UPDATE qp_rate_hits SET key = ? WHERE key = ?');
        for (const [from, to] of rekeyPlan(old.map((r) => r[0]))) {
          counts.run(to, from);
          hits.run(to, from);
        }
        db.prepare('UPDATE qp_schema SET version = ?').run(SQLITE_SCHEMA_VERSION);
      }
      // 3 -> 4: the totals start empty; each is built from the counts when a check first asks for its window.
      // Invariant, per row: total = the key's events from the second edge on. The triggers keep it on every
      // write to the counts (a check's, clean's, reset's, or a version 3 process's still running).
      db.exec(`CREATE TABLE IF NOT EXISTS qp_rate_totals (key TEXT NOT NULL, seconds INTEGER NOT NULL, edge INTEGER NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (key, seconds)) WITHOUT ROWID;
        CREATE TRIGGER IF NOT EXISTS qp_rate_counts_insert AFTER INSERT ON qp_rate_counts BEGIN
          UPDATE qp_rate_totals SET total = total + NEW.n WHERE key = NEW.key AND edge <= NEW.at;
        END;
        CREATE TRIGGER IF NOT EXISTS qp_rate_counts_update AFTER UPDATE ON qp_rate_counts BEGIN
          UPDATE qp_rate_totals SET total = total - OLD.n WHERE key = OLD.key AND edge <= OLD.at;
          UPDATE qp_rate_totals SET total = total + NEW.n WHERE key = NEW.key AND edge <= NEW.at;
        END;
        CREATE TRIGGER IF NOT EXISTS qp_rate_counts_delete AFTER DELETE ON qp_rate_counts BEGIN
          UPDATE qp_rate_totals SET total = total - OLD.n WHERE key = OLD.key AND edge <= OLD.at;
        END;`);
    }).immediate();
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`sqlite ${path}: ${(e as Error).message}`);
  }
  const totalsOf = db.prepare('SELECT seconds, edge, total FROM qp_rate_totals WHERE key = ?').raw(true);
  const sumFrom = db.prepare('SELECT COALESCE(SUM(n), 0) FROM qp_rate_counts WHERE key = ? AND at >= ?').raw(true);
  const sumRange = db
    .prepare('SELECT COALESCE(SUM(n), 0) FROM qp_rate_counts WHERE key = ? AND at >= ? AND at < ?')
    .raw(true);
  const setTotal = db.prepare(
    'INSERT INTO qp_rate_totals (key, seconds, edge, total) VALUES (?, ?, ?, ?) ON CONFLICT (key, seconds) DO UPDATE SET edge = excluded.edge, total = excluded.total',
  );
  /**
   * The events of each window of a key at now. A window's start only moves
   * forward: a check from a clock behind the last one adds the seconds
   * between its own start and the stored one.
   */
  const windowSums = (key: string, limits: readonly Limit[], now: number): number[] => {
    const held = new Map((totalsOf.all(key) as [number, number, number][]).map(([s, e, t]) => [s, [e, t] as const]));
    return limits.map(([, seconds]) => {
      const start = now - seconds;
      const row = held.get(seconds);
      let edge: number, total: number;
      if (row === undefined) [edge, total] = [start, (sumFrom.get(key, start) as [number])[0]];
      else if (row[0] < start) [edge, total] = [start, row[1] - (sumRange.get(key, row[0], start) as [number])[0]];
      else return row[1] + (row[0] > start ? (sumRange.get(key, start, row[0]) as [number])[0] : 0);
      setTotal.run(key, seconds, edge, total);
      held.set(seconds, [edge, total]);
      return total;
    });
  };
  const add = db.prepare(
    'INSERT INTO qp_rate_counts (key, at, n) VALUES (?, ?, ?) ON CONFLICT (key, at) DO UPDATE SET n = n + excluded.n',
  );
  const hit = db.prepare(
    'INSERT INTO qp_rate_hits (key, seconds, hits) VALUES (?, ?, 1) ON CONFLICT (key, seconds) DO UPDATE SET hits = hits + 1',
  );
  const byId = sqlLimitsById === '' ? undefined : db.prepare(sqlLimitsById);
  const eventsOf = db.prepare('SELECT at, n FROM qp_rate_counts WHERE key = ? AND at >= ? ORDER BY at');
  const countOf = db.prepare('SELECT COALESCE(SUM(n), 0) AS n FROM qp_rate_counts WHERE key = ?');
  const deleteKey = db.prepare('DELETE FROM qp_rate_counts WHERE key = ?');
  const deleteTotals = db.prepare('DELETE FROM qp_rate_totals WHERE key = ?');
  const resetKey = db.transaction((key: string): number => {
    const n = (countOf.get(key) as { n: number }).n;
    deleteKey.run(key);
    deleteTotals.run(key);
    return n;
  });
  /** keys: each bucket's storedKey(). */
  const one = ({ req, keys }: { req: ConsumeRequest; keys: string[] }): ConsumeResult => {
    for (const [j, b] of req.buckets.entries()) {
      if (b.limits.length === 0) continue;
      const used = windowSums(keys[j]!, b.limits, req.nowSec);
      for (let i = 0; i < b.limits.length; i++) {
        if (breaks(used[i]!, req.n, b.limits[i]!))
          return { ok: false, key: b.key, limit: b.limits[i]!, used: used[i]! };
      }
    }
    if (req.commit) for (const k of keys) add.run(k, req.nowSec, req.n);
    return { ok: true };
  };
  const group = db.transaction((reqs: { req: ConsumeRequest; keys: string[] }[]): ConsumeResult[] => reqs.map(one));
  const waiting: {
    req: ConsumeRequest;
    keys: string[];
    resolve: (r: ConsumeResult) => void;
    reject: (e: unknown) => void;
  }[] = [];
  const flush = (): void => {
    const batch = waiting.splice(0, SQLITE_GROUP_MAX);
    if (batch.length === 0) return;
    if (waiting.length > 0) setImmediate(flush);
    try {
      const results = group.immediate(batch);
      batch.forEach((w, i) => w.resolve(results[i]!));
    } catch (e) {
      const err = new StoreError(`sqlite: ${(e as Error).message}`);
      for (const w of batch) w.reject(err);
    }
  };
  const guard = <T>(f: () => T): Promise<T> => {
    try {
      return Promise.resolve(f());
    } catch (e) {
      return Promise.reject(e instanceof StoreError ? e : new StoreError(`sqlite: ${(e as Error).message}`));
    }
  };
  return {
    name: 'sqlite',
    consume: (req) =>
      new Promise((resolve, reject) => {
        // Mapped before queueing: a key refused here fails its own request, not its group.
        let keys: string[];
        try {
          keys = req.buckets.map((b) => storedKey(b.key));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        waiting.push({ req, keys, resolve, reject });
        if (waiting.length === 1) setImmediate(flush);
      }),
    limitsFor: (id) =>
      guard((): readonly Limit[] | undefined => {
        const row = byId?.get(id) as Record<string, unknown> | undefined;
        return row === undefined ? undefined : parseLimitsText(Object.values(row)[0]);
      }),
    events: (key, since) => guard(() => eventsOf.all(storedKey(key), since) as EventRow[]),
    // Immediate: the count and the delete see the same rows, whatever another process writes meanwhile.
    reset: (key) => guard(() => resetKey.immediate(storedKey(key))),
    recordHit: (key, seconds) =>
      guard(() => {
        hit.run(storedKey(key), seconds);
      }),
    hits: () =>
      guard(() => db.prepare('SELECT key, seconds, hits FROM qp_rate_hits ORDER BY hits DESC, key').all() as HitRow[]),
    clearHits: () =>
      guard(() => {
        db.exec('DELETE FROM qp_rate_hits');
      }),
    clean: (olderThan) =>
      guard(() => {
        const events = (
          db.prepare('SELECT COALESCE(SUM(n), 0) AS n FROM qp_rate_counts WHERE at < ?').get(olderThan) as { n: number }
        ).n;
        db.prepare('DELETE FROM qp_rate_counts WHERE at < ?').run(olderThan);
        // Totals of windows not checked since (or no longer configured): rebuilt from the counts if asked again.
        db.prepare('DELETE FROM qp_rate_totals WHERE edge < ?').run(olderThan);
        db.pragma('wal_checkpoint(TRUNCATE)');
        db.exec('VACUUM');
        return events;
      }),
    // Requests still waiting for their group are answered before the file closes.
    close: () =>
      guard(() => {
        while (waiting.length > 0) flush();
        db.close();
      }),
  };
}
