// migrate --from policyd-rate-limit, get-config, and clean with its report
// mailed through a real SMTP server on loopback (smtp-sink).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, writeFileSync, readdirSync, readFileSync, chownSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse } from 'yaml';
import userid from 'userid';
import { BIN, REPO, freePort } from './support/daemon.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import { migratePolicydRateLimit } from '../src/cli/ratelimit-commands.js';
import { ConfigError } from '../src/shared/config/load.js';

const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

test('migrate --from policyd-rate-limit: every setting carried over, what cannot be is named on stderr', () => {
  const r = cli('migrate', '--from', 'policyd-rate-limit', join(REPO, 'test/fixtures/policyd-rate-limit.yaml'));
  assert.equal(r.status, 0, r.stderr);
  const c = parse(r.stdout) as Record<string, any>;
  assert.deepEqual(c.checks, ['rate_limit']);
  assert.deepEqual(c.listen, ['inet:127.0.0.1:8552']);
  assert.equal(c.socket_mode, '0660');
  assert.equal(c.pid_file, '/var/run/policyd-rate-limit/policyd-rate-limit.pid');
  assert.equal(c.user, 'policyd-rate-limit');
  assert.equal(c.idle_timeout_ms, 300_000);
  assert.equal(c.log_level, 'debug');
  const rl = c.rate_limit;
  assert.equal(rl.backend, 'mysql');
  assert.equal(rl.url, 'mysql://rl:s3cr%3At@db.example.org/ratelimit');
  assert.deepEqual(rl.limits, [
    [10, 60],
    [150, 86400],
  ]);
  assert.deepEqual(rl.limits_by_id, { foo: [], '192.168.0.254': [[1000, 86400]] });
  assert.equal(rl.sql_limits_by_id, 'SELECT limits FROM rl_limits WHERE id = ?');
  assert.equal(rl.limit_by_sender, true, 'YAML 1.1 "yes"');
  assert.deepEqual(rl.limited_networks, ['192.168.0.0/16', '2001:db8::/32'], 'old spelling limited_netword');
  assert.equal(rl.count_mode, 'data_recipients');
  assert.deepEqual(rl.report_to, ['admin@example.org', 'noc@example.org']);
  assert.deepEqual(rl.report_limits, [86400, 60]);
  assert.deepEqual(rl.smtp_credentials, ['user', 'pass']);
  assert.equal(rl.smtp_starttls, true);
  assert.match(r.stderr, /not carried over: group/);
  assert.match(
    r.stderr,
    /not carried over: mysql_config\.charset/,
    'a driver setting that makes no part of the URL is named, not dropped',
  );
  assert.match(r.stderr, /note: count_mode 1 -> data_recipients: /);
  assert.match(r.stderr, /note: limit_by_ip: an IPv6 client is counted per \/64/);
  assert.match(
    r.stderr,
    /note: limit_by_sasl, limit_by_sender, sql_limits_by_id: ids that are mail addresses .* sql_limits_by_id is asked for big@example\.org/,
  );
  assert.match(r.stderr, /note: socket_permission 666/);
  assert.match(r.stderr, /note: smtp_credentials: smtp_starttls set to true/);
  assert.match(r.stderr, /note: sqlite_config: not used by backend mysql/);
  const dir = mkdtempSync(join(tmpdir(), 'qp-mig-'));
  chmodSync(dir, 0o755); // the service user re-reads the config
  writeFileSync(join(dir, 'q.yaml'), r.stdout, { mode: 0o644 });
  const cc = cli('check-config', '--config', join(dir, 'q.yaml'));
  // Valid; the preflight may only miss policyd-rate-limit's own pid directory on a host without it.
  const left = cc.stderr
    .split('\n')
    .filter((l) => l !== '' && !l.includes('directory /var/run/policyd-rate-limit does not exist'));
  assert.ok(
    cc.status === 0 || (cc.status === 78 && left.length === 0),
    `the output is a valid quotapolicy config: ${cc.stderr}`,
  );
});

test('migrate: usage and unreadable files are clear errors', () => {
  assert.equal(cli('migrate', 'x.yaml').status, 64);
  assert.equal(cli('migrate', '--from', 'postfwd', 'x.yaml').status, 64);
  const r = cli('migrate', '--from', 'policyd-rate-limit', '/nonexistent.yaml');
  assert.equal(r.status, 78);
  assert.match(r.stderr, /cannot read \/nonexistent\.yaml: ENOENT/);
});

test('migrate: a connection setting that is a list or mapping is refused, never "[object Object]"', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-mig-'));
  const file = join(dir, 'p.yaml');
  writeFileSync(file, 'backend: 2\npgsql_config:\n  database: rl\n  host: [db1, db2]\n');
  const r = cli('migrate', '--from', 'policyd-rate-limit', file);
  assert.notEqual(r.status, 0, r.stdout);
  assert.match(r.stderr, /pgsql_config\.host.*must be a string or a number/);
  assert.doesNotMatch(r.stdout, /object Object/);
  writeFileSync(file, 'backend: 2\npgsql_config:\n  database: rl\n  host: db1\n  port: 5433\n');
  const ok = cli('migrate', '--from', 'policyd-rate-limit', file);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /postgresql:\/\/postgres@db1:5433\/rl/);
});

test('get-config prints the effective configuration, or one setting', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-get-'));
  writeFileSync(join(dir, 'c.yaml'), 'rate_limit:\n  limits: [[5, 60]]\n');
  const one = cli('get-config', 'rate_limit.limits', '--config', join(dir, 'c.yaml'));
  assert.deepEqual([one.status, one.stdout], [0, '[[5,60]]\n']);
  const all = cli('get-config', '--config', join(dir, 'c.yaml'));
  assert.equal((parse(all.stdout) as { min_uid: number }).min_uid, 1000);
  assert.equal(cli('get-config', 'nope', '--config', join(dir, 'c.yaml')).status, 64);
});

test('clean purges old counts, compacts, and mails the report of hits through SMTP', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-clean-'));
  const svc = userid.ids('quotapolicy');
  chownSync(dir, svc.uid, svc.gid);
  const db = join(dir, 'rl.sqlite3');
  const store = await openStore({
    ...NO_STORE_TLS,
    backend: 'sqlite',
    sqlite_path: db,
    url: null,
    timeout_ms: 2000,
    sql_limits_by_id: '',
  });
  const now = Math.floor(Date.now() / 1000);
  await store.consume({
    buckets: [{ key: 'sasl:old', limits: [[100, 10_000_000]] }],
    n: 1,
    nowSec: now - 200_000,
    commit: true,
  });
  await store.consume({ buckets: [{ key: 'sasl:new', limits: [[100, 60]] }], n: 1, nowSec: now, commit: true });
  await store.recordHit('sasl:spammer', 86400);
  await store.recordHit('sasl:spammer', 86400);
  await store.close();
  for (const f of readdirSync(dir)) chownSync(join(dir, f), svc.uid, svc.gid);

  const port = await freePort();
  const mailDir = mkdtempSync(join(tmpdir(), 'qp-sink-'));
  chmodSync(mailDir, 0o777);
  const sink = spawn('smtp-sink', ['-u', 'nobody', '-d', `${mailDir}/%H%M%S.`, `127.0.0.1:${port}`, '10'], {
    stdio: 'ignore',
  });
  await new Promise((r) => setTimeout(r, 300));
  try {
    writeFileSync(
      join(dir, 'c.yaml'),
      `checks: [rate_limit]\nrate_limit:\n  sqlite_path: ${db}\n  limits: [[10, 60], [150, 86400]]\n  report: true\n` +
        `  report_from: policyd@example.org\n  report_to: [admin@example.org, noc@example.org]\n  smtp_server: ["127.0.0.1", ${port}]\n`,
    );
    const r = cli('clean', '--config', join(dir, 'c.yaml'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /^removed 1 events older than 86400 s from sqlite\nreport sent to admin@example\.org, noc@example\.org\n$/,
    );
    await new Promise((res) => setTimeout(res, 300));
    const mails = readdirSync(mailDir).map((f) => readFileSync(join(mailDir, f), 'utf8'));
    assert.equal(mails.length, 2);
    for (const m of mails) {
      assert.match(m, /Subject: policyd-rate-limit report/);
      assert.match(m, /sasl:spammer \|\s+86400 \|\s+2/);
    }
    assert.deepEqual(mails.map((m) => /X-Rcpt-Args: <([^>]+)>/.exec(m)![1]).sort(), [
      'admin@example.org',
      'noc@example.org',
    ]);
    assert.match(
      cli('clean', '--config', join(dir, 'c.yaml')).stdout,
      /no report needed/,
      'hits were cleared; report_only_if_needed',
    );
    assert.deepEqual(
      readdirSync(dir)
        .filter((f) => f.startsWith('rl.sqlite3'))
        .map((f) => userid.username(statSync(join(dir, f)).uid)),
      ['quotapolicy'],
      'clean ran as the service user',
    );
  } finally {
    sink.kill();
  }
});

test('migrate: a value policyd-rate-limit would not take is one clear error naming the setting and its line; nothing is guessed or dropped', () => {
  const fails = (yaml: string): string => {
    try {
      migratePolicydRateLimit(yaml, 'prl.yaml');
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e.message;
    }
    assert.fail(`no error for ${yaml}`);
  };
  assert.equal(
    fails('debug: True\nbackend: 3\n'),
    'backend (prl.yaml line 2): 3 is not a policyd-rate-limit backend: it takes 0 (sqlite3), 1 (mysql) or 2 (postgresql)',
  );
  assert.equal(
    fails('limits: [2, 500]\n'),
    'limits (prl.yaml line 1): must be a list of [count, seconds] windows: for one window of 2 in 500 s, nest it: [[2, 500]]',
  );
  assert.equal(
    fails('socket_permission: rw\n'),
    'socket_permission (prl.yaml line 1): must be an octal file mode like 0660',
  );
  assert.equal(
    fails('sqlite_config:\n    timeout: 5\n'),
    'sqlite_config (prl.yaml line 1): has no database (the SQLite file)',
  );
  assert.equal(
    fails('SOCKET: ["localhost", 8552]\n'),
    'SOCKET (prl.yaml line 1): as listen: must be unix:/path, inet:IPV4:PORT or inet:[IPV6]:PORT',
  );
  assert.match(
    fails('delay_to_close: 0\n'),
    /^delay_to_close \(prl\.yaml line 1\): as idle_timeout_ms \(its seconds x 1000\): must be an integer from 1000/,
  );
  assert.match(fails('limits: [\n'), /^prl\.yaml line \d: YAML syntax error/);
  assert.equal(fails('- a\n'), 'prl.yaml: not a YAML mapping of policyd-rate-limit settings');
  const both = migratePolicydRateLimit(
    'limited_networks: ["10.0.0.0/8"]\nlimited_netword: ["192.0.2.0/24"]\nsqlite_config:\n    database: /var/lib/x.sqlite3\n    timeout: 5\n',
    'prl.yaml',
  );
  assert.deepEqual(
    (parse(both.yaml) as { rate_limit: { limited_networks: string[] } }).rate_limit.limited_networks,
    ['192.0.2.0/24'],
    'the deprecated spelling wins, as in policyd-rate-limit',
  );
  assert.ok(
    both.notes.some((n) => n.startsWith('limited_networks: the deprecated limited_netword is given too and wins')),
  );
  assert.deepEqual(both.notCarried, ['sqlite_config.timeout']);
});
