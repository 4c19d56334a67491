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
  assert.deepEqual(rl.limits, [[10, 60], [150, 86400]]);
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
  assert.match(r.stderr, /note: socket_permission 666/);
  assert.match(r.stderr, /note: smtp_credentials: smtp_starttls set to true/);
  assert.match(r.stderr, /note: sqlite_config: not used by backend mysql/);
  const dir = mkdtempSync(join(tmpdir(), 'qp-mig-'));
  writeFileSync(join(dir, 'q.yaml'), r.stdout);
  assert.equal(cli('check-config', '--config', join(dir, 'q.yaml')).status, 0, 'the output is a valid quotapolicy config');
});

test('migrate: usage and unreadable files are clear errors', () => {
  assert.equal(cli('migrate', 'x.yaml').status, 64);
  assert.equal(cli('migrate', '--from', 'postfwd', 'x.yaml').status, 64);
  const r = cli('migrate', '--from', 'policyd-rate-limit', '/nonexistent.yaml');
  assert.equal(r.status, 78);
  assert.match(r.stderr, /cannot read \/nonexistent\.yaml: ENOENT/);
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
  const store = await openStore({ backend: 'sqlite', sqlite_path: db, url: null, timeout_ms: 2000, sql_limits_by_id: '' });
  const now = Math.floor(Date.now() / 1000);
  await store.consume({ buckets: [{ key: 'sasl:old', limits: [[100, 10_000_000]] }], n: 1, nowSec: now - 200_000, commit: true });
  await store.consume({ buckets: [{ key: 'sasl:new', limits: [[100, 60]] }], n: 1, nowSec: now, commit: true });
  await store.recordHit('sasl:spammer', 86400);
  await store.recordHit('sasl:spammer', 86400);
  await store.close();
  for (const f of readdirSync(dir)) chownSync(join(dir, f), svc.uid, svc.gid);

  const port = await freePort();
  const mailDir = mkdtempSync(join(tmpdir(), 'qp-sink-'));
  chmodSync(mailDir, 0o777);
  const sink = spawn('smtp-sink', ['-u', 'nobody', '-d', `${mailDir}/%H%M%S.`, `127.0.0.1:${port}`, '10'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 300));
  try {
    writeFileSync(join(dir, 'c.yaml'), `checks: [rate_limit]\nrate_limit:\n  sqlite_path: ${db}\n  limits: [[10, 60], [150, 86400]]\n  report: true\n` +
      `  report_from: policyd@example.org\n  report_to: [admin@example.org, noc@example.org]\n  smtp_server: ["127.0.0.1", ${port}]\n`);
    const r = cli('clean', '--config', join(dir, 'c.yaml'));
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /^removed 1 events older than 86400 s from sqlite\nreport sent to admin@example\.org, noc@example\.org\n$/);
    await new Promise((res) => setTimeout(res, 300));
    const mails = readdirSync(mailDir).map((f) => readFileSync(join(mailDir, f), 'utf8'));
    assert.equal(mails.length, 2);
    for (const m of mails) {
      assert.match(m, /Subject: policyd-rate-limit report/);
      assert.match(m, /sasl:spammer \|\s+86400 \|\s+2/);
    }
    assert.deepEqual(mails.map((m) => /X-Rcpt-Args: <([^>]+)>/.exec(m)![1]).sort(), ['admin@example.org', 'noc@example.org']);
    assert.match(cli('clean', '--config', join(dir, 'c.yaml')).stdout, /no report needed/, 'hits were cleared; report_only_if_needed');
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('rl.sqlite3')).map((f) => userid.username(statSync(join(dir, f)).uid)), ['quotapolicy'], 'clean ran as the service user');
  } finally {
    sink.kill();
  }
});
