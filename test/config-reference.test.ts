// README's config reference is generated from the schema: it must match.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { configReference } from '../src/shared/config/reference.js';
import { USAGE } from '../src/cli/main.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

test('README config reference matches the schema (npm run docs regenerates it)', () => {
  const m = /<!-- config-reference:start -->\n([\s\S]*?)<!-- config-reference:end -->/.exec(readme);
  assert.ok(m, 'markers present');
  assert.equal(m[1], configReference());
});

test('README shows the --help text as the command reference', () => {
  assert.ok(readme.includes(USAGE.trim()), 'paste `quotapolicy --help` into README.md');
});

test('README starts with the two set-up commands, and .ci/run uses the same test command', () => {
  const firstBlock = /```sh\n([\s\S]*?)```/.exec(readme)![1]!;
  assert.match(firstBlock, /sudo scripts\/setup\.sh && sudo node bin\/quotapolicy\.js serve/);
  assert.match(firstBlock, /sudo scripts\/setup\.sh --test && sudo npm test/);
  const ci = readFileSync(new URL('../../.ci/run', import.meta.url), 'utf8');
  assert.match(ci, /^scripts\/setup\.sh --test\n/m);
  assert.match(ci, /^node bin\/quotapolicy\.js serve /m, "CI runs the README's first command before the suite");
  assert.match(ci, /\nnpm test\n$/);
});
