import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  PolicyParser,
  ProtocolError,
  type Attributes,
  MAX_LINE_BYTES,
  MAX_REQUEST_BYTES,
  MAX_ATTRIBUTES,
  FIRST_PARTIAL_BYTES,
} from '../src/frontend/protocol/parser.js';
import { formatReply } from '../src/frontend/protocol/reply.js';
import { encodeRequest } from '../src/frontend/protocol/request.js';

const toObj = (reqs: Attributes[]): Record<string, string>[] => reqs.map((r) => Object.fromEntries(r.entries()));

function parseAll(chunks: Buffer[]): Record<string, string>[] {
  const p = new PolicyParser();
  return toObj(chunks.flatMap((c) => p.push(c)));
}

const attrName = fc.stringMatching(/^[a-z_]{1,20}$/);
// What Postfix can send in a value: no line break, no NUL (encodeRequest refuses those).
const attrValue = fc.string({ maxLength: 40 }).filter((s) => !/[\n\r\0]/.test(s));
const requestArb = fc.dictionary(attrName, attrValue, { minKeys: 1, maxKeys: 12 });

test('any split of the byte stream yields the same requests', () => {
  fc.assert(
    fc.property(
      fc.array(requestArb, { minLength: 1, maxLength: 5 }),
      fc.array(fc.nat(), { maxLength: 20 }),
      (reqs, cuts) => {
        const bytes = Buffer.from(reqs.map(encodeRequest).join(''));
        const whole = parseAll([bytes]);
        const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
        const pieces: Buffer[] = [];
        let at = 0;
        for (const p of points) {
          pieces.push(bytes.subarray(at, p));
          at = p;
        }
        pieces.push(bytes.subarray(at));
        assert.deepEqual(parseAll(pieces), whole);
        assert.deepEqual(
          whole,
          reqs.map((r) => ({ ...r })),
        );
      },
    ),
    { numRuns: 500 },
  );
});

test('byte-at-a-time parsing equals whole parsing, including multi-byte UTF-8', () => {
  const bytes = Buffer.from('request=smtpd_access_policy\nrecipient=jörg+日本@example.org\n\nx=1\n\n');
  const one = parseAll([bytes]);
  const split = parseAll([...bytes].map((b) => Buffer.from([b])));
  assert.deepEqual(split, one);
  assert.equal(one[0]!.recipient, 'jörg+日本@example.org');
});

test('invalid UTF-8 becomes U+FFFD and does not break the connection', () => {
  const p = new PolicyParser();
  const reqs = toObj(
    p.push(Buffer.concat([Buffer.from('recipient=a'), Buffer.from([0xff, 0xfe]), Buffer.from('b@x\n\n')])),
  );
  assert.equal(reqs[0]!.recipient, 'a\ufffd\ufffdb@x');
  assert.equal(toObj(p.push(Buffer.from('request=next\n\n')))[0]!.request, 'next');
});

test('unknown attributes are kept out of the way, last value wins, CRLF tolerated', () => {
  const r = parseAll([Buffer.from('foo=1\r\nfoo=2\r\nrequest=smtpd_access_policy\r\n\r\n')]);
  assert.deepEqual(r, [{ foo: '2', request: 'smtpd_access_policy' }]);
});

test('get(name) is the last value of that name, whatever the other lines and their bytes', () => {
  // Short, overlapping names (a, ab, b_a...), repeats, CRLF, multi-byte and invalid UTF-8 before the line.
  const name = fc.stringMatching(/^[ab_]{1,3}$/);
  const value = fc
    .oneof(fc.string({ maxLength: 8, unit: 'binary' }), fc.constantFrom('', '\r', 'x\r', 'é=日', '\ufffd'))
    .filter((v) => !v.includes('\n'));
  fc.assert(
    fc.property(
      fc.array(fc.tuple(name, value, fc.boolean()), { minLength: 1, maxLength: 10 }),
      name,
      fc.boolean(),
      (lines, probe, invalid) => {
        let bytes = Buffer.from(lines.map(([n, v, crlf]) => `${n}=${v}${crlf ? '\r' : ''}\n`).join(''));
        if (invalid) bytes = Buffer.concat([Buffer.from('z='), Buffer.from([0xe2, 0x82]), Buffer.from('\n'), bytes]);
        const [req] = new PolicyParser().push(Buffer.concat([bytes, Buffer.from('\n')]));
        const expected = new Map<string, string>();
        for (const [n, v, crlf] of lines)
          expected.set(n, new TextDecoder().decode(Buffer.from(crlf || !v.endsWith('\r') ? v : v.slice(0, -1))));
        assert.equal(req!.get(probe), expected.get(probe));
        for (const [n, v] of expected) assert.equal(req!.get(n), v);
      },
    ),
    { numRuns: 2000 },
  );
});

test('a value may contain "="', () => {
  assert.deepEqual(parseAll([Buffer.from('ccert_subject=CN=a=b\n\n')]), [{ ccert_subject: 'CN=a=b' }]);
});

for (const [name, input, reason] of [
  ['line without "="', 'garbage\n', /without "="/],
  ['empty attribute name', '=x\n', /empty name/],
  ['empty request', '\n', /empty request/],
] as const) {
  test(`garbage: ${name} is a ProtocolError`, () => {
    assert.throws(
      () => new PolicyParser().push(Buffer.from(input)),
      (e: unknown) => e instanceof ProtocolError && reason.test(e.message),
    );
  });
}

test('an over-long line is refused before its newline arrives', () => {
  const p = new PolicyParser();
  p.push(Buffer.from('a=' + 'x'.repeat(MAX_LINE_BYTES - 2)));
  assert.throws(() => p.push(Buffer.from('x')), ProtocolError);
});

test('a line of exactly the limit is accepted', () => {
  const p = new PolicyParser();
  assert.equal(p.push(Buffer.from('a=' + 'x'.repeat(MAX_LINE_BYTES - 2) + '\n\n')).length, 1);
});

test('an over-large request is refused', () => {
  const p = new PolicyParser();
  const line = 'a=' + 'x'.repeat(MAX_LINE_BYTES - 10) + '\n';
  assert.throws(() => {
    for (let i = 0; i < MAX_REQUEST_BYTES / line.length + 2; i++) p.push(Buffer.from(line));
  }, /larger than/);
});

test('too many attributes are refused', () => {
  const p = new PolicyParser();
  const body = Array.from({ length: MAX_ATTRIBUTES + 1 }, (_, i) => `a${i}=1\n`).join('');
  assert.throws(() => p.push(Buffer.from(body)), /more than/);
});

test('random bytes never throw anything but ProtocolError', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 2000 }), (arr) => {
      try {
        new PolicyParser().push(Buffer.from(arr));
      } catch (e) {
        assert.ok(e instanceof ProtocolError);
      }
    }),
    { numRuns: 2000 },
  );
});

test('one byte per read: the unfinished request is held in one buffer of at most MAX_REQUEST_BYTES, and none once it is done', () => {
  const p = new PolicyParser();
  const line = 'a=' + 'x'.repeat(253) + '\n';
  const body = Buffer.from(line.repeat(Math.floor((MAX_REQUEST_BYTES - 1) / line.length)) + '\n');
  let most = 0;
  for (let i = 0; i < body.length - 1; i++) {
    assert.deepEqual(p.push(body.subarray(i, i + 1)), []);
    // The one-byte read is let go once parsed: what is held is the request's buffer, a power of two from FIRST_PARTIAL_BYTES up.
    most = Math.max(most, p.heldBytes);
    if (i === 10) assert.equal(p.heldBytes, FIRST_PARTIAL_BYTES);
  }
  assert.ok(most <= MAX_REQUEST_BYTES && most >= body.length - 1, `held at most ${most} bytes`);
  const [req] = p.push(body.subarray(body.length - 1));
  assert.equal(req!.get('a'), 'x'.repeat(253));
  assert.equal(p.heldBytes, 0);
  assert.equal(p.midRequest, false);
});

test('next() takes one request at a time; unread is what is left of the read; more fed before that is joined to it', () => {
  const p = new PolicyParser();
  p.feed(Buffer.from('n=1\n\nn=2\n\nn=3'));
  assert.equal(p.next()!.get('n'), '1');
  assert.equal(p.unread, 8);
  p.feed(Buffer.from('\n\nn=4\n'));
  assert.deepEqual([p.next()!.get('n'), p.next()!.get('n'), p.next()], ['2', '3', undefined]);
  assert.equal(p.unread, 0);
  assert.equal(p.midRequest, true);
  assert.equal(p.push(Buffer.from('\n'))[0]!.get('n'), '4');
});

test('replies are exactly action=TEXT and an empty line, CR/LF removed', () => {
  assert.equal(formatReply('DUNNO'), 'action=DUNNO\n\n');
  assert.equal(formatReply('452 4.2.2 a\r\nb\nc'), 'action=452 4.2.2 a b c\n\n');
});

test('encodeRequest refuses what would change the request the server reads', () => {
  assert.equal(
    encodeRequest([
      ['request', 'smtpd_access_policy'],
      ['size', '0'],
    ]),
    'request=smtpd_access_policy\nsize=0\n\n',
  );
  assert.equal(encodeRequest({ a: 'x=y' }), 'a=x=y\n\n', 'an = in a value is data');
  const bads: Record<string, string>[] = [
    { 'a=b': 'x' },
    { '': 'x' },
    { 'a\nb': 'x' },
    { a: 'x\nrecipient=evil' },
    { a: 'x\r' },
    { a: 'x\0' },
  ];
  for (const bad of bads) {
    assert.throws(() => encodeRequest(bad), RangeError, JSON.stringify(bad));
  }
});
