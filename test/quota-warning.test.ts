// Warnings before the wall: the pure threshold logic, the notice
// bookkeeping with the clock passed in, the config rules, and the answer the
// quota check and the policy service give (PREPEND at RCPT only, never in
// place of anything but DUNNO).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { highestWarning, noticeStep, userAddress, warningText } from '../src/frontend/quota/quota-warning.js';
import { QuotaCheck } from '../src/frontend/quota/quota-check.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { parseConfig, ConfigError } from '../src/shared/config/load.js';
import { QuotaStatus, type FsQuota, type UserQuota } from '../src/shared/wire.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { storeConfig } from './support/stores.js';

const fs = (over: Partial<FsQuota> = {}): FsQuota => ({
  mount: '/home',
  blocks: 0,
  blockSoft: 0,
  blockHard: 1000,
  blockGrace: 0,
  files: 0,
  fileSoft: 0,
  fileHard: 0,
  fileGrace: 0,
  ...over,
});

test('the highest threshold crossed counts; exactly at a threshold is crossed', () => {
  assert.equal(highestWarning([fs({ blocks: 799 })], 0, [80, 90], []), undefined);
  assert.deepEqual(highestWarning([fs({ blocks: 800 })], 0, [80, 90], []), {
    threshold: 80,
    percent: 80,
    kind: 'blocks',
    mount: '/home',
  });
  assert.equal(highestWarning([fs({ blocks: 950 })], 0, [80, 90], [])?.threshold, 90);
  assert.equal(highestWarning([fs({ blocks: 950 })], 0, [], []), undefined, 'no thresholds: no warnings');
});

test('the message counts: its declared size in KiB (rounded up) and one more file', () => {
  assert.equal(highestWarning([fs({ blocks: 699 })], 100 * 1024, [80], []), undefined, '699 + 100 = 799 of 1000');
  assert.equal(highestWarning([fs({ blocks: 699 })], 100 * 1024 + 1, [80], [])?.percent, 80, '100 KiB + 1 byte is 101');
  const files = fs({ blockHard: 0, files: 7, fileHard: 10 });
  assert.equal(highestWarning([files], 0, [80], [])?.kind, 'files', '7 + this one = 8 of 10');
  assert.equal(highestWarning([fs({ blockHard: 0, files: 6, fileHard: 10 })], 0, [80], []), undefined);
});

test('no hard limit, no warning; soft limits alone have actions.grace', () => {
  assert.equal(highestWarning([fs({ blockHard: 0, blockSoft: 100, blocks: 99 })], 0, [50], []), undefined);
});

test('every file system and kind is looked at; filesystems narrows them as for the verdict', () => {
  const rows = [fs({ mount: '/home', blocks: 850 }), fs({ mount: '/var/mail', blocks: 0, files: 94, fileHard: 100 })];
  assert.deepEqual(highestWarning(rows, 0, [80, 90], []), {
    threshold: 90,
    percent: 95,
    kind: 'files',
    mount: '/var/mail',
  });
  assert.equal(highestWarning(rows, 0, [80, 90], ['/home'])?.mount, '/home');
  // Same threshold: the fuller one.
  assert.equal(highestWarning([fs({ blocks: 810 }), fs({ mount: '/b', blocks: 890 })], 0, [80, 90], [])?.mount, '/b');
});

test('the address is built from the user and a checked domain, never the raw recipient', () => {
  assert.equal(userAddress('bob', 'Bob+lists@Example.TEST'), 'bob@example.test');
  assert.equal(userAddress('bob', 'bob'), 'bob');
  assert.equal(userAddress('bob', 'bob@bad domain'), 'bob');
  assert.equal(
    warningText('bob@example.test', { threshold: 80, percent: 85, kind: 'blocks', mount: '/home' }),
    'bob@example.test: mailbox 85% full (blocks; warning at 80%)',
  );
});

test('a notice is due on a rise over a threshold, once per period, and again after a fall', () => {
  const DAY = 86_400;
  const none = { level: 0, sent: new Map<number, number>() };
  assert.deepEqual(noticeStep(none, 0, 1000, DAY), { level: 0 });
  assert.deepEqual(noticeStep(none, 80, 1000, DAY), { level: 80, notify: 80 });
  const told = { level: 80, sent: new Map([[80, 1000]]) };
  assert.deepEqual(noticeStep(told, 80, 2000, DAY), { level: 80 }, 'no rise: nothing');
  assert.deepEqual(noticeStep(told, 90, 2000, DAY), { level: 90, notify: 90 }, 'a higher threshold is a new crossing');
  assert.deepEqual(noticeStep(told, 0, 3000, DAY), { level: 0 }, 'a fall is remembered');
  const fell = { level: 0, sent: new Map([[80, 1000]]) };
  assert.deepEqual(noticeStep(fell, 80, 1000 + DAY - 1, DAY), { level: 80 }, 'within the period: not again');
  assert.deepEqual(noticeStep(fell, 80, 1000 + DAY, DAY), { level: 80, notify: 80 }, 'after it: again');
  assert.deepEqual(noticeStep(fell, 80, 500, DAY), { level: 80 }, 'a clock set back does not send again');
});

test('config: thresholds increasing and within 1..100; header names; notify needs its parts', () => {
  const bad = (yaml: string, re: RegExp): void =>
    assert.throws(
      () => parseConfig(yaml, 't'),
      (e: unknown) => e instanceof ConfigError && re.test(e.message),
    );
  bad(
    'quota_warnings:\n  thresholds: [90, 80]\n',
    /quota_warnings\.thresholds \(t line 2\): must be in increasing order/,
  );
  bad('quota_warnings:\n  thresholds: [0]\n', /entry 1 must be an integer from 1 to 100/);
  bad('quota_warnings:\n  thresholds: [1,2,3,4,5,6,7,8,9,10,11]\n', /at most 10 entries/);
  bad('quota_warnings:\n  header: "X Bad: y"\n', /must be a header name/);
  bad('quota_warnings:\n  thresholds: [80]\n  notify: true\n', /notify_from is required/);
  bad('quota_warnings:\n  notify: true\n  notify_from: a@b.c\n', /quota_warnings\.notify \(t\): needs thresholds/);
  bad('quota_warnings:\n  notify_subject: "Voll ü"\n', /printable ASCII/);
  bad('quota_warnings:\n  thersholds: [80]\n', /unknown key quota_warnings\.thersholds .*did you mean thresholds/);
  bad(
    'actions:\n  success: OK\nquota_warnings:\n  thresholds: [80]\n',
    /quota_warnings\.header \(t\): the warning header replaces actions\.success, so it must be DUNNO \(it is OK\)/,
  );
  bad(
    'quota_states: [END-OF-MESSAGE]\nquota_warnings:\n  thresholds: [80]\n',
    /add RCPT to quota_states, or set header: null/,
  );
  // Each of those has its way out.
  parseConfig('actions:\n  success: OK\nquota_warnings:\n  thresholds: [80]\n  header: null\n', 't');
  parseConfig('quota_states: [END-OF-MESSAGE]\nquota_warnings:\n  thresholds: [80]\n  header: null\n', 't');
  const c = parseConfig(
    'quota_warnings:\n  thresholds: [80, 90]\n  notify: true\n  notify_from: postmaster@example.test\n',
    't',
  );
  assert.equal(c.quota_warnings.notify_period_s, 86_400);
  assert.equal(parseConfig('', 't').quota_warnings.thresholds.length, 0, 'off by default');
});

function service(yaml: string, row: FsQuota) {
  const cfg = parseConfig(yaml, 't');
  const queryQuota = async (uid: number): Promise<UserQuota> => ({ uid, status: QuotaStatus.Ok, fs: [row] });
  const check = new QuotaCheck(cfg, '+', 1000, {
    lookupUser: (n) => (n === 'bob' ? { uid: 2001, gid: 100 } : undefined),
    queryQuota,
  });
  const sqlite = storeConfig('sqlite');
  const svc = new PolicyService(
    cfg,
    '+',
    1000,
    {
      queryQuota,
      lookupUser: (n) => (n === 'bob' ? { uid: 2001, gid: 100 } : undefined),
      openStore: () => openStore({ ...sqlite, ...cfg.rate_limit, sqlite_path: sqlite.sqlite_path, timeout_ms: 2000 }),
    },
    pino({ level: 'silent' }),
  );
  return { check, svc };
}
const req = (state: string, extra: Record<string, string> = {}) =>
  new Map(
    Object.entries({
      request: 'smtpd_access_policy',
      protocol_state: state,
      recipient: 'Bob+x@Example.TEST',
      recipient_count: '1',
      sender: 's@example.org',
      ...extra,
    }),
  );
const PREPEND = 'PREPEND X-Quota-Warning: bob@example.test: mailbox 85% full (blocks; warning at 80%)';

test('at RCPT a warned recipient gets PREPEND in place of DUNNO; at END-OF-MESSAGE (Postfix ignores PREPEND there) DUNNO', async () => {
  const { check } = service('quota_warnings:\n  thresholds: [80, 90]\n', fs({ blocks: 850 }));
  const r = await check.check(req('RCPT'), 0);
  assert.deepEqual([r.verdict, r.action, r.warning?.threshold], ['pass', PREPEND, 80]);
  assert.match(r.reason, /^within quota on \/home; bob@example\.test: mailbox 85% full/);
  const e = await check.check(req('END-OF-MESSAGE'), 0);
  assert.deepEqual([e.verdict, e.action, e.warning?.threshold], ['pass', 'DUNNO', 80]);
  const under = await service('quota_warnings:\n  thresholds: [90]\n', fs({ blocks: 850 })).check.check(req('RCPT'), 0);
  assert.deepEqual([under.action, under.warning], ['DUNNO', undefined]);
});

test('a refusal is never turned into a warning; a grace action of its own stays', async () => {
  const full = service('quota_warnings:\n  thresholds: [80]\n', fs({ blocks: 990 }));
  const r = await full.check.check(req('RCPT', { size: String(20 * 1024) }), 0);
  assert.deepEqual([r.verdict, r.warning], ['does_not_fit', undefined]);
  const grace = service(
    'actions:\n  grace: "PREPEND X-Soft: over soft quota"\nquota_warnings:\n  thresholds: [80]\n',
    fs({ blocks: 850, blockSoft: 500, blockGrace: 10 ** 12 }),
  );
  const g = await grace.check.check(req('RCPT'), 0);
  assert.deepEqual([g.verdict, g.action, g.warning?.threshold], ['grace', 'PREPEND X-Soft: over soft quota', 80]);
  const graceNull = service(
    'quota_warnings:\n  thresholds: [80]\n',
    fs({ blocks: 850, blockSoft: 500, blockGrace: 10 ** 12 }),
  );
  assert.equal(
    (await graceNull.check.check(req('RCPT'), 0)).action,
    PREPEND,
    'grace: null answers as success, so warned',
  );
});

test('the service: the warning header wins over a rate limit DUNNO; a refusal wins over the warning', async () => {
  const yaml = (limits: string) =>
    `checks: [rate_limit, quota]\nquota_warnings:\n  thresholds: [80]\nrate_limit:\n  limits: ${limits}\n  limit_by_sender: true\n  limit_by_sasl: false\n`;
  const ok = service(yaml('[[10, 60]]'), fs({ blocks: 850 })).svc;
  const d = await ok.decide(req('RCPT'));
  assert.deepEqual([d.check, d.action, d.results.rate_limit?.action], ['quota', PREPEND, 'DUNNO']);
  const limited = service(yaml('[[0, 60]]'), fs({ blocks: 850 })).svc;
  const l = await limited.decide(req('RCPT'));
  assert.deepEqual([l.check, l.action], ['rate_limit', 'DEFER_IF_PERMIT Rate limit reach, retry later']);
  await ok.rateLimit?.close();
  await limited.rateLimit?.close();
});
