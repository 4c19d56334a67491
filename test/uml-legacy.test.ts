// The original quotapolicy's start-up, word for word, against the installed
// copy inside user-mode-linux (overlays keep the host untouched; the sudoers
// drop-in is installed there and vanishes with the guest): its init script's
// start-stop-daemon start, status and stop as the service user (sudo mode),
// its --debug foreground, and the daemon's own command line as root.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootGuest } from './support/uml.js';

const FULL = 'action=452 4.2.2 Mailbox full, try again later';
const HOME = '/var/spool/postfix/quotapolicy';
let out: string;
const read = (f: string): string => readFileSync(join(out, f), 'utf8');
const rc = (f: string): number => Number(read(`${f}.rc`).trim());
/** The guest runs under `set -x`: drop its trace lines. */
const said = (f: string): string =>
  read(f)
    .split('\n')
    .filter((l) => !l.startsWith('+ '))
    .join('\n');

before(() => {
  out = mkdtempSync(join(tmpdir(), 'qp-uml-legacy-'));
  bootGuest(out, 'legacy.sh', { overlayUsr: true, timeoutS: 600 });
});

test('without the sudoers drop-in: one line naming the file, status 78, nothing left but the log', () => {
  assert.equal(rc('nodropin'), 78);
  assert.equal(
    said('nodropin.txt').trim(),
    'quotapolicy: sudo mode: sudo -n does not let quotapolicy run /usr/lib/quotapolicy/quotapolicy-helper: install the drop-in as /etc/sudoers.d/quotapolicy (make install SUDOERS=yes, or install -m 0440 sudoers.d/quotapolicy /etc/sudoers.d/quotapolicy)',
  );
  assert.equal(read('nodropin-left.txt'), '');
});

test('the service user outside the socket group: one line saying so, nothing left behind', () => {
  assert.equal(rc('nogroup'), 78);
  assert.match(
    said('nogroup.txt'),
    /socket goes to group postfix \(socket_group\) and quotapolicy is not in it: adduser quotapolicy postfix/,
  );
  assert.equal(read('nogroup-left.txt'), '');
});

test("the init script's start: returns 0 once ready; a detached front in its own session, the helper through sudo", () => {
  assert.equal(rc('start'), 0, read('sudo-daemon.log'));
  const [pid, sid, user] = read('ps-daemon.txt').trim().split(/\s+/);
  assert.equal(pid, sid, 'the daemon leads its own session');
  assert.match(user!, /^quotapo/);
  assert.match(said('start.txt'), new RegExp(`^quotapolicy: running, pid ${pid}; log: ${HOME}/quotapolicy.log$`, 'm'));
  assert.match(
    read('ps-all.txt'),
    /^root\s+\/usr\/bin\/sudo -n \/usr\/lib\/quotapolicy\/quotapolicy-helper$/m,
    '--sudopath is the sudo run',
  );
  assert.match(read('modes.txt'), /^quotapolicy:postfix 660 .*quotapolicy\.socket$/m);
});

test('it answers from real quotas on the homedir socket', () => {
  assert.equal(said('query.txt').trim(), FULL);
});

test("the init script's status, second start and stop work; stop removes the pid file and socket, leaves no process", () => {
  assert.equal(rc('status-running'), 0);
  assert.equal(rc('second'), 1);
  assert.match(said('second.txt'), /already running/);
  assert.equal(rc('stop'), 0);
  assert.equal(rc('status-stopped'), 3);
  assert.equal(read('after-stop.txt').trim(), 'quotapolicy.log');
  assert.equal(read('ps-after-stop.txt'), '');
});

test('--debug stays in the foreground, as the original did: the started process is the one in the pid file', () => {
  const [started, inFile] = read('debug-pids.txt').trim().split(' ');
  assert.equal(started, inFile);
  assert.equal(rc('debug'), 0, read('debug.log'));
});

test('--sudopath is checked: a sudo not owned by root is refused', () => {
  assert.equal(rc('badsudo'), 78);
  assert.equal(said('badsudo.txt').trim(), 'quotapolicy: --sudopath /run/sudo-by-quotapolicy: not owned by root');
});

test("as root: the service user's homedir is refused, saying why; a root-only one runs root mode, detached", () => {
  assert.equal(rc('root-userdir'), 78);
  assert.match(said('root-userdir.txt'), /--sudopath ignored: started as root/);
  assert.match(said('root-userdir.txt'), /as root \(root mode\) the homedir must be writable only by root/);
  assert.equal(rc('root-start'), 0);
  const [pid, sid, user] = read('root-ps.txt').trim().split(/\s+/);
  assert.equal(pid, sid);
  assert.equal(user, 'root');
  assert.equal(said('root-query.txt').trim(), FULL);
  assert.equal(rc('root-stop'), 0);
  assert.equal(read('root-after-stop.txt').trim(), 'quotapolicy.log');
});
