// Hostile recipients through a running daemon: option-like, path-like, shell
// metacharacters, Unicode and look-alikes, overlong, numeric, root and system
// users. The exact argv that reaches quota(1) is recorded: only validated
// numeric uids of non-exempt users at or above min_uid ever appear.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { startDaemon, fakeQuota, writeConfig } from './support/daemon.js';
import { exchange, actions, uncheckedRcpt } from './support/policy-client.js';

const HOSTILE = [
  '-f@example.test',
  '--help@example.test',
  '-u@x',
  '--@x',
  '-q root@x',
  '../../etc/passwd@x',
  '..@x',
  './quota@x',
  '/usr/bin/id@x',
  'a;id@x',
  'a|id@x',
  '$(id)@x',
  '`id`@x',
  'a&&id@x',
  "a'b@x",
  'a"b@x',
  'a b@x',
  'a\tb@x',
  'a*@x',
  'a?@x',
  '~root@x',
  'rооt@x' /* Cyrillic o */,
  'ｒoot@x' /* fullwidth r */,
  'root\u200b@x',
  'ǹobody@x',
  'nobody\u0000@x',
  'x'.repeat(5000) + '@x',
  '0@x',
  '#0@x',
  '-1@x',
  '4294967295@x',
  '65534@x',
  '0x0@x',
  'root@x',
  'ROOT@x',
  'root+ext@x',
  'daemon@x',
  'bin@x',
  'sys@x',
  'postfix@x',
  'quotapolicy@x',
  'nobody@x',
  'Nobody+tag@x',
  '@x',
  '',
  '+@x',
  'nobody@',
  '\u00ff\u00fe@x',
];

test('only validated numeric uids of non-exempt users reach quota(1)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-hostile-'));
  chmodSync(dir, 0o755);
  const fq = fakeQuota();
  const sock = join(dir, 'p.sock');
  // min_uid 100 lets quotapolicy (a system uid) through the uid check, so the exemption is what stops it.
  const cfg = writeConfig(
    dir,
    `quota_path: ${fq.path}\nmin_uid: 100\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\nexempt_users: [quotapolicy]\ncache_ttl_ms: 0\nnegative_cache_ttl_ms: 0\n`,
  );
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    for (const r of HOSTILE) {
      const res = await exchange({ path: sock }, [uncheckedRcpt(r.replace(/\n/g, ''))], { replies: 1 });
      assert.deepEqual(actions(res.text), ['DUNNO'], JSON.stringify(r));
    }
  } finally {
    await d.stop();
  }
  // Which users the config lets through: real users (postfix, nobody, ...) at or above min_uid 100, except the exempt one.
  const exempt = userid.ids('quotapolicy').uid;
  const runs = fq.argv();
  console.log(`hostile recipients: ${HOSTILE.length} sent, quota ran ${runs.length} times: ${JSON.stringify(runs)}`);
  assert.ok(runs.length >= 1, 'the legitimate user (nobody) was looked up');
  for (const line of runs) {
    const m = /^-w -p -v --show-mntpoint --hide-device (-u|-g) --((?: \d+)+)$/.exec(line);
    assert.ok(m, `unexpected argv: ${line}`);
    // Groups (quota_kinds' default has them): the primary groups of those same users.
    if (m[1] === '-g') {
      for (const gid of m[2]!.trim().split(' ').map(Number)) assert.ok(userid.groupname(gid), `gid ${gid} is a group`);
      continue;
    }
    for (const uid of m[2]!.trim().split(' ').map(Number)) {
      assert.ok(uid >= 100 && uid !== exempt, `uid ${uid} reached quota`);
      assert.ok(userid.username(uid), `uid ${uid} is a real user`);
    }
  }
  assert.ok(
    runs.some((l) => l.includes(' -u ') && l.endsWith(` ${userid.ids('nobody').uid}`)),
    'nobody (NoBody+tag too) was checked',
  );
});
