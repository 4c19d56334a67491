// `make install DESTDIR=...` is what a package build runs: it must install only
// the daemon's own code (no tests, no benchmarks, no dev dependencies) and must
// not change the build host (no useradd, no chown to a user that may not exist).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/daemon.js';

// A user name no host has: the staged install must neither need nor create it.
const ABSENT_USER = `qpabsent${process.pid}`;
let stage: string;
let make: ReturnType<typeof spawnSync>;

before(() => {
  stage = mkdtempSync(join(tmpdir(), 'qp-stage-'));
  make = spawnSync('make', ['-C', REPO, 'install', `DESTDIR=${stage}`, `SERVICE_USER=${ABSENT_USER}`], {
    encoding: 'utf8',
    timeout: 180_000,
  });
});
after(() => {
  rmSync(stage, { recursive: true, force: true });
  // Should a regression create the user after all, do not leave it on the host.
  if (spawnSync('getent', ['passwd', ABSENT_USER]).status === 0) spawnSync('userdel', [ABSENT_USER]);
});

const lib = (): string => join(stage, 'usr/lib/quotapolicy');

test('make install DESTDIR=... succeeds without the service user and creates none', () => {
  assert.equal(make.status, 0, `${String(make.stdout)}\n${String(make.stderr)}`);
  assert.notEqual(spawnSync('getent', ['passwd', ABSENT_USER]).status, 0, 'no user was created on the build host');
});

test('only the daemon code is staged: no tests, no benchmarks, no build state, no dev dependencies', () => {
  assert.deepEqual(readdirSync(join(lib(), 'dist')), ['src']);
  assert.ok(existsSync(join(lib(), 'dist/src/cli/main.js')));
  assert.ok(existsSync(join(lib(), 'dist/src/helper/main.js')));
  for (const dev of ['typescript', 'eslint', 'prettier', 'fast-check']) {
    assert.ok(!existsSync(join(lib(), 'node_modules', dev)), `dev dependency ${dev} was staged`);
  }
  assert.ok(existsSync(join(lib(), 'node_modules/pino')), 'runtime dependencies are staged');
});

test('state and config directories are root-owned in the stage (the package sets the group)', () => {
  for (const [path, mode] of [
    ['var/lib/quotapolicy', 0o750],
    ['etc/quotapolicy', 0o750],
    ['etc/quotapolicy/quotapolicy.yaml', 0o640],
  ] as const) {
    const st = statSync(join(stage, path));
    assert.equal(st.uid, 0, path);
    assert.equal(st.gid, 0, path);
    assert.equal(st.mode & 0o7777, mode, path);
  }
});
