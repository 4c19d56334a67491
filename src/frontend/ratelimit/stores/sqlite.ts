// SQLite (better-sqlite3, WAL): the embedded default. One file, nothing to
// run. BEGIN IMMEDIATE makes check-and-record atomic across every process
// sharing the file.
import type { RateStore, ConsumeRequest, ConsumeResult, HitRow } from '../store.js';
import { StoreError, breaks, SCHEMA_VERSION, parseLimitsText } from '../store.js';
import type { Limit } from '../decide.js';

/** The driver calls this backend makes. */
interface Stmt { run(...a: unknown[]): { changes: number }; get(...a: unknown[]): unknown; all(...a: unknown[]): unknown[] }
interface Db {
  pragma(s: string): unknown;
  exec(s: string): void;
  prepare(s: string): Stmt;
  transaction<F extends (...a: never[]) => unknown>(f: F): F & { immediate: F };
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

export async function openSqlite(path: string, sqlLimitsById: string): Promise<RateStore> {
  const { default: Database } = (await import('better-sqlite3')) as unknown as { default: new (p: string, o: object) => Db };
  let db: Db;
  try {
    db = new Database(path, { timeout: SQLITE_BUSY_TIMEOUT_MS });
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma(`cache_size = -${SQLITE_CACHE_KIB}`);
    db.exec(`CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS qp_rate_events (key TEXT NOT NULL, at INTEGER NOT NULL, n INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS qp_rate_events_key_at ON qp_rate_events (key, at);
      CREATE TABLE IF NOT EXISTS qp_rate_hits (key TEXT NOT NULL, seconds INTEGER NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (key, seconds));`);
    const v = db.prepare('SELECT version FROM qp_schema').get() as { version: number } | undefined;
    if (v === undefined) db.prepare('INSERT INTO qp_schema (version) VALUES (?)').run(SCHEMA_VERSION);
    else if (v.version > SCHEMA_VERSION) throw new StoreError(`${path}: schema version ${v.version} is newer than this quotapolicy (${SCHEMA_VERSION})`);
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`sqlite ${path}: ${(e as Error).message}`);
  }
  const sum = db.prepare('SELECT COALESCE(SUM(n), 0) AS used FROM qp_rate_events WHERE key = ? AND at >= ?');
  const insert = db.prepare('INSERT INTO qp_rate_events (key, at, n) VALUES (?, ?, ?)');
  const hit = db.prepare('INSERT INTO qp_rate_hits (key, seconds, hits) VALUES (?, ?, 1) ON CONFLICT (key, seconds) DO UPDATE SET hits = hits + 1');
  const byId = sqlLimitsById === '' ? undefined : db.prepare(sqlLimitsById);
  const consume = db.transaction((req: ConsumeRequest): ConsumeResult => {
    for (const b of req.buckets) {
      for (const limit of b.limits) {
        const used = (sum.get(b.key, req.nowSec - limit[1]) as { used: number }).used;
        if (breaks(used, req.n, limit)) return { ok: false, key: b.key, limit, used };
      }
    }
    if (req.commit) for (const b of req.buckets) insert.run(b.key, req.nowSec, req.n);
    return { ok: true };
  });
  const guard = <T>(f: () => T): Promise<T> => {
    try {
      return Promise.resolve(f());
    } catch (e) {
      return Promise.reject(e instanceof StoreError ? e : new StoreError(`sqlite: ${(e as Error).message}`));
    }
  };
  return {
    name: 'sqlite',
    consume: (req) => guard(() => consume.immediate(req)),
    limitsFor: (id) => guard((): readonly Limit[] | undefined => {
      const row = byId?.get(id) as Record<string, unknown> | undefined;
      return row === undefined ? undefined : parseLimitsText(Object.values(row)[0]);
    }),
    recordHit: (key, seconds) => guard(() => { hit.run(key, seconds); }),
    hits: () => guard(() => db.prepare('SELECT key, seconds, hits FROM qp_rate_hits ORDER BY hits DESC, key').all() as HitRow[]),
    clearHits: () => guard(() => { db.exec('DELETE FROM qp_rate_hits'); }),
    clean: (olderThan) => guard(() => {
      const n = db.prepare('DELETE FROM qp_rate_events WHERE at < ?').run(olderThan).changes;
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.exec('VACUUM');
      return n;
    }),
    close: () => guard(() => db.close()),
  };
}
