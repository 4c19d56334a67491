// The report's judgement of scenario (b): issue 13 asks for >= 1x Dovecot at
// every connection count, on quotapolicy configured as Dovecot's fs backend
// is (the user's quota only); the default quota_kinds row is shown, not judged.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { B_DEFAULT_KINDS, B_LIKE_FOR_LIKE, CONNECTIONS, renderReport, type Measured } from '../bench/report.js';

const row = (system: string, perCount: number[]): Measured => ({
  scenario: 'b',
  system,
  startupMs: 1,
  processes: [],
  points: CONNECTIONS.map((connections, i) => ({
    connections,
    reqPerSec: perCount[i]!,
    requests: 1,
    seconds: 1,
    errors: 0,
    p50Ms: 1,
    p99Ms: 1,
    maxMs: 1,
  })),
});
const report = (like: number[], dflt: number[], dovecot: number[]): string[] =>
  renderReport({
    when: '2026-12-01T00:00:00Z',
    short: false,
    secondsPerPoint: 1,
    machine: {},
    measured: [row(B_LIKE_FOR_LIKE, like), row(B_DEFAULT_KINDS, dflt), row('Dovecot quota-status (fs)', dovecot)],
  })
    .split('\n')
    .filter((l) => l.startsWith('| (b)'));

test('(b) is met only when the like-for-like row is at least Dovecot at every connection count', () => {
  // Better at its best count (300 > 80) but behind at 1 connection: not met.
  const [like, dflt] = report([20, 90, 200, 300], [10, 20, 30, 40], [60, 80, 80, 80]);
  assert.match(
    like!,
    /quota_kinds \[user\].*\| >= 1x at every count \| 0\.33x at worst \(1: 0\.33x, 8: 1\.13x, 32: 2\.50x, 128: 3\.75x\) \| \*\*no\*\* \|$/,
  );
  assert.match(dflt!, /default quota_kinds.*\| not judged \| 0\.17x at worst .*\| - \|$/);
  const [met] = report([60, 80, 90, 100], [1, 1, 1, 1], [60, 80, 80, 80]);
  assert.match(met!, /\| 1\.00x at worst .*\| yes \|$/);
});

test('a point that answered nothing (NaN latencies, null once through JSON) is rendered n/a', () => {
  const silent = row('Dovecot quota-status (fs)', [60, 80, 0, 0]);
  for (const p of silent.points.slice(2)) Object.assign(p, { p50Ms: NaN, p99Ms: NaN, maxMs: NaN });
  const measured = JSON.parse(JSON.stringify([row(B_LIKE_FOR_LIKE, [1, 2, 3, 4]), silent])) as Measured[];
  const text = renderReport({ when: '2026-12-01T00:00:00Z', short: true, secondsPerPoint: 1, machine: {}, measured });
  assert.match(text, /\| Dovecot quota-status \(fs\) \| 60\.0 \| 80\.0 \| 0\.0 \| 0\.0 \| n\/a \/ n\/a \/ n\/a \|/);
});

test('(b) with a row missing is not met', () => {
  const lines = renderReport({
    when: '2026-12-01T00:00:00Z',
    short: false,
    secondsPerPoint: 1,
    machine: {},
    measured: [row('Dovecot quota-status (fs)', [60, 80, 80, 80])],
  })
    .split('\n')
    .filter((l) => l.startsWith('| (b)'));
  assert.match(lines[0]!, /\| n\/a at worst .*\| \*\*no\*\* \|$/);
});
