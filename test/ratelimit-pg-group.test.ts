// PostgreSQL's group commit (issue 13): the checks that arrive together go to
// the server in one call of qp_consume_4, in one transaction. Each answer must
// be what the same checks one after another would get (the exact sliding
// window model), whatever the group mixes: several keys and buckets, clocks
// apart, looks (commit false), refusals. A request the store cannot take fails
// alone; the others of its turn are answered. The plan the front sends is
// checked on its own too (lock order, one slot per window).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { STORE_URLS, uniq } from './support/stores.js';
import { rng, modelConsume } from './support/window-model.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import { StoreError, storedKey, type ConsumeRequest, type ConsumeResult } from '../src/frontend/ratelimit/store.js';
import { planGroup, PG_MAX_N, PG_GROUP_MAX } from '../src/frontend/ratelimit/stores/postgres.js';
import type { Limit } from '../src/frontend/ratelimit/decide.js';

const T = 1_800_000_000;
const store = await openStore({
  ...NO_STORE_TLS,
  backend: 'postgresql',
  url: STORE_URLS.postgresql,
  sqlite_path: '',
  timeout_ms: 10_000,
  sql_limits_by_id: '',
});
after(() => store.close());

test('planGroup: keys locked in lockOrder over the whole group, one slot per key, window and start, events add to the windows that hold them', () => {
  const a: Limit[] = [
    [5, 60],
    [9, 3600],
  ];
  const reqs = [
    { buckets: [{ key: 'sasl:b', limits: a }], n: 1, nowSec: T, commit: true },
    {
      buckets: [
        { key: 'sasl:a', limits: [[3, 60]] as Limit[] },
        { key: 'rcpt_domain:x', limits: [] as Limit[] },
      ],
      n: 2,
      nowSec: T,
      commit: false,
    },
    { buckets: [{ key: 'sasl:b', limits: [[5, 60]] as Limit[] }], n: 1, nowSec: T - 2, commit: true },
  ].map((req) => ({ req, stored: req.buckets.map((b) => storedKey(b.key)) }));
  const plan = planGroup(reqs);
  const [
    keys,
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
  ] = plan.args;
  assert.deepEqual(keys, ['rcpt_domain:x', 'sasl:a', 'sasl:b']);
  // sasl:b 60 s at T, sasl:b 3600 s, sasl:a 60 s, sasl:b 60 s at T - 2 (its own start).
  assert.deepEqual(slotKey, [3, 3, 2, 3]);
  assert.deepEqual(slotSeconds, [60, 3600, 60, 60]);
  assert.deepEqual(slotStart, [T - 60, T - 3600, T - 60, T - 62]);
  assert.deepEqual(
    [reqN, reqNow, reqCommit],
    [
      [1, 2, 1],
      [T, T, T - 2],
      [true, false, true],
    ],
  );
  assert.deepEqual(
    [chkReq, chkSlot, chkCount],
    [
      [1, 1, 2, 3],
      [1, 2, 3, 4],
      [5, 9, 3, 5],
    ],
  );
  assert.deepEqual(plan.checks[2], { key: 'sasl:a', limit: [3, 60] });
  // Every window of sasl:b starts before T - 2: both its events add to all three; sasl:a's to its one.
  assert.deepEqual(
    [incReq, incSlot],
    [
      [1, 1, 1, 2, 3, 3, 3],
      [1, 2, 4, 3, 1, 2, 4],
    ],
  );
  assert.deepEqual(
    [evReq, evKey],
    [
      [1, 2, 2, 3],
      [3, 2, 1, 3],
    ],
  );
});

test('planGroup: an event after a window of the group started later is still added to it; one before is not', () => {
  const reqs = [
    { buckets: [{ key: 'k', limits: [[9, 10]] as Limit[] }], n: 1, nowSec: T - 20, commit: true },
    { buckets: [{ key: 'k', limits: [[9, 10]] as Limit[] }], n: 1, nowSec: T, commit: true },
  ].map((req) => ({ req, stored: [req.buckets[0]!.key] }));
  const { args } = planGroup(reqs);
  assert.deepEqual(args[3], [T - 30, T - 10]);
  // The event at T - 20 is in the window starting T - 30 only; the one at T in both.
  assert.deepEqual(
    [args[10], args[11]],
    [
      [1, 2, 2],
      [1, 1, 2],
    ],
  );
});

test('a group answers each request as the same requests one after another would be answered (random groups against the model)', async () => {
  const next = rng(1313);
  const prefix = uniq('grp');
  const keys = Array.from({ length: 6 }, (_, i) => `sasl:${prefix}-${i}`);
  const events = new Map<string, Map<number, number>>();
  let now = T;
  for (let round = 0; round < 40; round++) {
    now += Math.floor(next() * 3);
    const size = 1 + Math.floor(next() * 60);
    const reqs: ConsumeRequest[] = Array.from({ length: size }, () => {
      const pick = [
        ...new Set(Array.from({ length: 1 + Math.floor(next() * 2) }, () => keys[Math.floor(next() * 6)]!)),
      ];
      return {
        buckets: pick.map((key) => ({
          key,
          limits: [2, 5, 30]
            .filter(() => next() < 0.7)
            .map((w) => [5 + Math.floor(next() * 40), w] as Limit)
            .concat([[60, 60]]),
        })),
        n: 1 + Math.floor(next() * 3),
        // Clocks a few seconds apart, as several MX hosts' are.
        nowSec: now - Math.floor(next() * 4),
        commit: next() < 0.85,
      };
    });
    // All in one turn: one group (nothing is in flight between rounds).
    const got = await Promise.all(reqs.map((r) => store.consume(r)));
    const want = reqs.map((r) => modelConsume(events, r));
    assert.deepEqual(got, want, `round ${round}`);
  }
  assert.ok(
    [...events.values()].some((ev) => [...ev.values()].reduce((a, b) => a + b, 0) >= 60),
    'some key reached its limits: refusals were exercised',
  );
});

test(`more than PG_GROUP_MAX (${PG_GROUP_MAX}) requests at once: several groups, none lost or doubled`, async () => {
  const key = `sasl:${uniq('many')}`;
  const L = PG_GROUP_MAX + 57;
  const all = await Promise.all(
    Array.from({ length: 3 * PG_GROUP_MAX }, () =>
      store.consume({ buckets: [{ key, limits: [[L, 3600]] }], n: 1, nowSec: T, commit: true }),
    ),
  );
  assert.equal(all.filter((r) => r.ok).length, L);
  assert.deepEqual(all.at(-1), { ok: false, key, limit: [L, 3600], used: L });
});

test('a request the store cannot take fails alone, with a clear error; the others of its turn are answered', async () => {
  const key = `sasl:${uniq('alone')}`;
  const ok = (n: number): Promise<ConsumeResult> =>
    store.consume({ buckets: [{ key, limits: [[10, 60]] }], n, nowSec: T, commit: true });
  const results = await Promise.allSettled([
    ok(1),
    ok(PG_MAX_N + 1),
    store.consume({ buckets: [{ key: 'sasl:\ud800', limits: [[10, 60]] }], n: 1, nowSec: T, commit: true }),
    ok(2),
  ]);
  assert.deepEqual(results[0], { status: 'fulfilled', value: { ok: true } });
  assert.deepEqual(results[3], { status: 'fulfilled', value: { ok: true } });
  for (const [i, msg] of [
    [1, `postgresql: ${PG_MAX_N + 1} events in one request; a row holds 0 to ${PG_MAX_N}`],
    [2, 'key "sasl:\\ud800" is not well-formed Unicode (a lone surrogate)'],
  ] as const) {
    const r = results[i];
    assert.equal(r.status, 'rejected');
    assert.ok(r.reason instanceof StoreError, String(r.reason));
    assert.equal(r.reason.message, msg);
  }
  assert.deepEqual(await store.consume({ buckets: [{ key, limits: [[3, 60]] }], n: 1, nowSec: T, commit: false }), {
    ok: false,
    key,
    limit: [3, 60],
    used: 3,
  });
});
