// MariaDB/MySQL (mysql2): for several MX hosts sharing exact limits. Counts
// are held per key and second (qp_rate_counts, added in place), with running
// totals per key and window length beside them (qp_rate_totals), so a key
// with a day of busy seconds costs a check what a fresh one does (the plan:
// mysql-group.ts). Group commit: the requests that arrive together are
// checked and recorded one after another in one transaction, each seeing the
// ones before it, and the commit (a redo log flush) is paid once per group.
// Each transaction first locks one row per key (qp_rate_totals, seconds -1),
// all its keys in sorted byte order, so check-and-record is atomic across
// every instance and groups do not deadlock over keys. The totals are kept
// by this code in that transaction, not by triggers: creating triggers with
// binary logging on needs SUPER or log_bin_trust_function_creators, and
// MariaDB's row-by-row triggers would make a clean of a million counts a
// million updates. Keys are VARBINARY and sent as bytes: compared byte for
// byte, whatever the server's or the connection's character set and
// collation (a text collation folds case or accents, or ignores trailing
// spaces, merging keys; a connection charset without a character turns it
// into "?").
import type { RateStore, ConsumeRequest, ConsumeResult } from '../store.js';
import { storeCall } from './wrap.js';
import { StoreError, parseLimitsText, storedKey, rekeyPlan, STORE_KEY_MAX_BYTES, HASHED_KEY_MARK } from '../store.js';
import { planGroup, readsFor, answerGroup, type GroupRead } from './mysql-group.js';
import { certificateFailure, type StoreTls } from '../store-tls.js';

/** The driver calls this backend makes. */
interface Conn {
  query(sql: string, values?: unknown[]): Promise<[unknown, unknown]>;
  release(): void;
  /** Closes it and takes it out of the pool. */
  destroy(): void;
}
interface Pool {
  getConnection(): Promise<Conn>;
  query: Conn['query'];
  end(): Promise<void>;
}
/**
 * A new connection of the pool, before it is handed out: mysql2 passes its
 * 'connection' listeners the callback API's connection (its types say the
 * promise one; test/ratelimit-mysql-totals.test.ts's lock test sees the
 * lock wait it sets).
 */
interface RawConn {
  query(sql: string, cb: (e: Error | null) => void): void;
}

/**
 * Version of the MariaDB/MySQL tables. 1 and 2 as SCHEMA_VERSION says; 3:
 * counts per key and second (qp_rate_counts) instead of a row per event
 * (qp_rate_events), and running totals (qp_rate_totals), kept by this code.
 * Converting a version 2 database renames qp_rate_events' column n first:
 * from then on every call of a version 2 process still running fails
 * ("Unknown column 'n'", answered with db_error_action and logged), so it
 * never counts where this release does not look; one started afterwards
 * refuses the newer tables. Stop the previous release's instances before
 * starting the first of this one (README, "Storage").
 */
export const MYSQL_SCHEMA_VERSION = 3;
export const MYSQL_POOL_SIZE = 8;
/** Requests in one transaction at most: bounds how long its key locks are held and its statements' size. */
export const MYSQL_GROUP_MAX = 128;
/** Transactions in flight at once: the pool's other connections stay free for limits, reports and admin calls. */
export const MYSQL_GROUPS_IN_FLIGHT = 4;
/** A group chosen as a deadlock's victim (InnoDB rolls it back whole) is run again this many times. */
export const MYSQL_DEADLOCK_RETRIES = 3;
const ER_LOCK_DEADLOCK = 1213;
/** qp_rate_totals' seconds of a key's lock row (its edge: the latest clock that checked the key). */
const LOCK_ROW = -1;
/**
 * Width of the key columns, bytes. Stored keys take at most
 * STORE_KEY_MAX_BYTES; this is what schema 1's VARCHAR(255) utf8mb4 could
 * hold (255 characters of 4 bytes), so that its keys convert in place.
 */
export const MYSQL_KEY_COLUMN_BYTES = 1020;
const KEY_COLUMN = `\`key\` VARBINARY(${MYSQL_KEY_COLUMN_BYTES}) NOT NULL`;
/** Column qp_rate_events.n becomes when converted to version 3: a version 2 process's reads and writes name n. */
const MOVED_COLUMN = 'n_moved_to_qp_rate_counts';
/** A key as the bytes bound to a query (mysql2 sends a Buffer as X'...'), and as the hex the group plan sorts. */
const hexOf = (key: string): string => Buffer.from(storedKey(key), 'utf8').toString('hex');
const bin = (hex: string): Buffer => Buffer.from(hex, 'hex');

/**
 * mysql2's ssl option: store_tls's files, the chain verified
 * (rejectUnauthorized) and the host name too (verifyIdentity: mysql2 checks
 * no name without it). Without store_tls, nothing: the config check refused
 * an ssl parameter in the URL.
 */
const mysqlSsl = (
  tls: StoreTls | undefined,
): { ssl?: StoreTls & { rejectUnauthorized: true; verifyIdentity: true } } =>
  tls === undefined ? {} : { ssl: { ...tls, rejectUnauthorized: true, verifyIdentity: true } };

/** One connection that reads, never writes: what check-config and the start-up warning try (see startup/store-probe.ts). */
interface ProbeConn {
  query: Conn['query'];
  end(): Promise<void>;
  on(ev: 'error', f: (e: Error) => void): void;
}

/** Connects, and checks that the tables (if any) are not newer than this version. */
export async function probeMysql(url: string, timeoutMs: number, tls?: StoreTls): Promise<void> {
  const { default: mysql } = await import('mysql2/promise');
  let c: ProbeConn | undefined;
  try {
    // Typed as the calls the probe makes; tsc checks mysql2's own Connection fits them.
    c = await mysql.createConnection({
      uri: url,
      connectTimeout: timeoutMs,
      multipleStatements: false,
      ...mysqlSsl(tls),
    });
    c.on('error', () => {
      /* the failed call says why */
    });
    const [t] = (await c.query(
      "SELECT COUNT(*) AS n FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'qp_schema'",
    )) as [Record<string, unknown>[], unknown];
    if (Number(t[0]!.n) > 0) {
      const [v] = (await c.query('SELECT MAX(version) AS v FROM qp_schema')) as [Record<string, unknown>[], unknown];
      if (v[0]!.v !== null && Number(v[0]!.v) > MYSQL_SCHEMA_VERSION)
        throw new StoreError(`mysql: schema version ${Number(v[0]!.v)} is newer than this quotapolicy`);
    }
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(`mysql: ${certificateFailure(e) ?? (e as Error).message}`);
  } finally {
    await c?.end().catch(() => {});
  }
}

type Rows = Record<string, unknown>[];
const q = async (c: Conn, sql: string, values?: unknown[]): Promise<Rows> => (await c.query(sql, values))[0] as Rows;
/** "(?, ?), (?, ?)" for rows of n values. */
const tuples = (rows: number, n: number): string =>
  Array.from({ length: rows }, () => `(${Array.from({ length: n }, () => '?').join(', ')})`).join(', ');

interface Waiting {
  req: ConsumeRequest;
  keys: string[];
  resolve: (r: ConsumeResult) => void;
  reject: (e: unknown) => void;
}

export async function openMysql(
  url: string,
  sqlLimitsById: string,
  timeoutMs: number,
  tls?: StoreTls,
): Promise<RateStore> {
  const { default: mysql } = await import('mysql2/promise');
  // Typed as the calls this file makes; tsc checks mysql2's own types fit them.
  const pool: Pool = mysql.createPool({
    uri: url,
    connectionLimit: MYSQL_POOL_SIZE,
    connectTimeout: timeoutMs,
    multipleStatements: false,
    supportBigNumbers: true,
    ...mysqlSsl(tls),
  });
  const lockWaitSec = Math.max(1, Math.ceil(timeoutMs / 1000));
  // Each group's reads must be one snapshot taken after its locks (REPEATABLE READ, whatever the server's
  // default), and a lock held by another instance is waited for as long as a store call may take.
  (pool as unknown as { on(ev: 'connection', f: (c: RawConn) => void): void }).on('connection', (c) => {
    const ignore = (): void => {
      /* a broken connection fails its first real query, which says why */
    };
    c.query('SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ', ignore);
    c.query(`SET SESSION innodb_lock_wait_timeout = ${lockWaitSec}`, ignore);
  });
  const wrap = storeCall('mysql');
  const rows = async (sql: string, values?: unknown[]): Promise<Rows> => (await pool.query(sql, values))[0] as Rows;
  const withConn = async <T>(f: (c: Conn) => Promise<T>): Promise<T> => {
    const c = await pool.getConnection();
    try {
      return await f(c);
    } finally {
      c.release();
    }
  };
  /** f in a transaction; rolled back if it throws. */
  const transaction = <T>(c: Conn, f: () => Promise<T>): Promise<T> =>
    (async () => {
      await c.query('START TRANSACTION');
      try {
        const r = await f();
        await c.query('COMMIT');
        return r;
      } catch (e) {
        await c.query('ROLLBACK').catch(() => {});
        throw e;
      }
    })();
  /** Locks each key's row, in the order given (sorted), creating it if new. */
  const lockKeys = (c: Conn, hexKeys: readonly string[], lastNow: (k: string) => number): Promise<Rows> =>
    q(
      c,
      `INSERT INTO qp_rate_totals (\`key\`, seconds, edge, total) VALUES ${tuples(hexKeys.length, 4)} ON DUPLICATE KEY UPDATE edge = GREATEST(edge, VALUES(edge))`,
      hexKeys.flatMap((k) => [bin(k), LOCK_ROW, lastNow(k), 0]),
    );

  let ready: Promise<void> | undefined;
  const migrate = (): Promise<void> =>
    (ready ??= wrap(async () => {
      // Instances starting together take turns creating the tables.
      const c = await pool.getConnection();
      try {
        const wait = Math.max(1, Math.ceil(timeoutMs / 1000));
        const got = await q(c, 'SELECT GET_LOCK(?, ?) AS got', ['qp:migrate', wait]);
        if (Number(got[0]!.got) !== 1)
          throw new StoreError(
            `mysql: another instance is creating or converting the tables (lock qp:migrate not granted in ${wait} s)`,
          );
        await c.query('CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL)');
        const v = await q(c, 'SELECT version FROM qp_schema');
        const version = v.length === 0 ? undefined : Number(v[0]!.version);
        if (version !== undefined && version > MYSQL_SCHEMA_VERSION)
          throw new StoreError(`schema version ${String(v[0]!.version)} is newer than this quotapolicy`);
        await c.query(
          `CREATE TABLE IF NOT EXISTS qp_rate_hits (${KEY_COLUMN}, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (\`key\`, seconds))`,
        );
        await c.query(
          `CREATE TABLE IF NOT EXISTS qp_rate_counts (${KEY_COLUMN}, at BIGINT NOT NULL, n BIGINT NOT NULL, PRIMARY KEY (\`key\`, at))`,
        );
        // Invariant, per row of seconds >= 0: total = the key's counts from the second edge on.
        await c.query(
          `CREATE TABLE IF NOT EXISTS qp_rate_totals (${KEY_COLUMN}, seconds BIGINT NOT NULL, edge BIGINT NOT NULL, total BIGINT NOT NULL, PRIMARY KEY (\`key\`, seconds))`,
        );
        if (version === undefined) await c.query('INSERT INTO qp_schema (version) VALUES (?)', [MYSQL_SCHEMA_VERSION]);
        if (version === 1) {
          // 1 -> 2. VARCHAR utf8mb4_bin pads with spaces when comparing ("a" = "a "), so such keys shared a count;
          // VARBINARY keeps the same bytes and compares them all. Repeating this after a crash is harmless.
          await c.query(`ALTER TABLE qp_rate_events MODIFY ${KEY_COLUMN}`);
          await c.query(`ALTER TABLE qp_rate_hits MODIFY ${KEY_COLUMN}`);
          // Then, in one transaction, only keys storedKey() changes (longer than it keeps, NUL, or containing its mark) move.
          await transaction(c, async () => {
            const long = '(LENGTH(`key`) > ? OR LOCATE(0x00, `key`) > 0 OR LOCATE(?, `key`) > 0)';
            const mark = Buffer.from(HASHED_KEY_MARK, 'utf8');
            const old = await q(
              c,
              `SELECT \`key\` FROM qp_rate_events WHERE ${long} UNION SELECT \`key\` FROM qp_rate_hits WHERE ${long}`,
              [STORE_KEY_MAX_BYTES, mark, STORE_KEY_MAX_BYTES, mark],
            );
            for (const [from, to] of rekeyPlan(old.map((r) => (r.key as Buffer).toString('utf8')))) {
              const args = [Buffer.from(to, 'utf8'), Buffer.from(from, 'utf8')];
              await c.query('UPDATE qp_rate_events SET `key` = ? WHERE `key` = ?', args);
              await c.query('UPDATE qp_rate_hits SET `key` = ? WHERE `key` = ?', args);
            }
            await c.query('UPDATE qp_schema SET version = 2');
          });
        }
        if (version !== undefined && version < 3) {
          // 2 -> 3. First the rename that makes every call of a version 2 process still running fail (DDL: it
          // waits for the statements running on the table), then, in one transaction, the events become
          // counts per second. After a crash in between, the rename is not repeated and the move is.
          const [col] = await q(
            c,
            "SELECT COUNT(*) AS n FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'qp_rate_events' AND COLUMN_NAME = 'n'",
          );
          if (Number(col!.n) > 0) await c.query(`ALTER TABLE qp_rate_events CHANGE n ${MOVED_COLUMN} INTEGER NOT NULL`);
          await transaction(c, async () => {
            await c.query(
              `INSERT INTO qp_rate_counts (\`key\`, at, n) SELECT \`key\`, at, SUM(${MOVED_COLUMN}) FROM qp_rate_events GROUP BY \`key\`, at`,
            );
            // The table stays, empty, so that a version 2 process starting finds it and refuses version 3.
            await c.query('DELETE FROM qp_rate_events');
            await c.query('UPDATE qp_schema SET version = ?', [MYSQL_SCHEMA_VERSION]);
          });
        }
      } finally {
        await c.query('SELECT RELEASE_LOCK(?)', ['qp:migrate']).catch(() => {});
        c.release();
      }
    }).catch((e: unknown) => {
      ready = undefined;
      throw e;
    }));
  await migrate();

  /** A lost connection or server: no point in trying each request of the group alone. */
  const isFatal = (e: unknown): boolean => (e as { fatal?: boolean }).fatal === true;
  /**
   * Each group slot holds a pool connection with autocommit off (so the
   * lock statement begins the transaction: no START TRANSACTION round trip),
   * returned to the pool only when it breaks.
   */
  const slots: (Conn | undefined)[] = [];
  const slotConn = async (slot: number): Promise<Conn> => {
    let c = slots[slot];
    if (c === undefined) {
      c = await pool.getConnection();
      try {
        await c.query('SET autocommit = 0');
      } catch (e) {
        c.destroy();
        throw e;
      }
      slots[slot] = c;
    }
    return c;
  };
  /** One group, in one transaction on its slot's connection. */
  const runGroup = async (slot: number, batch: readonly Waiting[]): Promise<ConsumeResult[]> => {
    const c = await slotConn(slot);
    try {
      const plan = planGroup(batch);
      if (plan.keys.length > 0) await lockKeys(c, plan.keys, (k) => plan.lastNow.get(k)!);
      // From here on, this transaction alone changes these keys: its reads, one snapshot taken after the
      // locks, see every write made to them. First every stored total of its keys, then in one statement
      // the per-second counts of the ranges it needs (i -1) and the sums of windows without a total (i >= 0).
      const hexRows = (r: Record<string, unknown>): string => (r.k as Buffer).toString('hex');
      const reads = readsFor(
        plan,
        plan.keys.length === 0
          ? []
          : (
              await q(
                c,
                `SELECT \`key\` AS k, seconds, edge, total FROM qp_rate_totals WHERE \`key\` IN (${plan.keys.map(() => '?').join(', ')}) AND seconds >= 0`,
                plan.keys.map(bin),
              )
            ).map((r) => [hexRows(r), Number(r.seconds), Number(r.edge), Number(r.total)] as const),
      );
      const parts: string[] = [];
      const args: unknown[] = [];
      if (reads.ranges.length > 0) {
        parts.push(
          `SELECT -1 AS i, \`key\` AS k, at AS a, n AS b FROM qp_rate_counts WHERE ${reads.ranges.map(() => '(`key` = ? AND at >= ? AND at < ?)').join(' OR ')}`,
        );
        args.push(...reads.ranges.flatMap((r) => [bin(r.key), r.from, r.to]));
      }
      for (const [i, g] of reads.fromOn.entries()) {
        parts.push(
          `SELECT ${i} AS i, \`key\` AS k, CAST(SUM(n) AS SIGNED) AS a, 0 AS b FROM qp_rate_counts WHERE \`key\` IN (${g.keys.map(() => '?').join(', ')}) AND at >= ? GROUP BY \`key\``,
        );
        args.push(...g.keys.map(bin), g.lo);
      }
      const read: GroupRead = { counts: [], sums: reads.fromOn.map(() => new Map<string, number>()) };
      if (parts.length > 0)
        for (const r of await q(c, parts.map((p) => `(${p})`).join(' UNION ALL '), args)) {
          const i = Number(r.i);
          if (i === -1) read.counts.push([hexRows(r), Number(r.a), Number(r.b)]);
          else read.sums[i]!.set(hexRows(r), Number(r.a));
        }
      const { results, writes } = answerGroup(plan, batch, read);
      if (writes.counts.length > 0)
        await c.query(
          `INSERT INTO qp_rate_counts (\`key\`, at, n) VALUES ${tuples(writes.counts.length, 3)} ON DUPLICATE KEY UPDATE n = n + VALUES(n)`,
          writes.counts.flatMap(([k, at, n]) => [bin(k), at, n]),
        );
      if (writes.totals.length > 0)
        await c.query(
          `INSERT INTO qp_rate_totals (\`key\`, seconds, edge, total) VALUES ${tuples(writes.totals.length, 4)} ON DUPLICATE KEY UPDATE edge = VALUES(edge), total = VALUES(total)`,
          writes.totals.flatMap(([k, sec, e, t]) => [bin(k), sec, e, t]),
        );
      await c.query('COMMIT');
      return results;
    } catch (e) {
      await c.query('ROLLBACK').catch(() => {});
      if (isFatal(e)) {
        slots[slot] = undefined;
        c.destroy();
      }
      throw e;
    }
  };
  const isDeadlock = (e: unknown): boolean => (e as { errno?: number }).errno === ER_LOCK_DEADLOCK;
  /**
   * Answers a group. A deadlock's victim runs again; any other failure of a
   * group of several runs each request alone, so that one request's failure
   * (say, a count out of range) does not fail the others.
   */
  const settle = async (slot: number, batch: Waiting[]): Promise<void> => {
    let results: ConsumeResult[] | undefined;
    let failure: unknown;
    for (let attempt = 0; results === undefined; attempt++) {
      try {
        await migrate();
        results = await runGroup(slot, batch);
      } catch (e) {
        if (isDeadlock(e) && attempt < MYSQL_DEADLOCK_RETRIES) continue;
        failure = e;
        break;
      }
    }
    if (results !== undefined) {
      batch.forEach((w, i) => w.resolve(results[i]!));
      return;
    }
    if (batch.length > 1 && !isFatal(failure)) {
      for (const w of batch) await settle(slot, [w]);
      return;
    }
    const err = failure instanceof StoreError ? failure : new StoreError(`mysql: ${(failure as Error).message}`);
    for (const w of batch) w.reject(err);
  };
  const waiting: Waiting[] = [];
  let inFlight = 0;
  let scheduled = false;
  /** Starts groups of what waits, up to MYSQL_GROUPS_IN_FLIGHT at once; a finished group starts the next. */
  const free = Array.from({ length: MYSQL_GROUPS_IN_FLIGHT }, (_, i) => i);
  const pump = (): void => {
    scheduled = false;
    while (free.length > 0 && waiting.length > 0) {
      const slot = free.pop()!;
      inFlight++;
      void settle(slot, waiting.splice(0, MYSQL_GROUP_MAX)).finally(() => {
        inFlight--;
        free.push(slot);
        pump();
      });
    }
  };
  return {
    name: 'mysql',
    consume: (req) =>
      new Promise((resolve, reject) => {
        // Mapped before queueing: a key refused here fails its own request, not its group.
        let keys: string[];
        try {
          keys = req.buckets.map((b) => hexOf(b.key));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        waiting.push({ req, keys, resolve, reject });
        // The requests that arrive in this turn of the event loop go together.
        if (!scheduled) {
          scheduled = true;
          setImmediate(pump);
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
          await rows('SELECT at, n FROM qp_rate_counts WHERE `key` = ? AND at >= ? ORDER BY at', [
            bin(hexOf(key)),
            since,
          ])
        ).map((r) => ({ at: Number(r.at), n: Number(r.n) }));
      }),
    // Under the key's lock row, as a check takes it: the count and the delete see the same rows.
    reset: (key) =>
      wrap(async () => {
        await migrate();
        const k = hexOf(key);
        return withConn((c) =>
          transaction(c, async () => {
            await lockKeys(c, [k], () => 0);
            const [r] = await q(
              c,
              'SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS n FROM qp_rate_counts WHERE `key` = ?',
              [bin(k)],
            );
            await c.query('DELETE FROM qp_rate_counts WHERE `key` = ?', [bin(k)]);
            await c.query('DELETE FROM qp_rate_totals WHERE `key` = ?', [bin(k)]);
            return Number(r!.n);
          }),
        );
      }),
    recordHit: (key, seconds) =>
      wrap(async () => {
        await pool.query(
          'INSERT INTO qp_rate_hits (`key`, seconds, hits) VALUES (?, ?, 1) ON DUPLICATE KEY UPDATE hits = hits + 1',
          [bin(hexOf(key)), seconds],
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
        await migrate();
        const [r] = await rows('SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS n FROM qp_rate_counts WHERE at < ?', [
          olderThan,
        ]);
        await pool.query('DELETE FROM qp_rate_counts WHERE at < ?', [olderThan]);
        // Then totals whose edge the deleted counts were at or after (rebuilt from the counts if asked again),
        // and lock rows of keys not checked since. A check that read such a total before the delete of the
        // counts subtracts them from its own snapshot, and writes its total at an edge after them.
        await pool.query('DELETE FROM qp_rate_totals WHERE edge < ?', [olderThan]);
        await pool.query('OPTIMIZE TABLE qp_rate_counts, qp_rate_totals, qp_rate_hits');
        return Number(r!.n);
      }),
    // Requests still waiting for their group are answered before the pool closes.
    close: async () => {
      while (waiting.length > 0 || inFlight > 0) await new Promise((r) => setTimeout(r, 5));
      for (const c of slots) c?.release();
      await pool.end();
    },
  };
}
