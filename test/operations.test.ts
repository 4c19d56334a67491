// Running it: /metrics, the query client, the pid file, the original's flags.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, chmodSync, chownSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import http from 'node:http';
import net from 'node:net';
import userid from 'userid';
import { BIN, fakeQuota, quotaBlock, freePort, writeConfig, startDaemon } from './support/daemon.js';
import { exchange, rcpt } from './support/policy-client.js';

/** A directory the service user may write (for an SQLite store); the config stays root's. */
function sqliteDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'qp-ops-db-'));
  chownSync(dir, userid.ids('quotapolicy').uid, userid.ids('quotapolicy').gid);
  return dir;
}

function setup(extra = ''): { dir: string; cfg: string; sock: string } {
  const dir = mkdtempSync(join(tmpdir(), 'qp-ops-'));
  chmodSync(dir, 0o755);
  const fq = fakeQuota();
  const uid = userid.ids('quotapolicy').uid;
  fq.setOutput(uid, quotaBlock(uid, '200*', 100, 200, 1));
  const sock = join(dir, 'p.sock');
  const cfg = writeConfig(
    dir,
    `quota_path: ${fq.path}\nmin_uid: 100\nrecipient_delimiter: "+"\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\n${extra}`,
  );
  return { dir, cfg, sock };
}

const get = (port: number, path: string): Promise<{ status: number; body: string }> =>
  new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      })
      .on('error', reject);
  });

const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

test('/metrics: decisions by check and verdict, helper latency, cache, errors, open connections', async () => {
  const port = await freePort();
  // quota_kinds: [user]: group quotas are asked only where this host's mounts enforce them; the counts must not depend on that.
  const { cfg, sock } = setup(
    `metrics: true\nmetrics_listen: "inet:127.0.0.1:${port}"\ncache_ttl_ms: 60000\nquota_kinds: [user]\n`,
  );
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'metrics at /metrics');
    await exchange({ path: sock }, [rcpt('quotapolicy@x')], { replies: 1 });
    await exchange({ path: sock }, [rcpt('quotapolicy@x') + rcpt('nosuchuser@x')], { replies: 2 });
    await exchange({ path: sock }, ['garbage\n']);
    const held = await new Promise<net.Socket>((r) => {
      const s = net.connect(sock, () => r(s));
    });
    await new Promise((r) => setTimeout(r, 100));
    const m = await get(port, '/metrics');
    held.destroy();
    assert.equal(m.status, 200);
    assert.match(m.body, /^quotapolicy_decisions_total\{check="quota",verdict="over_quota"\} 2$/m);
    assert.match(m.body, /^quotapolicy_decisions_total\{check="quota",verdict="skip"\} 1$/m);
    assert.match(m.body, /^quotapolicy_cache_lookups_total\{cache="quota",result="hit"\} 1$/m);
    assert.match(m.body, /^quotapolicy_cache_lookups_total\{cache="quota",result="miss"\} 1$/m);
    assert.match(m.body, /^quotapolicy_quota_verdicts_total\{kind="user",verdict="over_quota"\} 2$/m);
    assert.match(m.body, /^quotapolicy_errors_total\{kind="protocol"\} 1$/m);
    assert.match(m.body, /^quotapolicy_helper_latency_seconds_count 1$/m);
    assert.match(m.body, /^quotapolicy_open_connections 1$/m);
    assert.equal((await get(port, '/other')).status, 404);
  } finally {
    await d.stop();
  }
});

test('/metrics is off by default', async () => {
  const { cfg } = setup();
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    await assert.rejects(get(9163, '/metrics'));
    assert.ok(!d.lines.some((l) => l.msg === 'metrics at /metrics'));
  } finally {
    await d.stop();
  }
});

test('quotapolicy query: one request to a running daemon, the reply printed; clear errors otherwise', async () => {
  const { cfg, sock } = setup();
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    const r = cli('query', 'quotapolicy@example.test', '--config', cfg);
    assert.equal(r.status, 0, r.stderr);
    assert.match(
      r.stdout,
      /^action=452 4\.2\.2 Mailbox full, try again later\ncheck: quota\nverdict: over_quota\nreason: .*\/home.*\nuser: quotapolicy\nquota: over_quota: .* \(action 452 4\.2\.2 Mailbox full, try again later\)\ncounted: no \(dry query\)\n$/,
    );
    const r2 = cli('query', 'quotapolicy@example.test', '--to', `unix:${sock}`, '--state', 'DATA', '--count');
    assert.deepEqual([r2.status, r2.stdout], [0, 'action=DUNNO\n'], '--count: the action only, as smtpd sees it');
    assert.match(cli('query', 'x@y', '--to', `unix:${sock}`, '--attr', 'nonsense').stderr, /--attr needs NAME=VALUE/);
  } finally {
    await d.stop();
  }
  const gone = cli('query', 'quotapolicy@example.test', '--to', `unix:${sock}.none`);
  assert.equal(gone.status, 69);
  assert.match(gone.stderr, /cannot reach unix:.*ENOENT/);
});

test('quotapolicy query counts against no limit and says which check answered; details only on a unix socket', async () => {
  const port = await freePort();
  const { cfg, sock } = setup(
    `checks: [quota, rate_limit]\nrate_limit:\n  limits: [[1, 3600]]\n  limit_by_sasl: false\n  limit_by_sender: true\n  sqlite_path: ${sqliteDir()}/rl.sqlite3\n`,
  );
  writeFileSync(
    cfg,
    readFileSync(cfg, 'utf8').replace(/^listen: .*$/m, `listen: ["unix:${sock}", "inet:127.0.0.1:${port}"]`),
  );
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    const sender = ['--attr', 'sender=dry@example.org'];
    for (let i = 0; i < 3; i++) {
      const q = cli('query', 'nosuchuser@example.test', '--config', cfg, ...sender);
      assert.equal(q.status, 0, q.stderr);
      assert.equal(
        q.stdout,
        'action=DUNNO\ncheck: rate_limit\nverdict: pass\nreason: within limits, 1 not counted for sender:dry@example.org\nrate_id: dry@example.org\n' +
          'quota: skip: not a Unix user (action DUNNO)\nrate_limit: pass: within limits, 1 not counted for sender:dry@example.org (action DUNNO)\ncounted: no (dry query)\n',
      );
    }
    const inet = cli('query', 'nosuchuser@example.test', '--to', `inet:127.0.0.1:${port}`, ...sender);
    assert.equal(
      inet.stdout,
      'action=DUNNO\ndetails: withheld: asked on an inet listener, which any local user may reach; ask on a unix socket (listen: unix:PATH)\ncounted: no (dry query)\n',
    );
    // Mail from that sender: the limit of 1 was left whole by the four queries.
    const mail = (n: number) =>
      exchange({ path: sock }, [rcpt('nosuchuser@example.test', { sender: 'dry@example.org', instance: `i${n}` })], {
        replies: 1,
      });
    assert.equal((await mail(1)).text, 'action=DUNNO\n\n');
    assert.equal((await mail(2)).text, 'action=DEFER_IF_PERMIT Rate limit reach, retry later\n\n');
    const after = cli('query', 'nosuchuser@example.test', '--config', cfg, ...sender);
    assert.match(
      after.stdout,
      /^action=DEFER_IF_PERMIT Rate limit reach, retry later\ncheck: rate_limit\nverdict: rate_limited\nreason: sender:dry@example\.org: 1 \+ 1 over 1 in 3600 s\n/,
    );
    const counted = cli(
      'query',
      'nosuchuser@example.test',
      '--config',
      cfg,
      '--count',
      '--attr',
      'sender=other@example.org',
    );
    assert.equal(counted.stdout, 'action=DUNNO\n');
    assert.match(
      cli('query', 'nosuchuser@example.test', '--config', cfg, '--attr', 'sender=other@example.org').stdout,
      /^action=DEFER_IF_PERMIT .*\ncheck: rate_limit\nverdict: rate_limited\n/,
      '--count was counted',
    );
    const logged = await d.waitFor((l) => l.msg === 'decision' && l.query === 'dry');
    assert.equal(logged.rate_verdict, 'pass');
  } finally {
    await d.stop();
  }
});

test('pid file: written, a live pid refuses a second start, a stale one is replaced, removed on exit', async () => {
  const { cfg, dir } = setup();
  const pidFile = join(dir, 'qp.pid');
  writeFileSync(pidFile, '999999\n'); // stale: no such process
  const d = startDaemon(['--config', cfg, '--pid-file', pidFile]);
  await d.waitFor((l) => l.msg === 'front ready');
  assert.equal(readFileSync(pidFile, 'utf8'), `${d.proc.pid}\n`);
  const second = cli('serve', '--config', cfg, '--pid-file', pidFile, '--listen', `unix:${join(dir, 'other.sock')}`);
  assert.equal(second.status, 78);
  assert.match(second.stderr, new RegExp(`already running: pid ${d.proc.pid}`));
  assert.equal(await d.stop(), 0);
  assert.ok(!existsSync(pidFile));
});

test("the original quotapolicy's flags: -H, -s, -p, -q, -d, --debug; --sudopath ignored as root, with a note", async () => {
  const { cfg, dir } = setup();
  const fq = fakeQuota();
  const uid = userid.ids('quotapolicy').uid;
  fq.setOutput(uid, quotaBlock(uid, '10', 100, 200));
  const d = startDaemon(['--config', cfg, '-H', dir, '-q', fq.path, '-d', '-', '--debug']);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    assert.ok(existsSync(join(dir, 'quotapolicy.socket')), '-H DIR: socket DIR/quotapolicy.socket');
    assert.equal(
      readFileSync(join(dir, 'quotapolicy.pid'), 'utf8'),
      `${d.proc.pid}\n`,
      '-H DIR: pid file DIR/quotapolicy.pid',
    );
    const r = await exchange({ path: join(dir, 'quotapolicy.socket') }, [rcpt('quotapolicy-ext@x')], { replies: 1 });
    assert.equal(r.text, 'action=DUNNO\n\n');
    const line = await d.waitFor((l) => l.msg === 'decision');
    assert.equal(line.user, 'quotapolicy', '-d - cut the extension at "-"');
    assert.equal(line.verdict, 'pass', '-q: the other quota binary answered');
    assert.ok(
      d.lines.some((l) => l.level === 20),
      '--debug: debug lines are logged',
    );
  } finally {
    await d.stop();
  }
  const s = cli('--sudopath', '/usr/bin/sudo', '-s', 'x.sock');
  assert.match(s.stderr, /^quotapolicy: note: --sudopath ignored: started as root/);
  assert.match(s.stderr, /give -H\/--homedir as an absolute path, as the original required/);
  assert.equal(s.status, 64, 'no command: it would detach, and needs the pid file -H gives');
});
