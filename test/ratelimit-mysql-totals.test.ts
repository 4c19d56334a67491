// MariaDB schema 3: counts per key and second, running totals kept by the
// store in the transaction that writes the counts, group commit. Each test in
// a database of its own made for it (and dropped after). Checked against the
// exact sliding window (test/support/window-model.ts): groups of requests
// that arrive together, clocks apart, clean and reset; the conversion of
// version 2 tables, with a version 2 process still running beside failing
// loudly instead of counting where this release does not look; one request's
// failure in a group leaving the others' answers alone.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import mysql from 'mysql2/promise';
import { STORE_URLS } from './support/stores.js';
import { rng, modelUsed, modelConsume } from './support/window-model.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import type { RateStore, ConsumeRequest } from '../src/frontend/ratelimit/store.js';
import type { Limit } from '../src/frontend/ratelimit/decide.js';
import { MYSQL_SCHEMA_VERSION, MYSQL_GROUP_MAX } from '../src/frontend/ratelimit/stores/mysql.js';

const T = 1_800_000_000;
const scratch = `qp_totals_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
const dropped: string[] = [];
after(async () => {
  const c = await mysql.createConnection({ uri: STORE_URLS.mysql });
  for (const d of dropped) await c.query(`DROP DATABASE IF EXISTS ${d}`);
  await c.end();
});

async function database(name: string): Promise<string> {
  const c = await mysql.createConnection({ uri: STORE_URLS.mysql });
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  dropped.push(name);
  const u = new URL(STORE_URLS.mysql);
  u.pathname = `/${name}`;
  return u.toString();
}
const open = (url: string, timeoutMs = 5000): Promise<RateStore> =>
  openStore({ ...NO_STORE_TLS, backend: 'mysql', url, sqlite_path: '', timeout_ms: timeoutMs, sql_limits_by_id: '' });

test('groups of requests that arrive together, clocks apart, several keys and windows, clean and reset: every answer is the exact window', async () => {
  const s = await open(await database(`${scratch}_model`));
  try {
    const next = rng(13);
    const KEYS = ['sasl:a', 'sasl:b', 'sender:c@example.org', 'rcpt_domain:example.net'];
    const WINDOWS = [1, 5, 20, 60];
    const events = new Map<string, Map<number, number>>();
    let maxNow = T;
    for (let round = 0; round < 60; round++) {
      maxNow += Math.floor(next() * 6);
      // All sent in one turn of the event loop: one group (at most MYSQL_GROUP_MAX), answered in order.
      const size = 1 + Math.floor(next() * 24);
      const reqs: ConsumeRequest[] = Array.from({ length: size }, () => {
        const keys = KEYS.filter(() => next() < 0.4);
        if (keys.length === 0) keys.push(KEYS[Math.floor(next() * KEYS.length)]!);
        return {
          buckets: keys.map((key) => {
            const limits = WINDOWS.filter(() => next() < 0.5).map((w): Limit => [Math.floor(next() * 30), w]);
            return { key, limits };
          }),
          n: 1 + Math.floor(next() * 3),
          nowSec: maxNow - Math.floor(next() * 4),
          commit: next() < 0.85,
        };
      });
      const want = reqs.map((r) => modelConsume(events, r));
      const got = await Promise.all(reqs.map((r) => s.consume(r)));
      for (const [i, r] of reqs.entries())
        assert.deepEqual(
          got[i],
          want[i],
          `round ${round} request ${i}: ${JSON.stringify({ ...r, nowSec: r.nowSec - T })}`,
        );
      if (round % 15 === 14) {
        const cut = maxNow - 30;
        await s.clean(cut);
        for (const ev of events.values()) for (const at of [...ev.keys()]) if (at < cut) ev.delete(at);
      }
      if (round === 40) {
        const held = [...(events.get('sasl:b') ?? new Map<number, number>()).values()].reduce((a, b) => a + b, 0);
        assert.equal(await s.reset('sasl:b'), held);
        events.delete('sasl:b');
      }
    }
    for (const key of KEYS)
      assert.deepEqual(
        await s.events(key, 0),
        [...(events.get(key) ?? new Map<number, number>())].sort((a, b) => a[0] - b[0]).map(([at, n]) => ({ at, n })),
      );
  } finally {
    await s.close();
  }
});

test('a busy key: a day of counts, then checks from one process and another answer the exact window, and the totals say so', async () => {
  const url = await database(`${scratch}_busy`);
  const a = await open(url);
  const b = await open(url);
  const c = await mysql.createConnection({ uri: url });
  try {
    const key = 'sasl:news';
    const rows: [Buffer, number, number][] = [];
    for (let at = T - 86_400; at < T; at++) rows.push([Buffer.from(key), at, 1 + (at % 3)]);
    for (let i = 0; i < rows.length; i += 10_000)
      await c.query('INSERT INTO qp_rate_counts (`key`, at, n) VALUES ?', [rows.slice(i, i + 10_000)]);
    const events = new Map<string, Map<number, number>>([[key, new Map(rows.map(([, at, n]) => [at, n]))]]);
    const limits: Limit[] = [
      [10_000_000, 86_400],
      [1_000, 60],
      [100, 10],
    ];
    const next = rng(5);
    for (let step = 0; step < 40; step++) {
      const now = T + Math.floor(step / 3);
      const reqs: ConsumeRequest[] = Array.from({ length: 1 + Math.floor(next() * 8) }, () => ({
        buckets: [{ key, limits }],
        n: 1 + Math.floor(next() * 20),
        nowSec: now,
        commit: true,
      }));
      const want = reqs.map((r) => modelConsume(events, r));
      // One process's group, then the other's: each builds on the totals the other wrote.
      const half = Math.ceil(reqs.length / 2);
      const got = await Promise.all(reqs.slice(0, half).map((r) => a.consume(r)));
      got.push(...(await Promise.all(reqs.slice(half).map((r) => b.consume(r)))));
      assert.deepEqual(got, want, `step ${step}`);
    }
    const [tot] = (await c.query(
      'SELECT seconds, CAST(edge AS SIGNED) - ? AS edge, total FROM qp_rate_totals WHERE `key` = ? AND seconds >= 0 ORDER BY seconds',
      [T, Buffer.from(key)],
    )) as [{ seconds: number; edge: number; total: number }[], unknown];
    const last = T + 13;
    assert.deepEqual(
      tot.map((r) => [Number(r.seconds), Number(r.edge), Number(r.total)]),
      [10, 60, 86_400].map((w) => [w, last - w - T, modelUsed(events.get(key)!, last, w)]),
    );
  } finally {
    await a.close();
    await b.close();
    await c.end();
  }
});

test('version 2 tables are converted to counts per second; a version 2 process running beside fails every call loudly, one starting refuses', async () => {
  const url = await database(`${scratch}_v2`);
  const c = await mysql.createConnection({ uri: url });
  try {
    // Exactly what version 2 created, with a day of events for one key (10 a second in its last minute) and another's.
    await c.query('CREATE TABLE qp_schema (version INTEGER NOT NULL)');
    await c.query('INSERT INTO qp_schema VALUES (2)');
    await c.query(
      'CREATE TABLE qp_rate_events (`key` VARBINARY(1020) NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL, INDEX qp_rate_events_key_at (`key`, at))',
    );
    await c.query(
      'CREATE TABLE qp_rate_hits (`key` VARBINARY(1020) NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (`key`, seconds))',
    );
    const rows: [Buffer, number, number][] = [];
    for (let at = T - 86_400; at < T; at++) rows.push([Buffer.from('sasl:news'), at, 1]);
    for (let i = 0; i < 600; i++) rows.push([Buffer.from('sasl:news'), T - 60 + Math.floor(i / 10), 1]);
    rows.push([Buffer.from('sasl:other'), T - 5, 4], [Buffer.from('sasl:other'), T - 5, 3]);
    for (let i = 0; i < rows.length; i += 10_000)
      await c.query('INSERT INTO qp_rate_events (`key`, at, n) VALUES ?', [rows.slice(i, i + 10_000)]);
    await c.query('INSERT INTO qp_rate_hits VALUES (?, 60, 2)', [Buffer.from('sasl:other')]);
    // A version 2 process's check, as it ran: its sum, then its insert.
    const oldCheck = async (key: string, now: number): Promise<void> => {
      await c.query(
        'SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) AS used FROM qp_rate_events WHERE `key` = ? AND at >= ?',
        [Buffer.from(key), now - 60],
      );
      await c.query('INSERT INTO qp_rate_events (`key`, at, n) VALUES (?, ?, ?)', [Buffer.from(key), now, 1]);
    };
    await oldCheck('sasl:other', T - 1); // before the conversion: counted, and carried over
    const s = await open(url);
    try {
      assert.deepEqual((await c.query('SELECT version FROM qp_schema'))[0], [{ version: MYSQL_SCHEMA_VERSION }]);
      assert.deepEqual(
        await s.consume({
          buckets: [
            {
              key: 'sasl:news',
              limits: [
                [86_400 + 600, 86_400],
                [660, 60],
              ],
            },
          ],
          n: 1,
          nowSec: T,
          commit: false,
        }),
        { ok: false, key: 'sasl:news', limit: [86_400 + 600, 86_400], used: 86_400 + 600 },
      );
      assert.deepEqual(
        await s.consume({ buckets: [{ key: 'sasl:other', limits: [[8, 60]] }], n: 1, nowSec: T, commit: false }),
        { ok: false, key: 'sasl:other', limit: [8, 60], used: 8 },
      );
      assert.deepEqual(await s.events('sasl:other', 0), [
        { at: T - 5, n: 7 },
        { at: T - 1, n: 1 },
      ]);
      assert.deepEqual(await s.hits(), [{ key: 'sasl:other', seconds: 60, hits: 2 }]);
      // The version 2 process still running: its read and its write both fail, nothing is counted where no one looks.
      await assert.rejects(oldCheck('sasl:other', T), { message: /^Unknown column 'n' in /u });
      await assert.rejects(
        c.query('INSERT INTO qp_rate_events (`key`, at, n) VALUES (?, ?, 1)', [Buffer.from('sasl:other'), T]),
        { message: /^Unknown column 'n' in /u },
      );
      // A version 2 process starting: its CREATE TABLE IF NOT EXISTS finds the tables, its version check refuses 3.
      const [v] = (await c.query('SELECT version FROM qp_schema')) as [{ version: number }[], unknown];
      assert.ok(v[0]!.version > 2);
      const [n] = (await c.query('SELECT COUNT(*) AS n FROM qp_rate_events')) as [{ n: number }[], unknown];
      assert.equal(Number(n[0]!.n), 0);
    } finally {
      await s.close();
    }
    // Opened again: nothing converted twice.
    const again = await open(url);
    try {
      assert.deepEqual(await again.events('sasl:other', 0), [
        { at: T - 5, n: 7 },
        { at: T - 1, n: 1 },
      ]);
    } finally {
      await again.close();
    }
  } finally {
    await c.end();
  }
});

test('in a group, a request whose key another instance holds locked fails alone (after the lock wait, store_timeout_ms), the others are answered', async () => {
  const url = await database(`${scratch}_lock`);
  const s = await open(url, 1000);
  const c = await mysql.createConnection({ uri: url });
  try {
    await s.consume({ buckets: [{ key: 'sasl:held', limits: [[5, 60]] }], n: 1, nowSec: T, commit: true });
    await c.query('START TRANSACTION');
    await c.query('SELECT * FROM qp_rate_totals WHERE `key` = ? AND seconds = -1 FOR UPDATE', [
      Buffer.from('sasl:held'),
    ]);
    const t0 = performance.now();
    const reqs: ConsumeRequest[] = ['sasl:x', 'sasl:held', 'sasl:y', 'sasl:z'].map((key) => ({
      buckets: [{ key, limits: [[5, 60]] }],
      n: 1,
      nowSec: T,
      commit: true,
    }));
    assert.ok(reqs.length <= MYSQL_GROUP_MAX);
    const got = await Promise.allSettled(reqs.map((r) => s.consume(r)));
    const ms = performance.now() - t0;
    await c.query('ROLLBACK');
    assert.deepEqual(
      got.map((g) => (g.status === 'fulfilled' ? g.value : { error: (g.reason as Error).name })),
      [{ ok: true }, { error: 'StoreError' }, { ok: true }, { ok: true }],
    );
    assert.match(String((got[1] as PromiseRejectedResult).reason.message), /^mysql: Lock wait timeout exceeded/);
    // The server's lock wait is store_timeout_ms (1 s here), not InnoDB's default 50 s: twice, the group's and its own.
    assert.ok(ms < 10_000, `${ms} ms`);
    // The failed one counted nothing; the others once.
    assert.deepEqual(await s.events('sasl:held', 0), [{ at: T, n: 1 }]);
    for (const k of ['sasl:x', 'sasl:y', 'sasl:z']) assert.deepEqual(await s.events(k, 0), [{ at: T, n: 1 }]);
  } finally {
    await s.close();
    await c.end();
  }
});

test('a key refused before its group (a lone surrogate) fails alone; the requests beside it are answered', async () => {
  const s = await open(await database(`${scratch}_bad`));
  try {
    const got = await Promise.allSettled(
      ['sasl:ok1', 'sasl:\ud800', 'sasl:ok2'].map((key) =>
        s.consume({ buckets: [{ key, limits: [[5, 60]] }], n: 1, nowSec: T, commit: true }),
      ),
    );
    assert.deepEqual(
      got.map((g) => g.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    );
    assert.match(String((got[1] as PromiseRejectedResult).reason.message), /lone surrogate/);
  } finally {
    await s.close();
  }
});
