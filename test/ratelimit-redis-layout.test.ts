// The Redis store's layout: one hash field per second however busy a key is,
// fields past the longest window dropped, and version 1 sorted sets (one
// member per event, written by an earlier quotapolicy) still counted until
// they expire; a long key held under its stored form. Against the real Redis
// (the conformance suite checks the rest).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { open, STORE_URLS, uniq } from './support/stores.js';
import { storedKey, STORE_KEY_MAX_BYTES, type RateStore } from '../src/frontend/ratelimit/store.js';

const T = 1_800_000_000;
let s: RateStore;
let r: Redis;
before(async () => {
  s = await open('redis');
  r = new Redis(STORE_URLS.redis);
});
after(async () => {
  await s.close();
  r.disconnect();
});

test('a busy key keeps one field per second, and none older than its longest window', async () => {
  const key = uniq('busy');
  const b = [
    {
      key,
      limits: [
        [1000, 3],
        [1000, 2],
      ] as const,
    },
  ];
  for (let sec = 0; sec <= 5; sec++) {
    for (let i = 0; i < 7; i++)
      assert.equal((await s.consume({ buckets: b, n: 1, nowSec: T + sec, commit: true })).ok, true);
  }
  const fields = await r.hgetall(`qp:rl2:${key}`);
  // At T+5 the 3 s window reaches back to T+2; T+1 was dropped when T+5 was first counted, T+2 stays.
  assert.deepEqual(fields, { [T + 2]: '7', [T + 3]: '7', [T + 4]: '7', [T + 5]: '7' });
  assert.deepEqual(await s.consume({ buckets: [{ key, limits: [[28, 3]] }], n: 1, nowSec: T + 5, commit: false }), {
    ok: false,
    key,
    limit: [28, 3],
    used: 28,
  });
  assert.ok((await r.ttl(`qp:rl2:${key}`)) > 0, 'the key expires');
});

test('a version 1 sorted set is still counted, and never written', async () => {
  const key = uniq('v1');
  await r.zadd(`qp:rl:${key}`, T - 30, '2:abc', T - 100, '5:def', T, '1:ghi');
  await r.expire(`qp:rl:${key}`, 600);
  const b = [
    {
      key,
      limits: [
        [5, 60],
        [9, 3600],
      ] as const,
    },
  ];
  assert.deepEqual(
    await s.consume({ buckets: b, n: 1, nowSec: T, commit: false }),
    { ok: true },
    '3 events in the minute, 8 in the hour',
  );
  assert.deepEqual(await s.consume({ buckets: b, n: 2, nowSec: T, commit: true }), {
    ok: false,
    key,
    limit: [9, 3600],
    used: 8,
  });
  assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }), { ok: true });
  assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: true }), {
    ok: false,
    key,
    limit: [9, 3600],
    used: 9,
  });
  assert.equal(await r.zcard(`qp:rl:${key}`), 3, 'the version 1 key is left as it was');
  assert.deepEqual(await r.hgetall(`qp:rl2:${key}`), { [T]: '1' });
});

test('events and reset see a version 1 sorted set too', async () => {
  const key = uniq('v1-admin');
  await r.zadd(`qp:rl:${key}`, T - 30, '2:abc', T - 100, '5:def', T, '1:ghi');
  await r.expire(`qp:rl:${key}`, 600);
  assert.equal(
    (await s.consume({ buckets: [{ key, limits: [[100, 3600]] }], n: 4, nowSec: T, commit: true })).ok,
    true,
  );
  assert.deepEqual(
    await s.events(key, T - 60),
    [
      { at: T - 30, n: 2 },
      { at: T, n: 5 },
    ],
    'the second T holds 1 (version 1) + 4 (hash)',
  );
  assert.deepEqual(await s.events(key, 0), [
    { at: T - 100, n: 5 },
    { at: T - 30, n: 2 },
    { at: T, n: 5 },
  ]);
  assert.equal(await s.reset(key), 12);
  assert.equal(await r.exists(`qp:rl:${key}`, `qp:rl2:${key}`), 0);
});

test('an 8 KiB key is held under its stored form (at most STORE_KEY_MAX_BYTES), never under the key itself', async () => {
  const key = `${uniq('huge')}:${'k'.repeat(8192)}`;
  const b = [{ key, limits: [[2, 60]] as const }];
  assert.deepEqual(await s.consume({ buckets: b, n: 2, nowSec: T, commit: true }), { ok: true });
  assert.deepEqual(await s.consume({ buckets: b, n: 1, nowSec: T, commit: false }), {
    ok: false,
    key,
    limit: [2, 60],
    used: 2,
  });
  assert.ok(Buffer.byteLength(storedKey(key)) <= STORE_KEY_MAX_BYTES);
  assert.deepEqual(await r.hgetall(`qp:rl2:${storedKey(key)}`), { [T]: '2' });
  assert.equal(await r.exists(`qp:rl2:${key}`), 0);
  await s.recordHit(key, 60);
  assert.equal(await r.hget('qp:rl-hits', `60\t${storedKey(key)}`), '1');
  assert.equal(await r.hget('qp:rl-hits', `60\t${key}`), null);
});
