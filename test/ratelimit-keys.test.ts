// How every store holds a key (storedKey): as it is when short, else a
// readable head plus the SHA-256 of the whole key; the same on every backend
// and in every version, so it is checked against a digest computed outside
// Node (sha256sum). Also the order of the upgrade moves (rekeyPlan) and how
// the report shows keys. The backends themselves: ratelimit-store.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  storedKey,
  rekeyPlan,
  STORE_KEY_MAX_BYTES,
  STORE_KEY_PREFIX_BYTES,
  HASHED_KEY_MARK,
} from '../src/frontend/ratelimit/store.js';
import { reportText } from '../src/cli/report/report.js';
import { shownKey } from '../src/frontend/mail/shown.js';

const bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

test('a long key: its first 128 bytes, then the SHA-256 of its UTF-8 bytes and its length (digest from sha256sum)', () => {
  const key = `sender:${'a'.repeat(600)}@example.org`;
  // printf 'sender:%s@example.org' "$(head -c 600 /dev/zero | tr '\0' a)" | sha256sum
  assert.equal(
    storedKey(key),
    `sender:${'a'.repeat(121)}\u2026[sha256:d43b3cdabcb896eb2f06e0c2a61bbb25ec9bdce9830a9ed10a4e1e56309af7ee, 619 bytes]`,
  );
});

test('held as it is: up to STORE_KEY_MAX_BYTES bytes, without NUL or the hash mark', () => {
  for (const key of [
    'sasl:alice',
    'sender:',
    'ip:2001:db8::/64',
    `sender:${'é'.repeat((STORE_KEY_MAX_BYTES - 7) >> 1)}`,
    'sender:a ',
    'sender:\ufffd\r\n\u{1f600}',
  ]) {
    assert.ok(bytes(key) <= STORE_KEY_MAX_BYTES);
    assert.equal(storedKey(key), key);
  }
  for (const key of [
    'sender:a\0',
    `sender:x${HASHED_KEY_MARK}`,
    `sender:${'a'.repeat(STORE_KEY_MAX_BYTES)}`,
    `sender:${'é'.repeat(253)}`,
  ]) {
    assert.notEqual(storedKey(key), key, JSON.stringify(key.slice(0, 20)));
    assert.ok(storedKey(key).includes(HASHED_KEY_MARK));
  }
});

test('the readable head never cuts a character and shows control characters (NUL too) as U+FFFD', () => {
  const key = `s:\0\t${'\u{1f600}'.repeat(100)}`;
  const head = storedKey(key).slice(0, storedKey(key).indexOf(HASHED_KEY_MARK));
  assert.equal(
    head,
    `s:\ufffd\ufffd${'\u{1f600}'.repeat(30)}`,
    '2 + 3 + 3 + 30 * 4 = 128 bytes: a 31st emoji would pass it',
  );
  assert.ok(bytes(head) <= STORE_KEY_PREFIX_BYTES);
});

test("a key that equals another key's stored form is stored apart from it", () => {
  const long = `sender:${'b'.repeat(700)}`;
  const forged = storedKey(long);
  assert.ok(bytes(forged) <= STORE_KEY_MAX_BYTES);
  assert.notEqual(storedKey(forged), forged);
  assert.notEqual(storedKey(forged), storedKey(long));
});

test('property: stored keys are well-formed, within STORE_KEY_MAX_BYTES, and distinct for distinct keys', () => {
  const piece = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 40 }),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.constantFrom('\0', ' ', '\ufffd', HASHED_KEY_MARK, '\u{1f600}', 'a'.repeat(300), 'é'.repeat(150)),
  );
  const key = fc.array(piece, { maxLength: 40 }).map((p) => p.join(''));
  fc.assert(
    fc.property(key, key, (a, b) => {
      for (const k of [a, b]) {
        const s = storedKey(k);
        assert.ok(bytes(s) <= STORE_KEY_MAX_BYTES, `${bytes(k)} -> ${bytes(s)} bytes`);
        assert.ok(!/\p{Cs}/u.test(s) && !s.includes('\0'));
        assert.equal(storedKey(k), s, 'the same every time');
      }
      assert.equal(storedKey(a) === storedKey(b), a === b);
    }),
    { numRuns: 1000 },
  );
});

test("rekeyPlan: keys storedKey() keeps are not moved; a key occupying another's target moves first", () => {
  const long = `sender:${'c'.repeat(600)}`;
  const forged = storedKey(long);
  const forgedTarget = storedKey(forged);
  const plan = rekeyPlan(['sasl:a', long, forged, 'sender:x\0']);
  assert.deepEqual(plan, [
    [forged, forgedTarget],
    [long, forged],
    ['sender:x\0', storedKey('sender:x\0')],
  ]);
  // Applied in order, no move lands on a key still to move: every count ends where storedKey() looks for it.
  const table = new Map([
    ['sasl:a', 1],
    [long, 2],
    [forged, 3],
    ['sender:x\0', 4],
  ]);
  for (const [from, to] of plan) {
    assert.ok(!table.has(to), `${to} is free`);
    table.set(to, table.get(from)!);
    table.delete(from);
  }
  assert.deepEqual(
    [...table].sort(),
    [
      ['sasl:a', 1],
      [storedKey(long), 2],
      [storedKey(forged), 3],
      [storedKey('sender:x\0'), 4],
    ].sort(),
  );
});

test('the report shows each key on one line: control characters, line separators and backslash escaped', () => {
  const keys = [
    'sender:a\r\n.\r\nMAIL FROM:<x>',
    'sender:b\r.',
    'sender:c\u2028d',
    'sender:\\x0d',
    storedKey(`sender:${'d'.repeat(600)}`),
  ];
  assert.equal(shownKey('sender:a\r\n.\r\nMAIL'), 'sender:a\\x0d\\x0a.\\x0d\\x0aMAIL');
  assert.equal(shownKey('sender:\\x0d'), 'sender:\\\\x0d', 'a backslash is escaped, so no key reads as another');
  assert.equal(shownKey('sender:c\u2028\u0085\x7f'), 'sender:c\\u2028\\x85\\x7f');
  const text = reportText(keys.map((key, i) => ({ key, seconds: 60, hits: i + 1 })));
  const lines = text.split('\n');
  assert.equal(lines.length, 4 + keys.length + 1, text);
  assert.ok(!/[\r\u2028]/.test(text));
  for (const k of keys) assert.equal(lines.filter((l) => l.startsWith(`${shownKey(k)} `)).length, 1, k);
  assert.ok(text.includes(`sender:${'d'.repeat(121)}\u2026[sha256:`), 'a hashed key shows its readable head');
});
