// alert_mail: the daemon mails a rate-limit alert as it happens, through a
// real SMTP server on loopback (Postfix's smtp-sink), with the client's key
// escaped; a server that is not there is one warning, never a lost answer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { parseConfig, ConfigError } from '../src/shared/config/load.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { ALERT_SUBJECT } from '../src/frontend/ratelimit/alert-mail.js';
import { storeConfig } from './support/stores.js';
import { freePort } from './support/daemon.js';

type Line = { level: number; msg: string; reason?: string; rate_id?: string };

function service(port: number) {
  const lines: Line[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l) as Line) });
  const cfg = parseConfig(
    'checks: [rate_limit]\nrate_limit:\n  limits: [[1, 60]]\n  alert_on_refusal: true\n  alert_mail: true\n' +
      `  report_from: qp@example.org\n  report_to: [admin@example.org, noc@example.org]\n  smtp_server: ["127.0.0.1", ${port}]\n`,
    't',
  );
  const sqlite = storeConfig('sqlite');
  const svc = new PolicyService(
    cfg,
    '+',
    1000,
    {
      lookupUser: () => undefined,
      queryQuota: () => Promise.reject(new Error('no quota check here')),
      openStore: () => openStore({ ...sqlite, ...cfg.rate_limit, sqlite_path: sqlite.sqlite_path, timeout_ms: 2000 }),
      now: () => 1_800_000_000_000,
    },
    log,
  );
  return { svc, lines };
}
const req = (sasl: string) =>
  new Map(
    Object.entries({
      request: 'smtpd_access_policy',
      protocol_state: 'RCPT',
      recipient: 'r@example.net',
      sender: 'a@example.org',
      client_address: '192.0.2.1',
      sasl_username: sasl,
    }),
  );
async function until<T>(f: () => T | undefined, what: string): Promise<T> {
  for (let i = 0; i < 100; i++) {
    const v = f();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('alert_mail: the first refusal is mailed to every report_to, the key escaped; later refusals in the window are not', async () => {
  const port = await freePort();
  const mailDir = mkdtempSync(join(tmpdir(), 'qp-alert-sink-'));
  chmodSync(mailDir, 0o777);
  // Fails (not skips) without smtp-sink: scripts/setup.sh installs Postfix.
  const sink = spawn('smtp-sink', ['-u', 'nobody', '-d', `${mailDir}/%H%M%S.`, `127.0.0.1:${port}`, '10'], {
    stdio: 'ignore',
  });
  await new Promise((r) => setTimeout(r, 300));
  try {
    const { svc, lines } = service(port);
    const who = 'mal\rlory';
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await svc.answer(req(who)));
    assert.deepEqual(answers, [
      'DUNNO',
      'DEFER_IF_PERMIT Rate limit reach, retry later',
      'DEFER_IF_PERMIT Rate limit reach, retry later',
    ]);
    await until(() => lines.find((l) => l.msg === 'rate limit alert mailed'), 'the mailed line');
    const mails = await until(() => {
      const files = readdirSync(mailDir);
      return files.length === 2 ? files.map((f) => readFileSync(join(mailDir, f), 'utf8')) : undefined;
    }, 'two mails');
    for (const m of mails) {
      assert.match(m, new RegExp(`^Subject: ${ALERT_SUBJECT}$`, 'm'));
      assert.match(
        m,
        /^first refusal of sasl:mal\\x0dlory in 60 s: sasl:mal\\x0dlory: 1 \+ 1 over 1 in 60 s; answered DEFER_IF_PERMIT Rate limit reach, retry later$/m,
      );
      assert.doesNotMatch(m, /mal\rlory/, 'no raw CR from the client in the mail');
    }
    assert.deepEqual(mails.map((m) => /X-Rcpt-Args: <([^>]+)>/.exec(m)![1]).sort(), [
      'admin@example.org',
      'noc@example.org',
    ]);
    assert.equal(lines.filter((l) => l.msg === 'rate limit alert').length, 1, 'one alert for three requests');
  } finally {
    sink.kill();
  }
});

test('alert_mail: no SMTP server is one warning with the reason; the answer was already given', async () => {
  const port = await freePort();
  const { svc, lines } = service(port);
  await svc.answer(req('bob'));
  assert.equal(await svc.answer(req('bob')), 'DEFER_IF_PERMIT Rate limit reach, retry later');
  const line = await until(() => lines.find((l) => l.msg === 'rate limit alert not mailed'), 'the warning');
  assert.equal(line.level, 40);
  assert.equal(line.rate_id, 'bob');
  assert.match(line.reason!, new RegExp(`SMTP connect 127\\.0\\.0\\.1:${port}: .*ECONNREFUSED`));
});

test('alert_mail without alert_on_refusal, report_from or report_to is refused, naming what it needs', () => {
  for (const yaml of [
    'rate_limit:\n  alert_mail: true\n  report_from: a@example.org\n  report_to: b@example.org\n',
    'rate_limit:\n  alert_mail: true\n  alert_on_refusal: true\n  report_to: b@example.org\n',
    'rate_limit:\n  alert_mail: true\n  alert_on_refusal: true\n  report_from: a@example.org\n',
  ])
    assert.throws(() => parseConfig(yaml, 't'), {
      name: ConfigError.name,
      message: /^rate_limit\.alert_mail \(t\): needs alert_on_refusal: true, report_from and report_to$/,
    });
});
