// The command line: clear one-line errors with sysexits statuses, never a stack trace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN, fakeQuota } from './support/daemon.js';
import userid from 'userid';

const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};

test('--help and --version', () => {
  const h = run('--help');
  assert.equal(h.code, 0);
  for (const word of [
    'serve',
    'check ADDRESS',
    'check-config',
    '--listen',
    '--quota-path',
    'ratelimit show KIND:ID',
    'ratelimit reset KIND:ID',
    '--count',
  ])
    assert.ok(h.out.includes(word), word);
  assert.match(run('--version').out, /^quotapolicy \d+\.\d+\.\d+\n$/);
});

test('usage errors exit 64 with one line', () => {
  for (const args of [
    [],
    ['frob'],
    ['serve', 'extra'],
    ['check'],
    ['check-config', '--nope'],
    ['check', 'a@b', '--size', 'big'],
  ]) {
    const r = run(...args);
    assert.equal(r.code, 64, args.join(' '));
    assert.equal(r.err.trim().split('\n').length, 1, r.err);
    assert.doesNotMatch(r.err, /\n\s+at /);
  }
});

test('config errors exit 78 naming the key and line', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qpcli-'));
  chmodSync(dir, 0o755); // the front (service user) re-reads the config: the preflight wants it reachable
  const f = join(dir, 'c.yaml');
  writeFileSync(f, 'min_uid: 1000\nlisten: ["unix:relative"]\n');
  const r = run('check-config', '--config', f);
  assert.equal(r.code, 78);
  assert.equal(r.err, `quotapolicy: listen (${f} line 2): entry 1 unix: needs an absolute path\n`);
  assert.equal(run('check-config', '--config', join(dir, 'missing.yaml')).code, 78);
  assert.equal(run('check-config', '--min-uid', 'x').code, 78);
  writeFileSync(f, 'min_uid: 1000\n');
  assert.deepEqual(run('check-config', '--config', f), { code: 0, out: `config OK (${f})\n`, err: '' });
});

test('serve refuses a quota binary it cannot trust, and a missing user, before binding anything', () => {
  const dir = mkdtempSync(join(tmpdir(), 'qpcli-'));
  const q = join(dir, 'quota');
  writeFileSync(q, '#!/bin/sh\n');
  chmodSync(q, 0o777);
  const cfg = join(dir, 'c.yaml');
  writeFileSync(cfg, `listen: ["unix:${join(dir, 's.sock')}"]\n`);
  let r = run('serve', '--config', cfg, '--quota-path', join(dir, 'nonexistent'));
  assert.equal(r.code, 78);
  assert.match(r.err, /quota_path .*nonexistent: ENOENT/);
  r = run('serve', '--config', cfg, '--quota-path', q);
  assert.equal(r.code, 78);
  assert.match(r.err, /writable by group or others/);
  r = run('serve', '--config', cfg, '--user', 'no_such_user_qp');
  assert.equal(r.code, 78);
  assert.match(r.err, /user no_such_user_qp does not exist/);
});

test('check: one decision through the helper, printed with its reason', () => {
  const r = run('check', 'root@example.test');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^action: DUNNO\nverdict: skip\nreason: uid 0 below min_uid\nuser: root\n$/);
  assert.match(run('check', '--', '-f@example.test').out, /local part is not a Unix user name/);
});

test('check: says when no file system has quotas on at all (quota(1) prints nothing, or "none")', () => {
  const fq = fakeQuota();
  const uid = userid.ids('quotapolicy').uid;
  const expected =
    'action: DUNNO\nverdict: skip\nreason: no file system has quotas on (quota(1) lists none)\nuser: quotapolicy\n' +
    `note: quota checks refuse no one on this host until quotas are on: mount with usrquota and run quotaon (check with: ${fq.path} -v), or leave quota out of checks\n`;
  fq.setMode('empty');
  assert.deepEqual(run('check', 'quotapolicy@example.test', '--quota-path', fq.path, '--min-uid', '100'), {
    code: 0,
    out: expected,
    err: '',
  });
  fq.setMode('');
  fq.setOutput(uid, `Disk quotas for user quotapolicy (uid ${uid}): none\n`);
  assert.deepEqual(run('check', 'quotapolicy@example.test', '--quota-path', fq.path, '--min-uid', '100'), {
    code: 0,
    out: expected,
    err: '',
  });
  fq.setOutput(
    uid,
    `Disk quotas for user quotapolicy (uid ${uid}): \n     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n          /home       6       0       0       0       2       0       0       0\n`,
  );
  const on = run('check', 'quotapolicy@example.test', '--quota-path', fq.path, '--min-uid', '100');
  assert.equal(
    on.out,
    'action: DUNNO\nverdict: skip\nreason: no quota limits set\nuser: quotapolicy\n',
    'quotas on, no limit for this user: no note',
  );
});
