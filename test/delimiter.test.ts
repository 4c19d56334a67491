// recipient_delimiter resolution: config first, then Postfix's postconf, else "+".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { resolveDelimiters, FALLBACK_DELIMITER } from '../src/frontend/quota/delimiter.js';

function fakePostconf(dir: string, body: string): string {
  const p = join(dir, 'postconf');
  writeFileSync(p, `#!/bin/sh\ntouch ${dir}/ran\n${body}\n`);
  chmodSync(p, 0o755);
  return p;
}

test('the configured value wins; postconf is not asked', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-delim-'));
  writeFileSync(join(dir, 'main.cf'), '');
  assert.deepEqual(await resolveDelimiters('-+', fakePostconf(dir, 'echo "#"'), join(dir, 'main.cf')), {
    delimiters: '-+',
    source: 'config',
  });
  assert.equal(existsSync(join(dir, 'ran')), false);
});

test('with a main.cf, postconf answers; without one it is not run at all (its fatal path sleeps a second)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-delim-'));
  const postconf = fakePostconf(dir, 'echo "+-"');
  assert.deepEqual(await resolveDelimiters(null, postconf, join(dir, 'main.cf')), {
    delimiters: FALLBACK_DELIMITER,
    source: `default "+" (no ${join(dir, 'main.cf')})`,
  });
  assert.equal(existsSync(join(dir, 'ran')), false, 'postconf not run');
  writeFileSync(join(dir, 'main.cf'), 'recipient_delimiter = +-\n');
  assert.deepEqual(await resolveDelimiters(null, postconf, join(dir, 'main.cf')), {
    delimiters: '+-',
    source: 'postconf',
  });
});

test('postconf failing or missing falls back to "+", saying why', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-delim-'));
  writeFileSync(join(dir, 'main.cf'), '');
  assert.equal(
    (await resolveDelimiters(null, fakePostconf(dir, 'exit 1'), join(dir, 'main.cf'))).source,
    'default "+" (postconf failed)',
  );
  assert.equal(
    (await resolveDelimiters(null, join(dir, 'absent'), join(dir, 'main.cf'))).source,
    'default "+" (no postconf)',
  );
});
