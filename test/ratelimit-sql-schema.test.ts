// PostgreSQL and MariaDB schema 2 (keys as storedKey() makes them; MariaDB
// keys VARBINARY) and the conversion of version 1 tables written by an
// earlier quotapolicy (MariaDB's on to version 3: ratelimit-mysql-totals); PostgreSQL's later versions
// converted under a running process of the release before (support/postgres-v3.ts is that release's
// store), each in a database of its own made for the test (and
// dropped after), so no other test sees a half-converted table. Also the
// store's refusal of a PostgreSQL database that cannot hold every key, and
// MariaDB keys compared as bytes whatever the connection's character set.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import mysql from 'mysql2/promise';
import { STORE_URLS } from './support/stores.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import { storedKey, type RateStore, type ConsumeResult, type ConsumeRequest } from '../src/frontend/ratelimit/store.js';
import { PG_SCHEMA_VERSION } from '../src/frontend/ratelimit/stores/postgres.js';
import { MYSQL_SCHEMA_VERSION } from '../src/frontend/ratelimit/stores/mysql.js';
import { openPostgres as openPostgresV3 } from './support/postgres-v3.js';
import { rng, modelUsed } from './support/window-model.js';

const T = 1_800_000_000;
const scratch = `qp_schema_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const dropped: (() => Promise<void>)[] = [];
after(async () => {
  for (const d of dropped) await d();
});

/** The test server's URL with another database. */
function withDatabase(url: string, db: string, query = ''): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  for (const [k, v] of new URLSearchParams(query)) u.searchParams.set(k, v);
  return u.toString();
}

async function pgAdmin(sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: STORE_URLS.postgresql });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}
async function pgDatabase(name: string, options = ''): Promise<string> {
  await pgAdmin(`CREATE DATABASE ${name} ${options}`);
  dropped.push(() => pgAdmin(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  return withDatabase(STORE_URLS.postgresql, name);
}
async function mysqlDatabase(name: string): Promise<string> {
  const c = await mysql.createConnection({ uri: STORE_URLS.mysql });
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  dropped.push(async () => {
    const d = await mysql.createConnection({ uri: STORE_URLS.mysql });
    await d.query(`DROP DATABASE IF EXISTS ${name}`);
    await d.end();
  });
  return withDatabase(STORE_URLS.mysql, name);
}
const open = (backend: 'postgresql' | 'mysql', url: string): Promise<RateStore> =>
  openStore({ ...NO_STORE_TLS, backend, url, sqlite_path: '', timeout_ms: 5000, sql_limits_by_id: '' });

/** Keys a version 1 store held, with the events each has (at T - 1 and T) and its hits. */
const long = `sender:${'l'.repeat(1000)}`;
const forged = storedKey(`sender:${'f'.repeat(700)}`); // someone sent a key that reads like a stored form

async function assertCounts(s: RateStore, keys: Record<string, number>): Promise<void> {
  for (const [k, n] of Object.entries(keys)) {
    assert.deepEqual(
      await s.consume({ buckets: [{ key: k, limits: [[n, 60]] }], n: 1, nowSec: T, commit: false }),
      { ok: false, key: k, limit: [n, 60], used: n },
      JSON.stringify(k.slice(0, 24)),
    );
  }
}

test('postgresql: version 1 tables are converted: long and marked keys move to their stored form with their counts, short keys keep theirs', async () => {
  const url = await pgDatabase(`${scratch}_pg1`);
  const keys: Record<string, number> = { 'sasl:a': 3, [`sender:${'s'.repeat(500)}`]: 4, [long]: 5, [forged]: 6 };
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  await c.query(`CREATE TABLE qp_schema (version INTEGER NOT NULL); INSERT INTO qp_schema VALUES (1);
    CREATE TABLE qp_rate_events (key TEXT NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL);
    CREATE INDEX qp_rate_events_key_at ON qp_rate_events (key, at);
    CREATE TABLE qp_rate_hits (key TEXT NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (key, seconds))`);
  for (const [k, n] of Object.entries(keys)) {
    await c.query('INSERT INTO qp_rate_events VALUES ($1, $2, 1), ($1, $3, $4)', [k, T - 1, T, n - 1]);
    await c.query('INSERT INTO qp_rate_hits VALUES ($1, 86400, $2)', [k, n]);
  }
  const s = await open('postgresql', url);
  try {
    await assertCounts(s, keys);
    assert.deepEqual(
      (await s.hits()).map((h) => [h.key, h.hits]).sort(),
      Object.entries(keys)
        .map(([k, n]) => [storedKey(k), n])
        .sort(),
    );
  } finally {
    await s.close();
  }
  assert.equal((await c.query('SELECT version FROM qp_schema')).rows[0].version, PG_SCHEMA_VERSION);
  const held = (await c.query('SELECT DISTINCT key FROM qp_rate_events')).rows.map((r) => r.key as string).sort();
  assert.deepEqual(held, Object.keys(keys).map(storedKey).sort());
  await c.end();
});

test('postgresql: a database whose encoding cannot hold every key is refused with one clear error', async () => {
  const url = await pgDatabase(`${scratch}_latin1`, "ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
  await assert.rejects(open('postgresql', url), {
    name: 'StoreError',
    message:
      "postgresql: database encoding LATIN1 cannot hold every key (any Unicode text); create the database with ENCODING 'UTF8'",
  });
});

test('mysql: version 1 tables are converted: VARBINARY keys, "a" apart from "a ", long, NUL and marked keys moved with their counts', async () => {
  const url = await mysqlDatabase(`${scratch}_my1`);
  const cjk = `sender:${'\u65e5'.repeat(248)}`; // 255 characters, 751 bytes: the widest key VARCHAR(255) took
  const keys: Record<string, number> = {
    'sender:a': 2,
    'sender:a ': 3,
    'sender:A': 4,
    [cjk]: 5,
    'sender:x\0y': 6,
    [forged]: 7,
  };
  const c = await mysql.createConnection({ uri: url });
  // Exactly what version 1 created.
  await c.query('CREATE TABLE qp_schema (version INTEGER NOT NULL)');
  await c.query('INSERT INTO qp_schema VALUES (1)');
  await c.query(
    'CREATE TABLE qp_rate_events (`key` VARCHAR(255) NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL, INDEX qp_rate_events_key_at (`key`, at)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
  );
  await c.query(
    'CREATE TABLE qp_rate_hits (`key` VARCHAR(255) NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (`key`, seconds)) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin',
  );
  for (const [k, n] of Object.entries(keys))
    await c.query('INSERT INTO qp_rate_events VALUES (?, ?, 1), (?, ?, ?)', [k, T - 1, k, T, n - 1]);
  const [v1] = await c.query("SELECT CAST(SUM(n) AS SIGNED) AS used FROM qp_rate_events WHERE `key` = 'sender:a'");
  assert.equal(
    Number((v1 as { used: number }[])[0]!.used),
    5,
    'version 1 compared with PAD SPACE: "sender:a " counted as "sender:a"',
  );
  for (const k of ['sender:a', cjk, forged])
    await c.query('INSERT INTO qp_rate_hits VALUES (?, 86400, ?)', [k, keys[k]]);

  const s = await open('mysql', url);
  try {
    await assertCounts(s, keys);
    assert.deepEqual(
      (await s.hits()).map((h) => [h.key, h.hits]).sort(),
      [
        ['sender:a', 2],
        [storedKey(cjk), 5],
        [storedKey(forged), 7],
      ].sort(),
    );
  } finally {
    await s.close();
  }
  const [cols] = await c.query(
    "SELECT TABLE_NAME AS t, COLUMN_TYPE AS type FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND COLUMN_NAME = 'key' ORDER BY TABLE_NAME",
  );
  assert.deepEqual(cols, [
    { t: 'qp_rate_counts', type: 'varbinary(1020)' },
    { t: 'qp_rate_events', type: 'varbinary(1020)' },
    { t: 'qp_rate_hits', type: 'varbinary(1020)' },
    { t: 'qp_rate_totals', type: 'varbinary(1020)' },
  ]);
  const [ver] = await c.query('SELECT version FROM qp_schema');
  assert.deepEqual(ver, [{ version: MYSQL_SCHEMA_VERSION }]);
  const [held] = await c.query('SELECT DISTINCT `key` FROM qp_rate_counts');
  assert.deepEqual(
    (held as { key: Buffer }[]).map((r) => r.key.toString('utf8')).sort(),
    Object.keys(keys).map(storedKey).sort(),
  );
  await c.end();
});

test('mysql: keys are compared as bytes whatever the connection character set (charset=latin1 in the URL)', async () => {
  const url = await mysqlDatabase(`${scratch}_my2`);
  const s = await open('mysql', withDatabase(url, `${scratch}_my2`, 'charset=latin1'));
  try {
    const keys = ['sender:\u65e5', 'sender:\u672c', 'sender:?', 'sender:\u00e9', 'sender:e'];
    for (const key of keys)
      assert.deepEqual(
        await s.consume({ buckets: [{ key, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true }),
        { ok: true },
        `${key}: merged with another key`,
      );
    for (const key of keys)
      assert.deepEqual(await s.consume({ buckets: [{ key, limits: [[1, 60]] }], n: 1, nowSec: T, commit: true }), {
        ok: false,
        key,
        limit: [1, 60],
        used: 1,
      });
    await s.recordHit('sender:\u65e5', 60);
    assert.deepEqual(await s.hits(), [{ key: 'sender:\u65e5', seconds: 60, hits: 1 }]);
  } finally {
    await s.close();
  }
});

test('postgresql: version 2 tables get running totals; with a version 2 process writing beside, clocks apart and clean, every answer is exact', async () => {
  const url = await pgDatabase(`${scratch}_pg2`);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  // Exactly what version 2 created, with a day of events for one key (10 a second in its last minute).
  await c.query(`CREATE TABLE qp_schema (version INTEGER NOT NULL); INSERT INTO qp_schema VALUES (2);
    CREATE TABLE qp_rate_events (key TEXT NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL);
    CREATE INDEX qp_rate_events_key_at ON qp_rate_events (key, at);
    CREATE TABLE qp_rate_hits (key TEXT NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (key, seconds))`);
  await c.query('INSERT INTO qp_rate_events SELECT $1, $2 + g, 1 FROM generate_series(0, 86399) g', [
    'sasl:news',
    T - 86400,
  ]);
  await c.query('INSERT INTO qp_rate_events SELECT $1, $2 + g / 10, 1 FROM generate_series(0, 599) g', [
    'sasl:news',
    T - 60,
  ]);
  const s = await open('postgresql', url);
  try {
    const day = [[86_400 + 600, 86400] as const, [660, 60] as const];
    assert.deepEqual(
      await s.consume({ buckets: [{ key: 'sasl:news', limits: day }], n: 1, nowSec: T, commit: false }),
      {
        ok: false,
        key: 'sasl:news',
        limit: [86_400 + 600, 86400],
        used: 86_400 + 600,
      },
    );
    assert.equal(
      (await c.query<{ version: number }>('SELECT version FROM qp_schema')).rows[0]!.version,
      PG_SCHEMA_VERSION,
    );
    assert.deepEqual(
      (
        await c.query(
          'SELECT seconds::int, edge::bigint - $1 AS edge, total::int FROM qp_rate_totals ORDER BY seconds',
          [T],
        )
      ).rows,
      [
        { seconds: 60, edge: '-60', total: 660 },
        { seconds: 86400, edge: '-86400', total: 86_400 + 600 },
      ],
    );
    // A version 2 process's check: its sums, its insert, under the same per-key lock.
    const old = async (
      key: string,
      limits: readonly (readonly [number, number])[],
      n: number,
      now: number,
      commit: boolean,
    ): Promise<ConsumeResult> => {
      await c.query('BEGIN');
      await c.query('SELECT pg_advisory_xact_lock(hashtextextended($1, 0))', [key]);
      for (const limit of limits) {
        const used = Number(
          (
            await c.query<{ used: string }>(
              'SELECT COALESCE(SUM(n), 0)::bigint AS used FROM qp_rate_events WHERE key = $1 AND at >= $2',
              [key, now - limit[1]],
            )
          ).rows[0]!.used,
        );
        if (used + n > limit[0]) {
          await c.query('ROLLBACK');
          return { ok: false, key, limit, used };
        }
      }
      if (commit) await c.query('INSERT INTO qp_rate_events (key, at, n) VALUES ($1, $2, $3)', [key, now, n]);
      await c.query('COMMIT');
      return { ok: true };
    };
    const next = rng(11);
    const WINDOWS = [2, 10, 30];
    const every = new Map<string, Map<number, number>>();
    for (let round = 0; round < 4; round++) {
      const key = `sasl:model-${round}`;
      const events = new Map<number, number>();
      every.set(key, events);
      let maxNow = T;
      for (let step = 0; step < 150; step++) {
        maxNow += next() < 0.5 ? 0 : Math.floor(next() * 4);
        const now = maxNow - Math.floor(next() * 4);
        const limits = WINDOWS.filter(() => next() < 0.6).map((w) => [Math.floor(next() * 40), w] as const);
        if (limits.length === 0) limits.push([Math.floor(next() * 40), WINDOWS[0]!]);
        const n = 1 + Math.floor(next() * 3);
        const commit = next() < 0.8;
        let want: ConsumeResult = { ok: true };
        for (const l of limits) {
          const used = modelUsed(events, now, l[1]);
          if (used + n > l[0]) {
            want = { ok: false, key, limit: l, used };
            break;
          }
        }
        if (want.ok && commit) events.set(now, (events.get(now) ?? 0) + n);
        const got =
          next() < 0.3
            ? await old(key, limits, n, now, commit)
            : await s.consume({ buckets: [{ key, limits }], n, nowSec: now, commit });
        assert.deepEqual(got, want, `round ${round} step ${step}: now ${now - T}, ${JSON.stringify(limits)}, n ${n}`);
      }
      if (round % 2 === 1) {
        // clean keeps the totals true as well (it counts rows: one per event recorded here).
        const cut = maxNow - 15;
        await s.clean(cut);
        for (const ev of every.values()) for (const at of [...ev.keys()]) if (at < cut) ev.delete(at);
        for (const l of [[0, 30] as const, [0, 10] as const])
          assert.deepEqual(await s.consume({ buckets: [{ key, limits: [l] }], n: 1, nowSec: maxNow, commit: false }), {
            ok: false,
            key,
            limit: l,
            used: modelUsed(events, maxNow, l[1]),
          });
      }
    }
    assert.equal(
      await s.reset('sasl:model-0'),
      [...every.get('sasl:model-0')!.values()].reduce((a, b) => a + b, 0),
    );
    assert.deepEqual(
      await s.consume({
        buckets: [{ key: 'sasl:model-0', limits: [[0, 30]] }],
        n: 1,
        nowSec: T + 10_000,
        commit: false,
      }),
      { ok: false, key: 'sasl:model-0', limit: [0, 30], used: 0 },
    );
  } finally {
    await s.close();
    await c.end();
  }
});

test('postgresql: version 3 to 4 while a version 3 process keeps running (a rolling upgrade): side by side, every answer exact; one started afterwards refuses', async () => {
  const url = await pgDatabase(`${scratch}_pg3`);
  const old = await openPostgresV3(url, '', 5000);
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  let s: RateStore | undefined;
  try {
    assert.equal((await c.query<{ version: number }>('SELECT version FROM qp_schema')).rows[0]!.version, 3);
    const next = rng(33);
    const WINDOWS = [2, 10, 30];
    const keys = ['sasl:a', 'sasl:b', 'sender_domain:c'];
    const events = new Map<string, Map<number, number>>(keys.map((k) => [k, new Map()]));
    let maxNow = T;
    const step = (): ConsumeRequest => {
      maxNow += next() < 0.5 ? 0 : Math.floor(next() * 3);
      const pick = keys.filter(() => next() < 0.5);
      return {
        buckets: (pick.length > 0 ? pick : [keys[0]!]).map((key) => ({
          key,
          limits: WINDOWS.filter(() => next() < 0.6)
            .map((w) => [Math.floor(next() * 40), w] as const)
            .concat([[200, 60]]),
        })),
        n: 1 + Math.floor(next() * 3),
        nowSec: maxNow - Math.floor(next() * 4),
        commit: next() < 0.8,
      };
    };
    const model = (req: ConsumeRequest): ConsumeResult => {
      for (const b of req.buckets)
        for (const l of b.limits) {
          const used = modelUsed(events.get(b.key)!, req.nowSec, l[1]);
          if (used + req.n > l[0]) return { ok: false, key: b.key, limit: l, used };
        }
      if (req.commit)
        for (const b of req.buckets) {
          const ev = events.get(b.key)!;
          ev.set(req.nowSec, (ev.get(req.nowSec) ?? 0) + req.n);
        }
      return { ok: true };
    };
    // The old release alone, then the new one converts the tables under it.
    for (let i = 0; i < 40; i++) {
      const req = step();
      assert.deepEqual(await old.consume(req), model(req), `old alone, step ${i}`);
    }
    s = await open('postgresql', url);
    assert.equal(
      (await c.query<{ version: number }>('SELECT version FROM qp_schema')).rows[0]!.version,
      PG_SCHEMA_VERSION,
    );
    for (let round = 0; round < 30; round++) {
      // One after another, either release; then a group of the new one's (one call), then the old one again.
      for (let i = 0; i < 5; i++) {
        const req = step();
        const got: ConsumeResult = await (next() < 0.5 ? old : s).consume(req);
        assert.deepEqual(got, model(req), `round ${round} step ${i}`);
      }
      const group = Array.from({ length: 1 + Math.floor(next() * 20) }, step);
      const got = await Promise.all(group.map((r) => s!.consume(r)));
      assert.deepEqual(got, group.map(model), `round ${round}: a group`);
      if (round % 10 === 9) {
        const cut = maxNow - 15;
        await (round === 19 ? old : s).clean(cut);
        for (const ev of events.values()) for (const at of [...ev.keys()]) if (at < cut) ev.delete(at);
      }
    }
    // Both releases at once on one key: exactly L pass.
    const L = 53;
    const hot = 'sasl:hot';
    const req = (): ConsumeRequest => ({
      buckets: [{ key: hot, limits: [[L, 3600]] }],
      n: 1,
      nowSec: maxNow,
      commit: true,
    });
    const all = await Promise.all(Array.from({ length: 4 * L }, (_, i) => (i % 2 === 0 ? old : s!).consume(req())));
    assert.equal(all.filter((r) => r.ok).length, L);
    assert.equal(Number((await c.query('SELECT SUM(n) AS n FROM qp_rate_events WHERE key = $1', [hot])).rows[0]!.n), L);
    // A version 3 process started now refuses the newer tables, clearly (in that release's words).
    await assert.rejects(openPostgresV3(url, '', 5000), {
      name: 'StoreError',
      message: `schema version ${PG_SCHEMA_VERSION} is newer than this quotapolicy`,
    });
  } finally {
    await s?.close();
    await old.close();
    await c.end();
  }
});
