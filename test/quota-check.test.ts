// The quota check with its I/O replaced: caches, negative cache, errors never
// cached, exemptions and the helper's min_uid.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { QuotaCheck, PROJECT_CACHE_TTL_MS, type CheckResult } from '../src/frontend/quota/quota-check.js';
import type { MailboxProject } from '../src/frontend/quota/project.js';
import { parseConfig } from '../src/shared/config/load.js';
import { QuotaKind, QuotaStatus, type UserQuota } from '../src/shared/wire.js';

const USERS: Record<string, number> = { bob: 2001, alice: 2002, sys: 5 };
const row = {
  mount: '/home',
  blocks: 200,
  blockSoft: 100,
  blockHard: 200,
  blockGrace: 1,
  files: 1,
  fileSoft: 0,
  fileHard: 0,
  fileGrace: 0,
};

function harness(yaml = '', helperMinUid = 1000, fsRow: typeof row = row) {
  const calls = { lookup: [] as string[], quota: [] as number[], group: [] as number[] };
  let status = QuotaStatus.Ok;
  const check = new QuotaCheck(parseConfig(yaml, 't'), '+', Math.max(parseConfig(yaml, 't').min_uid, helperMinUid), {
    lookupUser: (n) => {
      calls.lookup.push(n);
      return USERS[n] === undefined ? undefined : { uid: USERS[n], gid: 100 };
    },
    queryQuota: async (id, kind): Promise<UserQuota> => {
      if (kind === QuotaKind.Group) {
        calls.group.push(id);
        return { uid: id, status: QuotaStatus.NoData, fs: [] };
      }
      calls.quota.push(id);
      return { uid: id, status, fs: status === QuotaStatus.Ok ? [fsRow] : [] };
    },
    groupQuotaMounts: () => new Set(),
  });
  const ask = (recipient: string, now: number, extra: Record<string, string> = {}) =>
    check.check(
      new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient, ...extra })),
      now,
    );
  return {
    ask,
    calls,
    setStatus: (s: QuotaStatus) => {
      status = s;
    },
  };
}

test('quota numbers are reused within cache_ttl_ms, then asked again', async () => {
  const h = harness('cache_ttl_ms: 1000\n');
  assert.equal((await h.ask('bob@x', 0)).verdict, 'over_quota');
  await h.ask('bob@x', 999);
  assert.deepEqual(h.calls.quota, [2001]);
  await h.ask('bob@x', 1000);
  assert.deepEqual(h.calls.quota, [2001, 2001]);
});

test('"not a Unix user" is remembered for negative_cache_ttl_ms', async () => {
  const h = harness('negative_cache_ttl_ms: 5000\ncache_ttl_ms: 100\n');
  for (const t of [0, 1000, 4999]) assert.equal((await h.ask('nobody-here@x', t)).reason, 'not a Unix user');
  assert.deepEqual(h.calls.lookup, ['nobody-here']);
  await h.ask('nobody-here@x', 5000);
  assert.equal(h.calls.lookup.length, 2);
});

test('errors are answered with the error action and never cached', async () => {
  const h = harness('actions:\n  error: "DEFER_IF_PERMIT quota lookup failed"\n');
  h.setStatus(QuotaStatus.Timeout);
  const r = await h.ask('bob@x', 0);
  assert.deepEqual(
    [r.verdict, r.action, r.reason],
    ['error', 'DEFER_IF_PERMIT quota lookup failed', 'quota lookup failed: timeout'],
  );
  h.setStatus(QuotaStatus.Ok);
  assert.equal((await h.ask('bob@x', 1)).verdict, 'over_quota');
  assert.deepEqual(h.calls.quota, [2001, 2001]);
});

test('no quota data is not an error: DUNNO, saying that no file system has quotas on', async () => {
  const h = harness();
  h.setStatus(QuotaStatus.NoData);
  assert.deepEqual([(await h.ask('bob@x', 0)).verdict, (await h.ask('bob@x', 0)).action], ['skip', 'DUNNO']);
  assert.equal((await h.ask('bob@x', 0)).reason, 'no file system has quotas on (quota(1) lists none)');
});

test("exempt users, system users and the helper's own min_uid are never asked about", async () => {
  const h = harness('exempt_users: [alice]\nmin_uid: 1\n', 2002);
  assert.equal((await h.ask('alice@x', 0)).reason, 'exempt user');
  assert.match((await h.ask('bob@x', 0)).reason, /below min_uid/, "the helper's min_uid 2002 wins over the config's 1");
  assert.match((await h.ask('sys@x', 0)).reason, /below min_uid/);
  assert.deepEqual(h.calls.quota, []);
});

test('states other than RCPT and END-OF-MESSAGE, and other requests, get DUNNO without lookups', async () => {
  const h = harness();
  const extras: Record<string, string>[] = [
    { protocol_state: 'DATA' },
    { protocol_state: 'MAIL' },
    { request: 'junk' },
    { protocol_state: 'END-OF-MESSAGE', recipient_count: '2' },
  ];
  for (const extra of extras) {
    const r = await h.ask('bob@x', 0, extra);
    assert.deepEqual([r.verdict, r.action], ['skip', 'DUNNO'], JSON.stringify(extra));
  }
  assert.deepEqual(h.calls.lookup, []);
});

test('quota_states: the check answers only in the states named', async () => {
  const h = harness('quota_states: [END-OF-MESSAGE]\n');
  assert.equal((await h.ask('bob@x', 0)).verdict, 'skip', 'RCPT not checked');
  assert.equal(
    (await h.ask('bob@x', 0, { protocol_state: 'END-OF-MESSAGE', recipient_count: '1' })).verdict,
    'over_quota',
  );
});

test('a non-numeric size counts as unknown, not as its numeric prefix', async () => {
  // 100 KiB free below the hard limit, soft limit not reached: only the size decides.
  const h = harness('', 1000, { ...row, blocks: 100, blockSoft: 0, blockHard: 200 });
  assert.equal((await h.ask('bob@x', 0, { size: '204800' })).verdict, 'does_not_fit', 'control: 200 KiB does not fit');
  for (const size of ['204800abc', '12abc', '-204800', '2e5']) {
    assert.equal((await h.ask('bob@x', 0, { size })).verdict, 'pass', size);
  }
});

test('quota_kinds: a full group refuses a user under its own quota, only where group quotas are enforced', async () => {
  const full = { ...row, blocks: 200, blockHard: 200, blockSoft: 0, blockGrace: 0 };
  const fine = { ...row, blocks: 1, blockHard: 200, blockSoft: 0, blockGrace: 0 };
  const make = (yaml: string, enforced: string[]) =>
    new QuotaCheck(parseConfig(yaml, 't'), '+', 1000, {
      lookupUser: () => ({ uid: 2001, gid: 100 }),
      queryQuota: async (id, kind): Promise<UserQuota> => ({
        uid: id,
        status: QuotaStatus.Ok,
        fs: [kind === QuotaKind.Group ? full : fine],
      }),
      groupQuotaMounts: () => new Set(enforced),
    });
  const req = new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'bob@x' }));
  const r = await make('', ['/home']).check(req, 0);
  assert.equal(r.verdict, 'over_quota');
  assert.equal(r.kind, 'group');
  assert.equal(r.reason, 'group quota: blocks at hard limit on /home (200/200 KiB)');
  // Group quotas not enforced on /home (no grpquota): the kernel would take the mail, and so does the check.
  assert.equal((await make('', []).check(req, 0)).verdict, 'pass');
  // quota_kinds: [user] never asks for the group.
  assert.equal((await make('quota_kinds: [user]\n', ['/home']).check(req, 0)).verdict, 'pass');
});

test('no mount enforces group quotas: quota(1) is not run for the group at all', async () => {
  const h = harness();
  await h.ask('bob@x', 0);
  assert.deepEqual(h.calls.quota, [2001]);
  assert.deepEqual(h.calls.group, [], 'no -g run where the kernel would not charge the group');
});

test('the mounts table: which mount points enforce group quotas', async () => {
  const { parseGroupQuotaMounts } = await import('../src/frontend/quota/quota-check.js');
  const t = [
    '/dev/ubda /home ext4 rw,relatime,quota,usrquota,grpquota 0 0',
    '/dev/ubdb /home/prj ext4 rw,relatime,quota,usrquota,prjquota 0 0',
    '/dev/sdc /srv/x\\040y xfs rw,gquota 0 0',
    '/dev/sdd /srv/acct xfs rw,gqnoenforce 0 0',
    '/dev/sde /var/mail ext4 rw,grpjquota=aquota.group,jqfmt=vfsv1 0 0',
  ].join('\n');
  assert.deepEqual([...parseGroupQuotaMounts(t)], ['/home', '/srv/x y', '/var/mail']);
});

test("quota_kinds: project: the mailbox directory's project, only on its own file system", async () => {
  const full = { ...row, mount: '/home/prj', blocks: 200, blockHard: 200, blockSoft: 0, blockGrace: 0 };
  const elsewhere = { ...full, mount: '/srv' };
  const fine = { ...row, blocks: 1, blockHard: 200, blockSoft: 0, blockGrace: 0 };
  const asked: [number, QuotaKind][] = [];
  const looked: string[] = [];
  const make = (yaml: string, project: MailboxProject, rows = [full]) =>
    new QuotaCheck(parseConfig(yaml, 't'), '+', 1000, {
      lookupUser: () => ({ uid: 2001, gid: 100 }),
      queryQuota: async (id, kind): Promise<UserQuota> => {
        asked.push([id, kind]);
        return { uid: id, status: QuotaStatus.Ok, fs: kind === QuotaKind.Project ? rows : [fine] };
      },
      groupQuotaMounts: () => new Set(),
      mailboxProject: async (name) => {
        looked.push(name);
        return project;
      },
    });
  const req = new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'bob@x' }));
  const onPrj = { id: 42, mounts: new Set(['/home/prj']) };
  const c = make('cache_ttl_ms: 1000\n', onPrj);
  const r = await c.check(req, 0);
  assert.deepEqual(
    [r.verdict, r.kind, r.reason],
    ['over_quota', 'project', 'project quota: blocks at hard limit on /home/prj (200/200 KiB)'],
  );
  assert.deepEqual(
    asked,
    [
      [2001, QuotaKind.User],
      [42, QuotaKind.Project],
    ],
    'quota -P with the numeric project id',
  );
  // Cached: neither the lookup nor quota(1) runs again within cache_ttl_ms.
  assert.equal((c.check(req, 999) as CheckResult).verdict, 'over_quota');
  assert.deepEqual(looked, ['bob']);
  assert.equal(asked.length, 2);
  // After cache_ttl_ms the quota numbers are asked again, the project id only after PROJECT_CACHE_TTL_MS.
  await c.check(req, 1000);
  assert.deepEqual(looked, ['bob']);
  assert.equal(asked.length, 4);
  await c.check(req, PROJECT_CACHE_TTL_MS);
  assert.deepEqual(looked, ['bob', 'bob']);
  // The same project full on another file system: not the mailbox's, so the kernel would take the mail.
  assert.equal((await make('', onPrj, [elsewhere]).check(req, 0)).verdict, 'pass');
  // The mailbox's file system enforces no project quota: quota -P is not run.
  asked.length = 0;
  assert.equal(
    (await make('', { none: '/home/bob is on a file system without project quotas' }).check(req, 0)).verdict,
    'pass',
  );
  assert.deepEqual(asked, [[2001, QuotaKind.User]]);
  // quota_kinds without project: no lookup at all.
  looked.length = 0;
  assert.equal((await make('quota_kinds: [user, group]\n', onPrj).check(req, 0)).verdict, 'pass');
  assert.deepEqual(looked, []);
});

test('quota_kinds: project: a project that cannot be found answers the error action, never cached', async () => {
  let project: MailboxProject = { error: 'lsattr -p -d -- /home/bob: Permission denied' };
  const looked: number[] = [];
  const c = new QuotaCheck(parseConfig('actions:\n  error: "DEFER_IF_PERMIT try later"\n', 't'), '+', 1000, {
    lookupUser: () => ({ uid: 2001, gid: 100 }),
    queryQuota: async (id): Promise<UserQuota> => ({
      uid: id,
      status: QuotaStatus.Ok,
      fs: [{ ...row, blocks: 1, blockSoft: 0 }],
    }),
    groupQuotaMounts: () => new Set(),
    mailboxProject: async () => {
      looked.push(1);
      return project;
    },
  });
  const req = new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'bob@x' }));
  const r = await c.check(req, 0);
  assert.deepEqual(
    [r.verdict, r.action, r.fault, r.kind, r.reason],
    [
      'error',
      'DEFER_IF_PERMIT try later',
      'project',
      'project',
      'project quota: mailbox project not found: lsattr -p -d -- /home/bob: Permission denied',
    ],
  );
  project = { none: 'no file system enforces project quotas' };
  assert.equal((await c.check(req, 1)).verdict, 'pass');
  assert.equal(looked.length, 2, 'the failure was not cached');
});

test("quota_kinds: project: the user's and group's quotas are asked for while the project is looked up", async () => {
  const events: string[] = [];
  let found: (p: MailboxProject) => void = () => {};
  const c = new QuotaCheck(parseConfig('', 't'), '+', 1000, {
    lookupUser: () => ({ uid: 2001, gid: 100 }),
    queryQuota: async (id, kind): Promise<UserQuota> => {
      events.push(`quota ${kind} ${id}`);
      const fs = [{ ...row, blocks: kind === QuotaKind.Project ? 200 : 1, blockHard: 200, blockSoft: 0 }];
      return { uid: id, status: QuotaStatus.Ok, fs };
    },
    groupQuotaMounts: () => new Set(['/home']),
    mailboxProject: (name) => {
      events.push(`lookup ${name}`);
      return new Promise((r) => (found = r));
    },
  });
  const req = new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'bob@x' }));
  const pending = c.check(req, 0);
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(events, [`quota ${QuotaKind.User} 2001`, `quota ${QuotaKind.Group} 100`, 'lookup bob']);
  found({ id: 42, mounts: new Set(['/home']) });
  const r = await pending;
  assert.deepEqual(events.slice(3), [`quota ${QuotaKind.Project} 42`], 'the project once its id is known');
  assert.deepEqual([r.verdict, r.kind], ['over_quota', 'project'], 'all three kinds judged together');
  // A lookup that fails still answers with the error action, the other kinds read meanwhile.
  const failing = new QuotaCheck(parseConfig('', 't'), '+', 1000, {
    lookupUser: () => ({ uid: 2001, gid: 100 }),
    queryQuota: async (id): Promise<UserQuota> => ({ uid: id, status: QuotaStatus.Ok, fs: [] }),
    groupQuotaMounts: () => new Set(['/home']),
    mailboxProject: async () => ({ error: 'getent passwd -- bob: no answer in 5000 ms' }),
  });
  assert.deepEqual((await failing.check(req, 0)).fault, 'project');
});

test("quota_kinds: project: a quota read that fails while the project is looked up is that request's error", async () => {
  const unhandled: unknown[] = [];
  const note = (e: unknown): void => {
    unhandled.push(e);
  };
  process.on('unhandledRejection', note);
  try {
    const c = new QuotaCheck(parseConfig('', 't'), '+', 1000, {
      lookupUser: () => ({ uid: 2001, gid: 100 }),
      queryQuota: () => Promise.reject(new Error('helper gone')),
      groupQuotaMounts: () => new Set(['/home']),
      mailboxProject: () => new Promise((r) => setTimeout(() => r({ none: 'no project quotas' }), 50)),
    });
    const req = new Map(Object.entries({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient: 'bob@x' }));
    await assert.rejects(Promise.resolve(c.check(req, 0)), /helper gone/);
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(unhandled, [], 'no unhandled rejection while the lookup ran');
  } finally {
    process.removeListener('unhandledRejection', note);
  }
});
