// CI's smoke run of the benchmarks (`npm run bench -- --short`): every system of
// every scenario starts, answers and is measured, the report and the plot are
// written. No timing is asserted: on a shared CI machine the figures mean nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REPO } from './support/daemon.js';
import { B_DEFAULT_KINDS, B_LIKE_FOR_LIKE, CONNECTIONS, type Results } from '../bench/report.js';

const SYSTEMS: [string, string][] = [
  ['d', 'trivial DUNNO server'],
  ['a', 'quotapolicy: quota, cache hit'],
  ['a', 'Dovecot quota-status (count)'],
  ['c', 'quotapolicy: rate limit, SQLite'],
  ['c', 'quotapolicy: rate limit, Redis'],
  ['c', 'quotapolicy: rate limit, PostgreSQL'],
  ['c', 'quotapolicy: rate limit, MariaDB'],
  ['c', 'quotapolicy: rate limit, MariaDB, new id per request'],
  ['c', 'policyd-rate-limit (SQLite)'],
  ['c', 'postfwd (rate, in memory)'],
  ['c', 'quotapolicy: rate limit, PostgreSQL, new id per request'],
  ['c', 'policyd-rate-limit (SQLite), new id per request'],
  ['c', 'postfwd (rate, in memory), new id per request'],
  ['b', B_LIKE_FOR_LIKE],
  ['b', B_DEFAULT_KINDS],
  ['b', 'Dovecot quota-status (fs)'],
];

test(
  'npm run bench -- --short: every scenario and comparator runs; results, report and plot are written',
  { timeout: 10 * 60_000 },
  () => {
    const out = mkdtempSync(join(tmpdir(), 'qp-bench-smoke-'));
    const r = spawnSync(process.execPath, [join(REPO, 'dist/bench/run.js'), '--short', '--out', out], {
      encoding: 'utf8',
      env: { ...process.env, BENCH_SECONDS: '0.2' },
      timeout: 9 * 60_000,
    });
    assert.equal(r.status, 0, `bench failed:\n${r.stderr.slice(-4000)}`);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as Results;
    assert.deepEqual(res.measured.map((m) => [m.scenario, m.system]).sort(), [...SYSTEMS].sort());
    for (const m of res.measured) {
      assert.deepEqual(
        m.points.map((p) => p.connections),
        CONNECTIONS,
        m.system,
      );
      for (const p of m.points)
        assert.ok(p.requests > 0, `${m.system} at ${p.connections} connections answered nothing`);
      assert.ok(m.startupMs > 0 && m.processes.length > 0, `${m.system}: start-up and processes recorded`);
    }
    const qp = res.measured.find((m) => m.system === 'quotapolicy: quota, cache hit')!;
    assert.deepEqual(
      qp.processes.map((p) => p.name).sort(),
      ['front', 'helper (root)'],
      'both quotapolicy processes are measured',
    );
    const report = readFileSync(join(out, 'BENCHMARKS.md'), 'utf8');
    for (const t of [
      '(a) cache hit vs trivial server',
      '(c) SQLite vs policyd-rate-limit',
      '(c) PostgreSQL vs postfwd, new id per request',
      '(b) cache miss',
      'start-up to first answer',
    ])
      assert.ok(report.includes(t), t);
    assert.match(readFileSync(join(out, 'throughput.svg'), 'utf8'), /^<svg [^>]*>[\s\S]*<polyline[\s\S]*<\/svg>\n$/);
  },
);
