// MariaDB/MySQL (mysql2): for several MX hosts sharing exact limits. Named
// locks (GET_LOCK) per key, in sorted order, make check-and-record atomic
// across every instance.
import { createHash } from 'node:crypto';
import type { RateStore, ConsumeResult } from '../store.js';
import { StoreError, breaks, SCHEMA_VERSION, parseLimitsText, lockOrder } from '../store.js';

/** The driver calls this backend makes. */
interface Conn { query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>; release(): void }
interface Pool { getConnection(): Promise<Conn>; query: Conn['query']; end(): Promise<void> }

export const MYSQL_POOL_SIZE = 8;
/** Named lock names are limited to 64 characters: keys are hashed into them. */
const lockName = (key: string): string => `qp:${createHash('sha256').update(key).digest('hex').slice(0, 48)}`;

export async function openMysql(url: string, sqlLimitsById: string, timeoutMs: number): Promise<RateStore> {
  const mysql = (await import('mysql2/promise')) as unknown as { default: { createPool(o: object): Pool } };
  const pool = mysql.default.createPool({ uri: url, connectionLimit: MYSQL_POOL_SIZE, connectTimeout: timeoutMs, multipleStatements: false, supportBigNumbers: true });
  const wrap = async <T>(f: () => Promise<T>): Promise<T> => {
    try {
      return await f();
    } catch (e) {
      throw e instanceof StoreError ? e : new StoreError(`mysql: ${(e as Error).message}`);
    }
  };
  const rows = async (sql: string, values?: unknown[]): Promise<Record<string, unknown>[]> => (await pool.query(sql, values))[0] as Record<string, unknown>[];
  let ready: Promise<void> | undefined;
  const migrate = (): Promise<void> => (ready ??= wrap(async () => {
    // Instances starting together take turns creating the tables.
    const c = await pool.getConnection();
    try {
      await c.query('SELECT GET_LOCK(?, ?)', ['qp:migrate', Math.max(1, Math.ceil(timeoutMs / 1000))]);
      await c.query('CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL)');
      await c.query('CREATE TABLE IF NOT EXISTS qp_rate_events (`key` VARCHAR(255) NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL, INDEX qp_rate_events_key_at (`key`, at)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin');
      await c.query('CREATE TABLE IF NOT EXISTS qp_rate_hits (`key` VARCHAR(255) NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (`key`, seconds)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin');
      const [v] = (await c.query('SELECT version FROM qp_schema')) as [Record<string, unknown>[], unknown];
      if (v.length === 0) await c.query('INSERT INTO qp_schema (version) VALUES (?)', [SCHEMA_VERSION]);
      else if (Number(v[0]!.version) > SCHEMA_VERSION) throw new StoreError(`schema version ${String(v[0]!.version)} is newer than this quotapolicy`);
    } finally {
      await c.query('SELECT RELEASE_LOCK(?)', ['qp:migrate']).catch(() => {});
      c.release();
    }
  }).catch((e: unknown) => { ready = undefined; throw e; }));
  await migrate();
  const lockWaitSec = Math.max(1, Math.ceil(timeoutMs / 1000));
  return {
    name: 'mysql',
    consume: (req) => wrap(async (): Promise<ConsumeResult> => {
      await migrate();
      const c = await pool.getConnection();
      const held: string[] = [];
      try {
        for (const key of lockOrder(req.buckets)) {
          const [r] = await c.query('SELECT GET_LOCK(?, ?) AS got', [lockName(key), lockWaitSec]);
          if (Number((r as Record<string, unknown>[])[0]!.got) !== 1) throw new StoreError(`mysql: lock for ${key} not granted in ${lockWaitSec} s`);
          held.push(key);
        }
        for (const b of req.buckets) {
          for (const limit of b.limits) {
            const [r] = await c.query('SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS used FROM qp_rate_events WHERE `key` = ? AND at >= ?', [b.key, req.nowSec - limit[1]]);
            const used = Number((r as Record<string, unknown>[])[0]!.used);
            if (breaks(used, req.n, limit)) return { ok: false, key: b.key, limit, used };
          }
        }
        if (req.commit) for (const b of req.buckets) await c.query('INSERT INTO qp_rate_events (`key`, at, n) VALUES (?, ?, ?)', [b.key, req.nowSec, req.n]);
        return { ok: true };
      } finally {
        for (const key of held) await c.query('SELECT RELEASE_LOCK(?)', [lockName(key)]).catch(() => {});
        c.release();
      }
    }),
    limitsFor: (id) => wrap(async () => {
      if (sqlLimitsById === '') return undefined;
      const r = await rows(sqlLimitsById, [id]);
      return r.length === 0 ? undefined : parseLimitsText(Object.values(r[0]!)[0]);
    }),
    recordHit: (key, seconds) => wrap(async () => {
      await pool.query('INSERT INTO qp_rate_hits (`key`, seconds, hits) VALUES (?, ?, 1) ON DUPLICATE KEY UPDATE hits = hits + 1', [key, seconds]);
    }),
    hits: () => wrap(async () => (await rows('SELECT `key`, seconds, hits FROM qp_rate_hits ORDER BY hits DESC, `key`'))
      .map((r) => ({ key: String(r.key), seconds: Number(r.seconds), hits: Number(r.hits) }))),
    clearHits: () => wrap(async () => { await pool.query('DELETE FROM qp_rate_hits'); }),
    clean: (olderThan) => wrap(async () => {
      const [r] = await pool.query('DELETE FROM qp_rate_events WHERE at < ?', [olderThan]);
      await pool.query('OPTIMIZE TABLE qp_rate_events, qp_rate_hits');
      return Number((r as { affectedRows?: number }).affectedRows ?? 0);
    }),
    close: () => pool.end(),
  };
}
