// The quota check for aliases and unknown recipients, with its I/O replaced:
// an alias's users' verdicts combined (alias_refuse_when), expansions cached
// and shared, failures never cached, and actions.nouser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuotaCheck } from '../src/frontend/quota/quota-check.js';
import { parseConfig, ConfigError } from '../src/shared/config/load.js';
import { QuotaStatus, type FsQuota, type UserQuota } from '../src/shared/wire.js';
import type { MapKind, MapReader } from '../src/frontend/quota/aliases.js';

const FULL = '452 4.2.2 Mailbox full, try again later';
const TOO_LARGE = "552 5.2.2 Message is larger than the recipient's whole quota";
const USERS: Record<string, number> = { bob: 2001, alice: 2002, carol: 2003, sys: 5 };
const row = (blocks: number, blockHard: number, blockSoft = 0, blockGrace = 0): FsQuota => ({
  mount: '/home',
  blocks,
  blockSoft,
  blockHard,
  blockGrace,
  files: 1,
  fileSoft: 0,
  fileHard: 0,
  fileGrace: 0,
});
/** bob full, alice fine, carol over her soft limit with grace running (until t = 10^9 s). */
const QUOTA: Record<number, FsQuota> = { 2001: row(200, 200), 2002: row(10, 200), 2003: row(150, 200, 100, 1e9) };

function harness(yaml: string, aliases: Record<string, string>, virtual: Record<string, string> = {}) {
  const calls = { maps: 0, quota: [] as number[] };
  let fail: string | undefined;
  let status = QuotaStatus.Ok;
  let failing: number | undefined;
  const reader: MapReader = {
    lookup: (kind: MapKind, keys) => {
      calls.maps++;
      if (fail !== undefined) return Promise.reject(new Error(fail));
      const t = kind === 'alias' ? aliases : virtual;
      return Promise.resolve([new Map(keys.filter((k) => Object.hasOwn(t, k)).map((k) => [k, t[k]!] as const))]);
    },
  };
  const cfg = parseConfig(yaml, 't');
  const check = new QuotaCheck(cfg, '+', cfg.min_uid, {
    lookupUser: (n) => (USERS[n] === undefined ? undefined : { uid: USERS[n], gid: 100 }),
    queryQuota: (uid): Promise<UserQuota> => {
      calls.quota.push(uid);
      return Promise.resolve({ uid, status: failing === uid ? QuotaStatus.Timeout : status, fs: [QUOTA[uid]!] });
    },
    aliases: reader,
  });
  const ask = (recipient: string, now = 0, size = '0') =>
    Promise.resolve(
      check.check(
        new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient, size })),
        now,
      ),
    );
  return {
    ask,
    calls,
    failMaps: (why: string | undefined) => (fail = why),
    setStatus: (s: QuotaStatus) => (status = s),
    /** Only this uid's lookups time out. */
    failFor: (uid: number) => (failing = uid),
  };
}

test('an alias to one full user is refused like the user, saying which alias reached whom', async () => {
  const h = harness('', { info: 'bob' });
  const r = await h.ask('info@example.org');
  assert.equal(r.verdict, 'over_quota');
  assert.equal(r.action, FULL);
  assert.equal(r.user, 'bob');
  assert.match(
    r.reason,
    /^alias info@example\.org -> 1 local user \(bob: over_quota\); all_full: blocks at hard limit/,
  );
});

test('all_full (default): one full user of several is not refused; all full is', async () => {
  const h = harness('', { team: 'bob, alice', full: 'bob, bob2', bob2: 'bob' });
  const r = await h.ask('team@example.org');
  assert.deepEqual([r.verdict, r.action, r.user], ['pass', 'DUNNO', 'alice']);
  assert.match(r.reason, /2 local users \(bob: over_quota, alice: pass\)/);
  assert.equal((await h.ask('full@example.org')).action, FULL);
});

test('all_full: a remote address or a command among the targets can take the message, so it is not refused', async () => {
  const h = harness('domains: [example.org]\n', { a: 'bob, someone@remote.net', b: 'bob, "|/usr/bin/procmail"' });
  const a = await h.ask('a@example.org');
  assert.deepEqual([a.verdict, a.action], ['skip', 'DUNNO']);
  assert.match(a.reason, /1 local user \(bob: over_quota\), 1 remote: not refused, the others take it/);
  assert.match((await h.ask('b@example.org')).reason, /1 file\/command\/include not checked/);
});

test('all_full: a grace warning among those that take it wins over a pass; all refusing gives the most hopeful (452 before 552)', async () => {
  const h = harness('actions:\n  grace: "PREPEND X-Quota-Warning: soft"\n', { mix: 'alice, carol, bob' });
  const r = await h.ask('mix@example.org');
  assert.deepEqual([r.verdict, r.action, r.user], ['grace', 'PREPEND X-Quota-Warning: soft', 'carol']);
  // 300 KiB: too large for bob's 200 KiB limit and for alice's; over quota is what bob is without the size.
  const big = harness('', { both: 'bob, alice' });
  const all = await big.ask('both@example.org', 0, String(300 * 1024));
  assert.deepEqual([all.verdict, all.action], ['too_large', TOO_LARGE]);
  const fullAndLarge = harness('', { both: 'bob, alice' });
  const mixed = await fullAndLarge.ask('both@example.org', 0, String(195 * 1024));
  // bob: over quota (452, may clear); alice: does not fit (452): the most hopeful of the two is "does not fit".
  assert.deepEqual([mixed.verdict, mixed.user], ['does_not_fit', 'alice']);
});

test('any_full: one full user refuses the whole recipient, with the worst refusal', async () => {
  const h = harness('alias_refuse_when: any_full\n', { team: 'alice, bob, carol' });
  const r = await h.ask('team@example.org');
  assert.deepEqual([r.verdict, r.action, r.user], ['over_quota', FULL, 'bob']);
  assert.match(r.reason, /; any_full: /);
  const ok = harness('alias_refuse_when: any_full\n', { team: 'alice, carol' });
  assert.equal((await ok.ask('team@example.org')).verdict, 'grace');
});

test("one user's quota lookup failing: any_full answers the error action, all_full the others' answer", async () => {
  const h = harness('alias_refuse_when: any_full\nactions:\n  error: "DEFER_IF_PERMIT try later"\n', {
    team: 'alice, carol',
  });
  h.failFor(USERS.carol!);
  const all = harness('', { team: 'alice, carol' });
  all.failFor(USERS.carol!);
  assert.equal((await all.ask('team@example.org')).verdict, 'pass');
  assert.deepEqual((({ verdict, action }) => [verdict, action])(await h.ask('team@example.org')), [
    'error',
    'DEFER_IF_PERMIT try later',
  ]);
});

test('an alias target that is no Unix user, a system user or exempt counts as taking the message', async () => {
  const h = harness('exempt_users: [carol]\n', { a: 'bob, ghost', b: 'bob, sys', c: 'bob, carol' });
  for (const r of ['a', 'b', 'c']) assert.equal((await h.ask(`${r}@example.org`)).action, 'DUNNO', r);
});

test('a quota lookup failure for a target: all_full answers the error action when no one else can take it', async () => {
  const h = harness('actions:\n  error: "DEFER_IF_PERMIT try later"\n', { a: 'bob, alice' });
  h.setStatus(QuotaStatus.Timeout);
  const r = await h.ask('a@example.org');
  assert.deepEqual([r.verdict, r.action], ['error', 'DEFER_IF_PERMIT try later']);
});

test('expansions are cached for alias_cache_ttl_ms and shared while under way; failures are not cached', async () => {
  const h = harness('alias_cache_ttl_ms: 1000\n', { info: 'bob' });
  await Promise.all([h.ask('info@example.org', 0), h.ask('INFO@example.org', 0), h.ask('info@example.org', 0)]);
  const once = h.calls.maps;
  assert.equal(once, 3, 'one expansion: virtual at level 0, alias at levels 0 and 1');
  await h.ask('info@example.org', 999);
  assert.equal(h.calls.maps, once);
  await h.ask('info@example.org', 1000);
  assert.equal(h.calls.maps, 2 * once);
  h.failMaps('postalias -q - hash:/etc/aliases: no answer in 5000 ms');
  const r = await h.ask('other@example.org', 0);
  assert.deepEqual(
    [r.verdict, r.action, r.reason],
    ['error', 'DUNNO', 'alias expansion failed: postalias -q - hash:/etc/aliases: no answer in 5000 ms'],
  );
  h.failMaps(undefined);
  const before = h.calls.maps;
  assert.equal((await h.ask('other@example.org', 1)).verdict, 'skip');
  assert.ok(h.calls.maps > before, 'asked again');
});

test('an alias that names a Unix user wins over the user, as local(8) looks aliases up first', async () => {
  const h = harness('', { alice: 'bob' });
  assert.equal((await h.ask('alice@example.org')).action, FULL);
});

test('actions.nouser: neither a Unix user nor an alias in a listed domain; other domains still DUNNO', async () => {
  const h = harness('domains: [example.org]\nactions:\n  nouser: "550 5.1.1 No such user"\n', { info: 'bob' });
  const r = await h.ask('ghost@example.org');
  assert.deepEqual([r.verdict, r.action, r.reason], ['nouser', '550 5.1.1 No such user', 'not a Unix user']);
  assert.equal((await h.ask('$(id)@example.org')).action, '550 5.1.1 No such user');
  assert.deepEqual(
    [(await h.ask('ghost@other.net')).verdict, (await h.ask('ghost@other.net')).action],
    ['skip', 'DUNNO'],
  );
  assert.equal((await h.ask('info@example.org')).action, FULL, 'an alias is not "no user"');
  // The default changes nothing: skip, DUNNO.
  const d = harness('domains: [example.org]\n', {});
  assert.deepEqual(
    [(await d.ask('ghost@example.org')).verdict, (await d.ask('ghost@example.org')).action],
    ['skip', 'DUNNO'],
  );
});

test('actions.nouser other than DUNNO is refused without domains: every domain would count as local', () => {
  assert.throws(
    () => parseConfig('actions:\n  nouser: "550 5.1.1 No such user"\n', 'q.yaml'),
    (e: unknown) =>
      e instanceof ConfigError &&
      e.message ===
        "actions.nouser (q.yaml): needs domains: with an empty domains list every domain counts as local, so it would answer every other domain's recipients too",
  );
  assert.doesNotThrow(() => parseConfig('actions:\n  nouser: dunno\n', 'q.yaml'));
});

test('with no alias reader (expand_aliases off, or no maps) nothing is expanded: an alias name is "not a Unix user"', async () => {
  const cfg = parseConfig('', 't');
  const check = new QuotaCheck(cfg, '+', 1000, {
    lookupUser: (n) => (USERS[n] === undefined ? undefined : { uid: USERS[n], gid: 100 }),
    queryQuota: (uid) => Promise.resolve({ uid, status: QuotaStatus.Ok, fs: [QUOTA[uid]!] }),
  });
  const r = check.check(
    new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'info@x' })),
    0,
  );
  assert.ok(!(r instanceof Promise));
  assert.equal(r.reason, 'not a Unix user');
});
