// `npm run bench`: every scenario of docs/BENCHMARKS.md in one run, as root.
//   (d) a trivial DUNNO server, the ceiling of the harness;
//   (a) quotapolicy's quota decision on a cache hit, against Dovecot quota-status (count backend);
//   (c) quotapolicy's rate limit on SQLite, Redis, PostgreSQL and MariaDB, against
//       policyd-rate-limit (SQLite) and postfwd, 1000 reused SASL users; MariaDB also with a
//       new SASL user per request; then PostgreSQL and both comparators again with a new
//       SASL user per request;
//   (b) the quota decision on a cache miss, real quota(1) on real kernel quotas,
//       against Dovecot quota-status (fs backend), inside user-mode-linux.
// Each at 1, 8, 32 and 128 connections; req/s, p50/p99/max latency, errors,
// peak RSS of every process, start-up time. Writes results.json, throughput.svg
// and the tables (docs/BENCHMARKS.md between its markers, or OUT/BENCHMARKS.md).
//   --short       a smoke run (BENCH_SECONDS default 0.3): CI runs it; its figures mean nothing
//   --out DIR     where to write (default docs/ for the full run, a temp dir for --short)
//   --only LIST   scenarios to run, e.g. --only a,d
// BENCH_SECONDS sets the seconds per point (default 5).
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, rmSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import {
  REPO,
  trivial,
  quotapolicy,
  standInQuota,
  dovecotQuotaStatus,
  policydRateLimit,
  postfwd,
  serviceDir,
} from './systems.js';
import { type Measured, type Results, machine, renderReport, REPORT_START, REPORT_END, NEW_ID } from './report.js';
import { measurer } from './measure.js';
import { postfixRequest, REQUEST_SEQ } from './loadgen.js';
import { plot } from './plot.js';
import { runUml } from './uml.js';

const { values: opts } = parseArgs({
  options: { short: { type: 'boolean', default: false }, out: { type: 'string' }, only: { type: 'string' } },
});
if (process.getuid?.() !== 0) {
  process.stderr.write(
    'bench: run as root (quotapolicy serve starts as root; Dovecot and postfwd drop privileges themselves)\n',
  );
  process.exit(1);
}
const SHORT = opts.short;
const SECONDS = Number(process.env.BENCH_SECONDS ?? (SHORT ? 0.3 : 5));
/** Before the measured points: JIT warm-up and caches filled, not recorded. */
const WARMUP_SECONDS = SHORT ? 0.1 : 1;
const only = new Set((opts.only ?? 'a,b,c,d').split(','));
const out = opts.out ?? (SHORT ? mkdtempSync(join(tmpdir(), 'qp-bench-out-')) : join(REPO, 'docs'));
const work = mkdtempSync(join(tmpdir(), 'qp-bench-'));
// The daemons under test drop privileges and read their configs from here.
chmodSync(work, 0o755);
mkdirSync(out, { recursive: true });

/** (a): one local user, as a cache hit is; everything else varies. */
const quotaRequest = (i: number): Record<string, string> => ({
  ...postfixRequest(i),
  recipient: 'nobody@example.test',
});
/** (c): 1000 distinct SASL users, each request counted. */
const rateRequest = (i: number): Record<string, string> => ({
  ...postfixRequest(i),
  sasl_username: `user${i % 1000}`,
  recipient: `r${i % 500}@example.net`,
});
/** (c), a new SASL user per request: as many distinct requests as a point sends at MariaDB's rate. */
const NEW_ID_POOL = 65_536;
const newIdRequest = (i: number): Record<string, string> => ({
  ...postfixRequest(i),
  sasl_username: `new${i}`,
  recipient: `r${i % 500}@example.net`,
});
/** (c), new id per request: a SASL user no request before it had (the load generator numbers them). */
const freshRateRequest = (i: number): Record<string, string> => ({
  ...rateRequest(i),
  sasl_username: `new${REQUEST_SEQ}`,
});
/** Windows never reached, so every request is counted (policyd-rate-limit's shape: a minute and a day). */
const LIMITS: [number, number][] = [
  [10_000_000, 60],
  [100_000_000, 86400],
];

const measure = measurer(SECONDS, WARMUP_SECONDS);
const measured: Measured[] = [];
const dir = (name: string): string => join(work, name);

if (only.has('d')) measured.push(await measure('d', () => trivial(work), quotaRequest));

if (only.has('a')) {
  const quota = standInQuota(dir('fake-quota'));
  measured.push(
    await measure(
      'a',
      () =>
        quotapolicy(
          'quotapolicy: quota, cache hit',
          dir('qp-a'),
          `quota_path: ${quota}\nmin_uid: 100\nrecipient_delimiter: "+"\ncache_ttl_ms: 3600000\n`,
        ),
      quotaRequest,
    ),
  );
  mkdirSync(dir('dovecot-count/home'), { recursive: true });
  spawnSync('chown', ['nobody', dir('dovecot-count/home')]);
  measured.push(
    await measure(
      'a',
      () =>
        dovecotQuotaStatus(
          dir('dovecot-count'),
          'count',
          `  driver = static\n  args = uid=nobody gid=nogroup home=${dir('dovecot-count/home')}/%n`,
        ),
      quotaRequest,
    ),
  );
}

if (only.has('c')) {
  const quota = standInQuota(dir('fake-quota-c'));
  const rate = (backend: string, url?: string): string =>
    `quota_path: ${quota}\nchecks: [rate_limit]\nrate_limit:\n  backend: ${backend}\n` +
    `  limits: ${JSON.stringify(LIMITS)}\n` +
    (url ? `  url: "${url}"\n` : `  sqlite_path: ${serviceDir(dir('qp-sqlite-store'))}/rl.sqlite3\n`);
  measured.push(
    await measure(
      'c',
      () => quotapolicy('quotapolicy: rate limit, SQLite', dir('qp-sqlite'), rate('sqlite')),
      rateRequest,
    ),
  );
  // A clean database 1 of the local Redis, and a fresh PostgreSQL database the service user owns.
  spawnSync('redis-cli', ['-h', '127.0.0.1', '-n', '1', 'FLUSHDB']);
  measured.push(
    await measure(
      'c',
      () => quotapolicy('quotapolicy: rate limit, Redis', dir('qp-redis'), rate('redis', 'redis://127.0.0.1:6379/1')),
      rateRequest,
    ),
  );
  const psql = (sql: string): void => {
    const r = spawnSync('su', ['postgres', '-c', `psql -qAt -c "${sql}"`], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  };
  psql('DROP DATABASE IF EXISTS quotapolicy_bench WITH (FORCE)');
  psql('CREATE DATABASE quotapolicy_bench OWNER quotapolicy');
  measured.push(
    await measure(
      'c',
      () =>
        quotapolicy(
          'quotapolicy: rate limit, PostgreSQL',
          dir('qp-pg'),
          rate('postgresql', 'postgresql://quotapolicy@%2Fvar%2Frun%2Fpostgresql/quotapolicy_bench'),
        ),
      rateRequest,
    ),
  );
  // A fresh MariaDB database the service user owns (it connects by unix_socket authentication, as root does).
  const mariadb = (sql: string): void => {
    const r = spawnSync('mariadb', ['-e', sql], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`mariadb: ${r.stderr}`);
  };
  mariadb(
    'DROP DATABASE IF EXISTS quotapolicy_bench; CREATE DATABASE quotapolicy_bench; ' +
      'CREATE USER IF NOT EXISTS quotapolicy@localhost IDENTIFIED VIA unix_socket; ' +
      'GRANT ALL ON quotapolicy_bench.* TO quotapolicy@localhost',
  );
  const mysqlUrl = 'mysql://quotapolicy@localhost/quotapolicy_bench?socketPath=/run/mysqld/mysqld.sock';
  measured.push(
    await measure(
      'c',
      () => quotapolicy('quotapolicy: rate limit, MariaDB', dir('qp-mysql'), rate('mysql', mysqlUrl)),
      rateRequest,
    ),
  );
  measured.push(
    await measure(
      'c',
      () =>
        quotapolicy(
          'quotapolicy: rate limit, MariaDB, new id per request',
          dir('qp-mysql-new'),
          rate('mysql', mysqlUrl),
        ),
      newIdRequest,
      NEW_ID_POOL,
    ),
  );
  measured.push(await measure('c', () => policydRateLimit(dir('prl'), JSON.stringify(LIMITS)), rateRequest));
  measured.push(await measure('c', () => postfwd(dir('postfwd'), LIMITS[0]![0], LIMITS[0]![1]), rateRequest));
  // The same, each request under a SASL user never seen before (issue 13's second shape): the shared SQL
  // store against the two comparators, each on fresh state.
  psql('DROP DATABASE IF EXISTS quotapolicy_bench WITH (FORCE)');
  psql('CREATE DATABASE quotapolicy_bench OWNER quotapolicy');
  measured.push(
    await measure(
      'c',
      () =>
        quotapolicy(
          `quotapolicy: rate limit, PostgreSQL${NEW_ID}`,
          dir('qp-pg-new'),
          rate('postgresql', 'postgresql://quotapolicy@%2Fvar%2Frun%2Fpostgresql/quotapolicy_bench'),
        ),
      freshRateRequest,
    ),
  );
  measured.push(
    await measure('c', () => policydRateLimit(dir('prl-new'), JSON.stringify(LIMITS), NEW_ID), freshRateRequest),
  );
  measured.push(
    await measure('c', () => postfwd(dir('postfwd-new'), LIMITS[0]![0], LIMITS[0]![1], NEW_ID), freshRateRequest),
  );
}

if (only.has('b')) measured.push(...(await runUml(dir('uml'), SECONDS, WARMUP_SECONDS, SHORT)));

const files = SHORT ? out : join(out, 'bench');
mkdirSync(files, { recursive: true });
const results: Results = {
  when: new Date().toISOString(),
  short: SHORT,
  secondsPerPoint: SECONDS,
  machine: machine(),
  measured,
};
writeFileSync(join(files, 'results.json'), JSON.stringify(results, null, 1) + '\n');
const svg = plot(
  'Policy requests per second against connections (higher is better)',
  measured.map((m) => ({ name: `${m.system} (${m.scenario})`, points: m.points })),
);
writeFileSync(join(files, 'throughput.svg'), svg);
const report = renderReport(results);
if (SHORT) {
  writeFileSync(join(out, 'BENCHMARKS.md'), report);
} else {
  const doc = readFileSync(join(out, 'BENCHMARKS.md'), 'utf8');
  const a = doc.indexOf(REPORT_START);
  const b = doc.indexOf(REPORT_END);
  if (a === -1 || b === -1) throw new Error(`docs/BENCHMARKS.md lacks the ${REPORT_START} ... ${REPORT_END} markers`);
  writeFileSync(join(out, 'BENCHMARKS.md'), doc.slice(0, a + REPORT_START.length) + '\n' + report + doc.slice(b));
}
rmSync(work, { recursive: true, force: true });
process.stderr.write(`bench: results in ${out}\n`);
