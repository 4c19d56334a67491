// The start-up preflight (src/helper/startup/preflight.ts): check-config and
// serve give the same verdict and the same message for what used to pass
// check-config and then fail (or degrade) serve: a config the service user
// cannot read, a missing pid-file or socket directory, a SQLite store
// directory (rate_limit.sqlite_path, quota_warnings.state_path) that is
// missing or that the service user cannot write.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { BIN, fakeQuota, quotaBlock, startDaemon, writeConfig } from './support/daemon.js';

const SERVICE_USER = 'quotapolicy';
const EX_CONFIG = 78;
let svc: { uid: number; gid: number };

before(() => {
  assert.equal(process.getuid?.(), 0, 'run as root (CI does)');
  svc = userid.ids(SERVICE_USER);
});

function rootDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  chmodSync(dir, 0o755);
  return dir;
}

function config(dir: string, extra: string): string {
  const fq = fakeQuota();
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '10', 100, 200));
  return writeConfig(
    dir,
    `user: ${SERVICE_USER}\nquota_path: ${fq.path}\nmin_uid: 100\nsocket_group: ${SERVICE_USER}\n` +
      `listen: ["unix:${join(dir, 'p.sock')}"]\n${extra}`,
  );
}

const rateLimited = (db: string): string =>
  `checks: [quota, rate_limit]\nrate_limit:\n  sqlite_path: ${db}\n  limits: [[1000, 3600]]\n`;

function cli(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 15_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** serve and check-config both refuse, with the same lines. */
function bothRefuse(args: string[], pattern: RegExp): string {
  const s = cli('serve', ...args);
  const c = cli('check-config', ...args);
  assert.equal(s.status, EX_CONFIG, s.stderr);
  assert.match(s.stderr, pattern);
  assert.deepEqual([c.status, c.stderr, c.stdout], [EX_CONFIG, s.stderr, ''], 'check-config agrees');
  return s.stderr;
}

test('a config file only root can read: refused by both, saying how to fix it', () => {
  const dir = rootDir('qp-pre-cfg-');
  const cfg = config(dir, '');
  chmodSync(cfg, 0o600);
  bothRefuse(
    ['--config', cfg],
    new RegExp(
      `^quotapolicy: config file ${cfg}: the front runs as ${SERVICE_USER} and cannot read ${cfg} \\(mode 0600, owner uid 0\\): make it readable by ${SERVICE_USER} \\(chgrp`,
    ),
  );
});

test('missing pid-file and socket directories: both refuse, naming every one at once', () => {
  const dir = rootDir('qp-pre-dirs-');
  const cfg = config(dir, `pid_file: ${join(dir, 'run', 'qp.pid')}\n`);
  const err = bothRefuse(
    ['--config', cfg, '--listen', `unix:${join(dir, 'nosuch', 'p.sock')}`],
    new RegExp(`pid file ${dir}/run/qp.pid: directory ${dir}/run does not exist: create it`),
  );
  assert.match(
    err,
    new RegExp(`\nquotapolicy: unix:${dir}/nosuch/p.sock: directory ${dir}/nosuch does not exist: create it`),
  );
  assert.equal(err.split('\n').length, 3, err);
});

test('SQLite directory missing in a directory only root can write: check-config OK, serve creates it for the service user', async () => {
  const dir = rootDir('qp-pre-mk-');
  const store = join(dir, 'store');
  const cfg = config(dir, rateLimited(join(store, 'rl.sqlite3')));
  const c = cli('check-config', '--config', cfg);
  assert.deepEqual([c.status, c.stderr], [0, '']);
  assert.equal(existsSync(store), false, 'check-config creates nothing');
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    const st = statSync(store);
    assert.deepEqual([st.isDirectory(), st.uid, st.gid, st.mode & 0o7777], [true, svc.uid, svc.gid, 0o750]);
    assert.ok(d.lines.some((l) => l.msg === 'created the directory for a SQLite file' && l.dir === store));
    assert.equal(d.lines.filter((l) => l.level === 40).length, 0, JSON.stringify(d.lines));
  } finally {
    assert.equal(await d.stop(), 0);
  }
  assert.deepEqual([cli('check-config', '--config', cfg).stderr], ['']);
});

test('SQLite directory missing where the service user could plant it: both refuse, and advise no command there', () => {
  const dir = rootDir('qp-pre-nomk-');
  const open = join(dir, 'user');
  mkdirSync(open, { mode: 0o755 });
  chownSync(open, svc.uid, svc.gid);
  const store = join(open, 'store');
  const cfg = config(dir, rateLimited(join(store, 'rl.sqlite3')));
  bothRefuse(
    ['--config', cfg],
    new RegExp(
      `rate_limit.sqlite_path ${store}/rl.sqlite3: directory ${store} does not exist, and serve creates it only in a directory only root can write .*: choose a sqlite_path whose directory's parent only root can write \\(serve then creates it\\)`,
    ),
  );
  assert.equal(existsSync(store), false);
});

test('SQLite directory the service user cannot write: check-config warns, serve starts and warns the same', async () => {
  const dir = rootDir('qp-pre-ro-');
  const store = join(dir, 'store');
  mkdirSync(store, { mode: 0o755 });
  const cfg = config(dir, rateLimited(join(store, 'rl.sqlite3')));
  const c = cli('check-config', '--config', cfg);
  assert.equal(c.status, 0);
  const m = /^quotapolicy: warning: (.*)\n$/.exec(c.stderr);
  assert.ok(m, c.stderr);
  assert.match(
    m[1]!,
    new RegExp(
      `^rate_limit.sqlite_path ${store}/rl.sqlite3: the front runs as ${SERVICE_USER} and cannot write ${store} .*db_error_action.*chown ${SERVICE_USER} ${store}`,
    ),
  );
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    assert.ok(
      d.lines.some((l) => l.level === 40 && l.msg === m[1]),
      JSON.stringify(d.lines.slice(0, 4)),
    );
  } finally {
    assert.equal(await d.stop(), 0);
  }
});

const notifying = (state: string): string =>
  `quota_warnings:\n  thresholds: [80]\n  notify: true\n  notify_from: postmaster@example.test\n  state_path: ${state}\n`;

test('quota_warnings.state_path: a directory the service user could plant is refused by both, as sqlite_path', () => {
  const dir = rootDir('qp-pre-qw-');
  const open = join(dir, 'user');
  mkdirSync(open, { mode: 0o755 });
  chownSync(open, svc.uid, svc.gid);
  const state = join(open, 'state');
  bothRefuse(
    ['--config', config(dir, notifying(join(state, 'w.sqlite3')))],
    new RegExp(
      `quota_warnings.state_path ${state}/w.sqlite3: directory ${state} does not exist, and serve creates it only in a directory only root can write .*: choose a state_path whose directory's parent only root can write \\(serve then creates it\\)`,
    ),
  );
  assert.equal(existsSync(state), false);
});

test('quota_warnings.state_path a read-only directory: check-config warns that notices would fail; off without notify', () => {
  const dir = rootDir('qp-pre-qwro-');
  const state = join(dir, 'state');
  mkdirSync(state, { mode: 0o755 });
  const c = cli('check-config', '--config', config(dir, notifying(join(state, 'w.sqlite3'))));
  assert.equal(c.status, 0);
  assert.match(
    c.stderr,
    new RegExp(
      `^quotapolicy: warning: quota_warnings.state_path ${state}/w.sqlite3: the front runs as ${SERVICE_USER} and cannot write ${state} .*quota notices would fail \\(logged\\) and none be sent: chown ${SERVICE_USER} ${state} && chmod 0750 ${state}\\n$`,
    ),
  );
  const off = cli(
    'check-config',
    '--config',
    config(dir, `quota_warnings:\n  state_path: ${join(state, 'w.sqlite3')}\n`),
  );
  assert.deepEqual([off.status, off.stderr], [0, ''], 'not looked at without notify');
});

test("a name planted in the service user's store directory is looked at, never followed, and never chowned by advice", () => {
  const dir = rootDir('qp-pre-plant-');
  const secret = rootDir('qp-pre-secret-');
  chmodSync(secret, 0o700);
  const target = join(secret, 'key');
  writeFileSync(target, 'x', { mode: 0o600 });
  const store = join(dir, 'store');
  mkdirSync(store, { mode: 0o750 });
  chownSync(store, svc.uid, svc.gid);
  // What the service user may do in its own directory: point the database's name elsewhere.
  symlinkSync(target, join(store, 'rl.sqlite3'));
  const c = cli('check-config', '--config', config(dir, rateLimited(join(store, 'rl.sqlite3'))));
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stderr, /rl\.sqlite3 is a symbolic link: .*remove it \(the front creates it\)/);
  assert.doesNotMatch(c.stderr, /chown|mode 0600|owner uid 0/, 'no advice to chown, nothing about the target');
  const st = statSync(target);
  assert.deepEqual([st.uid, st.mode & 0o777], [0, 0o600], 'the target is untouched');
});
