// Aliases through the real postconf, postalias and postmap, on maps made here
// in a Postfix config directory of this test's own (postfix_config_dir): the
// reader on its own (limits, failures, who it runs as), then `quotapolicy
// serve` as root refusing an alias whose user is full (stand-in quota(1)).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import {
  readAliasMaps,
  PostfixMapReader,
  MAX_MAP_PROCESSES,
  MAX_MAP_WAITING,
} from '../src/frontend/quota/postfix-maps.js';
import { expandRecipient } from '../src/frontend/quota/aliases.js';
import { startDaemon, fakeQuota, quotaBlock, writeConfig, type Daemon } from './support/daemon.js';
import { exchange, rcpt, actions } from './support/policy-client.js';

const SERVICE_USER = 'quotapolicy';
const FULL = '452 4.2.2 Mailbox full, try again later';
let dir: string;
let svc: { uid: number; gid: number };

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.error?.message ?? r.stderr}`);
}

/** A script in the test directory, standing in for postmap where a real one cannot misbehave on cue. */
function script(name: string, body: string): string {
  const p = join(dir, name);
  writeFileSync(p, `#!/bin/sh\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

before(() => {
  assert.equal(process.getuid?.(), 0, 'run as root (CI does): the reader must be seen to leave root');
  svc = userid.ids(SERVICE_USER); // throws if scripts/setup.sh has not created the user
  dir = mkdtempSync(join(tmpdir(), 'qp-maps-'));
  chmodSync(dir, 0o755);
  writeFileSync(
    join(dir, 'main.cf'),
    `recipient_delimiter = +\nalias_maps = hash:${dir}/aliases\nmy_virtual = hash:${dir}/virtual\nvirtual_alias_maps = $my_virtual\n`,
  );
  writeFileSync(
    join(dir, 'aliases'),
    'full: quotapolicy\nteam: quotapolicy, nobody\nnested: team\nrole: full, "|/bin/cat", outside@remote.example\n',
  );
  writeFileSync(join(dir, 'virtual'), 'info@example.org full\n@catchall.example nested\n');
  run('postalias', ['-c', dir, `hash:${dir}/aliases`]);
  run('postmap', ['-c', dir, `hash:${dir}/virtual`]);
});

test('readAliasMaps: both lists from the real postconf, $parameters expanded; no main.cf: skipped', async () => {
  assert.deepEqual(await readAliasMaps(dir), {
    maps: { alias: [`hash:${dir}/aliases`], virtual: [`hash:${dir}/virtual`] },
  });
  assert.deepEqual(await readAliasMaps(join(dir, 'none')), {
    skipped: `no ${join(dir, 'none', 'main.cf')}: aliases are not expanded`,
  });
});

test('real postalias and postmap: nested aliases, a virtual alias to a bare name, a catch-all, an extension', async () => {
  const maps = await readAliasMaps(dir);
  assert.ok('maps' in maps);
  const reader = new PostfixMapReader(maps.maps, { configDir: dir, runAs: svc });
  const rules = { delimiters: '+', isLocal: (d: string) => d !== 'remote.example' };
  const users = async (r: string) => {
    const x = await expandRecipient(r, rules, reader);
    return 'users' in x ? [...x.users].sort() : x;
  };
  assert.deepEqual(await users('nested@example.org'), ['nobody', 'quotapolicy']);
  assert.deepEqual(await users('info@example.org'), ['quotapolicy']);
  assert.deepEqual(await users('anyone@catchall.example'), ['nobody', 'quotapolicy']);
  assert.deepEqual(await users('full+tag@example.org'), ['quotapolicy']);
  assert.deepEqual(await expandRecipient('role@example.org', rules, reader), {
    alias: true,
    users: ['quotapolicy'],
    remote: 1,
    unchecked: ['"|/bin/cat"'],
  });
  assert.deepEqual(await expandRecipient('quotapolicy@example.org', rules, reader), { alias: false });
});

test('a map that cannot be opened is an error naming postmap and its fatal line, not "no alias"', async () => {
  const reader = new PostfixMapReader({ alias: [], virtual: [`hash:${dir}/missing`] }, { configDir: dir, runAs: svc });
  const x = await expandRecipient('info@example.org', { delimiters: '+', isLocal: () => true }, reader);
  assert.ok('error' in x);
  assert.match(
    x.error,
    new RegExp(`^postmap -q - hash:${dir}/missing: postmap: fatal: open database ${dir}/missing.db`),
  );
});

test('the reader never runs as root: it refuses without runAs, and with it the map is read as the service user', async () => {
  assert.throws(() => new PostfixMapReader({ alias: ['hash:/x'], virtual: [] }, { configDir: null }), {
    message: 'alias lookups never run as root',
  });
  const who = script(
    'postalias-who',
    `id -u > ${dir}/who; id -G >> ${dir}/who; env >> ${dir}/who; cat >/dev/null; exit 1`,
  );
  writeFileSync(join(dir, 'who'), '');
  chmodSync(join(dir, 'who'), 0o666); // the stand-in, as the service user, writes here
  const reader = new PostfixMapReader(
    { alias: ['hash:/x'], virtual: [] },
    { configDir: null, runAs: svc, postalias: who },
  );
  assert.deepEqual(await reader.lookup('alias', ['bob']), [new Map()]);
  const [uid, groups, ...env] = readFileSync(join(dir, 'who'), 'utf8').trim().split('\n');
  assert.equal(Number(uid), svc.uid);
  assert.equal(groups, String(svc.gid), 'no supplementary groups');
  assert.deepEqual(
    env.filter((l) => !/^(PWD|SHLVL|_)=/.test(l)),
    ['PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
  );
});

test('a map that does not answer is killed after the timeout: an error, not a hang', async () => {
  const slow = script('postmap-slow', 'exec sleep 30');
  const reader = new PostfixMapReader(
    { alias: [], virtual: ['ldap:/etc/postfix/ldap.cf'] },
    { configDir: null, runAs: svc, postmap: slow, timeoutMs: 300 },
  );
  const t0 = Date.now();
  await assert.rejects(reader.lookup('virtual', ['a@b']), {
    message: `${slow} -q - ldap:/etc/postfix/ldap.cf: no answer in 300 ms`,
  });
  assert.ok(Date.now() - t0 < 5000);
});

test(`at most ${MAX_MAP_PROCESSES} map processes at once; past ${MAX_MAP_WAITING} waiting, a lookup fails at once`, async () => {
  // Each run marks itself running, waits for the release file, and records the most running at once.
  const gate = script(
    'postmap-gate',
    `touch ${dir}/running.$$; cat >/dev/null
n=$(ls ${dir} | grep -c '^running\\.'); echo $n >> ${dir}/peak
while [ ! -e ${dir}/release ]; do sleep 0.05; done
rm -f ${dir}/running.$$; exit 1`,
  );
  const reader = new PostfixMapReader(
    { alias: [], virtual: ['hash:/x'] },
    { configDir: null, runAs: svc, postmap: gate, timeoutMs: 60_000 },
  );
  chmodSync(dir, 0o777); // the gate, run as the service user, writes its marks here
  const all = Array.from({ length: MAX_MAP_PROCESSES + MAX_MAP_WAITING }, (_, i) =>
    reader.lookup('virtual', [`k${i}`]),
  );
  await assert.rejects(reader.lookup('virtual', ['one-too-many']), {
    message: `${MAX_MAP_WAITING} alias lookups already waiting: not looked up`,
  });
  for (let i = 0; i < 100 && !existsSync(join(dir, 'peak')); i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 300));
  writeFileSync(join(dir, 'release'), '');
  assert.equal((await Promise.all(all)).length, MAX_MAP_PROCESSES + MAX_MAP_WAITING);
  chmodSync(dir, 0o755);
  const peak = Math.max(...readFileSync(join(dir, 'peak'), 'utf8').trim().split('\n').map(Number));
  assert.ok(peak >= 2 && peak <= MAX_MAP_PROCESSES, `peak ${peak}`);
});

let d: Daemon | undefined;
after(async () => {
  if (d) assert.equal(await d.stop(), 0);
});

test('serve: an alias whose user is full is refused at RCPT; all_full lets a team with room through, any_full not', async () => {
  const fq = fakeQuota();
  const nobody = userid.ids('nobody').uid;
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '200*', 100, 200, 1));
  fq.setOutput(nobody, quotaBlock(nobody, '10', 100, 200));
  const sock = join(dir, 'policy.sock');
  const yaml = (extra: string) =>
    `user: ${SERVICE_USER}\nlisten: ["unix:${sock}"]\nsocket_group: ${SERVICE_USER}\nquota_path: ${fq.path}\n` +
    `min_uid: 100\npostfix_config_dir: ${dir}\ndomains: [example.org, catchall.example]\n${extra}`;
  const sub = mkdtempSync(join(tmpdir(), 'qp-maps-cfg-'));
  chmodSync(sub, 0o755);
  const cfg = writeConfig(sub, yaml('actions:\n  nouser: "550 5.1.1 No such user here"\n'));
  d = startDaemon(['--config', cfg]);
  const ready = await d.waitFor((l) => l.msg === 'front ready');
  assert.equal(ready.aliases, `alias_maps: hash:${dir}/aliases; virtual_alias_maps: hash:${dir}/virtual`);
  const ask = async (r: string) => actions((await exchange({ path: sock }, [rcpt(r)], { replies: 1 })).text)[0];
  assert.equal(await ask('full@example.org'), FULL);
  assert.equal(await ask('info@example.org'), FULL, 'virtual alias to an alias of a full user');
  assert.equal(await ask('full+tag@example.org'), FULL);
  assert.equal(await ask('team@example.org'), 'DUNNO', 'all_full: nobody has room');
  assert.equal(await ask('anyone@catchall.example'), 'DUNNO');
  assert.equal(await ask('ghost@example.org'), '550 5.1.1 No such user here');
  assert.equal(await ask('ghost@elsewhere.example'), 'DUNNO');
  const decision = d.lines.find((l) => l.msg === 'decision' && l.recipient === 'full@example.org');
  assert.match(String(decision?.reason), /^alias full@example\.org -> 1 local user \(quotapolicy: over_quota\)/);
  writeConfig(sub, yaml('alias_refuse_when: any_full\n'));
  d.proc.kill('SIGHUP');
  await d.waitFor((l) => l.msg === 'config reloaded');
  assert.equal(await ask('team@example.org'), FULL, 'any_full: one full user refuses');
  assert.equal(await ask('ghost@example.org'), 'DUNNO', 'nouser back to its default');
});
