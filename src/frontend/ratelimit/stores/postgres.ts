// PostgreSQL (pg): for several MX hosts sharing exact limits. Per-key
// transaction-scoped advisory locks, taken in sorted order, make
// check-and-record atomic across every instance. Events are rows; beside
// them, running totals per key and window length (qp_rate_totals, kept by a
// trigger on every write to the events, whichever process or release makes
// it): a check moves a window's start to now - seconds and subtracts only
// the events it passes, so a key with a day of events costs what a fresh
// one does. Group commit: the checks that arrive while one is at the server
// go together in one call of a server-side function (qp_consume_4), one
// round trip and one transaction for all of them, each still seeing the ones
// before it.
import type { RateStore, ConsumeRequest, ConsumeResult } from '../store.js';
import { storeCall } from './wrap.js';
import { certificateFailure, type StoreTls } from '../store-tls.js';
import type { Limit } from '../decide.js';
import {
  StoreError,
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

/**
 * Version of the PostgreSQL tables (MariaDB/MySQL: SCHEMA_VERSION). 1 and 2
 * as SCHEMA_VERSION says; 3: running totals (qp_rate_totals: per key and
 * window length, the window's start and the events from it on), kept by a
 * trigger on qp_rate_events. 4: the same tables, and the function
 * qp_consume_4 that checks and records a group of requests in one call. A
 * process of an older version still running when the tables are converted
 * stays exact (the trigger keeps the totals whoever writes the events, and
 * both take the same per-key locks in the same order); one started
 * afterwards refuses the newer tables.
 */
export const PG_SCHEMA_VERSION = 4;

/**
 * Connections per daemon: the checks go in groups, PG_GROUPS_IN_FLIGHT at a
 * time; the rest serve limitsFor, events, reset, hits and clean.
 */
export const PG_POOL_SIZE = 8;
/**
 * Requests in one group at most: bounds how long one transaction holds its
 * keys' locks (a few microseconds a request) and the arrays of one call.
 */
export const PG_GROUP_MAX = 256;
/**
 * Groups at the server at once. Two: while one runs, the next is sent, so the
 * server never waits for the front; more would mostly queue on the same keys'
 * locks (measured: docs/BENCHMARKS.md, "PostgreSQL, group commit").
 */
export const PG_GROUPS_IN_FLIGHT = 2;
/** The events one request may add: qp_rate_events.n is an INTEGER. */
export const PG_MAX_N = 2 ** 31 - 1;
/**
 * PostgreSQL's codes for a transaction it aborted so that another could go
 * on (deadlock detected; serialization failure): nothing of the group was
 * recorded, so it is sent once more. A deadlock needs two lockers that
 * disagree on the order of their keys, or two keys whose lock ids
 * (hashtextextended) collide.
 */
const RETRY_CODES: readonly string[] = ['40P01', '40001'];

/** Advisory lock id held while creating or migrating the tables ("qp" in ASCII). */
const MIGRATION_LOCK = 0x7170;
/**
 * What PgBouncer in statement pooling mode answers a BEGIN with (it then
 * drops the connection): it hands each statement to any server connection,
 * so a transaction of several cannot run. Only creating or converting the
 * tables needs one; every other call of this store is a single statement.
 */
const STATEMENT_POOLING = /transaction blocks not allowed/;
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

/**
 * pg's ssl option: store_tls's files, the chain and the host name verified
 * (pg passes the host it connects to as the name to check; the config check
 * refused every TLS parameter of the URL, which would override this). false,
 * not undefined, without store_tls: else pg would take PGSSLMODE from the
 * environment.
 */
const pgSsl = (tls: StoreTls | undefined): false | (StoreTls & { rejectUnauthorized: true }) =>
  tls === undefined ? false : { ...tls, rejectUnauthorized: true };

/** One connection that reads, never writes: what check-config and the start-up warning try (see startup/store-probe.ts). */
interface ProbeClient {
  connect(): Promise<unknown>;
  query: Client['query'];
  end(): Promise<void>;
  on(ev: 'error', f: (e: Error) => void): void;
}

/** Connects, and checks the encoding and that the tables (if any) are not newer than this version. */
export async function probePostgres(url: string, timeoutMs: number, tls?: StoreTls): Promise<void> {
  const { default: pg } = await import('pg');
  // Typed as the calls the probe makes; tsc checks pg's own Client fits them.
  const c: ProbeClient = new pg.Client({
    connectionString: url,
    ssl: pgSsl(tls),
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
    throw e instanceof StoreError ? e : new StoreError(`postgresql: ${certificateFailure(e) ?? (e as Error).message}`);
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * How qp_consume_4 and the totals' triggers are planned: by key, through the
 * primary key and the (key, at) index, whatever the tables' statistics say.
 * One busy key skews them (every key then looks like it holds thousands of
 * events): measured here, the planner compiled the group's query with JIT,
 * 1.6 s a call for work of 1 ms, and chose bitmap and hash plans that scan
 * every running total (one per key and window: they grow with the ids) for
 * a group of a few dozen keys. Generic plans: the same plan for every
 * call, made once per connection (a custom plan per call, the default's
 * choice, was 40% of the function's time).
 */
const KEYED_PLANS =
  'SET jit = off SET enable_seqscan = off SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan';

/**
 * Checks and records a group of requests in one transaction, in their order,
 * each seeing the ones before it. The caller plans it (planGroup): p_keys,
 * every key of the group as stored, in lock order; a slot per key, window
 * length and window start; per request its events (n), its clock and commit;
 * its checks in order (slot and count each), the slots its events add to,
 * and the keys it records an event under. Returns per request the first
 * check it breaks (its index in the checks, 0 if none) and what that window
 * held (the test is breaks(): used + n > count). The locks are those a version 3 process takes (one per key, in the
 * same order), and the events go to the same table, so the totals' trigger
 * keeps both exact. A moved window start is kept even for a refused request
 * (a key checked again costs no more).
 */
const CONSUME_FUNCTION = `CREATE OR REPLACE FUNCTION qp_consume_4(
  p_keys text[], p_slot_key int[], p_slot_seconds bigint[], p_slot_start bigint[],
  p_req_n int[], p_req_now bigint[], p_req_commit boolean[],
  p_chk_req int[], p_chk_slot int[], p_chk_count bigint[],
  p_inc_req int[], p_inc_slot int[], p_ev_req int[], p_ev_key int[],
  OUT bad int[], OUT bad_used bigint[]) LANGUAGE plpgsql ${KEYED_PLANS} AS $$
DECLARE
  k text;
  used bigint[];
  nreq int := cardinality(p_req_n);
  ok boolean[] := array_fill(false, ARRAY[nreq]);
  good boolean;
  c int := 1;
  i int := 1;
BEGIN
  bad := array_fill(0, ARRAY[nreq]);
  bad_used := array_fill(0::bigint, ARRAY[nreq]);
  FOREACH k IN ARRAY p_keys LOOP
    PERFORM pg_advisory_xact_lock(hashtextextended(k, 0));
  END LOOP;
  -- A clean or reset running meanwhile (their trigger updates) finishes first; the reads below see it.
  PERFORM 1 FROM qp_rate_totals WHERE key = ANY (p_keys) FOR UPDATE;
  -- Each window of a key moves its start forward to the latest asked in the group, once;
  -- a slot whose start lies behind it adds the events between.
  WITH s AS (
    SELECT u.i, p_keys[u.k] AS key, u.sec, u.st
    FROM unnest(p_slot_key, p_slot_seconds, p_slot_start) WITH ORDINALITY AS u (k, sec, st, i)
  ), cur AS (
    SELECT g.key, g.sec, g.st, w.edge, w.total
    FROM (SELECT s.key, s.sec, max(s.st) AS st FROM s GROUP BY s.key, s.sec) g
    LEFT JOIN qp_rate_totals w ON w.key = g.key AND w.seconds = g.sec
  ), nxt AS (
    SELECT cur.key, cur.sec,
      CASE WHEN cur.edge IS NULL OR cur.edge < cur.st THEN cur.st ELSE cur.edge END AS edge,
      CASE
        WHEN cur.edge IS NULL THEN
          (SELECT COALESCE(SUM(e.n), 0) FROM qp_rate_events e WHERE e.key = cur.key AND e.at >= cur.st)
        WHEN cur.edge < cur.st THEN cur.total -
          (SELECT COALESCE(SUM(e.n), 0) FROM qp_rate_events e WHERE e.key = cur.key AND e.at >= cur.edge AND e.at < cur.st)
        ELSE cur.total
      END AS total,
      cur.edge IS NULL OR cur.edge < cur.st AS moved
    FROM cur
  ), saved AS (
    INSERT INTO qp_rate_totals (key, seconds, edge, total)
    SELECT nxt.key, nxt.sec, nxt.edge, nxt.total FROM nxt WHERE nxt.moved
    ON CONFLICT (key, seconds) DO UPDATE SET edge = EXCLUDED.edge, total = EXCLUDED.total
  )
  SELECT array_agg(nxt.total + CASE WHEN nxt.edge > s.st THEN
      (SELECT COALESCE(SUM(e.n), 0) FROM qp_rate_events e WHERE e.key = s.key AND e.at >= s.st AND e.at < nxt.edge)
      ELSE 0 END ORDER BY s.i)
  INTO used FROM s JOIN nxt ON nxt.key = s.key AND nxt.sec = s.sec;
  FOR r IN 1..nreq LOOP
    good := true;
    WHILE c <= cardinality(p_chk_req) AND p_chk_req[c] = r LOOP
      IF good AND used[p_chk_slot[c]] + p_req_n[r] > p_chk_count[c] THEN
        good := false;
        bad[r] := c;
        bad_used[r] := used[p_chk_slot[c]];
      END IF;
      c := c + 1;
    END LOOP;
    ok[r] := good AND p_req_commit[r];
    WHILE i <= cardinality(p_inc_req) AND p_inc_req[i] = r LOOP
      IF ok[r] THEN
        used[p_inc_slot[i]] := used[p_inc_slot[i]] + p_req_n[r];
      END IF;
      i := i + 1;
    END LOOP;
  END LOOP;
  INSERT INTO qp_rate_events (key, at, n)
  SELECT p_keys[e.k], p_req_now[e.r], p_req_n[e.r] FROM unnest(p_ev_req, p_ev_key) AS e (r, k) WHERE ok[e.r];
END $$`;

/** One group's arguments to qp_consume_4, in its parameter order, and how to read its answer. */
export interface GroupPlan {
  args: [
    keys: string[],
    slotKey: number[],
    slotSeconds: number[],
    slotStart: number[],
    reqN: number[],
    reqNow: number[],
    reqCommit: boolean[],
    chkReq: number[],
    chkSlot: number[],
    chkCount: number[],
    incReq: number[],
    incSlot: number[],
    evReq: number[],
    evKey: number[],
  ];
  /** Per check (0-based): the bucket's key as decide.ts made it, and the limit. */
  checks: { key: string; limit: Limit }[];
}

/**
 * Plans a group (pure). Requests are numbered from 1 as SQL arrays are; keys
 * are locked in lockOrder()'s order over the whole group, the order every
 * process takes them in (a version 3 one per request, a subset of it).
 * stored: each request's buckets' storedKey(). A request's events add to
 * every slot of its keys whose window holds its second (start <= now).
 */
export function planGroup(reqs: readonly { req: ConsumeRequest; stored: readonly string[] }[]): GroupPlan {
  const original = new Map<string, string>();
  for (const { req, stored } of reqs) req.buckets.forEach((b, j) => original.set(b.key, stored[j]!));
  const keys: string[] = [];
  const keyIndex = new Map<string, number>();
  for (const k of lockOrder([...original.keys()].map((key) => ({ key, limits: [] })))) {
    const st = original.get(k)!;
    if (!keyIndex.has(st)) keyIndex.set(st, keys.push(st));
  }
  const args: GroupPlan['args'] = [keys, [], [], [], [], [], [], [], [], [], [], [], [], []];
  const [
    ,
    slotKey,
    slotSeconds,
    slotStart,
    reqN,
    reqNow,
    reqCommit,
    chkReq,
    chkSlot,
    chkCount,
    incReq,
    incSlot,
    evReq,
    evKey,
  ] = args;
  const checks: GroupPlan['checks'] = [];
  const slots = new Map<string, number>();
  const slotsOfKey = new Map<number, number[]>();
  const slot = (k: number, seconds: number, start: number): number => {
    const id = `${k}/${seconds}/${start}`;
    let s = slots.get(id);
    if (s === undefined) {
      s = slotKey.push(k);
      slotSeconds.push(seconds);
      slotStart.push(start);
      slots.set(id, s);
      slotsOfKey.set(k, [...(slotsOfKey.get(k) ?? []), s]);
    }
    return s;
  };
  reqs.forEach(({ req, stored }, r0) => {
    const r = r0 + 1;
    reqN.push(req.n);
    reqNow.push(req.nowSec);
    reqCommit.push(req.commit);
    req.buckets.forEach((b, j) => {
      const k = keyIndex.get(stored[j]!)!;
      evReq.push(r);
      evKey.push(k);
      for (const limit of b.limits) {
        chkReq.push(r);
        chkSlot.push(slot(k, limit[1], req.nowSec - limit[1]));
        chkCount.push(limit[0]);
        checks.push({ key: b.key, limit });
      }
    });
  });
  // Every slot is known now; a slot of a later request may hold this one's second too.
  reqs.forEach(({ req, stored }, r0) => {
    for (const st of stored)
      for (const s of slotsOfKey.get(keyIndex.get(st)!) ?? [])
        if (slotStart[s - 1]! <= req.nowSec) {
          incReq.push(r0 + 1);
          incSlot.push(s);
        }
  });
  return { args, checks };
}

/** The answer for each request of a group, from qp_consume_4's. */
export function groupResults(plan: GroupPlan, bad: readonly number[], badUsed: readonly unknown[]): ConsumeResult[] {
  return bad.map((c, i) => {
    if (c === 0) return { ok: true };
    const chk = plan.checks[c - 1]!;
    return { ok: false, key: chk.key, limit: chk.limit, used: Number(badUsed[i]) };
  });
}

interface Waiting {
  req: ConsumeRequest;
  stored: string[];
  resolve: (r: ConsumeResult) => void;
  reject: (e: unknown) => void;
}

/**
 * The group commit: a request waits while PG_GROUPS_IN_FLIGHT groups are at
 * the server, then goes with every other waiting one (up to PG_GROUP_MAX) in
 * one call. A request the store cannot take (a key storedKey() refuses, more
 * events than a row holds) fails alone, before it joins a group; a failed
 * call fails its group (nothing of it was recorded: one transaction), and
 * each of its requests answers db_error_action.
 */
function grouper(
  call: (sql: string, values: unknown[]) => Promise<Record<string, unknown>>,
  ready: () => Promise<void>,
): { consume(req: ConsumeRequest): Promise<ConsumeResult>; drain(): Promise<void> } {
  const waiting: Waiting[] = [];
  let inFlight = 0;
  let idle: (() => void)[] = [];
  const sql = `SELECT bad, bad_used FROM qp_consume_4(${Array.from({ length: 14 }, (_, i) => `$${i + 1}`).join(', ')})`;
  const run = async (batch: Waiting[]): Promise<void> => {
    const plan = planGroup(batch);
    try {
      await ready();
      let row: Record<string, unknown>;
      try {
        row = await call(sql, plan.args);
      } catch (e) {
        if (!RETRY_CODES.includes(String((e as { code?: unknown }).code))) throw e;
        row = await call(sql, plan.args);
      }
      const results = groupResults(plan, row.bad as number[], row.bad_used as unknown[]);
      batch.forEach((w, i) => w.resolve(results[i]!));
    } catch (e) {
      const err = e instanceof StoreError ? e : new StoreError(`postgresql: ${(e as Error).message}`);
      for (const w of batch) w.reject(err);
    }
  };
  const pump = (): void => {
    while (inFlight < PG_GROUPS_IN_FLIGHT && waiting.length > 0) {
      inFlight++;
      void run(waiting.splice(0, PG_GROUP_MAX)).finally(() => {
        inFlight--;
        pump();
        if (inFlight === 0 && waiting.length === 0) {
          for (const f of idle) f();
          idle = [];
        }
      });
    }
  };
  return {
    consume: (req) =>
      new Promise((resolve, reject) => {
        let stored: string[];
        try {
          if (!Number.isSafeInteger(req.n) || req.n < 0 || req.n > PG_MAX_N)
            throw new StoreError(`postgresql: ${req.n} events in one request; a row holds 0 to ${PG_MAX_N}`);
          stored = req.buckets.map((b) => storedKey(b.key));
        } catch (e) {
          reject(e instanceof Error ? e : new Error(String(e)));
          return;
        }
        waiting.push({ req, stored, resolve, reject });
        // A turn of the event loop first: the requests that arrive together go together.
        if (waiting.length === 1) setImmediate(pump);
      }),
    drain: () =>
      inFlight === 0 && waiting.length === 0
        ? Promise.resolve()
        : new Promise((resolve) => {
            idle.push(resolve);
            pump();
          }),
  };
}

/**
 * Creates or converts the tables, inside a transaction the caller opened and
 * ends. Its first statement takes MIGRATION_LOCK for the transaction:
 * instances starting together must not race on CREATE TABLE IF NOT EXISTS
 * (it can fail in PostgreSQL), and a transaction-scoped lock is the one a
 * pooler in transaction mode (PgBouncer) keeps on one server connection from
 * lock to release; a session lock and its unlock could land on two, leaving
 * the lock held by a pooled connection for good. Every step is one
 * transaction with it: nothing is half-converted, and no write to the events
 * goes by without the totals' trigger.
 */
async function migrateInTransaction(c: Client): Promise<void> {
  await c.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
  await c.query(`CREATE TABLE IF NOT EXISTS qp_schema (version INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS qp_rate_events (key TEXT NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL);
      CREATE INDEX IF NOT EXISTS qp_rate_events_key_at ON qp_rate_events (key, at);
      CREATE TABLE IF NOT EXISTS qp_rate_hits (key TEXT NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (key, seconds))`);
  const v = await c.query('SELECT version FROM qp_schema');
  const version = v.rows.length === 0 ? undefined : Number(v.rows[0]!.version);
  if (version !== undefined && version > PG_SCHEMA_VERSION)
    throw new StoreError(`schema version ${String(v.rows[0]!.version)} is newer than this quotapolicy`);
  if (version !== undefined && version < 2) {
    // 1 -> 2: only keys storedKey() changes (long, or containing its mark) move; every other keeps its rows.
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
  }
  if (version === undefined || version < 3) {
    // 2 -> 3 (and new tables).
    // The totals start empty; each is built from the events when a check first asks for its window.
    // Invariant, per row: total = the key's events from the second edge on. The triggers run once per
    // statement with the rows it changed (a clean deleting a million events runs one UPDATE, not a million).
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
    if (version === undefined) await c.query('INSERT INTO qp_schema (version) VALUES (3)');
    else await c.query('UPDATE qp_schema SET version = 3');
  }
  if (version === undefined || version < 4) {
    // 3 -> 4: a function; the tables, triggers and locks stay, so a version 3 process beside stays exact.
    await c.query(CONSUME_FUNCTION);
    for (const f of ['add', 'sub']) await c.query(`ALTER FUNCTION qp_rate_totals_${f}() ${KEYED_PLANS}`);
    await c.query('UPDATE qp_schema SET version = 4');
  }
}

export async function openPostgres(
  url: string,
  sqlLimitsById: string,
  timeoutMs: number,
  tls?: StoreTls,
): Promise<RateStore> {
  const { default: pg } = await import('pg');
  // Typed as the calls this file makes; tsc checks pg's own types fit them.
  const pool: Pool = new pg.Pool({
    connectionString: url,
    ssl: pgSsl(tls),
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
      await withClient(async (c) => {
        // Tables already current (every open but the first): two single statements, no lock, no transaction.
        const found = (
          await c.query("SELECT current_setting('server_encoding') AS enc, to_regclass('qp_schema') IS NOT NULL AS t")
        ).rows[0]!;
        checkEncoding(String(found.enc));
        if (found.t === true) {
          const v = (await c.query('SELECT max(version) AS v FROM qp_schema')).rows[0]!.v;
          if (v !== null && Number(v) > PG_SCHEMA_VERSION)
            throw new StoreError(`schema version ${Number(v)} is newer than this quotapolicy`);
          if (v !== null && Number(v) === PG_SCHEMA_VERSION) return;
        }
        try {
          await c.query('BEGIN');
        } catch (e) {
          if (STATEMENT_POOLING.test((e as Error).message))
            throw new StoreError(
              `postgresql: the tables need creating or converting to schema ${PG_SCHEMA_VERSION}, one transaction of several statements, and the pooler refused it (${(e as Error).message}): open the store once directly or through PgBouncer's transaction pooling`,
            );
          throw e;
        }
        try {
          await migrateInTransaction(c);
          await c.query('COMMIT');
        } catch (e) {
          // Nothing of it stays, and the lock goes with the transaction (the client is destroyed too).
          await c.query('ROLLBACK').catch(() => {});
          throw e;
        }
      });
    }).catch((e: unknown) => {
      ready = undefined;
      throw e;
    }));
  await migrate();
  const group = grouper(
    (sql, values) => wrap(async () => (await pool.query(sql, values)).rows[0]!),
    async () => {
      await migrate();
    },
  );
  return {
    name: 'postgresql',
    consume: (req) => group.consume(req),
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
    // Requests still waiting for their group are answered before the pool closes.
    close: async () => {
      await group.drain();
      await pool.end();
    },
  };
}
