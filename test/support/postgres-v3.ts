// The PostgreSQL store of schema version 3, verbatim as it was released
// (commit c8c3d19, src/frontend/ratelimit/stores/postgres.ts), but for its
// imports: the old instance of the rolling-upgrade test
// (ratelimit-sql-schema.test.ts), which runs beside the current store on one
// database. Not used by the daemon.
//
// PostgreSQL (pg): for several MX hosts sharing exact limits. Per-key
// transaction-scoped advisory locks, taken in sorted order, make
// check-and-record atomic across every instance. Events are rows; beside
// them, running totals per key and window length (qp_rate_totals, kept by a
// trigger on every write to the events, whichever process or release makes
// it): a check moves a window's start to now - seconds and subtracts only
// the events it passes, so a key with a day of events costs what a fresh
// one does.
import type { RateStore, ConsumeResult } from '../../src/frontend/ratelimit/store.js';
import { storeCall } from '../../src/frontend/ratelimit/stores/wrap.js';
import type { Limit } from '../../src/frontend/ratelimit/decide.js';
import {
  StoreError,
  breaks,
  parseLimitsText,
  lockOrder,
  storedKey,
  rekeyPlan,
  STORE_KEY_MAX_BYTES,
  HASHED_KEY_MARK,
} from '../../src/frontend/ratelimit/store.js';

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

/**
 * Version of the PostgreSQL tables (MariaDB/MySQL: SCHEMA_VERSION). 1 and 2
 * as SCHEMA_VERSION says; 3: running totals (qp_rate_totals: per key and
 * window length, the window's start and the events from it on), kept by a
 * trigger on qp_rate_events. A version 2 process still running when the
 * tables are converted stays exact (the trigger keeps the totals whoever
 * writes the events); one started afterwards refuses the newer tables.
 */
export const PG_SCHEMA_VERSION = 3;

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
      if (v !== null && Number(v) > PG_SCHEMA_VERSION)
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
        const version = v.rows.length === 0 ? undefined : Number(v.rows[0]!.version);
        if (version !== undefined && version > PG_SCHEMA_VERSION)
          throw new StoreError(`schema version ${String(v.rows[0]!.version)} is newer than this quotapolicy`);
        if (version !== undefined && version < 2) {
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
          await c.query('UPDATE qp_schema SET version = 2');
          await c.query('COMMIT');
        }
        if (version === undefined || version < 3) {
          // 2 -> 3 (and new tables), in one transaction, so no write to the events goes by without the trigger.
          // The totals start empty; each is built from the events when a check first asks for its window.
          // Invariant, per row: total = the key's events from the second edge on. The triggers run once per
          // statement with the rows it changed (a clean deleting a million events runs one UPDATE, not a million).
          await c.query('BEGIN');
          await c.query(`CREATE TABLE IF NOT EXISTS qp_rate_totals (key TEXT NOT NULL, seconds BIGINT NOT NULL, edge BIGINT NOT NULL, total BIGINT NOT NULL, PRIMARY KEY (key, seconds));
          ${['add', 'sub']
            .map(
              (f) => `CREATE OR REPLACE FUNCTION qp_rate_totals_${f}() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            UPDATE qp_rate_totals t SET total = t.total ${f === 'add' ? '+' : '-'} d.n
              FROM (SELECT w.key, w.seconds, SUM(e.n) AS n FROM qp_rate_totals w JOIN changed e ON e.key = w.key AND e.at >= w.edge
                    GROUP BY w.key, w.seconds) d
              WHERE t.key = d.key AND t.seconds = d.seconds;
            RETURN NULL;
          END $$;`,
            )
            .join('\n')}
          DROP TRIGGER IF EXISTS qp_rate_events_added ON qp_rate_events;
          DROP TRIGGER IF EXISTS qp_rate_events_removed ON qp_rate_events;
          DROP TRIGGER IF EXISTS qp_rate_events_updated_old ON qp_rate_events;
          DROP TRIGGER IF EXISTS qp_rate_events_updated_new ON qp_rate_events;
          CREATE TRIGGER qp_rate_events_added AFTER INSERT ON qp_rate_events
            REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qp_rate_totals_add();
          CREATE TRIGGER qp_rate_events_removed AFTER DELETE ON qp_rate_events
            REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qp_rate_totals_sub();
          CREATE TRIGGER qp_rate_events_updated_old AFTER UPDATE ON qp_rate_events
            REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qp_rate_totals_sub();
          CREATE TRIGGER qp_rate_events_updated_new AFTER UPDATE ON qp_rate_events
            REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION qp_rate_totals_add();`);
          if (version === undefined) await c.query('INSERT INTO qp_schema (version) VALUES ($1)', [PG_SCHEMA_VERSION]);
          else await c.query('UPDATE qp_schema SET version = $1', [PG_SCHEMA_VERSION]);
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
  const sum = async (c: Client, key: string, from: number, before?: number): Promise<number> =>
    Number(
      (
        await c.query(
          before === undefined
            ? 'SELECT COALESCE(SUM(n), 0)::bigint AS n FROM qp_rate_events WHERE key = $1 AND at >= $2'
            : 'SELECT COALESCE(SUM(n), 0)::bigint AS n FROM qp_rate_events WHERE key = $1 AND at >= $2 AND at < $3',
          before === undefined ? [key, from] : [key, from, before],
        )
      ).rows[0]!.n,
    );
  /**
   * The events of each window of a key at now, inside the caller's
   * transaction and under the key's lock. A window's start only moves
   * forward: a check from a clock behind the last one adds the events between
   * its own start and the stored one. FOR UPDATE: a clean or reset running
   * meanwhile (their trigger updates) waits for this transaction, then
   * applies its change to the moved start.
   */
  const windowSums = async (c: Client, key: string, limits: readonly Limit[], now: number): Promise<number[]> => {
    const held = new Map<number, [number, number]>();
    for (const r of (await c.query('SELECT seconds, edge, total FROM qp_rate_totals WHERE key = $1 FOR UPDATE', [key]))
      .rows)
      held.set(Number(r.seconds), [Number(r.edge), Number(r.total)]);
    const out: number[] = [];
    for (const [, seconds] of limits) {
      const start = now - seconds;
      const row = held.get(seconds);
      let next: [number, number];
      if (row === undefined) next = [start, await sum(c, key, start)];
      else if (row[0] < start) next = [start, row[1] - (await sum(c, key, row[0], start))];
      else {
        out.push(row[1] + (row[0] > start ? await sum(c, key, start, row[0]) : 0));
        continue;
      }
      await c.query(
        'INSERT INTO qp_rate_totals (key, seconds, edge, total) VALUES ($1, $2, $3, $4) ON CONFLICT (key, seconds) DO UPDATE SET edge = EXCLUDED.edge, total = EXCLUDED.total',
        [key, seconds, next[0], next[1]],
      );
      held.set(seconds, next);
      out.push(next[1]);
    }
    return out;
  };
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
            const used = await windowSums(c, keys.get(b.key)!, b.limits, req.nowSec);
            for (const [i, limit] of b.limits.entries()) {
              if (breaks(used[i]!, req.n, limit)) {
                // Commit: nothing is recorded, but the moved starts are kept (a refused key checked again costs no more).
                await c.query('COMMIT');
                return { ok: false, key: b.key, limit, used: used[i]! };
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
        // The trigger has brought them to 0; the rows go too.
        await pool.query('DELETE FROM qp_rate_totals WHERE key = $1', [storedKey(key)]);
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
        // Totals of windows not checked since (or no longer configured): rebuilt from the events if asked again.
        await pool.query('DELETE FROM qp_rate_totals WHERE edge < $1', [olderThan]);
        await pool.query('VACUUM qp_rate_events');
        return r.rowCount ?? 0;
      }),
    close: () => pool.end(),
  };
}
