// Limits policyd-rate-limit does not have, at the level of the pure decision
// and the config: defaults per identity kind, the server-wide window, volume
// (bytes) windows and where they are counted, and the keys `ratelimit
// show|reset` take for them. Through every real store: ratelimit-store.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subject, longestWindow, type Subject } from '../src/frontend/ratelimit/decide.js';
import { rulesFrom } from '../src/frontend/ratelimit/check.js';
import { parseTarget, applying, KeyIdError } from '../src/frontend/ratelimit/inspect.js';
import { parseConfig, ConfigError } from '../src/shared/config/load.js';

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
/** The steps, as [n, record, unit, [key, limits]...]. */
const steps = (s: Subject) => {
  assert.ok(s.applies, JSON.stringify(s));
  return s.steps.map((st) => [st.n, st.record, st.unit, ...st.buckets.map((b) => [b.key, b.limits])]);
};

test('limits_by_kind: each kind its default; limits_by_id and sql_limits_by_id over it; limits for a kind not named', () => {
  const r = rules(
    '  limits: [[9, 60]]\n  limit_by_sender: true\n  limit_by_ip: true\n  limited_networks: ["192.0.2.0/24"]\n' +
      '  limits_by_kind: {sasl: [[1, 60]], ip: []}\n  limits_by_id: {Boss: [[5, 60]]}\n',
  );
  assert.deepEqual(steps(subject(req({ sasl_username: 'alice' }), r)), [
    [1, true, 'events', ['sasl:alice', [[1, 60]]]],
  ]);
  assert.deepEqual(steps(subject(req({ sasl_username: 'Boss' }), r)), [[1, true, 'events', ['sasl:Boss', [[5, 60]]]]]);
  assert.deepEqual(steps(subject(req({ sasl_username: 'alice' }), r, [[2, 60]])), [
    [1, true, 'events', ['sasl:alice', [[2, 60]]]],
  ]);
  assert.deepEqual(steps(subject(req({ sender: 'x@example.org' }), r)), [
    [1, true, 'events', ['sender:x@example.org', [[9, 60]]]],
  ]);
  assert.deepEqual(steps(subject(req({}), r)), [], 'ip: [] is unlimited');
  const t = parseTarget('sasl:alice', r);
  assert.deepEqual(applying(t, r), { limits: [[1, 60]], source: 'limits_by_kind.sasl', notCounted: [] });
  assert.equal(applying(parseTarget('sasl:Boss', r), r).source, 'limits_by_id');
  assert.equal(applying(parseTarget('sender:x@example.org', r), r).source, 'limits');
});

test('server_limits: one more bucket, all:, with the id and domain buckets; an unlimited id still counts there, an exempt one not', () => {
  const r = rules(
    '  limits: [[9, 60]]\n  count_mode: data_recipients\n  server_limits: [[100, 60]]\n' +
      '  limits_by_id: {free: []}\n  exempt_ids: [robot]\n  limits_by_recipient_domain: {example.net: [[7, 60]]}\n',
  );
  const at = (o: Record<string, string>) => subject(req({ protocol_state: 'DATA', recipient_count: '3', ...o }), r);
  assert.deepEqual(steps(at({ sasl_username: 'alice' })), [
    [3, true, 'events', ['sasl:alice', [[9, 60]]], ['rcpt_domain:example.net', [[7, 60]]], ['all:', [[100, 60]]]],
  ]);
  assert.deepEqual(steps(at({ sasl_username: 'free', recipient: 'r@other.example' })), [
    [3, true, 'events', ['all:', [[100, 60]]]],
  ]);
  assert.deepEqual(at({ sasl_username: 'robot' }), { applies: false, reason: 'exempt' });
  assert.deepEqual(applying(parseTarget('all:', r), r), {
    limits: [[100, 60]],
    source: 'server_limits',
    notCounted: [],
  });
  assert.deepEqual(applying(parseTarget('all:', rules('')), rules('')), {
    limits: undefined,
    source: 'server_limits',
    notCounted: ['server_limits is empty'],
  });
});

test('volume_limits: the declared size is looked at where events are counted, the real size counted at END-OF-MESSAGE, once per message', () => {
  const r = rules(
    '  limits: [[9, 60]]\n  count_mode: data_recipients\n  volume_limits: [[1000000, 3600]]\n' +
      '  volume_limits_by_id: {Big@Example.org: [[5000000, 3600]], free: []}\n',
  );
  const at = (state: string, o: Record<string, string>) =>
    subject(req({ protocol_state: state, recipient_count: '4', sasl_username: 'alice', ...o }), r);
  assert.deepEqual(steps(at('DATA', { size: '2048' })), [
    [2048, false, 'declared bytes', ['bytes:sasl:alice', [[1000000, 3600]]]],
    [4, true, 'events', ['sasl:alice', [[9, 60]]]],
  ]);
  // 0 (not declared), none, or not a number: one byte is looked at, so only a full window refuses.
  for (const size of [{ size: '0' }, {}, { size: '12abc' }, { size: '-5' }] as Record<string, string>[])
    assert.equal(steps(at('DATA', size))[0]![0], 1, JSON.stringify(size));
  assert.deepEqual(steps(at('END-OF-MESSAGE', { size: '31337' })), [
    [31337, true, 'bytes', ['bytes:sasl:alice', [[1000000, 3600]]]],
  ]);
  assert.deepEqual(at('END-OF-MESSAGE', { size: '0' }), {
    applies: false,
    reason: 'END-OF-MESSAGE without a size: no bytes counted',
  });
  assert.deepEqual(steps(at('END-OF-MESSAGE', { size: '10', sasl_username: 'BIG@example.org' })), [
    [10, true, 'bytes', ['bytes:sasl:big@example.org', [[5000000, 3600]]]],
  ]);
  assert.deepEqual(steps(at('END-OF-MESSAGE', { size: '10', sasl_username: 'free' })), []);
  assert.deepEqual(steps(at('DATA', { size: '10', sasl_username: 'free' })), [
    [4, true, 'events', ['sasl:free', [[9, 60]]]],
  ]);
  // Without volume limits END-OF-MESSAGE stays uncounted, as in policyd-rate-limit.
  assert.deepEqual(subject(req({ protocol_state: 'END-OF-MESSAGE', sasl_username: 'a', size: '9' }), rules('')), {
    applies: false,
    reason: 'count_mode rcpt: state END-OF-MESSAGE not counted',
  });
  const t = parseTarget('bytes:sasl:Big@Example.ORG', r);
  assert.equal(t.key, 'bytes:sasl:big@example.org');
  assert.deepEqual(applying(t, r), { limits: [[5000000, 3600]], source: 'volume_limits_by_id', notCounted: [] });
  assert.equal(applying(parseTarget('bytes:sasl:alice', r), r).source, 'volume_limits');
});

test('clean keeps events for the longest window of every kind of limit', () => {
  assert.equal(longestWindow(rules('  limits: [[1, 60]]\n  server_limits: [[1, 7200]]\n')), 7200);
  assert.equal(longestWindow(rules('  limits: [[1, 60]]\n  volume_limits: [[1, 90000]]\n')), 90000);
  assert.equal(longestWindow(rules('  limits: [[1, 60]]\n  limits_by_kind: {ip: [[1, 600]]}\n')), 600);
  assert.equal(longestWindow(rules('  limits: [[1, 60]]\n  volume_limits_by_id: {a: [[1, 700]]}\n')), 700);
});

test('config: a kind that is not one, volume ids that fold into one, a bad hold_action: one clear error each', () => {
  const bad: [string, RegExp][] = [
    ['  limits_by_kind: {user: [[1, 60]]}\n', /limits_by_kind.*user: not an id kind \(kinds: sasl, sender, ip\)/],
    ['  limits_by_kind: {sasl: [1, 60]}\n', /sasl: must be a list of \[count, seconds\] windows.*\[\[1, 60\]\]/],
    ['  server_limits: [[1, 0]]\n', /server_limits.*seconds >= 1/],
    [
      '  volume_limits_by_id: {A@Example.org: [[1, 60]], a@example.org: [[2, 60]]}\n',
      /volume_limits_by_id.*are one address, a@example\.org/,
    ],
    ['  hold_action: "HOLD\\nX"\n', /hold_action/],
    ['  alert_on_refusal: 1\n', /alert_on_refusal/],
  ];
  for (const [yaml, msg] of bad) assert.throws(() => rules(yaml), { name: ConfigError.name, message: msg }, yaml);
});

test('ratelimit show|reset keys: all: takes nothing after it, bytes: takes an id of its own', () => {
  const r = rules('  limit_by_sender: true\n');
  assert.deepEqual(parseTarget('all:', r), { kind: 'all', id: '', key: 'all:' });
  assert.equal(parseTarget('bytes:ip:2001:db8::1', r).key, 'bytes:ip:2001:db8::/64');
  for (const [text, msg] of [
    ['all:x', /nothing after it/],
    ['bytes:rcpt_domain:example.net', /volumes are counted per id/],
    ['bytes:', /names no id/],
    ['bytes:bob', /names no kind/],
  ] as const)
    assert.throws(() => parseTarget(text, r), { name: KeyIdError.name, message: msg }, text);
});
