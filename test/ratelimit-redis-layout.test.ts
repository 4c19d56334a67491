// The Redis store's layout: one hash field per second however busy a key is,
// fields past the longest window dropped, and version 1 sorted sets (one
// member per event, written by an earlier quotapolicy) still counted until
// they expire; a long key held under its stored form. Against the real Redis
// (the conformance suite checks the rest).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Redis } from 'ioredis';
import { open, STORE_URLS, uniq } from './support/stores.js';
import { storedKey, STORE_KEY_MAX_BYTES, type RateStore, type ConsumeResult } from '../src/frontend/ratelimit/store.js';
import { PREVIOUS_RELEASE_CONSUME } from './support/redis-previous-release.js';
import { rng, modelUsed } from './support/window-model.js';

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
  // At T+5 the 3 s window reaches back to T+2; T+1 was dropped when T+5 was first counted, T+2 stays
  // (second 0 is the sentinel: the running totals beside the hash match it).
  assert.deepEqual(fields, { 0: '0', [T + 2]: '7', [T + 3]: '7', [T + 4]: '7', [T + 5]: '7' });
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
  assert.deepEqual(await r.hgetall(`qp:rl2:${key}`), { 0: '0', [T]: '1' });
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
  assert.equal(await r.exists(`qp:rl:${key}`, `qp:rl2:${key}`, `qp:rl2w:${key}`), 0);
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
  assert.deepEqual(await r.hgetall(`qp:rl2:${storedKey(key)}`), { 0: '0', [T]: '2' });
  assert.equal(await r.exists(`qp:rl2:${key}`), 0);
  await s.recordHit(key, 60);
  assert.equal(await r.hget('qp:rl-hits', `60\t${storedKey(key)}`), '1');
  assert.equal(await r.hget('qp:rl-hits', `60\t${key}`), null);
});

/** Writes seconds from .. to, each with `per` events, straight into a key's hash (the store's own format). */
async function prefill(key: string, from: number, to: number, per: number): Promise<void> {
  for (let s = from; s <= to; s += 5000) {
    const fields: (string | number)[] = [];
    for (let x = s; x <= Math.min(s + 4999, to); x++) fields.push(x, per);
    await r.hset(`qp:rl2:${key}`, ...fields);
  }
  await r.expire(`qp:rl2:${key}`, 600);
}

test('a day of busy seconds: the first check builds the totals, later ones read only the seconds they pass', async () => {
  const key = uniq('day');
  const day = [
    [1000, 60],
    [100_000, 86400],
  ] as const;
  // 86,400 busy seconds up to T (as the previous release left them: no totals, no sentinel).
  await prefill(key, T - 86399, T, 1);
  assert.deepEqual(await s.consume({ buckets: [{ key, limits: [[86_400, 86400]] }], n: 1, nowSec: T, commit: false }), {
    ok: false,
    key,
    limit: [86_400, 86400],
    used: 86_400,
  });
  assert.deepEqual(await s.consume({ buckets: [{ key, limits: day }], n: 1, nowSec: T + 2, commit: true }), {
    ok: true,
  });
  const totals = await r.hgetall(`qp:rl2w:${key}`);
  // At T + 2 the minute runs from T - 58: 59 busy seconds and the event just recorded; the day from T - 86398.
  assert.deepEqual(totals, { e60: String(T - 58), t60: '60', e86400: String(T - 86398), t86400: '86400' });
  assert.equal(await r.hexists(`qp:rl2:${key}`, String(T - 86399)), 0, 'seconds behind every window are dropped');
  assert.equal(await r.hget(`qp:rl2:${key}`, String(T - 86398)), '1');
  // A count changed behind the totals' back in mid-window is not seen: the check read only the seconds it passed.
  await r.hset(`qp:rl2:${key}`, String(T - 40_000), 1000);
  const probe = { buckets: [{ key, limits: [[1, 86400]] as const }], n: 1, nowSec: T + 2, commit: false };
  assert.deepEqual(await s.consume(probe), { ok: false, key, limit: [1, 86400], used: 86_400 });
  // The previous release drops the sentinel as a stale second when it records: the totals are rebuilt.
  await r.hdel(`qp:rl2:${key}`, '0');
  assert.deepEqual(await s.consume(probe), { ok: false, key, limit: [1, 86400], used: 86_400 + 999 });
});

type Lim = readonly [number, number];

test('random sequences, clocks up to 3 s apart, windows asked or not: every answer is the exact sliding-window count', async () => {
  const next = rng(13);
  // Clocks 3 s apart and a 2 s window: a late clock records behind that window's start.
  const WINDOWS = [2, 10, 30];
  for (let round = 0; round < 6; round++) {
    const key = uniq('model');
    const events = new Map<number, number>();
    // The model's own record of where each window it was asked for starts (seconds behind all of them are dropped).
    const starts = new Map<number, number>();
    let maxNow = T;
    for (let step = 0; step < 300; step++) {
      maxNow += next() < 0.5 ? 0 : Math.floor(next() * 4);
      const now = maxNow - Math.floor(next() * 4);
      // The first check of a key asks every window, so no later event falls behind every window's start.
      const limits: Lim[] = WINDOWS.filter(() => step === 0 || next() < 0.6).map(
        (w) => [Math.floor(next() * 40), w] as const,
      );
      if (limits.length === 0) limits.push([Math.floor(next() * 40), WINDOWS[0]!]);
      const n = 1 + Math.floor(next() * 3);
      const commit = next() < 0.8;
      for (const [, w] of limits) if (!starts.has(w)) starts.set(w, now - w);
      for (const [w, e] of starts) starts.set(w, Math.max(e, now - w));
      if (events.size > 0 || commit) {
        const low = Math.min(...starts.values());
        for (const at of events.keys()) if (at < low) events.delete(at);
      }
      let want: ConsumeResult = { ok: true };
      for (const l of limits) {
        const used = modelUsed(events, now, l[1]);
        if (used + n > l[0]) {
          want = { ok: false, key, limit: l, used };
          break;
        }
      }
      if (want.ok && commit) events.set(now, (events.get(now) ?? 0) + n);
      const got = await s.consume({ buckets: [{ key, limits }], n, nowSec: now, commit });
      assert.deepEqual(got, want, `round ${round} step ${step}: now ${now - T}, ${JSON.stringify(limits)}, n ${n}`);
    }
  }
});

test('rolling upgrade: the previous release and this one on one key count every event once, both ways', async () => {
  const next = rng(7);
  const limits: Lim[] = [
    [25, 5],
    [60, 20],
  ];
  for (let round = 0; round < 4; round++) {
    const key = uniq('mixed');
    const events = new Map<number, number>();
    let now = T;
    for (let step = 0; step < 200; step++) {
      now += Math.floor(next() * 3);
      const n = 1 + Math.floor(next() * 3);
      const commit = next() < 0.85;
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
      if (next() < 0.5) {
        const out = (await r.eval(
          PREVIOUS_RELEASE_CONSUME,
          2,
          `qp:rl2:${key}`,
          `qp:rl:${key}`,
          now,
          n,
          commit ? '1' : '0',
          limits.length,
          ...limits.flat(),
        )) as number[];
        got = out.length === 0 ? { ok: true } : { ok: false, key, limit: [out[1]!, out[2]!], used: out[3]! };
      } else got = await s.consume({ buckets: [{ key, limits }], n, nowSec: now, commit });
      assert.deepEqual(got, want, `round ${round} step ${step}`);
    }
  }
});
