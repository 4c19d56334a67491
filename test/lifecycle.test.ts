// The daemon's life: systemd socket activation (first connection starts it and
// is answered), and a dead front taking the whole daemon down non-zero so that
// systemd restarts it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { BIN, fakeQuota, quotaBlock, freePort, writeConfig, startDaemon } from './support/daemon.js';
import { exchange, rcpt, actions } from './support/policy-client.js';

const FULL = '452 4.2.2 Mailbox full, try again later';

function setup(mode = ''): { dir: string; cfg: string } {
  const dir = mkdtempSync(join(tmpdir(), 'qp-life-'));
  chmodSync(dir, 0o755);
  const fq = fakeQuota();
  const uid = userid.ids('quotapolicy').uid;
  fq.setOutput(uid, quotaBlock(uid, '200*', 100, 200, 1));
  fq.setMode(mode);
  // The listen list points nowhere useful: under socket activation it must be ignored.
  const cfg = writeConfig(
    dir,
    `quota_path: ${fq.path}\nmin_uid: 100\nrecipient_delimiter: "+"\nlisten: ["unix:${join(dir, 'unused.sock')}"]\n`,
  );
  return { dir, cfg };
}

for (const kind of ['unix', 'tcp'] as const) {
  test(`systemd socket activation (${kind}): the first connection starts the daemon and is answered`, async () => {
    const { dir, cfg } = setup();
    const port = await freePort();
    const where = kind === 'unix' ? join(dir, 'activated.sock') : `127.0.0.1:${port}`;
    const sa = spawn(
      'systemd-socket-activate',
      ['-l', where, '--fdname=policy', process.execPath, BIN, 'serve', '--config', cfg],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    sa.stdout.on('data', (d: Buffer) => {
      log += d.toString();
    });
    sa.stderr.on('data', (d: Buffer) => {
      log += d.toString();
    });
    try {
      const addr = kind === 'unix' ? { path: where } : { host: '127.0.0.1', port };
      for (let i = 0; i < 50 && !/Listening on/.test(log); i++) await new Promise((r) => setTimeout(r, 50));
      const r = await exchange(addr, [rcpt('quotapolicy@example.test')], { replies: 1, timeoutMs: 15_000 });
      assert.deepEqual(actions(r.text), [FULL], log);
      assert.match(log, /"sockets_from":"systemd"/);
      assert.match(log, /"listen":\["systemd:policy"\]/);
      const again = await exchange(addr, [rcpt('quotapolicy@example.test')], { replies: 1 });
      assert.deepEqual(actions(again.text), [FULL]);
    } finally {
      sa.kill('SIGTERM');
      await new Promise((r) => sa.on('exit', r));
    }
  });
}

test('if the front dies, the daemon exits non-zero (for Restart=on-failure)', async () => {
  const { cfg, dir } = setup();
  const sock = join(dir, 'p.sock');
  const d = startDaemon(['--config', cfg, '--listen', `unix:${sock}`]);
  await d.waitFor((l) => l.msg === 'front ready');
  process.kill(d.frontPid(), 'SIGKILL');
  assert.equal(await d.exit, 1);
  await d.waitFor((l) => l.msg === 'front exited unexpectedly, exiting');
});

test('SIGTERM drains: a request in flight is still answered', async () => {
  const { cfg, dir } = setup('slow'); // quota(1) takes 0.5 s
  const sock = join(dir, 'p.sock');
  const d = startDaemon(['--config', cfg, '--listen', `unix:${sock}`]);
  await d.waitFor((l) => l.msg === 'front ready');
  const pending = exchange({ path: sock }, [rcpt('quotapolicy@example.test')], { replies: 1 });
  setTimeout(() => d.proc.kill('SIGTERM'), 150);
  assert.deepEqual(actions((await pending).text), [FULL]);
  assert.equal(await d.exit, 0);
});
