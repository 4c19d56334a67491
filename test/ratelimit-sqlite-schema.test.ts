// SQLite schema 2 (one row per key and second) and the conversion of a
// version 1 file (one row per event) written by an earlier quotapolicy; schema
// 3 (keys as storedKey() makes them) and the conversion of a version 2 file;
// schema 4 (running totals kept by triggers) and a version 3 process still
// writing to a converted file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openSqlite, SQLITE_SCHEMA_VERSION } from '../src/frontend/ratelimit/stores/sqlite.js';
import { storedKey, type ConsumeResult } from '../src/frontend/ratelimit/store.js';
import { rng, modelUsed } from './support/window-model.js';

const T = 1_800_000_000;

test('a version 1 file is converted when opened: same sums, one row per key and second, the latest version', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'qp-sqlite-v1-')), 'rl.sqlite3');
  const v1 = new Database(path);
  v1.exec(`CREATE TABLE qp_schema (version INTEGER NOT NULL); INSERT INTO qp_schema VALUES (1);
    CREATE TABLE qp_rate_events (key TEXT NOT NULL, at INTEGER NOT NULL, n INTEGER NOT NULL);
    CREATE INDEX qp_rate_events_key_at ON qp_rate_events (key, at);
    CREATE TABLE qp_rate_hits (key TEXT NOT NULL, seconds INTEGER NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (key, seconds));`);
  const ins = v1.prepare('INSERT INTO qp_rate_events VALUES (?, ?, ?)');
  for (let i = 0; i < 5; i++) ins.run('sasl:a', T, 1);
  ins.run('sasl:a', T - 100, 3);
  ins.run('sasl:b', T, 2);
  v1.close();

  const s = await openSqlite(path, '');
  const look = (key: string, limits: [number, number][]) =>
    s.consume({ buckets: [{ key, limits }], n: 1, nowSec: T, commit: false });
  assert.deepEqual(
    await look('sasl:a', [
      [100, 60],
      [5, 3600],
    ]),
    { ok: false, key: 'sasl:a', limit: [5, 3600], used: 8 },
  );
  assert.deepEqual(await look('sasl:a', [[5, 60]]), { ok: false, key: 'sasl:a', limit: [5, 60], used: 5 });
  assert.deepEqual(await look('sasl:b', [[2, 60]]), { ok: false, key: 'sasl:b', limit: [2, 60], used: 2 });
  assert.equal(await s.clean(T - 10), 3, 'clean reports events, not rows');
  await s.close();

  const db = new Database(path, { readonly: true });
  assert.equal(
    (db.prepare('SELECT version FROM qp_schema').get() as { version: number }).version,
    SQLITE_SCHEMA_VERSION,
  );
  assert.deepEqual(db.prepare('SELECT key, at, n FROM qp_rate_counts ORDER BY key, at').all(), [
    { key: 'sasl:a', at: T, n: 5 },
    { key: 'sasl:b', at: T, n: 2 },
  ]);
  assert.equal(
    (db.prepare("SELECT count(*) AS c FROM sqlite_master WHERE name = 'qp_rate_events'").get() as { c: number }).c,
    0,
    'the old table is gone',
  );
  db.close();
});

test('events of one key in one second share a row; the sums stay exact', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'qp-sqlite-v2-')), 'rl.sqlite3');
  const s = await openSqlite(path, '');
  const b = [{ key: 'ip:192.0.2.1', limits: [[10, 60]] as [number, number][] }];
  const got = await Promise.all(
    Array.from({ length: 12 }, () => s.consume({ buckets: b, n: 1, nowSec: T, commit: true })),
  );
  assert.equal(got.filter((r) => r.ok).length, 10, 'one group of 12 concurrent requests: exactly 10 admitted');
  await s.close();
  const db = new Database(path, { readonly: true });
  assert.deepEqual(db.prepare('SELECT key, at, n FROM qp_rate_counts').all(), [{ key: 'ip:192.0.2.1', at: T, n: 10 }]);
  db.close();
});

test('a version 2 file is converted when opened: long, NUL and marked keys move to their stored form with their counts, short keys stay', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'qp-sqlite-v2to3-')), 'rl.sqlite3');
  const v2 = new Database(path);
  v2.exec(`CREATE TABLE qp_schema (version INTEGER NOT NULL); INSERT INTO qp_schema VALUES (2);
    CREATE TABLE qp_rate_counts (key TEXT NOT NULL, at INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID;
    CREATE TABLE qp_rate_hits (key TEXT NOT NULL, seconds INTEGER NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (key, seconds));`);
  const long = `sender:${'l'.repeat(1000)}`;
  const nul = 'sender:a\0b';
  const forged = storedKey(long); // a key someone sent that reads like a stored form: it moves too, first
  const keys = { 'sasl:a': 4, [`sender:${'s'.repeat(500)}`]: 5, [long]: 6, [nul]: 7, [forged]: 8 };
  const ins = v2.prepare('INSERT INTO qp_rate_counts VALUES (?, ?, ?)');
  const hit = v2.prepare('INSERT INTO qp_rate_hits VALUES (?, 86400, ?)');
  for (const [k, n] of Object.entries(keys)) {
    ins.run(k, T - 1, 1);
    ins.run(k, T, n - 1);
    hit.run(k, n);
  }
  v2.close();

  const s = await openSqlite(path, '');
  for (const [k, n] of Object.entries(keys)) {
    assert.deepEqual(
      await s.consume({ buckets: [{ key: k, limits: [[n, 60]] }], n: 1, nowSec: T, commit: false }),
      { ok: false, key: k, limit: [n, 60], used: n },
      JSON.stringify(k.slice(0, 20)),
    );
  }
  assert.deepEqual(
    (await s.hits()).map((h) => [h.key, h.hits]).sort(),
    Object.entries(keys)
      .map(([k, n]) => [storedKey(k), n])
      .sort(),
  );
  await s.close();

  const db = new Database(path, { readonly: true });
  assert.equal(
    (db.prepare('SELECT version FROM qp_schema').get() as { version: number }).version,
    SQLITE_SCHEMA_VERSION,
  );
  const held = (db.prepare('SELECT DISTINCT key FROM qp_rate_counts').all() as { key: string }[])
    .map((r) => r.key)
    .sort();
  assert.deepEqual(
    held,
    ['sasl:a', `sender:${'s'.repeat(500)}`, storedKey(long), storedKey(nul), storedKey(forged)].sort(),
  );
  assert.ok(!held.includes(long) && !held.includes(nul), 'nothing left under an old key');
  db.close();
});

const V3_TABLES = `CREATE TABLE qp_schema (version INTEGER NOT NULL); INSERT INTO qp_schema VALUES (3);
  CREATE TABLE qp_rate_counts (key TEXT NOT NULL, at INTEGER NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (key, at)) WITHOUT ROWID;
  CREATE TABLE qp_rate_hits (key TEXT NOT NULL, seconds INTEGER NOT NULL, hits INTEGER NOT NULL, PRIMARY KEY (key, seconds));`;
/** What a version 3 process does to record n at now (its statement, verbatim). */
const V3_ADD =
  'INSERT INTO qp_rate_counts (key, at, n) VALUES (?, ?, ?) ON CONFLICT (key, at) DO UPDATE SET n = n + excluded.n';

test('a day of busy seconds in a version 3 file: the first check builds the totals, later ones read only the seconds they pass', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'qp-sqlite-day-')), 'rl.sqlite3');
  const v3 = new Database(path);
  v3.exec(V3_TABLES);
  const ins = v3.prepare('INSERT INTO qp_rate_counts VALUES (?, ?, 1)');
  v3.transaction(() => {
    for (let at = T - 86399; at <= T; at++) ins.run('sasl:news', at);
  })();
  v3.close();
  const s = await openSqlite(path, '');
  const day = [
    [1000, 60],
    [100_000, 86400],
  ] as const;
  const b = (limits: readonly (readonly [number, number])[]) => [{ key: 'sasl:news', limits }];
  assert.deepEqual(await s.consume({ buckets: b([[86_400, 86400]]), n: 1, nowSec: T, commit: false }), {
    ok: false,
    key: 'sasl:news',
    limit: [86_400, 86400],
    used: 86_400,
  });
  assert.deepEqual(await s.consume({ buckets: b(day), n: 1, nowSec: T + 2, commit: true }), { ok: true });
  const db = new Database(path);
  assert.deepEqual(db.prepare('SELECT seconds, edge, total FROM qp_rate_totals ORDER BY seconds').all(), [
    { seconds: 60, edge: T - 58, total: 60 },
    { seconds: 86400, edge: T - 86398, total: 86_400 },
  ]);
  // With the triggers off, a count changed in mid-window is not seen: the check read only the seconds it passed.
  db.exec('DROP TRIGGER qp_rate_counts_update');
  db.prepare('UPDATE qp_rate_counts SET n = 1000 WHERE key = ? AND at = ?').run('sasl:news', T - 40_000);
  const probe = { buckets: b([[1, 86400]]), n: 1, nowSec: T + 3, commit: false };
  // T + 3: T - 86397 .. T and the event at T + 2.
  assert.deepEqual(await s.consume(probe), { ok: false, key: 'sasl:news', limit: [1, 86400], used: 86_398 + 1 });
  db.close();
  await s.close();
});

test('random sequences, clocks up to 3 s apart, a version 3 process writing too: every answer is the exact sliding-window count', async () => {
  const next = rng(4);
  const WINDOWS = [2, 10, 30];
  const path = join(mkdtempSync(join(tmpdir(), 'qp-sqlite-model-')), 'rl.sqlite3');
  const v3 = new Database(path);
  v3.exec(V3_TABLES);
  const s = await openSqlite(path, '');
  // A version 3 process that opened the file before it was converted: its statements, its own connection.
  const oldAdd = v3.prepare(V3_ADD);
  const oldSum = (key: string, now: number, seconds: number): number =>
    (
      v3
        .prepare('SELECT COALESCE(SUM(n), 0) AS n FROM qp_rate_counts WHERE key = ? AND at >= ?')
        .get(key, now - seconds) as {
        n: number;
      }
    ).n;
  const every = new Map<string, Map<number, number>>();
  for (let round = 0; round < 6; round++) {
    const key = `sasl:model-${round}`;
    const events = new Map<number, number>();
    every.set(key, events);
    let maxNow = T;
    for (let step = 0; step < 300; step++) {
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
      let got: ConsumeResult;
      if (next() < 0.3) {
        // The version 3 release's check: sums of the counts, then its insert.
        got = { ok: true };
        for (const l of limits) {
          const used = oldSum(key, now, l[1]);
          if (used + n > l[0]) {
            got = { ok: false, key, limit: l, used };
            break;
          }
        }
        if (got.ok && commit) oldAdd.run(key, now, n);
      } else got = await s.consume({ buckets: [{ key, limits }], n, nowSec: now, commit });
      assert.deepEqual(got, want, `round ${round} step ${step}: now ${now - T}, ${JSON.stringify(limits)}, n ${n}`);
    }
    if (round % 2 === 1) {
      // clean and reset keep the totals true as well.
      const cut = maxNow - 15;
      let gone = 0;
      for (const ev of every.values())
        for (const [at, n] of [...ev])
          if (at < cut) {
            gone += n;
            ev.delete(at);
          }
      assert.equal(await s.clean(cut), gone);
      const probe = [[0, 30] as const, [0, 10] as const];
      for (const l of probe)
        assert.deepEqual(await s.consume({ buckets: [{ key, limits: [l] }], n: 1, nowSec: maxNow, commit: false }), {
          ok: false,
          key,
          limit: l,
          used: modelUsed(events, maxNow, l[1]),
        });
    }
  }
  v3.close();
  await s.close();
});
