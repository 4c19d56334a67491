// Several MX hosts: four daemon instances sharing one store enforce one global
// limit exactly under concurrent load on one id (limit L, many clients: exactly
// L pass), as issue 13 asks of a fleet sharing PostgreSQL or Redis.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon, fakeQuota, writeConfig, type Daemon } from './support/daemon.js';
import { exchange, rcpt, actions } from './support/policy-client.js';
import { SERVICE_STORE_URLS, uniq } from './support/stores.js';

const FAIL = 'DEFER_IF_PERMIT Rate limit reach, retry later';
const L = 37;
const INSTANCES = 4;
const CONNECTIONS_PER_INSTANCE = 20;
const REQUESTS_PER_CONNECTION = 5;

for (const backend of ['redis', 'postgresql', 'mysql'] as const) {
  test(`${INSTANCES} instances sharing ${backend}: limit ${L}, ${INSTANCES * CONNECTIONS_PER_INSTANCE * REQUESTS_PER_CONNECTION} concurrent requests, exactly ${L} accepted`, async () => {
    const fq = fakeQuota();
    const daemons: Daemon[] = [];
    const sockets: string[] = [];
    for (let i = 0; i < INSTANCES; i++) {
      const dir = mkdtempSync(join(tmpdir(), `qp-multi-${i}-`));
      chmodSync(dir, 0o755);
      const sock = join(dir, 'p.sock');
      sockets.push(sock);
      const cfg = writeConfig(
        dir,
        `checks: [rate_limit]\nquota_path: ${fq.path}\nsocket_group: quotapolicy\nlisten: ["unix:${sock}"]\n` +
          `rate_limit:\n  backend: ${backend}\n  url: "${SERVICE_STORE_URLS[backend]}"\n  limits: [[${L}, 3600]]\n  store_timeout_ms: 5000\n`,
      );
      const d = startDaemon(['--config', cfg]);
      daemons.push(d);
      await d.waitFor((l) => l.msg === 'front ready');
    }
    try {
      const user = uniq('mx');
      const work = sockets.flatMap((path) =>
        Array.from({ length: CONNECTIONS_PER_INSTANCE }, () =>
          exchange({ path }, [rcpt('someone@example.test', { sasl_username: user }).repeat(REQUESTS_PER_CONNECTION)], {
            replies: REQUESTS_PER_CONNECTION,
            timeoutMs: 30_000,
          }),
        ),
      );
      const all = (await Promise.all(work)).flatMap((r) => actions(r.text));
      assert.equal(all.length, INSTANCES * CONNECTIONS_PER_INSTANCE * REQUESTS_PER_CONNECTION);
      assert.equal(all.filter((a) => a === 'DUNNO').length, L);
      assert.equal(all.filter((a) => a === FAIL).length, all.length - L);
      // Which instance wins the L slots is a race; that all counted against one store is the point.
      const counted = (d: Daemon): number =>
        d.lines.filter((l) => l.msg === 'decision' && l.rate_verdict !== undefined).length;
      for (
        let i = 0;
        i < 100 && daemons.some((d) => counted(d) < CONNECTIONS_PER_INSTANCE * REQUESTS_PER_CONNECTION);
        i++
      )
        await new Promise((r) => setTimeout(r, 50));
      for (const d of daemons)
        assert.equal(counted(d), CONNECTIONS_PER_INSTANCE * REQUESTS_PER_CONNECTION, 'log lines trail the replies');
    } finally {
      for (const d of daemons) await d.stop();
    }
  });
}
