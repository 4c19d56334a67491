// `ratelimit show|reset KIND:ID`, the pure part (inspect.ts): an admin's id
// names the very key a request is counted under, the windows that apply, and
// when a full window frees up (checked against a real store's answer).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { subject } from '../src/frontend/ratelimit/decide.js';
import { rulesFrom } from '../src/frontend/ratelimit/check.js';
import { parseTarget, applying, windowStates, KeyIdError } from '../src/frontend/ratelimit/inspect.js';
import { parseConfig } from '../src/shared/config/load.js';
import { open } from './support/stores.js';

const T = 1_800_000_000;
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

test('parseTarget: the key is the one a request is counted under (addresses folded, IPv6 per /64, domains in lower case)', () => {
  const r = rules(
    '  limit_by_sender: true\n  limit_by_ip: true\n  limited_networks: ["0.0.0.0/0", "::/0"]\n  ipv4_prefix: 24\n',
  );
  const keyOf = (o: Record<string, string>) => {
    const s = subject(req(o), r);
    assert.ok(s.applies);
    return s.ownKeys[0];
  };
  assert.equal(parseTarget('sender:Big@Example.ORG', r).key, keyOf({ sender: 'big@example.org' }));
  assert.equal(parseTarget('sasl:Big@Example.ORG', r).key, keyOf({ sasl_username: 'BIG@example.org' }));
  assert.equal(parseTarget('sasl:Alice', r).key, 'sasl:Alice', 'a SASL name without @ is exact');
  assert.equal(parseTarget('ip:192.0.2.77', r).key, keyOf({ client_address: '192.0.2.1' }));
  assert.equal(parseTarget('ip:192.0.2.0/24', r).key, 'ip:192.0.2.0/24');
  assert.equal(parseTarget('ip:2001:DB8::1', r).key, keyOf({ client_address: '2001:db8::ffff' }));
  assert.equal(parseTarget('ip:2001:db8::/64', r).key, 'ip:2001:db8::/64');
  assert.deepEqual(parseTarget('rcpt_domain:Example.NET', r), {
    kind: 'rcpt_domain',
    id: 'example.net',
    key: 'rcpt_domain:example.net',
  });
  assert.deepEqual(parseTarget('sender_domain:a:b', r).key, 'sender_domain:a:b', 'the kind ends at the first colon');
});

test('parseTarget: every key a sender is counted under is found again from its id', () => {
  fc.assert(
    fc.property(
      fc.string({ minLength: 1, maxLength: 12 }),
      fc.string({ minLength: 1, maxLength: 12 }),
      fc.boolean(),
      (local, domain, fold) => {
        fc.pre(!/[\r\n]/.test(local + domain));
        const r = rules(`  limit_by_sender: true\n  fold_local_part_case: ${fold}\n`);
        const s = subject(req({ sender: `${local}@${domain}` }), r);
        assert.ok(s.applies);
        assert.equal(parseTarget(`sender:${local}@${domain}`, r).key, s.ownKeys[0]);
      },
    ),
  );
});

test('parseTarget: a missing or unknown kind, an empty id, a bad address or network are one clear KeyIdError each', () => {
  const r = rules('  limit_by_sender: true\n');
  const bad: [string, RegExp][] = [
    [
      'bob@example.org',
      /^"bob@example\.org" names no kind: write KIND:ID, e.g\. sender:bob@example\.org or sasl:bob@example\.org \(kinds: sasl, sender, ip, rcpt_domain, sender_domain, all, bytes\)$/,
    ],
    ['2001:db8::1', /^unknown kind "2001" in "2001:db8::1": write KIND:ID, e\.g\. ip:2001:db8::1 /],
    ['user:bob', /^unknown kind "user" in "user:bob": write KIND:ID, e\.g\. sasl:bob, or rcpt_domain:bob/],
    ['sender:', /names no id after "sender:"/],
    ['sasl:a\nb', /line break/],
    ['ip:example.org', /ip:example\.org is not an IP address or network/],
    [
      'ip:2001:db8::/48',
      /counted per \/64 \(ipv6_prefix\), as 2001:db8::\/64: give ip:2001:db8::\/64 or one client address/,
    ],
    ['ip:2001:db8::1/64', /give ip:2001:db8::\/64/],
    ['ip:192.0.2.0/24', /IPv4 clients are counted per \/32/],
    ['rcpt_domain:bob@example.org', /takes a domain, not an address/],
  ];
  for (const [text, msg] of bad)
    assert.throws(
      () => parseTarget(text, r),
      (e: unknown) => e instanceof KeyIdError && msg.test(e.message),
      text,
    );
});

test('applying: sql_limits_by_id over limits_by_id over limits, domains from their maps, and why a key is not counted', () => {
  const r = rules(
    [
      '  limits: [[10, 60]]',
      '  limits_by_id: {"boss@example.org": [], "192.0.2.9": [[99, 60]]}',
      '  exempt_ids: ["Root@Example.org"]',
      '  limit_by_ip: true',
      '  limited_networks: ["192.0.2.0/24"]',
      '  exempt_networks: ["192.0.2.8/32"]',
      '  limits_by_sender_domain: {"Example.org": [[500, 3600]]}',
      '',
    ].join('\n'),
  );
  const of = (text: string, fromDb?: readonly (readonly [number, number])[]) =>
    applying(parseTarget(text, r), r, fromDb);
  assert.deepEqual(of('sasl:bob@example.org'), { limits: [[10, 60]], source: 'limits', notCounted: [] });
  assert.deepEqual(of('sasl:Boss@example.org'), { limits: [], source: 'limits_by_id', notCounted: [] });
  assert.deepEqual(of('sasl:bob@example.org', [[3, 60]]), {
    limits: [[3, 60]],
    source: 'sql_limits_by_id',
    notCounted: [],
  });
  assert.deepEqual(of('sender:root@example.org').notCounted, [
    'limit_by_sender is off',
    'root@example.org is in exempt_ids',
  ]);
  assert.deepEqual(of('ip:192.0.2.9'), { limits: [[99, 60]], source: 'limits_by_id', notCounted: [] });
  assert.deepEqual(of('ip:192.0.2.8').notCounted, ['192.0.2.8 is in exempt_networks']);
  assert.deepEqual(of('ip:198.51.100.1').notCounted, ['198.51.100.1 is not in limited_networks']);
  assert.deepEqual(of('sender_domain:EXAMPLE.org'), {
    limits: [[500, 3600]],
    source: 'limits_by_sender_domain',
    notCounted: [],
  });
  assert.deepEqual(of('rcpt_domain:example.org'), {
    limits: undefined,
    source: 'limits_by_recipient_domain',
    notCounted: ['example.org is not in limits_by_recipient_domain'],
  });
});

test('windowStates: used, full, and the first second one more event fits', () => {
  const events = [
    { at: T - 50, n: 2 },
    { at: T - 5, n: 1 },
  ];
  assert.deepEqual(
    windowStates(
      events,
      [
        [3, 60],
        [5, 60],
        [3, 10],
        [0, 60],
      ],
      T,
    ),
    [
      { limit: [3, 60], used: 3, full: true, freesAt: T + 11 },
      { limit: [5, 60], used: 3, full: false },
      { limit: [3, 10], used: 1, full: false },
      { limit: [0, 60], used: 3, full: true, freesAt: null },
    ],
  );
  assert.deepEqual(
    windowStates(events, [[1, 60]], T),
    [{ limit: [1, 60], used: 3, full: true, freesAt: T - 5 + 61 }],
    'both seconds must leave',
  );
  assert.deepEqual(windowStates([], [[1, 60]], T), [{ limit: [1, 60], used: 0, full: false }]);
});

test('windowStates agrees with a real store: refused one second before freesAt, admitted at it', async () => {
  const s = await open('sqlite');
  try {
    let i = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ ago: fc.integer({ min: 0, max: 120 }), n: fc.integer({ min: 1, max: 4 }) }), {
          minLength: 1,
          maxLength: 8,
        }),
        fc.integer({ min: 1, max: 12 }),
        fc.integer({ min: 1, max: 100 }),
        async (evs, count, seconds) => {
          const key = `inspect-${process.pid}-${i++}`;
          for (const e of [...evs].sort((a, b) => b.ago - a.ago))
            await s.consume({ buckets: [{ key, limits: [] }], n: e.n, nowSec: T - e.ago, commit: true });
          const [w] = windowStates(await s.events(key, 0), [[count, seconds]], T);
          const fits = async (t: number) =>
            (await s.consume({ buckets: [{ key, limits: [[count, seconds]] }], n: 1, nowSec: t, commit: false })).ok;
          assert.equal(await fits(T), !w!.full);
          if (w!.full) {
            assert.equal(await fits(w!.freesAt! - 1), false, 'still full a second before');
            assert.equal(await fits(w!.freesAt!), true, 'free at freesAt');
          }
        },
      ),
      { numRuns: 60 },
    );
  } finally {
    await s.close();
  }
});
