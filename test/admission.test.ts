import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { admit, closesFirst, type Idle } from '../src/frontend/server/admission.js';

const list =
  (...xs: (Idle | undefined)[]) =>
  () =>
    xs.map((x, i) => [i, x] as const);

test('under the cap: admitted, nobody closed, idleness not even read', () => {
  assert.deepEqual(
    admit(3, 4, () => assert.fail('read')),
    { admit: true },
  );
});

test('at the cap: the longest-idle connection is closed for the new one', () => {
  assert.deepEqual(
    admit(3, 3, list({ answered: 5, since: 30 }, { answered: 1, since: 10 }, { answered: 9, since: 20 })),
    { admit: true, close: 1 },
  );
});

test('one that never sent a request goes first, the oldest of those first', () => {
  assert.deepEqual(
    admit(
      4,
      4,
      list(
        { answered: 5, since: 1 },
        { answered: 0, since: 40 },
        { answered: 0, since: 30 },
        { answered: 2, since: 2 },
      ),
    ),
    { admit: true, close: 2 },
  );
});

test('busy connections are never closed; all busy: refused', () => {
  assert.deepEqual(admit(3, 3, list(undefined, { answered: 1, since: 50 }, undefined)), { admit: true, close: 1 });
  assert.deepEqual(admit(3, 3, list(undefined, undefined, undefined)), { admit: false });
  // Over the cap (max_connections lowered by a reload): still one closed per newcomer.
  assert.deepEqual(admit(9, 3, list({ answered: 1, since: 7 })), { admit: true, close: 0 });
});

test('the one closed is first by closesFirst against every other idle one', () => {
  const idle = fc.option(fc.record({ answered: fc.nat(3), since: fc.nat(1000) }), { nil: undefined });
  fc.assert(
    fc.property(fc.array(idle, { maxLength: 20 }), (xs) => {
      const a = admit(xs.length, xs.length, list(...xs));
      const candidates = xs.flatMap((x, i) => (x === undefined ? [] : [i]));
      if (candidates.length === 0) return assert.deepEqual(a, { admit: false });
      assert.ok(a.admit && a.close !== undefined);
      for (const i of candidates) assert.ok(!closesFirst(xs[i]!, xs[a.close]!), `${i} should go before ${a.close}`);
    }),
    { numRuns: 2000 },
  );
});
