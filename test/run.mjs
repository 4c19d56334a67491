// Runs every compiled test file under dist/test with node's test runner.
// QP_TEST_ONLY=substring narrows the files (e.g. QP_TEST_ONLY=uml).
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
// `npm run test:unit` (QP_UNIT=1): the files that need no root, no user-mode-linux,
// no database server and no daemon, and finish in seconds (each passes run as
// nobody: setpriv --reuid=65534 --regid=65534 --clear-groups node --test FILE).
const UNIT = [
  'admission',
  'aliases',
  'bench-loadgen',
  'config',
  'config-reference',
  'connection',
  'delimiter',
  'error-model',
  'helper-backpressure',
  'helper-client',
  'helper-dedupe',
  'helper-worst-reply',
  'protocol-parser',
  'query-dry',
  'quota-check',
  'quota-check-aliases',
  'quota-decision',
  'quota-output',
  'quota-warning',
  'ratelimit-check',
  'ratelimit-decide',
  'ratelimit-keys',
  'ratelimit-limits-beyond',
  'ratelimit-sqlite-schema',
  'recipient',
  'smtp-report',
  'wire',
].map((name) => `${name}.test.js`);
const all = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.js'));
const missing = UNIT.filter((u) => !all.includes(u));
if (process.env.QP_UNIT && missing.length > 0) {
  console.error(`test/run.mjs: unit test files listed but not built: ${missing.join(', ')}`);
  process.exit(1);
}
const files = all
  .filter((f) => !process.env.QP_UNIT || UNIT.includes(f))
  .filter((f) => !process.env.QP_TEST_ONLY || f.includes(process.env.QP_TEST_ONLY))
  .sort()
  .map((f) => join(root, f));
if (files.length === 0) {
  console.error('no test files found: run npm run build first');
  process.exit(1);
}
// The benchmark smoke run loads both cores itself: it runs after the others, alone.
const ALONE = ['bench-smoke.test.js'];
const alone = files.filter((f) => ALONE.some((a) => f.endsWith(a)));
const shared = files.filter((f) => !alone.includes(f));
let status = 0;
for (const [group, concurrency] of [
  [shared, 2],
  [alone, 1],
]) {
  if (group.length === 0) continue;
  const r = spawnSync(
    process.execPath,
    ['--test', `--test-concurrency=${concurrency}`, '--test-reporter=spec', ...group],
    { stdio: 'inherit' },
  );
  if (r.status !== 0) status = r.status ?? 1;
}
process.exit(status);
