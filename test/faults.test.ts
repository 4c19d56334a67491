// Faults, each with the expected answer and a deadline: the helper killed
// mid-request, quota(1) hanging, quota(1) missing or not executable, the
// SQLite store read-only or full, PostgreSQL stopped and started under load.
// (Elsewhere: the front crashing (lifecycle), a broken reload (serve), Redis
// stopped and started (ratelimit-outage), a second instance (serve).)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, execFileSync } from 'node:child_process';
import { mkdtempSync, chmodSync, mkdirSync, writeFileSync, existsSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { BIN, startDaemon, fakeQuota, quotaBlock, writeConfig, freePort, type Daemon } from './support/daemon.js';
import { exchange, rcpt, actions } from './support/policy-client.js';

const ERR = '451 4.3.0 quota lookup failed';
const DB_ERR = '451 4.3.0 rate store failed';
const svc = userid.ids('quotapolicy');

function dirFor(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `qp-fault-${label}-`));
  chmodSync(dir, 0o755);
  return dir;
}

async function daemon(dir: string, yaml: string): Promise<{ d: Daemon; sock: string }> {
  const sock = join(dir, 'p.sock');
  const d = startDaemon([
    '--config',
    writeConfig(
      dir,
      `socket_group: quotapolicy\nlisten: ["unix:${sock}"]\nmin_uid: 100\nactions:\n  error: "${ERR}"\n${yaml}`,
    ),
  ]);
  await d.waitFor((l) => l.msg === 'front ready');
  return { d, sock };
}

async function timed<T>(deadlineMs: number, p: Promise<T>): Promise<T> {
  const t0 = Date.now();
  const v = await p;
  assert.ok(Date.now() - t0 < deadlineMs, `took ${Date.now() - t0} ms, deadline ${deadlineMs} ms`);
  return v;
}

test('the helper is SIGKILLed mid-request: the error action within 2 s, then the whole daemon exits for systemd to restart', async () => {
  const fq = fakeQuota();
  fq.setMode('slow');
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '1', 100, 200));
  const { d, sock } = await daemon(dirFor('kill'), `quota_path: ${fq.path}\n`);
  const front = d.frontPid();
  const pending = exchange({ path: sock }, [rcpt('quotapolicy@example.test')], { replies: 1, timeoutMs: 5000 });
  await new Promise((r) => setTimeout(r, 150));
  process.kill(d.proc.pid!, 'SIGKILL');
  const r = await timed(2000, pending);
  assert.deepEqual(actions(r.text), [ERR]);
  for (let i = 0; i < 100 && existsSync(`/proc/${front}`); i++) await new Promise((res) => setTimeout(res, 50));
  assert.ok(!existsSync(`/proc/${front}`), 'the front exits too: nothing is left half-alive');
});

test('quota(1) hangs (NFS server gone): the timeout fires, the error action is answered, nothing stays stuck', async () => {
  const fq = fakeQuota();
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '200*', 100, 200, 1));
  const { d, sock } = await daemon(dirFor('hang'), `quota_path: ${fq.path}\nquota_timeout_ms: 1000\ncache_ttl_ms: 0\n`);
  try {
    fq.setMode('sleep');
    const hung = await timed(
      3000,
      exchange({ path: sock }, [rcpt('quotapolicy@example.test')], { replies: 1, timeoutMs: 5000 }),
    );
    assert.deepEqual(actions(hung.text), [ERR]);
    fq.setMode('');
    const after = await timed(2000, exchange({ path: sock }, [rcpt('quotapolicy@example.test')], { replies: 1 }));
    assert.deepEqual(actions(after.text), ['452 4.2.2 Mailbox full, try again later'], 'the next lookup works');
    await d.waitFor((l) => l.role === 'helper' && l.msg === 'quota timed out');
  } finally {
    await d.stop();
  }
});

test('quota(1) missing or not executable: start-up is refused with a clear message', () => {
  const dir = dirFor('noexec');
  const q = join(dir, 'quota');
  writeFileSync(q, '#!/bin/sh\n');
  chmodSync(q, 0o644);
  for (const [path, why] of [
    [q, /not executable/],
    [join(dir, 'missing'), /ENOENT/],
  ] as const) {
    const r = spawnSync(
      process.execPath,
      [BIN, 'serve', '--quota-path', path, '--listen', `unix:${join(dir, 's.sock')}`],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 78);
    assert.match(r.stderr, why);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  }
});

test('the SQLite store is read-only, then its disk is full: db_error_action, no crash, recovery when it is writable', async () => {
  const dir = dirFor('sqlite');
  const small = join(dir, 'small');
  mkdirSync(small);
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0755', 'tmpfs', small]);
  try {
    // Read-only for the front: the store's directory and file belong to root.
    const db = join(small, 'rl.sqlite3');
    const { default: Database } = await import('better-sqlite3');
    new Database(db).close();
    const { d, sock } = await daemon(
      dir,
      `quota_path: ${fakeQuota().path}\nchecks: [rate_limit]\nrate_limit:\n  sqlite_path: ${db}\n  limits: [[1000000, 3600]]\n  db_error_action: "${DB_ERR}"\n`,
    );
    try {
      const ask = async (user: string, n = 1) =>
        actions(
          (
            await exchange({ path: sock }, [rcpt('x@y', { sasl_username: user }).repeat(n)], {
              replies: n,
              timeoutMs: 10_000,
            })
          ).text,
        );
      assert.deepEqual(await ask('a'), [DB_ERR], 'read-only store: db_error_action');
      execFileSync('chown', ['-R', `${svc.uid}:${svc.gid}`, small]);
      await new Promise((r) => setTimeout(r, 1100)); // STORE_RETRY_MS
      assert.deepEqual(await ask('b'), ['DUNNO'], 'writable again: counting again, no restart');
      // Full: fill the file system, then count new ids until SQLite cannot grow.
      const fd = openSync(join(small, 'filler'), 'w');
      try {
        for (;;) writeSync(fd, Buffer.alloc(4096));
      } catch (e) {
        assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
      } finally {
        closeSync(fd);
      }
      let full = false;
      for (let i = 0; i < 400 && !full; i++) full = (await ask(`id-${i}-${'z'.repeat(200)}`, 5)).includes(DB_ERR);
      assert.ok(full, 'a full disk answers db_error_action');
      assert.equal(d.proc.exitCode, null, 'no crash');
      execFileSync('rm', ['-f', join(small, 'filler')]);
      assert.deepEqual(await ask('c'), ['DUNNO'], 'space again: counting again');
      assert.ok(
        d.lines.some((l) => l.rate_verdict === 'error' && /sqlite/.test(String(l.reason))),
        'logged with the cause',
      );
    } finally {
      await d.stop();
    }
  } finally {
    spawnSync('umount', ['-l', small]);
  }
});

test('PostgreSQL stopped and started again under load: db_error_action while down, recovery after, no crash', async () => {
  const dir = dirFor('pg');
  const data = join(dir, 'pgdata');
  mkdirSync(data);
  execFileSync('chown', ['postgres:postgres', data]);
  const port = await freePort();
  const pgbin = execFileSync('sh', ['-c', 'ls -d /usr/lib/postgresql/*/bin | tail -1'], { encoding: 'utf8' }).trim();
  const asPg = (args: string[]) =>
    execFileSync('su', ['postgres', '-c', args.join(' ')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  asPg([`${pgbin}/initdb`, '-D', data, '-A', 'trust', '-U', 'postgres', '>/dev/null']);
  const start = () =>
    asPg([
      `${pgbin}/pg_ctl`,
      '-D',
      data,
      '-w',
      '-o',
      `"-p ${port} -k ${data} -c listen_addresses=127.0.0.1"`,
      '-l',
      `${data}/log`,
      'start',
      '>/dev/null',
    ]);
  const stop = () => asPg([`${pgbin}/pg_ctl`, '-D', data, '-w', '-m', 'immediate', 'stop', '>/dev/null']);
  start();
  try {
    const { d, sock } = await daemon(
      dir,
      `quota_path: ${fakeQuota().path}\nchecks: [rate_limit]\nrate_limit:\n  backend: postgresql\n  url: "postgresql://postgres@127.0.0.1:${port}/postgres"\n  limits: [[1000000, 3600]]\n  store_timeout_ms: 1000\n  db_error_action: "${DB_ERR}"\n`,
    );
    try {
      const seen = new Set<string>();
      let stopLoad = false;
      const load = (async () => {
        while (!stopLoad) {
          const r = await exchange({ path: sock }, [rcpt('x@y', { sasl_username: 'load' }).repeat(8)], {
            replies: 8,
            timeoutMs: 10_000,
          });
          for (const a of actions(r.text)) seen.add(a);
          assert.equal(actions(r.text).length, 8, 'every request answered');
        }
      })();
      await new Promise((r) => setTimeout(r, 500));
      stop();
      await new Promise((r) => setTimeout(r, 1500));
      assert.ok(seen.has(DB_ERR), 'db_error_action while PostgreSQL is down');
      seen.clear();
      start();
      for (let i = 0; i < 100 && !seen.has('DUNNO'); i++) {
        seen.clear();
        await new Promise((r) => setTimeout(r, 100));
      }
      stopLoad = true;
      await load;
      assert.ok(seen.has('DUNNO'), 'counting again once PostgreSQL is back');
      assert.equal(d.proc.exitCode, null, 'no crash');
    } finally {
      await d.stop();
    }
  } finally {
    try {
      stop();
    } catch {
      /* already stopped */
    }
  }
});
