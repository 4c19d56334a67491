// The shipped units and sudoers drop-in, checked by the tools admins use.
// (The installed units are verified again inside user-mode-linux by
// uml-install.test.ts, where ExecStart really exists.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, readdirSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/daemon.js';

/** issue #3: systemd-analyze security must report an exposure of 3.0 or lower. */
export const MAX_EXPOSURE = 3.0;

test('systemd-analyze verify: the units pass with nothing at all on stderr', () => {
  // Same units, with ExecStart pointing at this checkout (the installed path does not exist here).
  const dir = mkdtempSync(join(tmpdir(), 'qp-units-'));
  const service = readFileSync(join(REPO, 'systemd/quotapolicy.service'), 'utf8');
  assert.match(service, /^ExecStart=\/usr\/lib\/quotapolicy\/bin\/quotapolicy\.js serve$/m);
  writeFileSync(
    join(dir, 'quotapolicy.service'),
    service.replace('/usr/lib/quotapolicy/bin/quotapolicy.js', join(REPO, 'bin/quotapolicy.js')),
  );
  writeFileSync(join(dir, 'quotapolicy.socket'), readFileSync(join(REPO, 'systemd/quotapolicy.socket')));
  const clean = readFileSync(join(REPO, 'systemd/quotapolicy-clean.service'), 'utf8');
  writeFileSync(
    join(dir, 'quotapolicy-clean.service'),
    clean.replace('/usr/lib/quotapolicy/bin/quotapolicy.js', join(REPO, 'bin/quotapolicy.js')),
  );
  writeFileSync(join(dir, 'quotapolicy-clean.timer'), readFileSync(join(REPO, 'systemd/quotapolicy-clean.timer')));
  const units = [
    'quotapolicy.socket',
    'quotapolicy.service',
    'quotapolicy-clean.service',
    'quotapolicy-clean.timer',
  ].map((u) => join(dir, u));
  // Only our units and systemd's own targets and slices: other packages' units on this host (policyd-rate-limit's
  // warns about StandardOutput=syslog) would otherwise speak on stderr too.
  for (const f of readdirSync('/lib/systemd/system').filter((f) => f.endsWith('.target') || f.endsWith('.slice')))
    copyFileSync(join('/lib/systemd/system', f), join(dir, f));
  const r = spawnSync('systemd-analyze', ['verify', ...units], {
    encoding: 'utf8',
    env: { ...process.env, SYSTEMD_UNIT_PATH: dir },
  });
  assert.equal(r.error, undefined, 'systemd-analyze must be installed (scripts/setup.sh --test)');
  assert.equal(r.stderr, '');
  assert.equal(r.status, 0);
  writeFileSync(units[1]!, `${readFileSync(units[1]!, 'utf8')}Bogus=1\n`);
  const broken = spawnSync('systemd-analyze', ['verify', units[1]!], {
    encoding: 'utf8',
    env: { ...process.env, SYSTEMD_UNIT_PATH: dir },
  });
  assert.match(broken.stderr, /Unknown key 'Bogus'/, 'the check does see a bad key');
});

test(`systemd-analyze security: exposure ${MAX_EXPOSURE} or lower`, () => {
  const r = spawnSync(
    'systemd-analyze',
    ['security', '--offline=true', '--no-pager', join(REPO, 'systemd/quotapolicy.service')],
    { encoding: 'utf8' },
  );
  const m = /Overall exposure level for quotapolicy\.service: (\d+\.\d)/.exec(r.stdout + r.stderr);
  assert.ok(m, r.stdout + r.stderr);
  const score = Number(m[1]);
  console.log(`systemd-analyze security exposure: ${score}`);
  assert.ok(score <= MAX_EXPOSURE, `exposure ${score}`);
  assert.match(
    readFileSync(join(REPO, 'README.md'), 'utf8'),
    new RegExp(`exposure level \\*\\*${m[1]!.replace('.', '\\.')}\\*\\*`),
    'README shows the current figure',
  );
});

test('the socket unit: Postfix spool path, postfix owner, 0660, a name for the fd', () => {
  const socket = readFileSync(join(REPO, 'systemd/quotapolicy.socket'), 'utf8');
  for (const line of [
    'ListenStream=/var/spool/postfix/private/quotapolicy',
    'SocketUser=postfix',
    'SocketMode=0660',
    'FileDescriptorName=policy',
  ]) {
    assert.ok(socket.split('\n').includes(line), line);
  }
  const service = readFileSync(join(REPO, 'systemd/quotapolicy.service'), 'utf8');
  for (const line of [
    'Restart=on-failure',
    'NoNewPrivileges=yes',
    'ProtectSystem=strict',
    'ProtectHome=read-only',
    'PrivateTmp=yes',
    'PrivateDevices=no',
    'CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_SYS_ADMIN CAP_KILL',
  ]) {
    assert.ok(service.split('\n').includes(line), line);
  }
});

test('the sudoers drop-in passes visudo -cf and allows exactly the helper with no arguments', () => {
  const file = join(REPO, 'sudoers.d/quotapolicy');
  const r = spawnSync('visudo', ['-cf', file], { encoding: 'utf8' });
  assert.equal(r.error, undefined, 'visudo must be installed (scripts/setup.sh --test)');
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const rules = readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'));
  assert.deepEqual(rules, ['quotapolicy ALL=(root) NOPASSWD: /usr/lib/quotapolicy/quotapolicy-helper ""']);
  const broken = join(mkdtempSync(join(tmpdir(), 'qp-sudoers-')), 'bad');
  writeFileSync(broken, 'quotapolicy ALL=(root) NOPASSWD /usr/lib/quotapolicy/quotapolicy-helper ""\n');
  assert.equal(spawnSync('visudo', ['-cf', broken]).status, 1, 'visudo -cf does catch a broken file');
});
