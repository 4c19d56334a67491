// The results of one bench run and their Markdown: a table per scenario and
// the targets of issue #5 with the measured ratio next to each.
import { cpus, totalmem, release } from 'node:os';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { LoadResult } from './loadgen.js';

export const CONNECTIONS = [1, 8, 32, 128];
export const REPORT_START = '<!-- bench:start (written by npm run bench) -->';
export const REPORT_END = '<!-- bench:end -->';

export type Scenario = 'a' | 'b' | 'c' | 'd';
/**
 * Scenario (b)'s quotapolicy rows. Dovecot's fs backend, as the bench configures it, reads the user's
 * quota only: the target is judged on quotapolicy configured likewise. The default quota_kinds also
 * read the primary group's quota and the mailbox's project (more work, more safety): shown, not judged.
 */
export const B_LIKE_FOR_LIKE = 'quotapolicy: quota, cache off, quota_kinds [user] (as Dovecot fs)';
export const B_DEFAULT_KINDS = 'quotapolicy: quota, cache off, default quota_kinds (user, group, project)';
/** Ends the name of a (c) system measured with a new SASL user per request (the others reuse 1000). */
export const NEW_ID = ', new id per request';
export interface Point extends LoadResult {
  connections: number;
}
export interface Measured {
  scenario: Scenario;
  system: string;
  startupMs: number;
  points: Point[];
  /** Peak RSS per process name (Dovecot and postfwd run many processes of one name). */
  processes: { name: string; count: number; maxMb: number; sumMb: number }[];
}
export interface Results {
  when: string;
  short: boolean;
  secondsPerPoint: number;
  machine: Record<string, string>;
  measured: Measured[];
}

const sh = (cmd: string, args: string[]): string => {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : 'not found';
};
const deb = (pkg: string): string => sh('dpkg-query', ['-W', '-f', '${Version}', pkg]);

export function machine(): Record<string, string> {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    version: string;
    dependencies: Record<string, string>;
  };
  return {
    cpu: `${cpus().length} x ${cpus()[0]?.model ?? '?'}`,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    kernel: release(),
    os: /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? '?',
    node: process.version,
    quotapolicy: pkg.version,
    'better-sqlite3': pkg.dependencies['better-sqlite3'] ?? '?',
    ioredis: pkg.dependencies.ioredis ?? '?',
    pg: pkg.dependencies.pg ?? '?',
    'dovecot-core': deb('dovecot-core'),
    'policyd-rate-limit': deb('policyd-rate-limit'),
    postfwd: deb('postfwd'),
    postgresql: sh('psql', ['--version']),
    mariadb: sh('mariadb', ['--version']),
    mysql2: pkg.dependencies.mysql2 ?? '?',
    redis: sh('redis-server', ['--version']).replace(/ sha=.*/, ''),
    'user-mode-linux': deb('user-mode-linux'),
    quota: deb('quota'),
  };
}

const peak = (m: Measured | undefined): number => (m ? Math.max(...m.points.map((p) => p.reqPerSec)) : NaN);
const at = (m: Measured | undefined, c: number): Point | undefined => m?.points.find((p) => p.connections === c);
const num = (n: number): string =>
  Number.isNaN(n) ? 'n/a' : n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1);
/** NaN (no request answered in a point) comes back from results.json, or from the guest's, as null. */
const ms = (n: number | null | undefined): string =>
  typeof n !== 'number' || Number.isNaN(n) ? 'n/a' : n < 10 ? n.toFixed(2) : n.toFixed(1);

export function renderReport(r: Results): string {
  const find = (s: Scenario, prefix: string, suffix = ''): Measured | undefined =>
    r.measured.find(
      (m) => m.scenario === s && m.system.startsWith(prefix) && m.system.endsWith(NEW_ID) === (suffix === NEW_ID),
    );
  const trivial = find('d', 'trivial');
  const qpA = find('a', 'quotapolicy');
  const dovecotCount = find('a', 'Dovecot');
  const qpB = r.measured.find((m) => m.scenario === 'b' && m.system === B_LIKE_FOR_LIKE);
  const qpBDefault = r.measured.find((m) => m.scenario === 'b' && m.system === B_DEFAULT_KINDS);
  const dovecotFs = find('b', 'Dovecot');
  const sqlite = find('c', 'quotapolicy: rate limit, SQLite');
  const redis = find('c', 'quotapolicy: rate limit, Redis');
  const mariadb = find('c', 'quotapolicy: rate limit, MariaDB');
  const mariadbNew = find('c', 'quotapolicy: rate limit, MariaDB', NEW_ID);
  const prl = find('c', 'policyd-rate-limit');
  const pf = find('c', 'postfwd');
  const pg = find('c', 'quotapolicy: rate limit, PostgreSQL');
  const prlNew = find('c', 'policyd-rate-limit', NEW_ID);
  const pfNew = find('c', 'postfwd', NEW_ID);
  const pgNew = find('c', 'quotapolicy: rate limit, PostgreSQL', NEW_ID);
  const rss = (name: string): number =>
    Math.max(
      ...r.measured
        .filter((m) => m.system.startsWith('quotapolicy') && m.scenario !== 'b')
        .flatMap((m) => m.processes.filter((p) => p.name === name).map((p) => p.maxMb)),
    );
  /** A "at least goal times" target: the goal is written once, for the text and the test. */
  const times = (
    what: string,
    a: Measured | undefined,
    b: Measured | undefined,
    goal: number,
    digits: number,
    figures: string,
  ): [string, string, string, boolean] => {
    const x = peak(a) / peak(b);
    return [what, `>= ${goal}x`, `${x.toFixed(digits)}x (${figures})`, x >= goal];
  };
  /** A target at every connection count (the worst ratio decides); `judged` false: shown, not judged. */
  const everyCount = (
    what: string,
    a: Measured | undefined,
    b: Measured | undefined,
    goal: number,
    judged: boolean,
  ): [string, string, string, boolean | undefined] => {
    const xs = CONNECTIONS.map((c) => (at(a, c)?.reqPerSec ?? NaN) / (at(b, c)?.reqPerSec ?? NaN));
    const worst = Math.min(...xs); // NaN when a point is missing
    const x = (n: number): string => (Number.isNaN(n) ? 'n/a' : `${n.toFixed(2)}x`);
    const got = `${x(worst)} at worst (${CONNECTIONS.map((c, i) => `${c}: ${x(xs[i]!)}`).join(', ')})`;
    return [what, judged ? `>= ${goal}x at every count` : 'not judged', got, judged ? worst >= goal : undefined];
  };
  const targets: [string, string, string, boolean | undefined][] = [
    times('(a) cache hit vs trivial server', qpA, trivial, 0.8, 2, `${num(peak(qpA))} vs ${num(peak(trivial))} req/s`),
    times(
      '(a) cache hit vs Dovecot quota-status (count)',
      qpA,
      dovecotCount,
      20,
      1,
      `${num(peak(dovecotCount))} req/s`,
    ),
    times('(c) SQLite vs policyd-rate-limit', sqlite, prl, 20, 1, `${num(peak(sqlite))} vs ${num(peak(prl))} req/s`),
    times('(c) SQLite vs postfwd', sqlite, pf, 3, 1, `${num(peak(pf))} req/s`),
    times('(c) Redis vs policyd-rate-limit', redis, prl, 20, 1, `${num(peak(redis))} req/s`),
    times('(c) MariaDB vs policyd-rate-limit', mariadb, prl, 10, 1, `${num(peak(mariadb))} req/s`),
    times('(c) MariaDB vs postfwd', mariadb, pf, 3, 1, `${num(peak(mariadb))} req/s`),
    times(
      '(c) MariaDB vs policyd-rate-limit, new id per request',
      mariadbNew,
      prlNew,
      10,
      1,
      `${num(peak(mariadbNew))} vs ${num(peak(prlNew))} req/s`,
    ),
    times(
      '(c) MariaDB vs postfwd, new id per request',
      mariadbNew,
      pfNew,
      3,
      1,
      `${num(peak(mariadbNew))} vs ${num(peak(pfNew))} req/s`,
    ),
    times('(c) PostgreSQL vs policyd-rate-limit', pg, prl, 10, 1, `${num(peak(pg))} vs ${num(peak(prl))} req/s`),
    times('(c) PostgreSQL vs postfwd', pg, pf, 3, 1, `${num(peak(pg))} vs ${num(peak(pf))} req/s`),
    times(
      '(c) PostgreSQL vs policyd-rate-limit, new id per request',
      pgNew,
      prlNew,
      10,
      1,
      `${num(peak(pgNew))} vs ${num(peak(prlNew))} req/s`,
    ),
    times(
      '(c) PostgreSQL vs postfwd, new id per request',
      pgNew,
      pfNew,
      3,
      1,
      `${num(peak(pgNew))} vs ${num(peak(pfNew))} req/s`,
    ),
    everyCount(
      '(b) cache miss: distinct users/s vs Dovecot quota-status (fs), quota_kinds [user] as Dovecot',
      qpB,
      dovecotFs,
      1,
      true,
    ),
    everyCount(
      '(b) the same with the default quota_kinds (also the group and the project: more work than Dovecot does)',
      qpBDefault,
      dovecotFs,
      1,
      false,
    ),
    [
      'p99 latency, 32 connections, (a)',
      '<= 10 ms',
      `${ms(at(qpA, 32)?.p99Ms)} ms`,
      (at(qpA, 32)?.p99Ms ?? Infinity) <= 10,
    ],
    [
      'p99 latency, 32 connections, (c) SQLite',
      '<= 10 ms',
      `${ms(at(sqlite, 32)?.p99Ms)} ms`,
      (at(sqlite, 32)?.p99Ms ?? Infinity) <= 10,
    ],
    ['front peak RSS, up to 128 connections', '<= 120 MB', `${num(rss('front'))} MB`, rss('front') <= 120],
    [
      'helper peak RSS, up to 128 connections',
      '<= 80 MB',
      `${num(rss('helper (root)'))} MB`,
      rss('helper (root)') <= 80,
    ],
    ['start-up to first answer, host', '<= 0.5 s', `${ms(qpA?.startupMs)} ms`, (qpA?.startupMs ?? Infinity) <= 500],
  ];
  const lines: string[] = [];
  lines.push(
    `Measured ${r.when.slice(0, 10)}, ${r.secondsPerPoint} s per point${r.short ? ' (**--short smoke run: these figures mean nothing**)' : ''}.`,
    '',
  );
  lines.push('### Targets', '', '| Target | Goal | Measured | Met |', '|---|---|---|---|');
  for (const [what, goal, got, ok] of targets)
    lines.push(`| ${what} | ${goal} | ${got} | ${ok === undefined ? '-' : ok ? 'yes' : '**no**'} |`);
  lines.push(
    '',
    'Ratios compare each system at its best connection count, except (b): at each connection count, as issue 13 asks.',
    '',
  );
  const scenarios: [Scenario, string][] = [
    ['d', '(d) the harness ceiling'],
    ['a', '(a) quota decision, cache hit'],
    ['c', '(c) rate limit, every request counted'],
    ['b', '(b) quota decision, cache miss: real quota(1), user-mode-linux (one CPU)'],
  ];
  for (const [s, title] of scenarios) {
    const ms_ = r.measured.filter((m) => m.scenario === s);
    if (ms_.length === 0) continue;
    lines.push(
      `### ${title}`,
      '',
      `| System | ${CONNECTIONS.map((c) => `${c} conn. req/s`).join(' | ')} | p50 / p99 / max ms at 32 | errors | start-up ms | peak RSS MB (processes) |`,
      `|---|${CONNECTIONS.map(() => '---:').join('|')}|---|---:|---:|---|`,
    );
    for (const m of ms_) {
      const p32 = at(m, 32);
      const errors = m.points.reduce((n, p) => n + p.errors, 0);
      const mem = m.processes
        .map((p) =>
          p.count > 1
            ? `${p.name} ${num(p.maxMb)} max, ${num(p.sumMb)} sum of ${p.count}`
            : `${p.name} ${num(p.maxMb)}`,
        )
        .join('; ');
      lines.push(
        `| ${m.system} | ${CONNECTIONS.map((c) => num(at(m, c)?.reqPerSec ?? NaN)).join(' | ')} | ${ms(p32?.p50Ms)} / ${ms(p32?.p99Ms)} / ${ms(p32?.maxMs)} | ${errors} | ${num(m.startupMs)} | ${mem} |`,
      );
    }
    lines.push('');
  }
  lines.push('### Machine and versions', '', '| | |', '|---|---|');
  for (const [k, v] of Object.entries(r.machine)) lines.push(`| ${k} | ${v} |`);
  lines.push('');
  return lines.join('\n');
}
