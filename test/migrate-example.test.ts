// First run, end to end: policyd-rate-limit's own example configuration (its
// latest release, every key it documents, its default paths) goes through
// `quotapolicy migrate`, passes `check-config` as it comes out, and `serve`
// runs with it and limits as policyd-rate-limit would. Also the count_mode
// values policyd-rate-limit takes, and those it does not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, stringify } from 'yaml';
import userid from 'userid';
import { BIN, REPO, startDaemon, writeConfig } from './support/daemon.js';
import { exchange, request, actions } from './support/policy-client.js';

const EXAMPLE = join(REPO, 'test/fixtures/policyd-rate-limit-1.2.0.yaml');
const FAIL = 'defer_if_permit Rate limit reach, retry later';
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

/** Root-owned and 0755, as root's `serve` wants the directories above its config. */
function rootDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `qp-${label}-`));
  chmodSync(dir, 0o755);
  return dir;
}

test("the README shows migrate's stderr for the example config as it is", () => {
  const mig = cli('migrate', '--from', 'policyd-rate-limit', EXAMPLE);
  assert.equal(mig.status, 0, mig.stderr);
  const readme = readFileSync(join(REPO, 'README.md'), 'utf8');
  assert.ok(readme.includes('```\n' + mig.stderr + '```\n'), `README's migrate output is stale; now:\n${mig.stderr}`);
});

test("policyd-rate-limit's example config migrates, passes check-config as it is, and serve limits with it as policyd-rate-limit would", async () => {
  const mig = cli('migrate', '--from', 'policyd-rate-limit', EXAMPLE);
  assert.equal(mig.status, 0, mig.stderr);
  // Every setting that is not carried, or whose meaning changes, is named on stderr.
  const said = mig.stderr.split('\n').filter((l) => l !== '');
  for (const setting of [
    'not carried over: group',
    'note: count_mode 1 -> data_recipients',
    'note: socket_permission 666',
    'note: mysql_config: not used by backend sqlite',
    'note: pgsql_config: not used by backend sqlite',
    'note: limit_by_sasl: ids that are mail addresses',
  ]) {
    assert.ok(
      said.some((l) => l.startsWith(`quotapolicy migrate: ${setting}`)),
      `${setting}: not said in\n${mig.stderr}`,
    );
  }
  assert.equal(said.length, 6, mig.stderr);

  const c = parse(mig.stdout) as Record<string, any>;
  assert.deepEqual(c.listen, ['unix:/var/spool/postfix/ratelimit/policy']);
  assert.equal(c.pid_file, '/var/run/policyd-rate-limit/policyd-rate-limit.pid');
  assert.equal(c.user, 'policyd-rate-limit');
  assert.deepEqual(
    [c.rate_limit.backend, c.rate_limit.sqlite_path, c.rate_limit.count_mode],
    ['sqlite', '/var/lib/policyd-rate-limit/db.sqlite3', 'data_recipients'],
  );

  const dir = rootDir('example');
  writeFileSync(join(dir, 'as-migrated.yaml'), mig.stdout, { mode: 0o644 });
  const ok = cli('check-config', '--config', join(dir, 'as-migrated.yaml'));
  // The example's pid-file and socket directories belong to a real
  // policyd-rate-limit install: where they are absent, check-config names
  // each (serve would stop there too) and nothing else.
  const missing = ['/var/run/policyd-rate-limit', '/var/spool/postfix/ratelimit'].filter((d) => !existsSync(d));
  if (missing.length === 0)
    assert.deepEqual([ok.status, ok.stdout], [0, `config OK (${join(dir, 'as-migrated.yaml')})\n`], ok.stderr);
  else {
    assert.equal(ok.status, 78, ok.stderr);
    for (const m of missing) assert.match(ok.stderr, new RegExp(`directory ${m} does not exist: create it`));
    assert.equal(ok.stderr.split('\n').filter(Boolean).length, missing.length, ok.stderr);
  }

  // serve: only where it runs changes. The example's socket directory, pid
  // file and SQLite file belong to a real policyd-rate-limit on a real
  // system (and may be absent here): the test's own, in its temp directory.
  // The store's directory belongs to the example's service user, who writes it.
  const store = join(dir, 'store');
  mkdirSync(store);
  const prl = userid.ids('policyd-rate-limit'); // the example's user; scripts/setup.sh --test installs policyd-rate-limit
  chownSync(store, prl.uid, prl.gid);
  const sock = join(dir, 'policy.sock');
  const moved = structuredClone(c);
  moved.listen = [`unix:${sock}`];
  moved.pid_file = join(dir, 'quotapolicy.pid');
  moved.rate_limit.sqlite_path = join(store, 'db.sqlite3');
  const movedPath = writeConfig(dir, stringify(moved));
  const okMoved = cli('check-config', '--config', movedPath);
  // The example sets debug: check-config then says which start-up check it skipped (no Postfix here), nothing more.
  const notDebug = okMoved.stderr.split('\n').filter((l) => l !== '' && !l.startsWith('quotapolicy: debug: '));
  assert.deepEqual([okMoved.status, okMoved.stdout, notDebug], [0, `config OK (${movedPath})\n`, []], okMoved.stderr);
  const d = startDaemon(['--config', movedPath]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    const ask = async (attrs: Record<string, string>): Promise<string> =>
      actions(
        (
          await exchange(
            { path: sock },
            [
              request({
                request: 'smtpd_access_policy',
                client_address: '192.0.2.1',
                sender: 'a@example.org',
                recipient: 'r@example.net',
                ...attrs,
              }),
            ],
            { replies: 1 },
          )
        ).text,
      )[0]!;
    const data = (user: string, recipients: number) =>
      ask({ protocol_state: 'DATA', sasl_username: user, recipient_count: String(recipients) });
    // count_mode 1, limits [10, 60]: a message passes while the recipients counted in the window, plus its own, stay within 10.
    assert.deepEqual(
      [
        await data('alice', 4),
        await data('alice', 4),
        await data('alice', 3),
        await data('alice', 2),
        await data('alice', 1),
      ],
      ['dunno', 'dunno', FAIL, 'dunno', FAIL],
      '4 + 4 = 8; 8 + 3 > 10 refused, not counted; 8 + 2 = 10; 10 + 1 > 10',
    );
    assert.equal(
      await ask({ protocol_state: 'RCPT', sasl_username: 'alice' }),
      'dunno',
      'count_mode 1: RCPT is not counted, nor refused',
    );
    assert.equal(await data('bob', 10), 'dunno', 'another SASL user has a count of his own');
    assert.equal(await data('bob', 1), FAIL);
    assert.equal(
      await ask({ protocol_state: 'DATA', recipient_count: '50' }),
      'dunno',
      'no SASL user, limit_by_sender and limit_by_ip off: not limited',
    );
  } finally {
    assert.equal(await d.stop(), 0, d.stderr);
  }
});

test('migrate: each count_mode policyd-rate-limit takes becomes ours, said on stderr; any other is refused with the setting and its line', () => {
  const dir = rootDir('count-mode');
  const file = join(dir, 'prl.yaml');
  const migrate = (countMode: string | undefined) => {
    writeFileSync(file, `limits:\n  - [10, 60]\n${countMode === undefined ? '' : `count_mode: ${countMode}\n`}`);
    return cli('migrate', '--from', 'policyd-rate-limit', file);
  };
  for (const [given, ours] of [
    [undefined, 'rcpt'],
    ['0', 'rcpt'],
    ['1', 'data_recipients'],
    ['2', 'data_messages'],
  ] as const) {
    const r = migrate(given);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(
      (parse(r.stdout) as { rate_limit: { count_mode: string } }).rate_limit.count_mode,
      ours,
      `count_mode ${given}`,
    );
    assert.match(
      r.stderr,
      new RegExp(`note: count_mode ${given === undefined ? '\\(not set, so 0\\)' : given} -> ${ours}: `),
      r.stderr,
    );
  }
  assert.match(migrate('0').stderr, /un-counts the recipients of that message/, 'the un-counting of 1.1.0 is named');
  assert.match(migrate('2').stderr, /also at BDAT/);
  for (const bad of ['7', '-1', '3', '"1"', 'true', 'null', '[1]']) {
    const r = migrate(bad);
    assert.equal(r.status, 78, `count_mode ${bad}: ${r.stdout}`);
    assert.equal(r.stdout, '', 'nothing printed to be redirected into a config');
    assert.match(
      r.stderr,
      new RegExp(
        `^quotapolicy: count_mode \\(${file.replace(/[.]/g, '\\.')} line 3\\): .* is not a policyd-rate-limit count_mode: it takes 0 \\(one per RCPT TO\\), 1 \\(.*\\) or 2 \\(`,
      ),
      r.stderr,
    );
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});
