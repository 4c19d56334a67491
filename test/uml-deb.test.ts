// The Debian package's life inside user-mode-linux (overlays keep the host
// untouched; real kernel quotas, a real Postfix): dpkg -i, the daemon from the
// unit's own command line refusing the over-quota user at RCPT, an upgrade to
// a rebuilt package with a higher version, dpkg -r, dpkg -P.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/daemon.js';
import { bootGuest } from './support/uml.js';

let out: string;
let version: string;
const read = (f: string): string => readFileSync(join(out, f), 'utf8');
const rc = (f: string): number => Number(read(`${f}.rc`).trim());

/** Builds the package with make deb into out, under the name the guest expects. */
function build(debVersion: string, name: string): void {
  const r = spawnSync('make', ['-s', '-C', REPO, 'deb', `DEB_OUT=${out}`, `DEB_VERSION=${debVersion}`], {
    encoding: 'utf8',
    timeout: 300_000,
  });
  assert.equal(r.status, 0, `make deb failed:\n${r.stdout}\n${r.stderr}`);
  const arch = spawnSync('dpkg', ['--print-architecture'], { encoding: 'utf8' }).stdout.trim();
  renameSync(join(out, `quotapolicy_${debVersion}_${arch}.deb`), join(out, name));
}

before(() => {
  out = mkdtempSync(join(tmpdir(), 'qp-uml-deb-'));
  version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  build(version, 'old.deb');
  build(`${version}+upgrade1`, 'new.deb');
  bootGuest(out, 'deb.sh', { overlayUsr: true, timeoutS: 700 });
});

test('dpkg -i: installs, creates the system user with adduser, sets the config and state groups', () => {
  assert.equal(rc('install'), 0, read('install.log'));
  assert.equal(read('user-before.txt'), '', 'the guest starts without the user');
  const [name, , uid, , , home, shell] = read('user-after-install.txt').trim().split(':');
  assert.equal(name, 'quotapolicy');
  assert.ok(Number(uid) < 1000, `a system uid, got ${uid}`);
  assert.equal(home, '/nonexistent');
  assert.equal(shell, '/usr/sbin/nologin');
  assert.match(read('group-after-install.txt'), /^quotapolicy:/);
  const modes = read('modes.txt');
  for (const line of [
    'root:quotapolicy 750 /etc/quotapolicy',
    'root:quotapolicy 640 /etc/quotapolicy/quotapolicy.yaml',
    'quotapolicy:quotapolicy 750 /var/lib/quotapolicy',
    'root:root 755 /usr/lib/quotapolicy',
    'root:root 755 /usr/lib/quotapolicy/quotapolicy-helper',
  ])
    assert.ok(modes.includes(line), `${line}\n${modes}`);
  assert.equal(read('writable-by-others.txt'), '', 'nothing under /usr/lib/quotapolicy is group- or world-writable');
  assert.match(read('conffiles.txt'), /^ \/etc\/quotapolicy\/quotapolicy\.yaml [0-9a-f]{32}$/m);
});

test('dpkg -i without systemd: the socket unit is enabled (deb-systemd-helper), nothing is started', () => {
  assert.equal(read('enabled.txt').trim(), '/lib/systemd/system/quotapolicy.socket');
  assert.equal(read('started-by-install.txt'), '0\nno-socket\n');
});

test('the package installs both man pages, and man renders them without warnings', () => {
  const paths = read('man-paths.txt');
  assert.match(paths, /^\/usr\/share\/man\/man8\/quotapolicy\.8\.gz$/m, paths);
  assert.match(paths, /^\/usr\/share\/man\/man5\/quotapolicy\.yaml\.5\.gz$/m, paths);
  assert.equal(read('man-warnings.txt'), '');
});

test("the unit's ExecStart, on the edited config, answers a real Postfix: the over-quota user refused at RCPT", () => {
  assert.equal(read('execstart.txt').trim(), '/usr/lib/quotapolicy/bin/quotapolicy.js serve');
  assert.equal(read('query-old.txt'), 'action=452 4.2.2 Mailbox full (edited config)\n', read('daemon.log'));
  assert.equal(
    read('rcpt-hard-old.txt').trim(),
    '452 4.2.2 <hard@example.test>: Recipient address rejected: Mailbox full (edited config)',
  );
  assert.match(read('rcpt-roomy-old.txt'), /^250 /);
  assert.match(read('ps-old.txt'), /^root\s+quotapolicy: helper/m);
  assert.match(read('ps-old.txt'), /^quotapo\S*\s+quotapolicy: front/m);
});

test('upgrade to a rebuilt package with a higher version keeps the edited config, its mode and the user', () => {
  assert.equal(rc('upgrade'), 0, read('upgrade.log'));
  assert.equal(read('version-after-upgrade.txt').trim(), `${version}+upgrade1 install ok installed`);
  assert.equal(read('config-kept.txt').trim(), '0', 'the config is byte for byte the edited one');
  assert.equal(
    read('etc-after-upgrade.txt'),
    'quotapolicy.yaml\nroot:quotapolicy 640 /etc/quotapolicy/quotapolicy.yaml\n',
  );
  assert.equal(read('uid-after-upgrade.txt'), read('uid-before-upgrade.txt'));
  assert.equal(
    read('rcpt-hard-new.txt').trim(),
    '452 4.2.2 <hard@example.test>: Recipient address rejected: Mailbox full (edited config)',
  );
  assert.match(read('rcpt-roomy-new.txt'), /^250 /);
});

test('dpkg -r stops the daemon and removes the code; the config and the user stay', () => {
  assert.equal(read('alive-before-remove.txt').trim(), 'alive');
  assert.equal(rc('remove'), 0, read('remove.log'));
  assert.equal(read('alive-after-remove.txt'), 'stopped\nno-socket\n');
  assert.equal(read('left-after-remove.txt'), '');
  assert.equal(read('config-after-remove.txt').trim(), 'quotapolicy.yaml');
  assert.match(read('user-after-remove.txt'), /^quotapolicy:/);
  // Postfix now gets no answer: its default action, not a silent accept.
  assert.match(read('rcpt-hard-removed.txt'), /^451 4\.3\.5 /);
});

test('dpkg -P removes the user, the group, the config, the state and every trace dpkg or the scripts left', () => {
  assert.equal(rc('purge'), 0, read('purge.log'));
  assert.equal(read('user-after-purge.txt'), '');
  assert.match(read('dpkg-after-purge.txt'), /no packages found/);
  assert.equal(read('left-after-purge.txt'), '');
});
