// A store outage: Redis (a private instance on its own port) stops under
// traffic. While it is down db_error_action is answered at once; when it is
// back the same daemon counts again, with no restart and no crash.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, fakeQuota, writeConfig, freePort } from './support/daemon.js';
import { exchange, rcpt, actions } from './support/policy-client.js';

const DOWN = '451 4.3.0 rate limit store unavailable';

function redis(port: number): Promise<ChildProcess> {
  const p = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    p.on('error', (e) => reject(new Error(`redis-server: ${e.message} (scripts/setup.sh --test installs it)`)));
    p.stdout.on('data', (d: Buffer) => {
      if (/Ready to accept connections/.test(d.toString())) resolve(p);
    });
  });
}

test('Redis stops and starts again: db_error_action while down, counting again after', async () => {
  const port = await freePort();
  let r = await redis(port);
  const dir = mkdtempSync(join(tmpdir(), 'qp-outage-'));
  chmodSync(dir, 0o755);
  const sock = join(dir, 'p.sock');
  const cfg = writeConfig(
    dir,
    `checks: [rate_limit]\nquota_path: ${fakeQuota().path}\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\n` +
      `rate_limit:\n  backend: redis\n  url: "redis://127.0.0.1:${port}"\n  limits: [[3, 3600]]\n  store_timeout_ms: 500\n  db_error_action: "${DOWN}"\n`,
  );
  const d = startDaemon(['--config', cfg]);
  try {
    await d.waitFor((l) => l.msg === 'front ready');
    const ask = async (n: number): Promise<string[]> =>
      actions(
        (
          await exchange({ path: sock }, [rcpt('x@example.test', { sasl_username: 'o' }).repeat(n)], {
            replies: n,
            timeoutMs: 10_000,
          })
        ).text,
      );
    assert.deepEqual(await ask(2), ['DUNNO', 'DUNNO']);
    r.kill('SIGKILL');
    await new Promise((res) => r.once('exit', res));
    const t0 = Date.now();
    assert.deepEqual(await ask(5), Array(5).fill(DOWN));
    assert.ok(Date.now() - t0 < 3000, 'answered promptly while the store is down');
    r = await redis(port); // empty again: a new Redis without persistence
    let back: string[] = [];
    for (let i = 0; i < 50; i++) {
      back = await ask(1);
      if (back[0] !== DOWN) break;
      await new Promise((res) => setTimeout(res, 200));
    }
    assert.deepEqual(back, ['DUNNO'], 'reconnected by itself');
    assert.deepEqual(await ask(3), ['DUNNO', 'DUNNO', 'DEFER_IF_PERMIT Rate limit reach, retry later']);
    assert.ok(
      d.lines.some((l) => l.level === 40 && l.rate_verdict === 'error'),
      'the outage is logged as warnings',
    );
    assert.equal(d.proc.exitCode, null, 'no crash');
  } finally {
    await d.stop();
    r.kill('SIGKILL');
  }
});
