// Runs every compiled test file under dist/test with node's test runner.
// QP_TEST_ONLY=substring narrows the files (e.g. QP_TEST_ONLY=uml).
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

const root = new URL('../dist/test/', import.meta.url).pathname;
const files = readdirSync(root, { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.test.js'))
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
