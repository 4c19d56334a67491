// One conformance suite, run against every real backend: SQLite, PostgreSQL,
// MariaDB and Redis.
import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { BACKENDS, open, uniq } from './support/stores.js';
import type { RateStore } from '../src/frontend/ratelimit/store.js';

const T = 1_800_000_000;

for (const backend of BACKENDS) {
  describe(`store conformance: ${backend}`, () => {
    let s: RateStore;
    before(async () => { s = await open(backend); });
    after(async () => { await s.close(); });

    test('a window admits exactly its count, then refuses', async () => {
      const key = uniq('win');
      const b = [{ key, limits: [[3, 60]] as const }];
      for (let i = 0; i < 3; i++) assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T + i, commit: true }), { ok: true });
      assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T + 3, commit: true }), { ok: false, key, limit: [3, 60], used: 3 });
    });

    test('sliding window: events exactly `seconds` old still count, one second older do not', async () => {
      const key = uniq('slide');
      const b = [{ key, limits: [[1, 10]] as const }];
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: true })).ok, true);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 10, commit: true })).ok, false);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 11, commit: true })).ok, true);
    });

    test('several windows: the shortest and the longest both hold', async () => {
      const key = uniq('multi');
      const b = [{ key, limits: [[2, 10], [3, 1000]] as const }];
      const at = async (t: number) => (await s.consume({ buckets: b, n: 1, nowSec: t, commit: true })).ok;
      assert.deepEqual([await at(T), await at(T + 1), await at(T + 2)], [true, true, false]);
      assert.deepEqual([await at(T + 20), await at(T + 21)], [true, false], 'the 1000 s window is full at 3');
    });

    test('n counts several events at once, and is refused whole', async () => {
      const key = uniq('n');
      const b = [{ key, limits: [[5, 60]] as const }];
      assert.equal((await s.consume({ buckets: b, n: 3, nowSec: T, commit: true })).ok, true);
      assert.deepEqual(await s.consume({ buckets: b, n: 3, nowSec: T, commit: true }), { ok: false, key, limit: [5, 60], used: 3 });
      assert.equal((await s.consume({ buckets: b, n: 2, nowSec: T, commit: true })).ok, true);
    });

    test('commit=false looks without counting; refusals are never counted', async () => {
      const key = uniq('peek');
      const b = [{ key, limits: [[1, 60]] as const }];
      for (let i = 0; i < 3; i++) assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: false })).ok, true);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: true })).ok, true);
      for (let i = 0; i < 3; i++) assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 61 - 61, commit: true })).ok, false);
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + 61, commit: true })).ok, true, 'the refusals did not extend the window');
    });

    test('several buckets are all-or-nothing', async () => {
      const a = uniq('a');
      const z = uniq('z');
      const both = [{ key: a, limits: [[5, 60]] as const }, { key: z, limits: [[1, 60]] as const }];
      assert.equal((await s.consume({ buckets: both, n: 1, nowSec: T, commit: true })).ok, true);
      const r = await s.consume({ buckets: both, n: 1, nowSec: T, commit: true });
      assert.deepEqual(r, { ok: false, key: z, limit: [1, 60], used: 1 });
      assert.equal((await s.consume({ buckets: [both[0]!], n: 4, nowSec: T, commit: true })).ok, true, 'bucket a was not charged by the refused request');
    });

    test('no count is lost or doubled under concurrency: limit L, 4L concurrent requests, exactly L pass', async () => {
      const key = uniq('race');
      const L = 25;
      const b = [{ key, limits: [[L, 3600]] as const }];
      const results = await Promise.all(Array.from({ length: 4 * L }, () => s.consume({ buckets: b, n: 1, nowSec: T, commit: true })));
      assert.equal(results.filter((r) => r.ok).length, L);
    });

    test('hits for reports: counted per key and window, listed, cleared', async () => {
      const key = uniq('hit');
      await s.recordHit(key, 86400);
      await s.recordHit(key, 86400);
      await s.recordHit(key, 60);
      const mine = (await s.hits()).filter((h) => h.key === key);
      assert.deepEqual(mine.sort((x, y) => x.seconds - y.seconds), [{ key, seconds: 60, hits: 1 }, { key, seconds: 86400, hits: 2 }]);
      await s.clearHits();
      assert.deepEqual((await s.hits()).filter((h) => h.key === key), []);
    });

    test('clean removes events older than asked, keeps the rest', async () => {
      const key = uniq('clean');
      const b = [{ key, limits: [[2, 2_000_000_000]] as const }];
      await s.consume({ buckets: b, n: 1, nowSec: 1000, commit: true });
      await s.consume({ buckets: b, n: 1, nowSec: T, commit: true });
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: false })).ok, false);
      const removed = await s.clean(T - 10);
      if (backend !== 'redis') assert.ok(removed >= 1, `removed ${removed}`);
      if (backend !== 'redis') assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T, commit: false })).ok, true, 'the old event is gone');
    });
  });
}
