// Rate limiting through the policy service (the same code connections use),
// on a real SQLite store: identities, count modes, overrides, exemptions,
// dry run, domain limits, precedence with the quota check, store failures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { pino } from 'pino';
import { parseConfig } from '../src/shared/config/load.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { StoreError, type RateStore } from '../src/frontend/ratelimit/store.js';
import { QuotaStatus } from '../src/shared/wire.js';
import { storeConfig } from './support/stores.js';

const FAIL = 'DEFER_IF_PERMIT Rate limit reach, retry later';
const FULL = '452 4.2.2 Mailbox full, try again later';
const silent = pino({ level: 'silent' });

function service(
  yaml: string,
  opts: { now?: () => number; openStore?: () => Promise<RateStore>; log?: typeof silent } = {},
) {
  const cfg = parseConfig(yaml, 't');
  const sqlite = storeConfig('sqlite');
  const quotaCalls: number[] = [];
  const svc = new PolicyService(
    cfg,
    '+',
    1000,
    {
      lookupUser: (n) => (n === 'full' ? { uid: 2001, gid: 100 } : n === 'ok' ? { uid: 2002, gid: 100 } : undefined),
      queryQuota: async (uid) => {
        quotaCalls.push(uid);
        return {
          uid,
          status: QuotaStatus.Ok,
          fs: [
            {
              mount: '/home',
              blocks: uid === 2001 ? 200 : 1,
              blockSoft: 100,
              blockHard: 200,
              blockGrace: 0,
              files: 1,
              fileSoft: 0,
              fileHard: 0,
              fileGrace: 0,
            },
          ],
        };
      },
      openStore:
        opts.openStore ??
        (() => openStore({ ...sqlite, ...cfg.rate_limit, sqlite_path: sqlite.sqlite_path, timeout_ms: 2000 })),
      now: opts.now,
    },
    opts.log ?? silent,
  );
  return { svc, quotaCalls };
}

const req = (o: Record<string, string>) =>
  new Map(
    Object.entries({
      request: 'smtpd_access_policy',
      protocol_state: 'RCPT',
      recipient: 'ok@example.test',
      sender: 'a@example.org',
      client_address: '192.0.2.1',
      ...o,
    }),
  );
async function actions(svc: PolicyService, reqs: Map<string, string>[]): Promise<string[]> {
  const out: string[] = [];
  for (const r of reqs) out.push((await svc.decide(r)).action);
  return out;
}
const times = <T>(n: number, f: (i: number) => T): T[] => Array.from({ length: n }, (_, i) => f(i));

test('by SASL user: the third in a [2, 60] window is refused; another user is not', async () => {
  const { svc } = service('checks: [rate_limit]\nrate_limit:\n  limits: [[2, 60]]\n');
  assert.deepEqual(
    await actions(
      svc,
      times(3, () => req({ sasl_username: 'alice' })),
    ),
    ['DUNNO', 'DUNNO', FAIL],
  );
  assert.deepEqual(await actions(svc, [req({ sasl_username: 'bob' })]), ['DUNNO']);
  assert.deepEqual(await actions(svc, [req({})]), ['DUNNO'], 'no SASL, and sender/IP limiting off: not counted');
});

test('identity order: SASL user, then sender, then client IP in limited_networks', async () => {
  const { svc } = service(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  limit_by_sender: true\n  limit_by_ip: true\n  limited_networks: ["192.0.2.0/24", "2001:db8::/32"]\n',
  );
  const d1 = await svc.decide(req({ sasl_username: 'alice', sender: 's@x' }));
  assert.equal(d1.results.rate_limit?.id, 'alice');
  const d2 = await svc.decide(req({ sender: 's@x' }));
  assert.equal(d2.results.rate_limit?.id, 's@x');
  const d3 = await svc.decide(req({ sender: '', client_address: '192.0.2.7' }));
  assert.equal(d3.results.rate_limit?.id, '192.0.2.7');
  const d4 = await svc.decide(req({ sender: '', client_address: '198.51.100.1' }));
  assert.equal(d4.results.rate_limit?.verdict, 'skip', 'outside limited_networks');
});

test('IPv6 clients are grouped per /64 (configurable); IPv4 can be grouped too', async () => {
  const { svc } = service(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  limit_by_sasl: false\n  limit_by_ip: true\n  limited_networks: ["::/0", "0.0.0.0/0"]\n  ipv4_prefix: 24\n',
  );
  const a = await svc.decide(req({ client_address: '2001:db8:1:2::1' }));
  assert.equal(a.results.rate_limit?.id, '2001:db8:1:2::/64');
  assert.equal((await svc.decide(req({ client_address: '2001:db8:1:2:ffff::9' }))).action, FAIL, 'same /64');
  assert.equal((await svc.decide(req({ client_address: '2001:db8:1:3::1' }))).action, 'DUNNO', 'next /64');
  assert.equal((await svc.decide(req({ client_address: '198.51.100.1' }))).results.rate_limit?.id, '198.51.100.0/24');
  assert.equal((await svc.decide(req({ client_address: '198.51.100.200' }))).action, FAIL);
});

test('limits_by_id overrides; an empty list means unlimited', async () => {
  const { svc } = service(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  limits_by_id:\n    vip: []\n    tight: [[0, 60]]\n',
  );
  assert.deepEqual(
    await actions(
      svc,
      times(5, () => req({ sasl_username: 'vip' })),
    ),
    times(5, () => 'DUNNO'),
  );
  assert.deepEqual(await actions(svc, [req({ sasl_username: 'tight' })]), [FAIL]);
});

test("sql_limits_by_id: limits from the admin's own table", async () => {
  const sqlite = storeConfig('sqlite');
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(sqlite.sqlite_path);
  db.exec(
    "CREATE TABLE my_limits (id TEXT, lim TEXT); INSERT INTO my_limits VALUES ('carol', '[[3, 60]]'), ('dave', '((1, 60),)')",
  );
  db.close();
  const yaml =
    'checks: [rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  sql_limits_by_id: "SELECT lim FROM my_limits WHERE id = ?"\n';
  const cfg = parseConfig(yaml, 't');
  const { svc } = service(yaml, {
    openStore: () => openStore({ ...cfg.rate_limit, sqlite_path: sqlite.sqlite_path, timeout_ms: 2000 }),
  });
  assert.deepEqual(
    await actions(
      svc,
      times(4, () => req({ sasl_username: 'carol' })),
    ),
    ['DUNNO', 'DUNNO', 'DUNNO', FAIL],
  );
  assert.deepEqual(
    await actions(
      svc,
      times(2, () => req({ sasl_username: 'erin' })),
    ),
    ['DUNNO', FAIL],
    'no row: the default limits',
  );
  const bad = await svc.decide(req({ sasl_username: 'dave' }));
  assert.equal(bad.results.rate_limit?.verdict, 'error', 'a malformed row is a store error');
});

test('count_mode data_recipients counts recipient_count at DATA (and BDAT); RCPT is not counted', async () => {
  const { svc } = service('checks: [rate_limit]\nrate_limit:\n  limits: [[5, 60]]\n  count_mode: data_recipients\n');
  const data = (n: string, state = 'DATA') => req({ protocol_state: state, recipient_count: n, sasl_username: 'u' });
  assert.equal((await svc.decide(req({ sasl_username: 'u' }))).results.rate_limit?.verdict, 'skip');
  assert.deepEqual(await actions(svc, [data('3'), data('2', 'BDAT'), data('1')]), ['DUNNO', 'DUNNO', FAIL]);
});

test('count_mode data_messages counts one per message whatever the recipients', async () => {
  const { svc } = service('checks: [rate_limit]\nrate_limit:\n  limits: [[2, 60]]\n  count_mode: data_messages\n');
  const data = (n: string) => req({ protocol_state: 'DATA', recipient_count: n, sasl_username: 'm' });
  assert.deepEqual(await actions(svc, [data('50'), data('50'), data('1')]), ['DUNNO', 'DUNNO', FAIL]);
});

test('exempt ids and networks are never limited', async () => {
  const { svc } = service(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[0, 60]]\n  exempt_ids: [boss]\n  exempt_networks: ["10.0.0.0/8"]\n',
  );
  assert.deepEqual(
    await actions(svc, [
      req({ sasl_username: 'boss' }),
      req({ sasl_username: 'x', client_address: '10.1.2.3' }),
      req({ sasl_username: 'x' }),
    ]),
    ['DUNNO', 'DUNNO', FAIL],
  );
});

test('dry run: what would be refused is logged and answered with success, and not counted', async () => {
  const { svc } = service('checks: [rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  dry_run: true\n');
  const ds = [];
  for (let i = 0; i < 3; i++) ds.push(await svc.decide(req({ sasl_username: 'd' })));
  assert.deepEqual(
    ds.map((d) => d.action),
    ['DUNNO', 'DUNNO', 'DUNNO'],
  );
  assert.deepEqual(
    ds.map((d) => d.results.rate_limit?.verdict),
    ['pass', 'would_limit', 'would_limit'],
  );
});

test('per-recipient-domain and per-sender-domain limits, shared by every sender', async () => {
  const { svc } = service(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[100, 60]]\n  limits_by_recipient_domain:\n    gmail.example: [[2, 60]]\n  limits_by_sender_domain:\n    spammy.example: [[1, 60]]\n',
  );
  const to = (u: string) => req({ sasl_username: u, recipient: 'x@Gmail.Example' });
  assert.deepEqual(await actions(svc, [to('a'), to('b'), to('c')]), ['DUNNO', 'DUNNO', FAIL]);
  const from = (u: string) => req({ sasl_username: u, sender: `${u}@spammy.example` });
  assert.deepEqual(await actions(svc, [from('p'), from('q')]), ['DUNNO', FAIL]);
});

test('precedence: both over quota and over rate get one answer, the first check in `checks`; refused mail is not counted', async () => {
  const q = service('checks: [quota, rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n');
  assert.equal((await q.svc.decide(req({ sasl_username: 'p', recipient: 'full@example.test' }))).action, FULL);
  assert.equal(
    (await q.svc.decide(req({ sasl_username: 'p', recipient: 'ok@example.test' }))).action,
    'DUNNO',
    'the refused one was not counted',
  );
  const both = await q.svc.decide(req({ sasl_username: 'p', recipient: 'full@example.test' }));
  assert.deepEqual([both.check, both.action], ['quota', FULL]);

  const r = service('checks: [rate_limit, quota]\nrate_limit:\n  limits: [[1, 60]]\n');
  assert.equal(
    (await r.svc.decide(req({ sasl_username: 'p', recipient: 'full@example.test' }))).action,
    FULL,
    'under the rate limit: quota refuses, nothing counted',
  );
  assert.equal((await r.svc.decide(req({ sasl_username: 'p', recipient: 'ok@example.test' }))).action, 'DUNNO');
  const rboth = await r.svc.decide(req({ sasl_username: 'p', recipient: 'full@example.test' }));
  assert.deepEqual([rboth.check, rboth.action], ['rate_limit', FAIL]);
});

test('each check can be off', async () => {
  const off = service('checks: [quota]\nrate_limit:\n  limits: [[0, 60]]\n');
  assert.equal((await off.svc.decide(req({ sasl_username: 'z' }))).results.rate_limit, undefined);
  const qoff = service('checks: [rate_limit]\n');
  await qoff.svc.decide(req({ sasl_username: 'z', recipient: 'full@example.test' }));
  assert.deepEqual(qoff.quotaCalls, []);
});

test('store failures answer db_error_action; the store is opened again once it works', async () => {
  let fail = true;
  let opens = 0;
  const sqlite = storeConfig('sqlite');
  let t = 1_000_000;
  const { svc } = service(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[5, 60]]\n  db_error_action: "451 4.3.0 rate store down"\n',
    {
      now: () => t,
      openStore: async () => {
        opens++;
        if (fail) throw new StoreError('connection refused');
        return openStore({ ...sqlite, timeout_ms: 2000 });
      },
    },
  );
  assert.equal((await svc.decide(req({ sasl_username: 'e' }))).action, '451 4.3.0 rate store down');
  assert.equal((await svc.decide(req({ sasl_username: 'e' }))).action, '451 4.3.0 rate store down');
  assert.equal(opens, 1, 'no second attempt within STORE_RETRY_MS');
  fail = false;
  t += 1500;
  assert.equal((await svc.decide(req({ sasl_username: 'e' }))).action, 'DUNNO');
  assert.equal(opens, 2);
});

test('hold_action: a rate refusal answers it even when the quota check, first, passes; alert_on_refusal logs one warning per window', async () => {
  const lines: { level: number; msg: string; alert?: string; rate_id?: string }[] = [];
  const log = pino(
    { level: 'warn' },
    { write: (l: string) => void lines.push(JSON.parse(l) as (typeof lines)[number]) },
  );
  let now = 1_800_000_000_000;
  const { svc } = service(
    'checks: [quota, rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  hold_action: "HOLD held for review"\n  alert_on_refusal: true\n',
    { log, now: () => now },
  );
  /** A mail request's reply is the action alone. */
  const answer = async (o: Record<string, string>): Promise<string> => {
    const a = await svc.answer(req(o));
    assert.equal(typeof a, 'string');
    return a as string;
  };
  const answers: string[] = [];
  for (let i = 0; i < 3; i++) answers.push(await answer({ sasl_username: 'carol' }));
  assert.deepEqual(answers, ['DUNNO', 'HOLD held for review', 'HOLD held for review']);
  const alerts = () => lines.filter((l) => l.msg === 'rate limit alert');
  assert.equal(alerts().length, 1);
  assert.equal(alerts()[0]!.level, 40, 'at warn');
  assert.equal(alerts()[0]!.rate_id, 'carol');
  assert.match(
    alerts()[0]!.alert!,
    /^first refusal of sasl:carol in 60 s: sasl:carol: 1 \+ 1 over 1 in 60 s; answered HOLD held for review$/,
  );
  // A full mailbox still refuses first: a refusal beats HOLD, whichever check gives it.
  const d = await svc.decide(req({ sasl_username: 'carol', recipient: 'full@example.test' }));
  assert.equal(d.action, FULL);
  now += 61_000;
  assert.equal(await answer({ sasl_username: 'carol' }), 'DUNNO');
  assert.equal(await answer({ sasl_username: 'carol' }), 'HOLD held for review');
  assert.equal(alerts().length, 2, 'a new window, a new alert');
});
