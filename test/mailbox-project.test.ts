// The project of a mailbox directory (src/frontend/quota/project.ts): the
// mountinfo, passwd and lsattr parsers, and the lookup end to end with stand-in
// getent and lsattr programs that record how they were run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, statSync, mkdirSync, chmodSync, renameSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  ProjectLookup,
  homeFromFiles,
  devName,
  parseLsattrProject,
  parsePasswdHome,
  parseProjectQuotaMounts,
} from '../src/frontend/quota/project.js';

test('the mountinfo table: which devices enforce project quotas, and where they are mounted', () => {
  const t = [
    '30 1 98:0 / /home rw,relatime shared:1 - ext4 /dev/ubda rw,quota,usrquota,grpquota',
    '31 30 98:16 / /home/prj rw,relatime shared:2 - ext4 /dev/ubdb rw,quota,usrquota,prjquota',
    '32 1 98:16 /sub /srv/a\\040b rw,relatime - ext4 /dev/ubdb rw,quota,usrquota,prjquota',
    '33 1 8:1 / /xfs rw,relatime - xfs /dev/sda1 rw,attr2,inode64,pquota',
    '34 1 8:2 / /acct rw,relatime - xfs /dev/sda2 rw,pqnoenforce',
    '35 1 8:3 / /j rw - ext4 /dev/sda3 rw,prjjquota=aquota.project,jqfmt=vfsv1',
    'garbage',
  ].join('\n');
  assert.deepEqual(
    [...parseProjectQuotaMounts(t)].map(([d, m]) => [d, [...m]]),
    [
      ['98:16', ['/home/prj', '/srv/a b']],
      ['8:1', ['/xfs']],
      ['8:3', ['/j']],
    ],
  );
});

test("devName spells a stat() dev as this host's mountinfo does", () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-prj-'));
  const dev = devName(statSync(dir).dev);
  const table = readFileSync('/proc/self/mountinfo', 'utf8');
  assert.ok(
    table.split('\n').some((l) => l.split(' ')[2] === dev),
    `${dev} for ${dir} is in /proc/self/mountinfo`,
  );
  assert.equal(devName(0x0803), '8:3');
  assert.equal(devName(259 * 256 + 1), '259:1');
  // Large majors and minors (glibc's makedev(): major 0x1234, minor 0x56789).
  assert.equal(devName(Number((0x234n << 8n) | (0x1000n << 32n) | 0x89n | (0x56700n << 12n))), '4660:354185');
});

test('the passwd entry and the lsattr line are read strictly', () => {
  assert.equal(parsePasswdHome('bob:x:2001:100:Bob:/home/bob:/bin/sh\n', 'bob'), '/home/bob');
  assert.deepEqual(parsePasswdHome('', 'bob'), { error: 'getent passwd bob: not one passwd entry' });
  assert.deepEqual(parsePasswdHome('alice:x:1:1::/home/a:/bin/sh\n', 'bob'), {
    error: 'getent passwd bob: not one passwd entry',
  });
  assert.deepEqual(parsePasswdHome('bob:x:1:1::home:/bin/sh\n', 'bob'), {
    error: 'getent passwd bob: home "home" is not an absolute path',
  });
  assert.equal(parseLsattrProject('   42 --------------e-----P-- /home/prj/bob\n', '/home/prj/bob'), 42);
  assert.equal(parseLsattrProject('4294967295 ---- /a b\n', '/a b'), 4294967295);
  assert.deepEqual(parseLsattrProject('4294967296 ---- /a\n', '/a'), {
    error: 'lsattr -p -d /a: project id 4294967296 out of range',
  });
  assert.deepEqual(parseLsattrProject('42 ---- /other\n', '/a'), { error: 'lsattr -p -d /a: output not understood' });
  assert.deepEqual(parseLsattrProject('--------e-- /a\n', '/a'), { error: 'lsattr -p -d /a: output not understood' });
});

function standIns(lsattrOut: string) {
  const dir = mkdtempSync(join(tmpdir(), 'qp-prj-'));
  const home = join(dir, 'home');
  mkdirSync(home);
  const log = join(dir, 'log');
  const script = (name: string, body: string) => {
    const p = join(dir, name);
    writeFileSync(p, `#!/bin/sh\necho "${name} $*" >> ${log}\n${body}\n`);
    chmodSync(p, 0o755);
    return p;
  };
  const getent = script('getent', `[ "$3" = bob ] || exit 2\necho "bob:x:2001:100::${home}:/bin/sh"`);
  const lsattr = script('lsattr', `printf '%s' "${lsattrOut.replace('HOME', home)}"`);
  const hang = script('hang', 'exec sleep 30');
  const dev = devName(statSync(home).dev);
  const calls = () => readFileSync(log, 'utf8').trim().split('\n');
  // NSS reads the files first; alice is in them, bob is not (getent answers for him).
  const files = { nsswitch: join(dir, 'nsswitch.conf'), passwd: join(dir, 'passwd') };
  writeFileSync(files.nsswitch, 'passwd:         files systemd\ngroup: files\n');
  writeFileSync(files.passwd, `root:x:0:0:root:/root:/bin/bash\nalice:x:2002:100::${home}:/bin/sh\n`);
  return { home, getent, lsattr, hang, dev, calls, files };
}

const me = { uid: process.getuid!(), gid: process.getgid!() };

test('the lookup: home from getent, project id from lsattr, mounts of its device', async () => {
  const s = standIns('   42 ----P-- HOME\n');
  const l = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: s.lsattr,
    mounts: () => new Map([[s.dev, new Set(['/m'])]]),
  });
  assert.deepEqual(await l.mailboxProject('bob'), { id: 42, mounts: new Set(['/m']) });
  assert.deepEqual(s.calls(), ['getent passwd -- bob', `lsattr -p -d -- ${s.home}`]);
  assert.deepEqual(await l.mailboxProject('carol'), { error: `${s.getent} passwd -- carol: no such user` });
});

test('the lookup runs nothing where no file system enforces project quotas, and no lsattr off them', async () => {
  const s = standIns('42 ---- HOME\n');
  const none = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: s.lsattr,
    mounts: () => new Map(),
  });
  assert.deepEqual(await none.mailboxProject('bob'), { none: 'no file system enforces project quotas' });
  const other = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: s.lsattr,
    mounts: () => new Map([['999:999', new Set(['/x'])]]),
  });
  assert.deepEqual(await other.mailboxProject('bob'), {
    none: `${s.home} is on a file system without project quotas`,
  });
  assert.deepEqual(s.calls(), ['getent passwd -- bob'], 'getent once (the second lookup), lsattr never');
});

test('the home from the passwd file only where getpwnam() would answer with it', () => {
  const pw = 'root:x:0:0:root:/root:/bin/bash\nbob:x:2001:100::/home/bob:/bin/sh\nbob:x:2009:100::/other:/bin/sh\n';
  assert.equal(homeFromFiles('bob', 'passwd: files\n', pw), '/home/bob', 'the first entry, as glibc');
  assert.equal(homeFromFiles('bob', '# x\npasswd:\tfiles ldap\ngroup: ldap\n', pw), '/home/bob');
  assert.equal(homeFromFiles('bo', 'passwd: files\n', pw), undefined, 'a prefix is not a name');
  assert.equal(homeFromFiles('carol', 'passwd: files\n', pw), undefined, 'not there: NSS may know her');
  for (const nss of [
    'passwd: ldap files\n',
    'passwd: compat\n',
    'passwd: files [NOTFOUND=return] x\n',
    '',
    'passwd: files\npasswd: ldap\n',
  ])
    assert.equal(homeFromFiles('bob', nss, pw), undefined, nss);
  for (const odd of ['+@staff::::::\n', '-eve::::::\n', ' eve:x:1:1::/e:/bin/sh\n', '#c\n'])
    assert.equal(homeFromFiles('bob', 'passwd: files\n', odd + pw), undefined, odd);
  assert.equal(homeFromFiles('bob', 'passwd: files\n', 'bob:x:2001:100::home:/bin/sh\n'), undefined, 'getent says why');
  // glibc reads an indented passwd line too, and skips an entry whose uid or gid is not a number.
  assert.equal(homeFromFiles('bob', '  passwd: files\n', pw), '/home/bob', 'an indented line is read');
  assert.equal(homeFromFiles('bob', 'passwd: files\n  passwd: sss\n', pw), undefined, 'two passwd lines');
  assert.equal(
    homeFromFiles('bob', 'passwd: files\n', 'bob:x:20O1:100::/home/evil:/bin/sh\n' + pw),
    undefined,
    'a first entry glibc would skip: getent decides',
  );
  assert.equal(homeFromFiles('bob', 'passwd: files\n', 'bob:x:2001:1OO::/home/evil:/bin/sh\n' + pw), undefined);
});

test('the lookup reads the passwd file first: no process for a user in it', async () => {
  const s = standIns('   7 ----P-- HOME\n');
  const l = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: s.lsattr,
    mounts: () => new Map([[s.dev, new Set(['/m'])]]),
  });
  assert.deepEqual(await l.mailboxProject('alice'), { id: 7, mounts: new Set(['/m']) });
  assert.deepEqual(s.calls(), [`lsattr -p -d -- ${s.home}`], 'lsattr only');
  const ldapFirst = new ProjectLookup({
    runAs: me,
    ...s.files,
    nsswitch: '/nonexistent',
    getent: s.getent,
    lsattr: s.lsattr,
    mounts: () => new Map([[s.dev, new Set(['/m'])]]),
  });
  assert.deepEqual(
    await ldapFirst.mailboxProject('alice'),
    { error: `${s.getent} passwd -- alice: no such user` },
    'unreadable nsswitch.conf: getent decides',
  );
});

test('the passwd file is read again only when it changes', async () => {
  const s = standIns('   7 ----P-- HOME\n');
  const l = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: s.lsattr,
    mounts: () => new Map([[s.dev, new Set(['/m'])]]),
  });
  assert.deepEqual(await l.mailboxProject('alice'), { id: 7, mounts: new Set(['/m']) });
  // Another home for alice, same size: the file's new version (mtime, inode) is seen.
  const before = readFileSync(s.files.passwd, 'utf8');
  const elsewhere = mkdtempSync(join(tmpdir(), 'qp-home2-'));
  writeFileSync(s.files.passwd + '.new', `root:x:0:0:root:/root:/bin/bash\nalice:x:2002:100::${elsewhere}:/bin/sh\n`);
  renameSync(s.files.passwd + '.new', s.files.passwd);
  assert.notEqual(readFileSync(s.files.passwd, 'utf8'), before);
  // (The stand-in lsattr answers for the first home only: the new one's line is not understood.)
  assert.deepEqual(await l.mailboxProject('alice'), { error: `lsattr -p -d ${elsewhere}: output not understood` });
  assert.deepEqual(
    s.calls(),
    [`lsattr -p -d -- ${s.home}`, `lsattr -p -d -- ${elsewhere}`],
    'no getent: both homes came from the file',
  );
});

test('a failing or hung lsattr is an error, in bounded time', async () => {
  const s = standIns('');
  const bad = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: '/bin/false',
    mounts: () => new Map([[s.dev, new Set(['/m'])]]),
  });
  assert.deepEqual(await bad.mailboxProject('bob'), { error: `/bin/false -p -d -- ${s.home}: exit status 1` });
  const hung = new ProjectLookup({
    runAs: me,
    ...s.files,
    getent: s.getent,
    lsattr: s.hang,
    timeoutMs: 200,
    mounts: () => new Map([[s.dev, new Set(['/m'])]]),
  });
  const t0 = Date.now();
  const r = await hung.mailboxProject('bob');
  assert.ok(Date.now() - t0 < 5000);
  assert.deepEqual(r, { error: `${s.hang} -p -d -- ${s.home}: no answer in 200 ms` });
});

test('as root, only with a user to run as', () => {
  if (process.getuid!() !== 0) assert.fail('this test runs as root (the suite does)');
  assert.throws(() => new ProjectLookup(), /never run as root/);
});
