// Acceptance: real kernel quotas (user-mode-linux, ext4 with usrquota and
// grpquota, a second one with prjquota), the
// real quota(1), `quotapolicy serve` as root with real privilege separation,
// and a real Postfix sending through check_policy_service. One boot; the
// guest (test/uml/acceptance.sh + probe.ts) records, this file judges.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POLICY_CASES, SMTP_CASES, FULL, TOO_LARGE } from './uml/cases.js';
import { bootGuest } from './support/uml.js';

let out: string;
let results: {
  policy: Record<string, string>;
  smtp: Record<string, Record<string, string>>;
  delivered_under: string[];
};
let daemonLog: Record<string, unknown>[];

before(() => {
  // Fails (not skips) where user-mode-linux is missing: scripts/setup.sh installs it.
  out = mkdtempSync(join(tmpdir(), 'qp-uml-'));
  bootGuest(out, 'acceptance.sh');
  results = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as typeof results;
  daemonLog = readFileSync(join(out, 'daemon.log'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
});

for (const c of POLICY_CASES) {
  test(`real quota: ${c.name} -> ${c.want}`, () => {
    assert.equal(results.policy[c.name], c.want);
    const recipient = c.attrs.recipient;
    if (recipient)
      assert.ok(
        daemonLog.some((l) => l.msg === 'decision' && l.recipient === recipient && l.verdict === c.verdict),
        `decision line with verdict ${c.verdict} for ${recipient}`,
      );
  });
}

for (const c of SMTP_CASES) {
  test(`real Postfix: ${c.name}`, () => {
    const got = results.smtp[c.name]!;
    assert.ok(got.rcpt?.startsWith(c.rcptCode), `RCPT answered ${got.rcpt}`);
    if (c.dataCode) assert.ok(got.end?.startsWith(c.dataCode), `end of data answered ${got.end}`);
  });
}

test('real Postfix: the authenticated sender over its limit was told by the rate-limit check', () => {
  const line = daemonLog.find((l) => l.msg === 'decision' && l.check === 'rate_limit' && l.verdict === 'rate_limited');
  assert.ok(line, 'a rate_limited decision');
  assert.equal(line.rate_id, 'ratelimited');
});

test('real Postfix: the volume-limited sender was counted in real bytes at END-OF-MESSAGE', () => {
  const lines = daemonLog.filter((l) => l.msg === 'decision' && l.rate_id === 'volume');
  const end = lines.filter((l) => l.state === 'END-OF-MESSAGE');
  // Each 4 KiB body is 4096 bytes plus its Subject line and Postfix's own headers: over 4000, and two are over 7000.
  const counted = end
    .filter((l) => l.rate_verdict === 'pass')
    .map((l) => Number(/^(\d+) bytes counted for bytes:sasl:volume$/.exec(String(l.reason))?.[1]));
  assert.equal(counted.length, 2, JSON.stringify(end));
  assert.ok(counted[0]! > 4096 && counted[0]! + counted[1]! <= 7000, `counted ${counted.join(', ')}`);
  const refused = end.find((l) => l.rate_verdict === 'rate_limited');
  assert.match(String(refused?.reason), /^bytes:sasl:volume: \d+ \+ \d+ bytes over 7000 in 3600 s$/);
  const early = lines.find((l) => l.state === 'RCPT' && l.rate_verdict === 'rate_limited');
  assert.match(String(early?.reason), /^bytes:sasl:volume: \d+ \+ \d+ declared bytes over 7000 in 3600 s$/);
});

test("real Postfix: the normal user's mail is in its Maildir on the quota file system", () => {
  assert.equal(results.delivered_under.length, 3, 'the normal message and the two allowed rate-limited ones');
  assert.ok(results.delivered_under.some((m) => /Subject: normal user delivered/.test(m)));
});

test("the policy socket in Postfix's spool is owned by the service user, group postfix, mode 0660", () => {
  assert.match(readFileSync(join(out, 'socket.txt'), 'utf8'), /^srw-rw---- 1 quotapolicy postfix /);
});

test('`quotapolicy check` as root prints the right action for real quotas', () => {
  const hard = readFileSync(join(out, 'check-hard.txt'), 'utf8');
  assert.match(
    hard,
    new RegExp(
      `^action: ${FULL}\nverdict: over_quota\nreason: blocks at hard limit on /home \\(200/200 KiB\\)\nuser: hard\n$`,
    ),
  );
  assert.match(
    readFileSync(join(out, 'check-under-big.txt'), 'utf8'),
    new RegExp(`^action: ${TOO_LARGE}\nverdict: too_large\n`),
  );
});

test('group quotas: the decision names the kind that answered', () => {
  const kindOf = (recipient: string) =>
    daemonLog.find((l) => l.msg === 'decision' && l.recipient === recipient)?.quota_kind;
  assert.equal(kindOf('grpuser@example.test'), 'group');
  assert.equal(kindOf('grpgrace@example.test'), 'group');
  assert.equal(kindOf('grpexpired@example.test'), 'group');
  // /home/prj counts group usage without enforcing it: the full group there is not what answered.
  assert.equal(kindOf('grpoff@example.test'), 'user');
  assert.equal(kindOf('prjfull@example.test'), 'project');
});

test('`quotapolicy check`: a full project of the mailbox directory refuses (read by lsattr -p, as the service user)', () => {
  assert.equal(
    readFileSync(join(out, 'check-prjfull.txt'), 'utf8'),
    `action: ${FULL}\nverdict: over_quota\nreason: project quota: blocks at hard limit on /home/prj (200/200 KiB)\nuser: prjfull\n`,
  );
});

test('`quotapolicy check`: a full primary group refuses; quota_kinds: [user] does not consult it', () => {
  assert.equal(
    readFileSync(join(out, 'check-grpuser.txt'), 'utf8'),
    `action: ${FULL}\nverdict: over_quota\nreason: group quota: blocks at hard limit on /home (200/200 KiB)\nuser: grpuser\n`,
  );
  assert.equal(
    readFileSync(join(out, 'check-grpuser-kinds-user.txt'), 'utf8'),
    'action: DUNNO\nverdict: pass\nreason: within quota on /home\nuser: grpuser\n',
  );
});

test('the service user cannot run quota(1) for another user by itself (real quotactl)', () => {
  const rc = Number(readFileSync(join(out, 'front-quota.rc'), 'utf8'));
  const stderr = readFileSync(join(out, 'front-quota.stderr'), 'utf8');
  const stdout = readFileSync(join(out, 'front-quota.stdout'), 'utf8');
  assert.notEqual(rc, 0);
  assert.match(stderr, /not permitted|denied/i, stderr);
  assert.doesNotMatch(stdout, /\/home\s+\d+/, 'no numbers for user 2003');
});

test('the front ran unprivileged inside the guest too', () => {
  const ready = daemonLog.find((l) => l.msg === 'front ready');
  assert.ok(ready, 'front ready line');
  assert.notEqual(ready.uid, 0);
  assert.notEqual(ready.gid, 0);
});
