// SQLite schema 2 (one row per key and second) and the conversion of a
// version 1 file (one row per event) written by an earlier quotapolicy; schema
// 3 (keys as storedKey() makes them) and the conversion of a version 2 file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { openSqlite, SQLITE_SCHEMA_VERSION } from '../src/frontend/ratelimit/stores/sqlite.js';
import { storedKey } from '../src/frontend/ratelimit/store.js';

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
  assert.equal((db.prepare('SELECT version FROM qp_schema').get() as { version: number }).version, 3);
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
