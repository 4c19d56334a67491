// Quota notices on the host: the real notifier, a real SQLite state file and
// a stand-in sendmail (a shell script made here that records its arguments,
// environment and input): once per crossing, remembered across a restart, at
// most once per period, retried after a failure, killed past its time limit,
// a bounded queue, and never in the way of the policy answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Notifier, MAX_PENDING_NOTICES, type Observation } from '../src/frontend/quota/notifier.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { parseConfig } from '../src/shared/config/load.js';
import { QuotaStatus } from '../src/shared/wire.js';
import { QUERY_ATTRIBUTE, QUERY_DRY } from '../src/frontend/protocol/dry-query.js';

const DAY = 86_400;

/** A temp dir with a stand-in sendmail; `behaviour` is shell run after it records. */
function sandbox(behaviour = 'exit 0') {
  const dir = mkdtempSync(join(tmpdir(), 'qp-notice-'));
  const sendmail = join(dir, 'sendmail');
  writeFileSync(
    sendmail,
    `#!/bin/sh\nn=$(date +%s%N)\nprintf '%s\\n' "$@" > "${dir}/mail.$n.args"\nenv > "${dir}/mail.$n.env"\ncat > "${dir}/mail.$n.msg"\n${behaviour}\n`,
  );
  chmodSync(sendmail, 0o755);
  const lines: Record<string, unknown>[] = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        cb();
      },
    }),
  );
  const cfg = (extra = '') =>
    parseConfig(
      `quota_warnings:\n  thresholds: [80, 90]\n  notify: true\n  notify_from: postmaster@example.test\n  notify_sendmail: ${sendmail}\n  state_path: ${dir}/warnings.sqlite3\n${extra}`,
      't',
    );
  const mails = () =>
    readdirSync(dir)
      .filter((f) => f.endsWith('.msg'))
      .sort()
      .map((f) => ({
        msg: readFileSync(join(dir, f), 'utf8'),
        args: readFileSync(join(dir, f.replace(/msg$/, 'args')), 'utf8')
          .trim()
          .split('\n'),
        env: readFileSync(join(dir, f.replace(/msg$/, 'env')), 'utf8'),
      }));
  return { dir, sendmail, log, lines, cfg, mails };
}

const at = (threshold: number, nowSec: number, user = 'bob'): Observation => ({
  user,
  address: `${user}@example.test`,
  warning: threshold === 0 ? undefined : { threshold, percent: threshold + 5, kind: 'blocks', mount: '/home' },
  nowSec,
});

test('one notice per crossing, through sendmail with fixed arguments and environment, remembered across a restart', async () => {
  const s = sandbox();
  let n = new Notifier(s.cfg().quota_warnings, s.log);
  n.observe(at(80, 1000));
  n.observe(at(80, 1001));
  await n.settled();
  n.observe(at(80, 1002));
  await n.settled();
  assert.equal(s.mails().length, 1);
  const [m] = s.mails();
  assert.deepEqual(m!.args, ['-i', '-f', 'postmaster@example.test', '--', 'bob@example.test']);
  assert.match(
    m!.msg,
    /^From: postmaster@example\.test\nTo: bob@example\.test\nSubject: Your mailbox is nearly full\n/,
  );
  assert.match(m!.msg, /Auto-Submitted: auto-generated\n/);
  assert.match(m!.msg, /is 85% full \(space\),\npast the 80% mark/);
  const env = m!.env.split('\n').filter((l) => l !== '' && !/^(PWD|SHLVL|_)=/.test(l));
  assert.deepEqual(env.sort(), ['LC_ALL=C', 'PATH=/usr/sbin:/usr/bin:/sbin:/bin']);
  assert.ok(s.lines.some((l) => l.msg === 'quota notice sent' && l.user === 'bob' && l.threshold === 80));
  await n.close();

  // A restart: a new notifier on the same state file knows bob was told.
  n = new Notifier(s.cfg().quota_warnings, s.log);
  n.observe(at(80, 2000));
  await n.settled();
  assert.equal(s.mails().length, 1, 'not again after a restart');
  n.observe(at(90, 2001));
  await n.settled();
  assert.equal(s.mails().length, 2, 'the next threshold is a new crossing');
  n.observe(at(0, 3000));
  await n.settled();
  n.observe(at(90, 3001));
  await n.settled();
  assert.equal(s.mails().length, 2, 'down and up again within the period: not again');
  n.observe(at(0, 3002));
  await n.settled();
  n.observe(at(90, 2001 + DAY));
  await n.settled();
  assert.equal(s.mails().length, 3, 'a crossing after the period: again');
  n.observe(at(80, 5000, 'alice'));
  await n.settled();
  assert.equal(s.mails().length, 4, 'per user');
  await n.close();
});

test('a failed sendmail is logged with its complaint, and the next accepted mail tries again', async () => {
  const s = sandbox(
    '[ -e "$(dirname "$0")/ok" ] || { echo "postdrop: warning: unable to look up public/pickup" >&2; exit 75; }',
  );
  const n = new Notifier(s.cfg().quota_warnings, s.log);
  n.observe(at(80, 1000));
  await n.settled();
  const warn = s.lines.find((l) => l.msg === 'quota notice not sent: tried again with the next accepted mail');
  assert.ok(warn, 'a warning');
  assert.match(String(warn.reason), /sendmail exit 75: postdrop: warning: unable to look up public\/pickup$/);
  writeFileSync(join(s.dir, 'ok'), '');
  n.observe(at(80, 1001));
  await n.settled();
  assert.equal(s.lines.filter((l) => l.msg === 'quota notice sent').length, 1);
  await n.close();
});

test('a sendmail that hangs is killed after notify_timeout_ms; observe() never waits for it', async () => {
  const s = sandbox('sleep 30');
  const n = new Notifier(s.cfg('  notify_timeout_ms: 300\n').quota_warnings, s.log);
  const t0 = performance.now();
  n.observe(at(80, 1000));
  assert.ok(performance.now() - t0 < 50, 'observe() only queues');
  await n.settled();
  const elapsed = performance.now() - t0;
  assert.ok(elapsed >= 300 && elapsed < 10_000, `killed at ${elapsed} ms`);
  const warn = s.lines.find((l) => l.msg === 'quota notice not sent: tried again with the next accepted mail');
  assert.match(String(warn?.reason), /killed after notify_timeout_ms \(300 ms\)/);
  await n.close();
});

test('a missing sendmail is a logged failure, not a crash', async () => {
  const s = sandbox();
  const n = new Notifier({ ...s.cfg().quota_warnings, notify_sendmail: join(s.dir, 'no-such-sendmail') }, s.log);
  n.observe(at(80, 1000));
  await n.settled();
  const warn = s.lines.find((l) => l.msg === 'quota notice not sent: tried again with the next accepted mail');
  assert.match(String(warn?.reason), /no-such-sendmail: spawn .* ENOENT/);
  await n.close();
});

test(`the queue holds ${MAX_PENDING_NOTICES} observations; past that they are dropped and said so`, async () => {
  const s = sandbox();
  const n = new Notifier(s.cfg().quota_warnings, s.log);
  for (let i = 0; i < MAX_PENDING_NOTICES + 5; i++) n.observe(at(0, 1000, `u${i}`));
  await n.settled();
  assert.ok(s.lines.some((l) => l.msg === 'quota notices: queue full, observations dropped'));
  assert.ok(s.lines.some((l) => l.msg === 'quota notices: observations dropped' && l.dropped === 5));
  await n.close();
});

test('through the policy service: accepted mail notifies; a dry query and a refused message do not', async () => {
  const s = sandbox();
  const cfg = s.cfg();
  let blocks = 850;
  let now = 1_000_000;
  const svc = new PolicyService(
    cfg,
    '+',
    1000,
    {
      lookupUser: (name) => (name === 'bob' ? { uid: 2001, gid: 100 } : undefined),
      queryQuota: async (uid) => ({
        uid,
        status: QuotaStatus.Ok,
        fs: [
          {
            mount: '/home',
            blocks,
            blockSoft: 0,
            blockHard: 1000,
            blockGrace: 0,
            files: 1,
            fileSoft: 0,
            fileHard: 0,
            fileGrace: 0,
          },
        ],
      }),
      now: () => now,
    },
    s.log,
  );
  const req = (extra: Record<string, string> = {}) =>
    new Map(
      Object.entries({
        request: 'smtpd_access_policy',
        protocol_state: 'RCPT',
        recipient: 'bob@example.test',
        ...extra,
      }),
    );
  // A dry query answers as mail would, but tells nobody.
  const dry = await svc.answer(req({ [QUERY_ATTRIBUTE]: QUERY_DRY }), true);
  assert.match(
    typeof dry === 'string' ? dry : dry.action,
    /^PREPEND X-Quota-Warning: bob@example\.test: mailbox 85% full/,
  );
  await svc.notifier!.settled();
  assert.equal(s.mails().length, 0, 'a dry query notifies nobody');
  // A message too big to fit is refused: no notice.
  const refused = await svc.answer(req({ size: String(200 * 1024) }));
  assert.match(typeof refused === 'string' ? refused : refused.action, /^452 /);
  await svc.notifier!.settled();
  assert.equal(s.mails().length, 0, 'a refused message notifies nobody');
  now += 60_000; // past cache_ttl_ms
  const ok = await svc.answer(req());
  assert.match(typeof ok === 'string' ? ok : ok.action, /^PREPEND /);
  await svc.notifier!.settled();
  assert.equal(s.mails().length, 1);
  blocks = 100;
  now += 60_000;
  await svc.answer(req());
  await svc.notifier!.close();
  assert.ok(existsSync(join(s.dir, 'warnings.sqlite3')));
});
