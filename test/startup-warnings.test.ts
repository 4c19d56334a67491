// Start-up warnings (src/frontend/startup): a rate-limit store that cannot be
// used, and a Postfix that never asks this daemon at the stage a check needs.
// check-config prints exactly the warnings that serve logs at start (serve
// keeps running), with real postconf(1) reading a config directory made here
// and a real PostgreSQL server address where nothing listens.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { BIN, fakeQuota, freePort, quotaBlock, startDaemon, writeConfig } from './support/daemon.js';

const SERVICE_USER = 'quotapolicy';
let svc: { uid: number; gid: number };

before(() => {
  assert.equal(process.getuid?.(), 0, 'run as root (CI does)');
  svc = userid.ids(SERVICE_USER);
  // Fails loudly where Postfix is missing: setup.sh installs it.
  const v = spawnSync('postconf', ['-d', 'mail_version'], { encoding: 'utf8' });
  assert.equal(v.status, 0, `postconf(1) is needed: ${v.error?.message ?? v.stderr}`);
});

function rootDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

function config(dir: string, extra: string): string {
  const fq = fakeQuota();
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '10', 100, 200));
  mkdirSync(join(dir, 'private'), { mode: 0o755 });
  return writeConfig(
    dir,
    `user: ${SERVICE_USER}\nquota_path: ${fq.path}\nmin_uid: 100\nsocket_group: ${SERVICE_USER}\n` +
      `listen: ["unix:${join(dir, 'private', 'p.sock')}"]\n${extra}`,
  );
}

/** A Postfix config directory for `postconf -c`, readable by the service user. */
function postfixDir(dir: string, mainCf: string): string {
  const pf = join(dir, 'postfix');
  mkdirSync(pf, { mode: 0o755 });
  writeFileSync(join(pf, 'main.cf'), `queue_directory = ${dir}\n${mainCf}`, { mode: 0o644 });
  return pf;
}

function checkConfig(cfg: string) {
  const r = spawnSync(process.execPath, [BIN, 'check-config', '--config', cfg], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, `config OK (${cfg})\n`);
  return r.stderr;
}

/** check-config's warnings, and serve's warnings at start (waiting for each), must be the same lines. */
async function bothWarn(cfg: string, settleMs = 1500): Promise<string[]> {
  const printed = checkConfig(cfg)
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const m = /^quotapolicy: warning: (.*)$/.exec(l);
      assert.ok(m, `not a warning line: ${l}`);
      return m[1]!;
    });
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    for (const w of printed) await d.waitFor((l) => l.level === 40 && l.msg === w);
    // Nothing more comes: the checks are bounded (store_timeout_ms, postconf's timeout) and run once.
    await new Promise((r) => setTimeout(r, settleMs));
    const logged = d.lines.filter((l) => l.level === 40).map((l) => String(l.msg));
    assert.deepEqual(logged, printed, 'serve warns exactly what check-config printed');
    assert.equal(d.proc.exitCode, null, 'serve keeps running');
    return printed;
  } finally {
    assert.equal(await d.stop(), 0);
  }
}

test('a PostgreSQL store nobody answers at: one warning naming it (password masked), the error and db_error_action', async () => {
  const dir = rootDir('qp-warn-pg-');
  const port = await freePort();
  const secret = 'hunter2-secret';
  const cfg = config(
    dir,
    'checks: [quota, rate_limit]\n' +
      `rate_limit:\n  backend: postgresql\n  url: postgresql://qp:${secret}@127.0.0.1:${port}/test\n  db_error_action: "DEFER_IF_PERMIT store down"\n` +
      `postfix_config_dir: ${join(dir, 'none')}\n`,
  );
  const [w, ...more] = await bothWarn(cfg);
  assert.deepEqual(more, []);
  assert.equal(
    w,
    `rate-limit store postgresql postgresql://qp:***@127.0.0.1:${port}/test cannot be used: postgresql: connect ECONNREFUSED 127.0.0.1:${port}: ` +
      'serve keeps running, and rate-limited requests are answered db_error_action (DEFER_IF_PERMIT store down) until the store answers (tried again at most once a second)',
  );
  assert.ok(!w.includes(secret));
});

test('count_mode data_messages and quota_states END-OF-MESSAGE with real postconf: both warn until main.cf calls the daemon there', async () => {
  const dir = rootDir('qp-warn-pf-');
  const store = join(dir, 'store');
  mkdirSync(store, { mode: 0o750 });
  chownSync(store, svc.uid, svc.gid);
  const rcpt = 'smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service unix:private/p.sock\n';
  const pf = postfixDir(dir, rcpt);
  const cfg = config(
    dir,
    `postfix_config_dir: ${pf}\nquota_states: [END-OF-MESSAGE]\nchecks: [quota, rate_limit]\n` +
      `rate_limit:\n  count_mode: data_messages\n  sqlite_path: ${join(store, 'rl.sqlite3')}\n`,
  );
  const sock = join(dir, 'private', 'p.sock');
  const found = await bothWarn(cfg);
  assert.deepEqual(found, [
    `quota_states is END-OF-MESSAGE, but Postfix never asks this daemon there: no check_policy_service for unix:${sock} ` +
      `in smtpd_end_of_data_restrictions (postconf, queue_directory ${dir}), so the quota check never runs: ` +
      'add "check_policy_service unix:private/p.sock" to smtpd_end_of_data_restrictions, or change quota_states',
    `rate_limit.count_mode data_messages counts at DATA, but Postfix never asks this daemon there: no check_policy_service for unix:${sock} ` +
      `in smtpd_data_restrictions (postconf, queue_directory ${dir}), so the rate limit never runs: ` +
      'add "check_policy_service unix:private/p.sock" to smtpd_data_restrictions, or set count_mode rcpt',
  ]);
  // Followed through a restriction class and an absolute path inside queue_directory: nothing to say.
  writeFileSync(
    join(pf, 'main.cf'),
    `queue_directory = ${dir}\n${rcpt}smtpd_restriction_classes = qp\nqp = check_policy_service { unix:${sock}, timeout=10s }\n` +
      'smtpd_data_restrictions = qp\nsmtpd_end_of_data_restrictions = check_policy_service unix:private/p.sock\n',
  );
  assert.deepEqual(await bothWarn(cfg, 500), []);
});

test('no Postfix to ask (no main.cf): said once at debug, by both, never as a warning', async () => {
  const dir = rootDir('qp-warn-none-');
  const none = join(dir, 'nopostfix');
  const cfg = config(dir, `postfix_config_dir: ${none}\nlog_level: debug\n`);
  const note = `no ${none}/main.cf: the Postfix stage check is skipped`;
  assert.equal(checkConfig(cfg), `quotapolicy: debug: ${note}\n`);
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.level === 20 && l.msg === note);
    assert.equal(d.lines.filter((l) => l.msg === note).length, 1);
    assert.deepEqual(
      d.lines.filter((l) => Number(l.level) >= 40),
      [],
    );
  } finally {
    assert.equal(await d.stop(), 0);
  }
});
