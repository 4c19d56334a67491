// PostgreSQL (pg): for several MX hosts sharing exact limits. Per-key
// transaction-scoped advisory locks, taken in sorted order, make
// check-and-record atomic across every instance.
import type { RateStore, ConsumeResult } from '../store.js';
import { storeCall } from './wrap.js';
import {
  StoreError,
  breaks,
  SCHEMA_VERSION,
  parseLimitsText,
  lockOrder,
  storedKey,
  rekeyPlan,
  STORE_KEY_MAX_BYTES,
  HASHED_KEY_MARK,
} from '../store.js';

/** The driver calls this backend makes. */
interface Client {
  query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>;
  /** release(err) destroys the connection instead of returning it to the pool. */
  release(err?: Error | boolean): void;
  on(ev: 'error', f: (e: Error) => void): void;
  removeListener(ev: 'error', f: (e: Error) => void): void;
}
interface Pool {
  connect(): Promise<Client>;
  query: Client['query'];
  end(): Promise<void>;
  on(ev: 'error', f: (e: Error) => void): void;
}

/** Connections per daemon: the front runs one store call at a time per key, so a few suffice. */
export const PG_POOL_SIZE = 8;
/** Advisory lock id held while creating or migrating the tables ("qp" in ASCII). */
const MIGRATION_LOCK = 0x7170;
/**
 * Database encodings that hold every key: any Unicode text but NUL (which
 * storedKey() hashes away). In another (LATIN1, ...) a key with a character
 * it lacks would fail every insert, and db_error_action would let it through.
 */
export const PG_KEY_ENCODINGS: readonly string[] = ['UTF8', 'SQL_ASCII'];

function checkEncoding(enc: string): void {
  if (!PG_KEY_ENCODINGS.includes(enc))
    throw new StoreError(
      `postgresql: database encoding ${enc} cannot hold every key (any Unicode text); create the database with ENCODING 'UTF8'`,
    );
}

/** One connection that reads, never writes: what check-config and the start-up warning try (see startup/store-probe.ts). */
interface ProbeClient {
  connect(): Promise<void>;
  query: Client['query'];
  end(): Promise<void>;
  on(ev: 'error', f: (e: Error) => void): void;
}

/** Connects, and checks the encoding and that the tables (if any) are not newer than this version. */
export async function probePostgres(url: string, timeoutMs: number): Promise<void> {
  const pg = (await import('pg')) as unknown as { default: { Client: new (o: object) => ProbeClient } };
  const c = new pg.default.Client({
    connectionString: url,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  c.on('error', () => {
    /* the failed call says why */
  });
  try {
    await c.connect();
    const r = (
      await c.query("SELECT current_setting('server_encoding') AS enc, to_regclass('qp_schema') IS NOT NULL AS t")
    ).rows[0]!;
    checkEncoding(String(r.enc));
    if (r.t === true) {
      const v = (await c.query('SELECT max(version) AS v FROM qp_schema')).rows[0]!.v;
      if (v !== null && Number(v) > SCHEMA_VERSION)
        throw new StoreError(`postgresql: schema version ${Number(v)} is newer than this quotapolicy`);
    }
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`postgresql: ${(e as Error).message}`);
  } finally {
    await c.end().catch(() => {});
  }
}

export async function openPostgres(url: string, sqlLimitsById: string, timeoutMs: number): Promise<RateStore> {
  const { default: pg } = await import('pg');
  // Typed as the calls this file makes; tsc checks pg's own types fit them.
  const pool: Pool = new pg.Pool({
    connectionString: url,
    max: PG_POOL_SIZE,
    connectionTimeoutMillis: timeoutMs,
    query_timeout: timeoutMs,
  });
  pool.on('error', () => {
    /* a dropped idle connection: the next query reconnects */
  });
  const wrap = storeCall('postgresql');
  /**
   * A checked-out client whose server goes away emits 'error'; unheard, that
   * would kill the process. Hear it, fail the call, and destroy the client.
   */
  const withClient = async <T>(f: (c: Client) => Promise<T>): Promise<T> => {
    const c = await pool.connect();
    let broken: Error | undefined;
    const onError = (e: Error): void => {
      broken = e;
    };
    c.on('error', onError);
    try {
      return await f(c);
    } catch (e) {
      broken ??= e as Error;
      throw e;
    } finally {
      c.removeListener('error', onError);
      c.release(broken);
    }
  };
  let ready: Promise<void> | undefined;
  const migrate = (): Promise<void> =>
    (ready ??= wrap(async () => {
      // Instances starting together must not race on CREATE TABLE IF NOT EXISTS (it can fail in PostgreSQL).
      await withClient(async (c) => {
        await c.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
        await c.query(`CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS qp_rate_events (key TEXT NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL);
        CREATE INDEX IF NOT EXISTS qp_rate_events_key_at ON qp_rate_events (key, at);
        CREATE TABLE IF NOT EXISTS qp_rate_hits (key TEXT NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (key, seconds))`);
        checkEncoding(String((await c.query("SELECT current_setting('server_encoding') AS enc")).rows[0]!.enc));
        const v = await c.query('SELECT version FROM qp_schema');
        if (v.rows.length === 0) await c.query('INSERT INTO qp_schema (version) VALUES ($1)', [SCHEMA_VERSION]);
        else if (Number(v.rows[0]!.version) > SCHEMA_VERSION)
          throw new StoreError(`schema version ${String(v.rows[0]!.version)} is newer than this quotapolicy`);
        else if (Number(v.rows[0]!.version) < SCHEMA_VERSION) {
          // 1 -> 2, in one transaction: only keys storedKey() changes (long, or containing its mark) move; every other keeps its rows.
          await c.query('BEGIN');
          const long = 'octet_length(key) > $1 OR strpos(key, $2) > 0';
          const old = await c.query(
            `SELECT key FROM qp_rate_events WHERE ${long} UNION SELECT key FROM qp_rate_hits WHERE ${long}`,
            [STORE_KEY_MAX_BYTES, HASHED_KEY_MARK],
          );
          for (const [from, to] of rekeyPlan(old.rows.map((r) => String(r.key)))) {
            await c.query('UPDATE qp_rate_events SET key = $1 WHERE key = $2', [to, from]);
            await c.query('UPDATE qp_rate_hits SET key = $1 WHERE key = $2', [to, from]);
          }
          await c.query('UPDATE qp_schema SET version = $1', [SCHEMA_VERSION]);
          await c.query('COMMIT');
        }
        // Unlocked by ending the session if anything above failed (the client is destroyed).
        await c.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]);
      });
    }).catch((e: unknown) => {
      ready = undefined;
      throw e;
    }));
  await migrate();
  return {
    name: 'postgresql',
    consume: (req) =>
      wrap(async (): Promise<ConsumeResult> => {
        const keys = new Map(req.buckets.map((b) => [b.key, storedKey(b.key)]));
        await migrate();
        return withClient(async (c): Promise<ConsumeResult> => {
          await c.query('BEGIN');
          for (const key of lockOrder(req.buckets))
            await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [keys.get(key)]);
          for (const b of req.buckets) {
            for (const limit of b.limits) {
              const r = await c.query(
                'SELECT COALESCE(SUM(n), 0)::bigint AS used FROM qp_rate_events WHERE key = $1 AND at >= $2',
                [keys.get(b.key), req.nowSec - limit[1]],
              );
              const used = Number(r.rows[0]!.used);
              if (breaks(used, req.n, limit)) {
                await c.query('ROLLBACK');
                return { ok: false, key: b.key, limit, used };
              }
            }
          }
          if (req.commit)
            for (const b of req.buckets)
              await c.query('INSERT INTO qp_rate_events (key, at, n) VALUES ($1, $2, $3)', [
                keys.get(b.key),
                req.nowSec,
                req.n,
              ]);
          await c.query('COMMIT');
          return { ok: true };
        });
      }),
    limitsFor: (id) =>
      wrap(async () => {
        if (sqlLimitsById === '') return undefined;
        const r = await pool.query(sqlLimitsById, [id]);
        return r.rows.length === 0 ? undefined : parseLimitsText(Object.values(r.rows[0]!)[0]);
      }),
    events: (key, since) =>
      wrap(async () => {
        await migrate();
        const r = await pool.query(
          'SELECT at, SUM(n)::bigint AS n FROM qp_rate_events WHERE key = $1 AND at >= $2 GROUP BY at ORDER BY at',
          [storedKey(key), since],
        );
        return r.rows.map((row) => ({ at: Number(row.at), n: Number(row.n) }));
      }),
    reset: (key) =>
      wrap(async () => {
        await migrate();
        const r = await pool.query(
          'WITH gone AS (DELETE FROM qp_rate_events WHERE key = $1 RETURNING n) SELECT COALESCE(SUM(n), 0)::bigint AS n FROM gone',
          [storedKey(key)],
        );
        return Number(r.rows[0]!.n);
      }),
    recordHit: (key, seconds) =>
      wrap(async () => {
        await pool.query(
          'INSERT INTO qp_rate_hits (key, seconds, hits) VALUES ($1, $2, 1) ON CONFLICT (key, seconds) DO UPDATE SET hits = qp_rate_hits.hits + 1',
          [storedKey(key), seconds],
        );
      }),
    hits: () =>
      wrap(async () =>
        (await pool.query('SELECT key, seconds, hits FROM qp_rate_hits ORDER BY hits DESC, key')).rows.map((r) => ({
          key: String(r.key),
          seconds: Number(r.seconds),
          hits: Number(r.hits),
        })),
      ),
    clearHits: () =>
      wrap(async () => {
        await pool.query('DELETE FROM qp_rate_hits');
      }),
    clean: (olderThan) =>
      wrap(async () => {
        const r = await pool.query('DELETE FROM qp_rate_events WHERE at < $1', [olderThan]);
        await pool.query('VACUUM qp_rate_events');
        return r.rowCount ?? 0;
      }),
    close: () => pool.end(),
  };
}
