// Rate-limit ids that are mail addresses, at the level of the pure decision
// (decide.ts, and addressKey() which the config loader shares): they compare
// as Postfix compares addresses. Through every real store, with
// sql_limits_by_id: ratelimit-store.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { addressKey } from '../src/shared/address.js';
import { subject, type Subject } from '../src/frontend/ratelimit/decide.js';
import { rulesFrom } from '../src/frontend/ratelimit/check.js';
import { parseConfig } from '../src/shared/config/load.js';

const rules = (yaml: string) => rulesFrom(parseConfig(`rate_limit:\n${yaml}`, 't').rate_limit);
const req = (o: Record<string, string>) =>
  new Map(
    Object.entries({
      request: 'smtpd_access_policy',
      protocol_state: 'RCPT',
      recipient: 'r@example.net',
      client_address: '192.0.2.1',
      ...o,
    }),
  );
const counted = (s: Subject) => {
  assert.ok(s.applies, JSON.stringify(s));
  return { id: s.id, buckets: s.steps.flatMap((st) => st.buckets).map((b) => [b.key, b.limits]) };
};

test('addressKey: the domain always folds, the local part when asked; ids without @ stay as they are', () => {
  assert.equal(addressKey('Big@Example.ORG', true), 'big@example.org');
  assert.equal(addressKey('Big@Example.ORG', false), 'Big@example.org');
  assert.equal(addressKey('"Odd@Local"@Example.org', true), '"odd@local"@example.org', 'split at the last @');
  assert.equal(addressKey('\u00c9lise@B\u00fccher.Example', true), '\u00e9lise@b\u00fccher.example');
  for (const id of ['Alice', '192.0.2.1', '2001:DB8::/64', '']) assert.equal(addressKey(id, true), id);
  assert.equal(addressKey('Trailing@', true), 'trailing@');
});

test('addressKey is idempotent, and makes one key of ASCII addresses that differ only in case', () => {
  const id = fc
    .array(
      fc.oneof(fc.string({ unit: 'grapheme', maxLength: 8 }), fc.constantFrom('@', 'I', '\u0130', '\u00df', 'K')),
      { maxLength: 8 },
    )
    .map((p) => p.join(''));
  fc.assert(
    fc.property(id, fc.boolean(), (s, fold) => {
      const k = addressKey(s, fold);
      assert.equal(addressKey(k, fold), k);
      assert.equal(k.includes('@'), s.includes('@'));
    }),
    { numRuns: 2000 },
  );
  fc.assert(
    fc.property(
      fc.string({ unit: 'grapheme-ascii', maxLength: 12 }),
      fc.string({ unit: 'grapheme-ascii', maxLength: 12 }).filter((d) => !d.includes('@')),
      (local, domain) => {
        const a = `${local}@${domain}`;
        assert.equal(addressKey(a.toUpperCase(), true), addressKey(a.toLowerCase(), true));
        assert.equal(
          addressKey(`${local}@${domain.toUpperCase()}`, false),
          addressKey(`${local}@${domain.toLowerCase()}`, false),
        );
      },
    ),
    { numRuns: 2000 },
  );
});

test('limits_by_id written in any case applies to the sender in any case, under one counter key', () => {
  const r = rules('  limits: [[1, 60]]\n  limit_by_sender: true\n  limits_by_id: {Big@Example.org: [[5, 60]]}\n');
  for (const sender of ['big@example.org', 'BIG@EXAMPLE.ORG', 'Big@Example.org']) {
    assert.deepEqual(
      counted(subject(req({ sender }), r)),
      { id: 'big@example.org', buckets: [['sender:big@example.org', [[5, 60]]]] },
      sender,
    );
  }
  assert.deepEqual(counted(subject(req({ sender: 'other@Example.org' }), r)).buckets, [
    ['sender:other@example.org', [[1, 60]]],
  ]);
});

test('a SASL name that is an address folds like a sender; one that is not keeps its case', () => {
  const r = rules('  limits: [[1, 60]]\n  limits_by_id: {Carol@Example.org: [[7, 60]], Dave: [[9, 60]]}\n');
  assert.deepEqual(counted(subject(req({ sasl_username: 'CAROL@example.ORG' }), r)), {
    id: 'carol@example.org',
    buckets: [['sasl:carol@example.org', [[7, 60]]]],
  });
  assert.deepEqual(counted(subject(req({ sasl_username: 'Dave' }), r)).buckets, [['sasl:Dave', [[9, 60]]]]);
  assert.deepEqual(
    counted(subject(req({ sasl_username: 'dave' }), r)).buckets,
    [['sasl:dave', [[1, 60]]]],
    'a SASL name is not an address: compared exactly',
  );
});

test('exempt_ids in any case exempt the address in any case', () => {
  const r = rules('  limits: [[0, 60]]\n  limit_by_sender: true\n  exempt_ids: [Boss@Example.ORG, Robot]\n');
  assert.deepEqual(subject(req({ sender: 'boss@example.org' }), r), { applies: false, reason: 'exempt' });
  assert.deepEqual(subject(req({ sasl_username: 'BOSS@EXAMPLE.ORG' }), r), { applies: false, reason: 'exempt' });
  assert.deepEqual(subject(req({ sasl_username: 'Robot' }), r), { applies: false, reason: 'exempt' });
  assert.ok(subject(req({ sasl_username: 'robot' }), r).applies, 'not an address: its case counts');
});

test('fold_local_part_case: false keeps local parts apart, domains still fold', () => {
  const r = rules(
    '  limits: [[1, 60]]\n  limit_by_sender: true\n  fold_local_part_case: false\n  limits_by_id: {Big@Example.org: [[5, 60]]}\n  exempt_ids: [Boss@Example.ORG]\n',
  );
  assert.deepEqual(counted(subject(req({ sender: 'Big@EXAMPLE.org' }), r)), {
    id: 'Big@example.org',
    buckets: [['sender:Big@example.org', [[5, 60]]]],
  });
  assert.deepEqual(counted(subject(req({ sender: 'big@example.org' }), r)).buckets, [
    ['sender:big@example.org', [[1, 60]]],
  ]);
  assert.deepEqual(subject(req({ sender: 'Boss@example.org' }), r), { applies: false, reason: 'exempt' });
  assert.ok(subject(req({ sender: 'boss@example.org' }), r).applies);
});

test('sender and recipient domain counters fold the domain, whatever the case in the config or the request', () => {
  const r = rules(
    '  limits: [[100, 60]]\n  limit_by_sender: true\n  limits_by_sender_domain: {Spam.Example: [[2, 60]]}\n  limits_by_recipient_domain: {GMAIL.example: [[3, 60]]}\n',
  );
  assert.deepEqual(counted(subject(req({ sender: 'X@sPAM.example', recipient: 'y@Gmail.Example' }), r)).buckets, [
    ['sender:x@spam.example', [[100, 60]]],
    ['rcpt_domain:gmail.example', [[3, 60]]],
    ['sender_domain:spam.example', [[2, 60]]],
  ]);
});
