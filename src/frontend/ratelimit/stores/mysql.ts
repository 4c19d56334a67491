// MariaDB/MySQL (mysql2): for several MX hosts sharing exact limits. Named
// locks (GET_LOCK) per key, in sorted order, make check-and-record atomic
// across every instance. Keys are VARBINARY and sent as bytes: compared byte
// for byte, whatever the server's or the connection's character set and
// collation (a text collation folds case or accents, or ignores trailing
// spaces, merging keys; a connection charset without a character turns it
// into "?").
import { createHash } from 'node:crypto';
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
interface Conn {
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>;
  release(): void;
}
interface Pool {
  getConnection(): Promise<Conn>;
  query: Conn['query'];
  end(): Promise<void>;
}

export const MYSQL_POOL_SIZE = 8;
/** Named lock names are limited to 64 characters: keys are hashed into them. */
const lockName = (key: string): string => `qp:${createHash('sha256').update(key).digest('hex').slice(0, 48)}`;
/**
 * Width of the key columns, bytes. Stored keys take at most
 * STORE_KEY_MAX_BYTES; this is what schema 1's VARCHAR(255) utf8mb4 could
 * hold (255 characters of 4 bytes), so that its keys convert in place.
 */
export const MYSQL_KEY_COLUMN_BYTES = 1020;
/** A key as the bytes bound to a query (mysql2 sends a Buffer as X'...'). */
const bin = (key: string): Buffer => Buffer.from(storedKey(key), 'utf8');
const KEY_COLUMN = `\`key\` VARBINARY(${MYSQL_KEY_COLUMN_BYTES}) NOT NULL`;

/** One connection that reads, never writes: what check-config and the start-up warning try (see startup/store-probe.ts). */
interface ProbeConn {
  query: Conn['query'];
  end(): Promise<void>;
  on(ev: 'error', f: (e: Error) => void): void;
}

/** Connects, and checks that the tables (if any) are not newer than this version. */
export async function probeMysql(url: string, timeoutMs: number): Promise<void> {
  const { default: mysql } = await import('mysql2/promise');
  let c: ProbeConn | undefined;
  try {
    // Typed as the calls the probe makes; tsc checks mysql2's own Connection fits them.
    c = await mysql.createConnection({ uri: url, connectTimeout: timeoutMs, multipleStatements: false });
    c.on('error', () => {
      /* the failed call says why */
    });
    const [t] = (await c.query(
      "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'qp_schema'",
    )) as [Record<string, unknown>[], unknown];
    if (Number(t[0]!.n) > 0) {
      const [v] = (await c.query('SELECT MAX(version) AS v FROM qp_schema')) as [Record<string, unknown>[], unknown];
      if (v[0]!.v !== null && Number(v[0]!.v) > SCHEMA_VERSION)
        throw new StoreError(`mysql: schema version ${Number(v[0]!.v)} is newer than this quotapolicy`);
    }
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`mysql: ${(e as Error).message}`);
  } finally {
    await c?.end().catch(() => {});
  }
}

export async function openMysql(url: string, sqlLimitsById: string, timeoutMs: number): Promise<RateStore> {
  const { default: mysql } = await import('mysql2/promise');
  // Typed as the calls this file makes; tsc checks mysql2's own types fit them.
  const pool: Pool = mysql.createPool({
    uri: url,
    connectionLimit: MYSQL_POOL_SIZE,
    connectTimeout: timeoutMs,
    multipleStatements: false,
    supportBigNumbers: true,
  });
  const wrap = storeCall('mysql');
  const rows = async (sql: string, values?: unknown[]): Promise<Record<string, unknown>[]> =>
    (await pool.query(sql, values))[0] as Record<string, unknown>[];
  let ready: Promise<void> | undefined;
  const migrate = (): Promise<void> =>
    (ready ??= wrap(async () => {
      // Instances starting together take turns creating the tables.
      const c = await pool.getConnection();
      try {
        const wait = Math.max(1, Math.ceil(timeoutMs / 1000));
        const [got] = (await c.query('SELECT GET_LOCK(?, ?) AS got', ['qp:migrate', wait])) as [
          Record<string, unknown>[],
          unknown,
        ];
        if (Number(got[0]!.got) !== 1)
          throw new StoreError(
            `mysql: another instance is creating or converting the tables (lock qp:migrate not granted in ${wait} s)`,
          );
        await c.query('CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL)');
        await c.query(
          `CREATE TABLE IF NOT EXISTS qp_rate_events (${KEY_COLUMN}, at BIGINT NOT NULL, n INTEGER NOT NULL, INDEX qp_rate_events_key_at (\`key\`, at))`,
        );
        await c.query(
          `CREATE TABLE IF NOT EXISTS qp_rate_hits (${KEY_COLUMN}, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (\`key\`, seconds))`,
        );
        const [v] = (await c.query('SELECT version FROM qp_schema')) as [Record<string, unknown>[], unknown];
        if (v.length === 0) await c.query('INSERT INTO qp_schema (version) VALUES (?)', [SCHEMA_VERSION]);
        else if (Number(v[0]!.version) > SCHEMA_VERSION)
          throw new StoreError(`schema version ${String(v[0]!.version)} is newer than this quotapolicy`);
        else if (Number(v[0]!.version) < SCHEMA_VERSION) {
          // 1 -> 2. VARCHAR utf8mb4_bin pads with spaces when comparing ("a" = "a "), so such keys shared a count;
          // VARBINARY keeps the same bytes and compares them all. Repeating this after a crash is harmless.
          await c.query(`ALTER TABLE qp_rate_events MODIFY ${KEY_COLUMN}`);
          await c.query(`ALTER TABLE qp_rate_hits MODIFY ${KEY_COLUMN}`);
          // Then, in one transaction, only keys storedKey() changes (longer than it keeps, NUL, or containing its mark) move.
          await c.query('START TRANSACTION');
          const long = '(LENGTH(`key`) > ? OR LOCATE(0x00, `key`) > 0 OR LOCATE(?, `key`) > 0)';
          const mark = Buffer.from(HASHED_KEY_MARK, 'utf8');
          const [old] = (await c.query(
            `SELECT \`key\` FROM qp_rate_events WHERE ${long} UNION SELECT \`key\` FROM qp_rate_hits WHERE ${long}`,
            [STORE_KEY_MAX_BYTES, mark, STORE_KEY_MAX_BYTES, mark],
          )) as [Record<string, unknown>[], unknown];
          for (const [from, to] of rekeyPlan(old.map((r) => (r.key as Buffer).toString('utf8')))) {
            const args = [Buffer.from(to, 'utf8'), Buffer.from(from, 'utf8')];
            await c.query('UPDATE qp_rate_events SET `key` = ? WHERE `key` = ?', args);
            await c.query('UPDATE qp_rate_hits SET `key` = ? WHERE `key` = ?', args);
          }
          await c.query('UPDATE qp_schema SET version = ?', [SCHEMA_VERSION]);
          await c.query('COMMIT');
        }
      } catch (e) {
        await c.query('ROLLBACK').catch(() => {});
        throw e;
      } finally {
        await c.query('SELECT RELEASE_LOCK(?)', ['qp:migrate']).catch(() => {});
        c.release();
      }
    }).catch((e: unknown) => {
      ready = undefined;
      throw e;
    }));
  await migrate();
  const lockWaitSec = Math.max(1, Math.ceil(timeoutMs / 1000));
  return {
    name: 'mysql',
    consume: (req) =>
      wrap(async (): Promise<ConsumeResult> => {
        const keys = new Map(req.buckets.map((b) => [b.key, bin(b.key)]));
        await migrate();
        const c = await pool.getConnection();
        const held: string[] = [];
        try {
          for (const key of lockOrder(req.buckets)) {
            const stored = storedKey(key);
            const name = lockName(stored);
            const [r] = await c.query('SELECT GET_LOCK(?, ?) AS got', [name, lockWaitSec]);
            if (Number((r as Record<string, unknown>[])[0]!.got) !== 1)
              throw new StoreError(`mysql: lock for ${stored} not granted in ${lockWaitSec} s`);
            held.push(name);
          }
          for (const b of req.buckets) {
            for (const limit of b.limits) {
              const [r] = await c.query(
                'SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS used FROM qp_rate_events WHERE `key` = ? AND at >= ?',
                [keys.get(b.key), req.nowSec - limit[1]],
              );
              const used = Number((r as Record<string, unknown>[])[0]!.used);
              if (breaks(used, req.n, limit)) return { ok: false, key: b.key, limit, used };
            }
          }
          if (req.commit)
            for (const b of req.buckets)
              await c.query('INSERT INTO qp_rate_events (`key`, at, n) VALUES (?, ?, ?)', [
                keys.get(b.key),
                req.nowSec,
                req.n,
              ]);
          return { ok: true };
        } finally {
          for (const name of held) await c.query('SELECT RELEASE_LOCK(?)', [name]).catch(() => {});
          c.release();
        }
      }),
    limitsFor: (id) =>
      wrap(async () => {
        if (sqlLimitsById === '') return undefined;
        const r = await rows(sqlLimitsById, [id]);
        return r.length === 0 ? undefined : parseLimitsText(Object.values(r[0]!)[0]);
      }),
    events: (key, since) =>
      wrap(async () => {
        await migrate();
        return (
          await rows(
            'SELECT at, CAST(SUM(n) AS SIGNED) AS n FROM qp_rate_events WHERE `key` = ? AND at >= ? GROUP BY at ORDER BY at',
            [bin(key), since],
          )
        ).map((r) => ({ at: Number(r.at), n: Number(r.n) }));
      }),
    // Under the key's named lock, as consume() takes it: the count and the delete see the same rows.
    reset: (key) =>
      wrap(async () => {
        await migrate();
        const k = bin(key);
        const name = lockName(storedKey(key));
        const c = await pool.getConnection();
        let held = false;
        try {
          const [g] = await c.query('SELECT GET_LOCK(?, ?) AS got', [name, lockWaitSec]);
          if (Number((g as Record<string, unknown>[])[0]!.got) !== 1)
            throw new StoreError(`mysql: lock for ${storedKey(key)} not granted in ${lockWaitSec} s`);
          held = true;
          const [r] = await c.query(
            'SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS n FROM qp_rate_events WHERE `key` = ?',
            [k],
          );
          await c.query('DELETE FROM qp_rate_events WHERE `key` = ?', [k]);
          return Number((r as Record<string, unknown>[])[0]!.n);
        } finally {
          if (held) await c.query('SELECT RELEASE_LOCK(?)', [name]).catch(() => {});
          c.release();
        }
      }),
    recordHit: (key, seconds) =>
      wrap(async () => {
        await pool.query(
          'INSERT INTO qp_rate_hits (`key`, seconds, hits) VALUES (?, ?, 1) ON DUPLICATE KEY UPDATE hits = hits + 1',
          [bin(key), seconds],
        );
      }),
    hits: () =>
      wrap(async () =>
        (await rows('SELECT `key`, seconds, hits FROM qp_rate_hits ORDER BY hits DESC, `key`')).map((r) => ({
          key: (r.key as Buffer).toString('utf8'),
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
        const [r] = await pool.query('DELETE FROM qp_rate_events WHERE at < ?', [olderThan]);
        await pool.query('OPTIMIZE TABLE qp_rate_events, qp_rate_hits');
        return Number((r as { affectedRows?: number }).affectedRows ?? 0);
      }),
    close: () => pool.end(),
  };
}
