// Acceptance for quota warnings: real kernel quotas (user-mode-linux, ext4
// with usrquota), `quotapolicy serve` as root with real privilege separation,
// and a real Postfix that takes mail over SMTP and delivers it to Maildirs.
// A user at 85% of a hard limit gets the X-Quota-Warning header on each
// message and one notice mail, not a second one after a restart. The guest
// (test/uml/warnings.sh + warnings-probe.ts) records, this file judges.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bootGuest } from './support/uml.js';

interface Phase {
  smtp: Record<string, Record<string, string>>;
  warn: string[];
  calm: string[];
}
let out: string;
let beforeRestart: Phase;
let afterRestart: Phase;
let daemonLog: Record<string, unknown>[];

const HEADER = /^X-Quota-Warning: warn@example\.test: mailbox 85% full \(blocks; warning at 80%\)$/m;
const NOTICE = /^Subject: Your mailbox is nearly full$/m;

before(() => {
  // Fails (not skips) where user-mode-linux is missing: scripts/setup.sh installs it.
  out = mkdtempSync(join(tmpdir(), 'qp-uml-warn-'));
  bootGuest(out, 'warnings.sh');
  beforeRestart = JSON.parse(readFileSync(join(out, 'warnings-before.json'), 'utf8')) as Phase;
  afterRestart = JSON.parse(readFileSync(join(out, 'warnings-after.json'), 'utf8')) as Phase;
  daemonLog = readFileSync(join(out, 'daemon.log'), 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
});

const messages = (box: string[], subject: string): string[] => box.filter((m) => m.includes(`Subject: ${subject}`));

test('real Postfix: mail to a user at 85% is accepted, and carries the X-Quota-Warning header', () => {
  for (const c of ['first', 'second', 'calm']) {
    assert.ok(beforeRestart.smtp[c]!.rcpt?.startsWith('250'), `${c}: RCPT answered ${beforeRestart.smtp[c]!.rcpt}`);
    assert.ok(
      beforeRestart.smtp[c]!.end?.startsWith('250'),
      `${c}: end of data answered ${beforeRestart.smtp[c]!.end}`,
    );
  }
  for (const s of ['first to warn', 'second to warn']) {
    const [m] = messages(beforeRestart.warn, s);
    assert.ok(m, `${s} delivered to warn's Maildir`);
    assert.match(m, HEADER, `${s} has the warning header`);
  }
});

test('real Postfix: a user under every threshold gets no header', () => {
  const [m] = messages(beforeRestart.calm, 'to calm');
  assert.ok(m, "delivered to calm's Maildir");
  assert.doesNotMatch(m, /X-Quota-Warning/);
});

test('real Postfix: one notice mail lands in the warned mailbox, from notify_from, once', () => {
  const notices = beforeRestart.warn.filter((m) => NOTICE.test(m));
  assert.equal(notices.length, 1, `notices: ${notices.length}`);
  const n = notices[0]!;
  assert.match(n, /^From: postmaster@example\.test$/m);
  assert.match(n, /^To: warn@example\.test$/m);
  assert.match(n, /^Auto-Submitted: auto-generated$/m);
  assert.match(n, /is 8\d% full \(space\),\npast the 80% mark/);
  assert.match(n, /^Return-Path: <postmaster@example\.test>$/m, 'the envelope sender is notify_from');
  assert.equal(beforeRestart.warn.length, 3, 'two messages and one notice');
  const sent = daemonLog.filter((l) => l.msg === 'quota notice sent');
  assert.equal(sent.length, 1);
  assert.equal(sent[0]!.user, 'warn');
  assert.equal(sent[0]!.threshold, 80);
});

test('after a restart the state file remembers: the header again, no second notice', () => {
  assert.ok(afterRestart.smtp.third!.end?.startsWith('250'), `end of data answered ${afterRestart.smtp.third!.end}`);
  const [m] = messages(afterRestart.warn, 'third to warn');
  assert.ok(m, 'third message delivered');
  assert.match(m, HEADER);
  assert.equal(afterRestart.warn.filter((x) => NOTICE.test(x)).length, 1, 'still one notice');
  assert.equal(daemonLog.filter((l) => l.msg === 'front ready').length, 2, 'the daemon did restart');
});

test("serve created state_path's missing directory for the service user, 0750", () => {
  assert.equal(readFileSync(join(out, 'state-dir.txt'), 'utf8').trim(), 'quotapolicy 750');
});

test('the decisions logged name the warning; nothing failed', () => {
  const warned = daemonLog.filter((l) => l.msg === 'decision' && l.quota_warning === 80);
  assert.ok(warned.length >= 3, `decision lines with quota_warning 80: ${warned.length}`);
  assert.ok(
    warned.some((l) => l.state === 'RCPT' && String(l.action).startsWith('PREPEND X-Quota-Warning: ')),
    'PREPEND at RCPT',
  );
  assert.ok(
    warned.some((l) => l.state === 'END-OF-MESSAGE' && l.action === 'DUNNO'),
    'DUNNO at END-OF-MESSAGE',
  );
  assert.deepEqual(
    daemonLog.filter((l) => /quota notice/.test(String(l.msg)) && l.msg !== 'quota notice sent'),
    [],
  );
});
