// One error model (src/shared/errors.ts): every error code has an exit
// status, every status a line in --help, every command maps errors with
// exitFor() alone, and no process exits with a bare number. Failed decisions
// carry their cause as a code (Fault) to the metrics and the log line, not
// as prose parsed back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { EXIT, ERROR_EXIT, QpError, exitFor, type ErrorCode } from '../src/shared/errors.js';
import { PROCESS_EXIT } from '../src/shared/exit.js';
import { EXIT_HELP, USAGE } from '../src/cli/main.js';
import { ConfigError, loadConfig, parseConfig } from '../src/shared/config/load.js';
import { UsageError } from '../src/shared/options.js';
import { TrustError } from '../src/helper/startup/trust.js';
import { PidFileError } from '../src/helper/startup/pidfile.js';
import { ListenError } from '../src/helper/startup/listeners.js';
import { StoreError } from '../src/frontend/ratelimit/store.js';
import { KeyIdError } from '../src/frontend/ratelimit/inspect.js';
import { PolicyService } from '../src/frontend/policy/service.js';
import { Metrics } from '../src/frontend/metrics.js';
import { QuotaStatus } from '../src/shared/wire.js';
import { QUOTA_STATUS_NAMES } from '../src/frontend/quota/wire-front.js';
import { REPO } from './support/daemon.js';

const exitSection = (): string => {
  const at = USAGE.indexOf('\nExit status:\n');
  assert.ok(at >= 0, '--help has an "Exit status:" section');
  return USAGE.slice(at);
};

test('every error code has an exit status, and that status a line in --help', () => {
  const statuses = new Set<number>(Object.values(EXIT));
  const section = exitSection();
  for (const [code, exit] of Object.entries(ERROR_EXIT)) {
    assert.match(code, /^QP_[A-Z_]+$/, 'codes are stable QP_ names');
    assert.ok(statuses.has(exit), `${code}: exit ${exit} is not in EXIT`);
    assert.match(section, new RegExp(`^ {2}${exit} +\\S`, 'm'), `${code}: --help lists no exit ${exit}`);
    assert.equal(new QpError(code as ErrorCode, 'x').exit, exit);
  }
  // And --help lists every status EXIT has, each once, with its meaning, and nothing else.
  const listed = [...section.matchAll(/^ {2}(\d+) +(.+)$/gm)].map((m) => [Number(m[1]), m[2]] as const);
  assert.deepEqual(
    listed.map(([n]) => n),
    [...statuses].sort((a, b) => a - b),
  );
  for (const [n, meaning] of listed) assert.equal(meaning, EXIT_HELP[n as keyof typeof EXIT_HELP]);
});

test('sysexits statuses keep their numbers; the daemon statuses are the shared ones', () => {
  assert.deepEqual(
    { ...EXIT },
    {
      OK: 0,
      FAILURE: 1,
      VIOLATION: 2,
      USAGE: 64,
      NOINPUT: 66,
      UNAVAILABLE: 69,
      SOFTWARE: 70,
      TEMPFAIL: 75,
      CONFIG: 78,
    },
  );
  for (const [k, v] of Object.entries(PROCESS_EXIT)) assert.equal(EXIT[k as keyof typeof EXIT], v);
});

test('each error class carries its code and status; exitFor() prints one line and returns it', () => {
  const cases: [Error, string, number][] = [
    [new UsageError('u'), 'QP_USAGE', 64],
    [new KeyIdError('k'), 'QP_USAGE', 64],
    [new ConfigError('c'), 'QP_CONFIG', 78],
    [new TrustError('t'), 'QP_TRUST', 78],
    [new PidFileError('p'), 'QP_PID_FILE', 78],
    [new ListenError('l'), 'QP_LISTEN', 78],
    [new QpError('QP_START', 's'), 'QP_START', 78],
    [new StoreError('st'), 'QP_STORE', 69],
    [new QpError('QP_UNREACHABLE', 'r'), 'QP_UNREACHABLE', 69],
    [new QpError('QP_NO_REPLY', 'n'), 'QP_NO_REPLY', 75],
  ];
  assert.deepEqual(new Set(cases.map(([, c]) => c)), new Set(Object.keys(ERROR_EXIT)), 'every code is covered here');
  for (const [e, code, exit] of cases) {
    assert.ok(e instanceof QpError, e.name);
    assert.equal(e.code, code);
    let said = '';
    assert.equal(
      exitFor(e, (s) => (said += s)),
      exit,
      code,
    );
    assert.equal(said, `quotapolicy: ${e.message}\n`);
  }
  let said = '';
  assert.equal(
    exitFor(new TypeError('boom'), (s) => (said += s)),
    EXIT.SOFTWARE,
  );
  assert.equal(said, 'quotapolicy: unexpected error: boom\n');
  said = '';
  assert.equal(
    exitFor('a string', (s) => (said += s)),
    EXIT.SOFTWARE,
  );
  assert.equal(said, 'quotapolicy: unexpected error: a string\n');
});

test("a QpError is never taken for an errno: loadConfig passes the reader's own refusal through unchanged", () => {
  const refusal = new TrustError('config file /x: it is writable by group or others');
  assert.throws(
    () =>
      loadConfig({
        path: '/x',
        read: () => {
          throw refusal;
        },
      }),
    (e: unknown) => e === refusal,
  );
  // An errno is still the config's error, naming the code.
  assert.throws(
    () =>
      loadConfig({
        path: '/x',
        read: () => {
          throw Object.assign(new Error('denied'), { code: 'EACCES' });
        },
      }),
    (e: unknown) => e instanceof ConfigError && e.message === 'cannot read config /x: EACCES',
  );
});

function sources(dir: string): string[] {
  return readdirSync(join(REPO, dir), { recursive: true })
    .map(String)
    .filter((f) => /\.(ts|js)$/.test(f))
    .map((f) => join(dir, f));
}

test('no process exits with a bare number, and no command maps errors by class or name', () => {
  // process.exit(1), exit(cond ? 0 : 1), exitCode = 1, stop(0, ...), return 0; and return (out(x), 0);
  const exits = /(?:process\.exit|\bexit|\bstop)\(\s*(?:[^)]*\?\s*)?-?\d|exitCode\s*=\s*-?\d/;
  // A command returns its status; elsewhere (a store counting rows) a returned number is just a number.
  const returns = /\breturn\s+-?\d+;|\breturn \(.*,\s*-?\d+\);/;
  const offenders: string[] = [];
  for (const f of [...sources('src/cli'), ...sources('src/helper'), ...sources('src/frontend'), 'bin/quotapolicy.js']) {
    const command = f.startsWith('src/cli/') || f.startsWith('src/helper/startup/') || f.startsWith('bin/');
    readFileSync(join(REPO, f), 'utf8')
      .split('\n')
      .forEach((line, i) => {
        if (exits.test(line) || (command && returns.test(line))) offenders.push(`${f}:${i + 1}: ${line.trim()}`);
      });
  }
  assert.deepEqual(offenders, [], 'exit statuses come from EXIT (src/shared/errors.ts)');
  for (const f of ['src/cli/main.ts', 'src/helper/startup/serve.ts']) {
    const text = readFileSync(join(REPO, f), 'utf8');
    // The whole handler: no instanceof chain, no name check beside it.
    assert.match(
      text,
      /\} catch \(e\) \{\n\s*return exitFor\(e, err\);\n\s*\}/,
      `${f} maps errors with exitFor() alone`,
    );
  }
});

function capture(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(String(chunk)) as Record<string, unknown>);
      done();
    },
  });
  return { log: pino({ level: 'info' }, sink), lines };
}

const rcpt = (user: string) =>
  new Map(
    Object.entries({
      request: 'smtpd_access_policy',
      protocol_state: 'RCPT',
      recipient: `${user}@example.org`,
      sasl_username: user,
    }),
  );

const counted = (m: Metrics): Record<string, number> =>
  Object.fromEntries([...m.errors.series()].map(([labels, n]) => [labels, n]));

const flush = () => new Promise((r) => setImmediate(r));

test('a failed quota lookup travels as its status code to the metric label and the log line', async () => {
  const failing = [
    QuotaStatus.Timeout,
    QuotaStatus.ExecFailed,
    QuotaStatus.Unparsable,
    QuotaStatus.OutputTooLarge,
    QuotaStatus.Complained,
  ];
  const { log, lines } = capture();
  const metrics = new Metrics();
  const uids = new Map(failing.map((_, i) => [`u${i}`, 2000 + i]));
  const svc = new PolicyService(
    parseConfig('checks: [quota]\n', 't'),
    '+',
    1000,
    {
      lookupUser: (n) => (uids.has(n) ? { uid: uids.get(n)!, gid: 100 } : undefined),
      queryQuota: (uid) => Promise.resolve({ uid, status: failing[uid - 2000]!, fs: [] }),
      metrics,
    },
    log,
  );
  for (const user of uids.keys()) await svc.answer(rcpt(user));
  await flush();
  const names = failing.map((s) => QUOTA_STATUS_NAMES[s]);
  assert.deepEqual(counted(metrics), Object.fromEntries(names.map((n) => [`kind="quota_${n}"`, 1])));
  const decisions = lines.filter((l) => l.msg === 'decision');
  assert.deepEqual(
    decisions.map((l) => l.error_kind),
    names.map((n) => [`quota_${n}`]),
  );
  // The prose stays for humans, unchanged.
  assert.deepEqual(
    decisions.map((l) => l.reason),
    names.map((n) => `quota lookup failed: ${n}`),
  );
});

test('a store failure is "store", an exception is "internal"; a clean decision has no error_kind', async () => {
  const { log, lines } = capture();
  const metrics = new Metrics();
  const svc = new PolicyService(
    parseConfig('checks: [quota, rate_limit]\nrate_limit:\n  limits: [[5, 60]]\n', 't'),
    '+',
    1000,
    {
      lookupUser: (n) => {
        if (n === 'nss') throw new Error('NSS is down: see how the reason reads');
        return n === 'ok' ? { uid: 2000, gid: 100 } : undefined;
      },
      queryQuota: (uid) => Promise.resolve({ uid, status: QuotaStatus.NoData, fs: [] }),
      openStore: () => Promise.reject(new StoreError('connection refused')),
      metrics,
    },
    log,
  );
  await svc.answer(rcpt('ok'));
  await svc.answer(rcpt('nss'));
  await flush();
  assert.deepEqual(counted(metrics), { 'kind="store"': 1, 'kind="internal"': 1 });
  const decisions = lines.filter((l) => l.msg === 'decision');
  assert.deepEqual(
    decisions.map((l) => l.error_kind),
    [['store'], ['internal']],
  );

  const quiet = capture();
  const fine = new PolicyService(
    parseConfig('checks: [quota]\n', 't'),
    '+',
    1000,
    { lookupUser: () => undefined, queryQuota: (uid) => Promise.resolve({ uid, status: QuotaStatus.NoData, fs: [] }) },
    quiet.log,
  );
  await fine.answer(rcpt('nobody'));
  await flush();
  const line = quiet.lines.find((l) => l.msg === 'decision');
  assert.ok(line && !('error_kind' in line), JSON.stringify(line));
});
