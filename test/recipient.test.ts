import { test } from 'node:test';
import assert from 'node:assert/strict';
import { recipientToUser, stripExtension } from '../src/frontend/quota/recipient.js';

const rules = (delimiters = '+', domains: string[] = []) => ({ delimiters, domains: new Set(domains) });

test('local part, extension cut, case folded', () => {
  assert.deepEqual(recipientToUser('Bob+Lists@Example.TEST', rules()), { ok: true, user: 'bob' });
  assert.deepEqual(recipientToUser('bob@example.test', rules()), { ok: true, user: 'bob' });
  assert.deepEqual(recipientToUser('bob', rules()), { ok: true, user: 'bob' });
});

test('any character of recipient_delimiter starts the extension, the first one wins', () => {
  assert.equal(stripExtension('bob-a+b', '+-'), 'bob');
  assert.equal(stripExtension('bob+a-b', '-+'), 'bob');
  assert.equal(stripExtension('bob+a', ''), 'bob+a');
});

test('Postfix split_addr exceptions', () => {
  assert.equal(stripExtension('+bob', '+'), '+bob');
  assert.equal(stripExtension('owner-list', '-'), 'owner-list');
  assert.equal(stripExtension('list-request', '-'), 'list-request');
  assert.equal(stripExtension('mailer-daemon', '-'), 'mailer-daemon');
  assert.equal(stripExtension('bob-x', '-'), 'bob');
});

test('local domains: others are not ours', () => {
  const r = rules('+', ['example.test']);
  assert.deepEqual(recipientToUser('bob@EXAMPLE.test', r), { ok: true, user: 'bob' });
  assert.equal(recipientToUser('bob@elsewhere.test', r).ok, false);
  assert.equal(recipientToUser('bob', r).ok, false);
});

test('names that cannot be Unix users never reach a lookup', () => {
  for (const bad of [
    '-f@x',
    '--help@x',
    '../etc@x',
    'a;rm -rf@x',
    'a b@x',
    '$(id)@x',
    '0@x',
    '#0@x',
    'ｂob@x',
    'x'.repeat(40) + '@x',
    '@x',
    '',
  ]) {
    assert.equal(recipientToUser(bad, rules()).ok, false, bad);
  }
});
