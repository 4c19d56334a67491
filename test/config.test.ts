import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseConfig, loadConfig, defaultConfig, ConfigError } from '../src/shared/config/load.js';
import { parseNetwork } from '../src/shared/network.js';
import { FIELDS, ACTION_FIELDS, type Config } from '../src/shared/config/schema.js';
import { fieldTable, oneOf, str } from '../src/shared/config/checks.js';
import { RATE_FIELDS } from '../src/shared/config/rate-schema.js';
import { rulesFrom } from '../src/frontend/ratelimit/check.js';
import { inNetworks } from '../src/frontend/ratelimit/net.js';
import { recipientToUser } from '../src/frontend/quota/recipient.js';

const err = (text: string): string => {
  try {
    parseConfig(text, 'f.yaml');
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    return e.message;
  }
  assert.fail('no error');
};

test('an empty file gives the defaults', () => {
  assert.deepEqual(parseConfig('', 'f.yaml'), defaultConfig());
  assert.deepEqual(parseConfig('# only a comment\n', 'f.yaml'), defaultConfig());
});

test('values override defaults, nested actions too', () => {
  const c = parseConfig('min_uid: 500\nactions:\n  grace: "PREPEND X-Quota-Warning: soft limit"\n', 'f.yaml');
  assert.equal(c.min_uid, 500);
  assert.equal(c.actions.grace, 'PREPEND X-Quota-Warning: soft limit');
  assert.equal(c.actions.success, 'DUNNO');
});

test('errors name the key and the line', () => {
  assert.equal(err('min_uid: 5\nbogus: 1\n'), 'unknown key bogus (f.yaml line 2)');
  assert.match(err('\n\nmin_uid: -3\n'), /^min_uid \(f\.yaml line 3\): must be an integer/);
  assert.match(err('actions:\n  nope: DUNNO\n'), /unknown key actions\.nope \(f\.yaml line 2\)/);
  assert.match(err('listen: [ "tcp:1.2.3.4:5" ]\n'), /listen \(f\.yaml line 1\): entry 1 must be unix/);
  assert.match(err('min_uid: [\n'), /f\.yaml line \d+: YAML syntax error/);
  assert.match(err('min_uid: 1\nmin_uid: 2\n'), /min_uid \(f\.yaml line 2\): key given twice/);
  assert.match(err('- a\n- b\n'), /must be a mapping/);
  assert.match(err('quota_timout_ms: 5\n'), /did you mean quota_timeout_ms/);
});

test('actions are checked like Postfix would read them', () => {
  assert.match(err('actions:\n  over_quota: "452 5.2.2 full"\n'), /enhanced status class/);
  assert.match(err('actions:\n  over_quota: "250 ok"\n'), /4NN or 5NN/);
  assert.match(err('actions:\n  success: "ACCEPT"\n'), /not a Postfix access\(5\) action/);
  assert.match(err('actions:\n  error: ""\n'), /non-empty/);
  assert.equal(
    parseConfig('actions:\n  over_quota: "DEFER_IF_PERMIT full"\n', 'f').actions.over_quota,
    'DEFER_IF_PERMIT full',
  );
});

test('socket modes that give others access are refused', () => {
  assert.match(err('socket_mode: "0666"\n'), /no permissions for others/);
  assert.equal(parseConfig('socket_mode: "0600"\n', 'f').socket_mode, '0600');
});

test('listen specs: unix, IPv4, bracketed IPv6', () => {
  const c = parseConfig('listen: ["unix:/run/q.sock", "inet:127.0.0.1:10099", "inet:[::1]:10099"]\n', 'f');
  assert.equal(c.listen.length, 3);
  assert.match(err('listen: ["inet:::1:10"]\n'), /must be unix/);
  assert.match(err('listen: ["inet:300.1.1.1:10"]\n'), /not an IP/);
  assert.match(err('listen: ["inet:127.0.0.1:0"]\n'), /port/);
});

test('an absent default file means defaults; a named missing file is an error', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qpcfg-'));
  assert.throws(() => loadConfig({ path: join(dir, 'missing.yaml') }), /cannot read config .*ENOENT/);
  writeFileSync(join(dir, 'c.yaml'), 'min_uid: 2000\n');
  const { config, source } = loadConfig({ path: join(dir, 'c.yaml'), overrides: { min_uid: 3000 } });
  assert.equal(config.min_uid, 3000);
  assert.equal(source, join(dir, 'c.yaml'));
  assert.ok(Object.isFrozen(config) && Object.isFrozen(config.actions) && Object.isFrozen(config.listen));
  assert.throws(
    () => loadConfig({ path: join(dir, 'c.yaml'), overrides: { min_uid: 'x' }, flagOf: () => '--min-uid' }),
    /--min-uid: must be/,
  );
});

test('classic slips from policyd-rate-limit get a hint, in the usual form (key, file, line)', () => {
  assert.equal(
    err('min_uid: 1000\nlimits: [[10, 60]]\n'),
    'unknown key limits (f.yaml line 2): a rate-limit setting, it belongs under rate_limit:',
  );
  assert.equal(
    err('count_mode: data_messages\n'),
    'unknown key count_mode (f.yaml line 1): a rate-limit setting, it belongs under rate_limit:',
  );
  assert.match(
    err('SOCKET: "/var/spool/postfix/ratelimit/policy"\n'),
    /^unknown key SOCKET \(f\.yaml line 1\): policyd-rate-limit's SOCKET; here it is listen: .*quotapolicy migrate --from policyd-rate-limit/,
  );
  assert.match(
    err('rate_limit:\n  sqlite_config: {database: /x}\n'),
    /^unknown key rate_limit\.sqlite_config \(f\.yaml line 2\): policyd-rate-limit's sqlite_config; here it is rate_limit\.sqlite_path/,
  );
  assert.match(
    err('rate_limit:\n  pidfile: /run/x.pid\n'),
    /^unknown key rate_limit\.pidfile \(f\.yaml line 2\): policyd-rate-limit's pidfile; here it is pid_file, at the top level/,
  );
  assert.equal(
    err('rate_limit:\n  limits: [2, 500]\n'),
    'rate_limit.limits (f.yaml line 2): must be a list of [count, seconds] windows: for one window of 2 in 500 s, nest it: [[2, 500]]',
  );
  assert.equal(
    err('rate_limit:\n  limits_by_id:\n    bulk: [2, 500]\n'),
    'rate_limit.limits_by_id (f.yaml line 3): bulk: must be a list of [count, seconds] windows: for one window of 2 in 500 s, nest it: [[2, 500]]',
  );
  assert.match(
    err('rate_limit:\n  limits: [[2, 500], 3]\n'),
    /^rate_limit\.limits \(f\.yaml line 2\): entry 2 must be \[count, seconds\]/,
    'not a flat pair: the usual message',
  );
  assert.equal(
    err('rate_limit:\n  count_mode: 2\n'),
    'rate_limit.count_mode (f.yaml line 2): 2 is policyd-rate-limit\'s numbering; here it is "data_messages"',
  );
  assert.equal(
    err('rate_limit:\n  backend: 1\n'),
    'rate_limit.backend (f.yaml line 2): 1 is policyd-rate-limit\'s numbering; here it is "mysql"',
  );
  assert.match(
    err('rate_limit:\n  count_mode: 7\n'),
    /count_mode \(f\.yaml line 2\): must be one of rcpt, data_recipients, data_messages$/,
  );
  assert.equal(parseConfig('rate_limit:\n  limits: [[2, 500]]\n', 'f').rate_limit.limits[0]![1], 500);
});

test("keys that are Object's own names are unknown keys like any other", () => {
  assert.equal(err('constructor: 1\n'), 'unknown key constructor (f.yaml line 1)');
  assert.equal(err('rate_limit:\n  toString: 1\n'), 'unknown key rate_limit.toString (f.yaml line 2)');
});

test('limits_by_id and exempt_ids keys that are addresses fold as the rate limiter compares them', () => {
  const c = parseConfig(
    'rate_limit:\n  limits_by_id: {Big@Example.org: [[5, 60]], Alice: [], 192.0.2.1: [[1, 60]]}\n  exempt_ids: [Boss@EXAMPLE.org, boss@example.org, Robot]\n',
    'f',
  );
  assert.deepEqual(c.rate_limit.limits_by_id, { 'big@example.org': [[5, 60]], Alice: [], '192.0.2.1': [[1, 60]] });
  assert.deepEqual(c.rate_limit.exempt_ids, ['boss@example.org', 'Robot'], 'one exempt address, said twice: kept once');
  const exact = parseConfig(
    'rate_limit:\n  fold_local_part_case: false\n  limits_by_id: {Big@Example.org: [[5, 60]], big@example.org: [[1, 60]]}\n',
    'f',
  );
  assert.deepEqual(exact.rate_limit.limits_by_id, { 'Big@example.org': [[5, 60]], 'big@example.org': [[1, 60]] });
  assert.equal(
    err('rate_limit:\n  limits_by_id:\n    Big@Example.org: [[5, 60]]\n    big@EXAMPLE.org: [[1, 60]]\n'),
    'rate_limit.limits_by_id (f.yaml line 4): "Big@Example.org" and "big@EXAMPLE.org" are one address, big@example.org, as Postfix compares addresses (fold_local_part_case: true): give it once',
  );
  assert.match(
    err(
      'rate_limit:\n  fold_local_part_case: false\n  limits_by_id: {Big@Example.org: [[5, 60]], Big@example.ORG: []}\n',
    ),
    /line 3\): "Big@Example\.org" and "Big@example\.ORG" are one address, Big@example\.org,/,
  );
});

test('a network the config accepts is one the rate limiter reads, and only such', () => {
  const ok = ['10.0.0.0/8', '192.0.2.1', '2001:db8::/32', '::/0', '::ffff:10.0.0.0/8', '0.0.0.0/0'];
  const c = parseConfig(`rate_limit:\n  limited_networks: ${JSON.stringify(ok)}\n  exempt_networks: ["::1"]\n`, 'f');
  assert.deepEqual(c.rate_limit.limited_networks, ok);
  const rules = rulesFrom(c.rate_limit);
  assert.equal(rules.limitedNetworks.length, ok.length);
  assert.ok(inNetworks('10.1.2.3', rules.limitedNetworks) && inNetworks('::ffff:10.1.2.3', rules.limitedNetworks));
  assert.ok(inNetworks('::1', rules.exemptNetworks) && !inNetworks('::2', rules.exemptNetworks));
  for (const bad of [
    '10.0.0.0/33',
    '1.2.3.4/2/3',
    'fe80::1%eth0',
    '10.0.0.0/',
    ' 10.0.0.0/8',
    'ten',
    '2001:db8::/129',
  ]) {
    assert.equal(parseNetwork(bad), undefined, bad);
    assert.match(
      err(`rate_limit:\n  exempt_networks: [${JSON.stringify(bad)}]\n`),
      /^rate_limit\.exempt_networks \(f\.yaml line 2\): entry 1 must be an IP network in CIDR notation$/,
      bad,
    );
  }
  // An IPv4-mapped address is IPv4 to the rate limiter: a /104 of it is no network.
  assert.equal(parseNetwork('::ffff:10.0.0.0/104'), undefined);
  assert.match(
    err('rate_limit:\n  limited_networks: ["::ffff:10.0.0.0/104"]\n'),
    /entry 1 an IPv4-mapped address is taken as IPv4: write a\.b\.c\.d\/bits, bits at most 32$/,
  );
});

test('a user name the config accepts is one a recipient maps to, and only such', () => {
  const rules = { delimiters: '', domains: new Set<string>() };
  for (const name of ['alice', '_svc', 'a.b-c_d', 'machine$', 'x'.repeat(32)]) {
    assert.deepEqual(parseConfig(`exempt_users: [${JSON.stringify(name)}]\n`, 'f').exempt_users, [name]);
    assert.deepEqual(recipientToUser(`${name}@example.org`, rules), { ok: true, user: name });
  }
  for (const name of ['Alice', '1abc', '-x', 'a b', 'x'.repeat(33), 'a$b', '']) {
    assert.match(err(`exempt_users: [${JSON.stringify(name)}]\n`), /entry 1 must be a Unix user or group name/);
    assert.equal(recipientToUser(`${name}@example.org`, rules).ok, name === 'Alice', name);
  }
});

test("every default passes its own field's check", () => {
  for (const [prefix, table] of [
    ['', FIELDS],
    ['actions.', ACTION_FIELDS],
    ['rate_limit.', RATE_FIELDS],
  ] as const) {
    for (const [k, f] of Object.entries(table)) assert.equal(f.check(f.default), undefined, prefix + k);
  }
});

test('the Config type is derived from the checks; a default of another type does not compile', () => {
  const t = fieldTable({
    level: { default: 'info', check: oneOf('info', 'debug'), doc: '' },
    // @ts-expect-error a number where the check takes a string (tsc -b fails if this compiles)
    name: { default: 5, check: str, doc: '' },
    // @ts-expect-error not one of the check's words
    other: { default: 'warn', check: oneOf('info', 'debug'), doc: '' },
  });
  assert.equal(t.level.check('debug'), undefined);
  // @ts-expect-error log_level is the union its check allows, not any string
  const level: Config['log_level'] = 'verbose';
  assert.match(FIELDS.log_level.check(level) ?? '', /must be one of debug, info, warn, error/);
});

test('a redis url carries no query parameter ioredis would take as an option of its own', () => {
  const refused = (url: string): string => {
    try {
      parseConfig(`rate_limit:\n  backend: redis\n  url: "${url}"\n`, 'f.yaml');
    } catch (e) {
      assert.ok(e instanceof ConfigError);
      return e.message;
    }
    assert.fail(`accepted: ${url}`);
  };
  // ?sentinels= would make ioredis find a master through sentinels on localhost:26379, without TLS.
  for (const [url, key] of [
    ['redis://:pw@redis.example.com/0?sentinels=xy&name=mymaster', 'sentinels'],
    ['redis://127.0.0.1:6379/0?family=4&Connector=x', 'Connector'],
    ['redis://127.0.0.1:6379/0?commandTimeout=1', 'commandTimeout'],
  ])
    assert.match(
      refused(url!),
      new RegExp(`^rate_limit\\.url \\(f\\.yaml\\): "${key!}" is not taken in a redis url .*use family, password`),
    );
  assert.doesNotMatch(refused('redis://:pw@h/0?retryStrategy=1&password=hunter2'), /hunter2/);
  for (const url of ['redis://127.0.0.1:6379/0', 'redis://127.0.0.1:6379/0?family=6', 'redis://h/0?password=x&db=2'])
    assert.equal(parseConfig(`rate_limit:\n  backend: redis\n  url: "${url}"\n`, 'f.yaml').rate_limit.url, url);
});
