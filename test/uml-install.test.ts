// Install and both deployment modes inside user-mode-linux (overlays keep the
// host untouched): make install -> start -> answer -> uninstall, as root with
// the unit's capability set, and in sudo mode as the service user.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootGuest } from './support/uml.js';

const FULL = 'action=452 4.2.2 Mailbox full, try again later';
let out: string;
const read = (f: string): string => readFileSync(join(out, f), 'utf8');
const rc = (f: string): number => Number(read(`${f}.rc`).trim());

before(() => {
  out = mkdtempSync(join(tmpdir(), 'qp-uml-install-'));
  bootGuest(out, 'install.sh', { overlayUsr: true, timeoutS: 600 });
});

test('make install: root-owned code nobody else can write, config 0640 root:quotapolicy, sudoers 0440', () => {
  assert.equal(rc('make-install'), 0, read('make-install.log'));
  const modes = read('install-modes.txt');
  for (const line of [
    'root:root 755 /usr/lib/quotapolicy',
    'root:root 755 /usr/lib/quotapolicy/quotapolicy-helper',
    'root:quotapolicy 750 /etc/quotapolicy',
    'root:quotapolicy 640 /etc/quotapolicy/quotapolicy.yaml',
    'root:root 440 /etc/sudoers.d/quotapolicy',
  ]) {
    assert.ok(modes.includes(line), `${line}\n${modes}`);
  }
  assert.equal(read('writable-by-others.txt'), '', 'nothing under /usr/lib/quotapolicy is group- or world-writable');
});

test('systemd-analyze verify on the installed units: status 0 and nothing at all on stderr', () => {
  assert.equal(rc('verify'), 0);
  assert.equal(read('verify.err'), '');
});

test('root mode, installed copy, default config: starts, answers, stops cleanly', () => {
  assert.equal(read('root-query.txt'), `${FULL}\naction=DUNNO\n`);
  assert.equal(rc('root-mode'), 0);
});

test('root mode confined like quotapolicy.service (setuid, setgid, sys_admin, kill only; no new privileges) answers, reloads, stops with 0', () => {
  assert.equal(read('caps-query.txt'), `${FULL}\n${FULL}\n`, read('caps-mode.log'));
  assert.match(read('caps-status.txt'), /CapBnd:\t00000000002000e0/);
  assert.match(read('caps-mode.log'), /"msg":"config reloaded"/, 'SIGHUP reached the front');
  assert.equal(rc('caps-mode'), 0, read('caps-mode.log'));
});

test('sudo mode: the service user starts it, the helper comes through sudo -n and runs as root', () => {
  assert.equal(read('sudo-query.txt'), `${FULL}\n`, read('sudo-mode.log'));
  const ps = read('sudo-ps.txt');
  assert.match(ps, /^quotapo\S*\s+quotapolicy: front \(sudo mode\)$/m);
  assert.match(ps, /^root\s+sudo -n \/usr\/lib\/quotapolicy\/quotapolicy-helper$/m);
  assert.equal(rc('sudo-mode'), 0);
});

test('sudo mode: sudo -n of anything else, or of the helper with arguments, is refused', () => {
  assert.notEqual(rc('sudo-other'), 0);
  assert.match(read('sudo-other.txt'), /password is required|not allowed/);
  assert.notEqual(rc('sudo-args'), 0);
  assert.match(read('sudo-args.txt'), /password is required|not allowed/);
});

test('sudo mode: the pid file refuses a second start while the first runs, and is removed on exit', () => {
  assert.equal(rc('sudo-second'), 78);
  assert.match(read('sudo-second.log'), /already running: pid \d+/);
  assert.equal(read('pidfile-after.txt').trim(), 'gone');
});

test('make uninstall removes what install put there', () => {
  assert.equal(rc('make-uninstall'), 0);
  assert.equal(read('left-after-uninstall.txt'), '');
});
