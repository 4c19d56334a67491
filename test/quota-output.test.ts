// The parser against what the real quota(1) printed under real kernel quotas.
// Fixtures: test/fixtures/quota, re-captured by test/uml/capture-fixtures.sh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseQuotaOutput, QuotaOutputError } from '../src/helper/quota-output.js';

const fixture = (name: string): string =>
  readFileSync(new URL(`../../test/fixtures/quota/${name}.stdout`, import.meta.url), 'utf8');

test('under quota', () => {
  const r = parseQuotaOutput(fixture('under'), [2001]);
  assert.deepEqual(r.get(2001), [
    {
      mount: '/home',
      blocks: 11,
      blockSoft: 1000,
      blockHard: 2000,
      blockGrace: 0,
      files: 2,
      fileSoft: 100,
      fileHard: 200,
      fileGrace: 0,
    },
  ]);
});

test('grace running: the * is dropped, grace is an epoch second', () => {
  const [row] = parseQuotaOutput(fixture('grace'), [2002]).get(2002)!;
  assert.equal(row!.blocks, 151);
  assert.ok(row!.blockGrace > 1_700_000_000);
});

test('at the hard limit, files at the hard limit, no quota, no passwd entry', () => {
  assert.equal(parseQuotaOutput(fixture('hard'), [2003]).get(2003)![0]!.blocks, 200);
  assert.equal(parseQuotaOutput(fixture('files'), [2004]).get(2004)![0]!.files, 5);
  assert.equal(parseQuotaOutput(fixture('noquota'), [2006]).get(2006)![0]!.blockHard, 0);
  assert.equal(parseQuotaOutput(fixture('nopasswd'), [4242]).get(4242)![0]!.blocks, 0);
});

test('a batch of several users', () => {
  const r = parseQuotaOutput(fixture('batch'), [2001, 2002, 2003, 4242]);
  assert.deepEqual([...r.keys()].sort(), [2001, 2002, 2003, 4242]);
});

test('strict: missing, unexpected or malformed blocks are refused', () => {
  assert.throws(() => parseQuotaOutput(fixture('batch'), [2001, 2002, 2003]), QuotaOutputError);
  assert.throws(() => parseQuotaOutput(fixture('under'), [2001, 2002]), QuotaOutputError);
  assert.throws(() => parseQuotaOutput(fixture('under').replace('/home', 'home'), [2001]), /mount point/);
  assert.throws(() => parseQuotaOutput(fixture('under').replace('1000', '1e3'), [2001]), QuotaOutputError);
  assert.throws(() => parseQuotaOutput(fixture('under').replace('Filesystem', 'Filesys'), [2001]), QuotaOutputError);
  assert.throws(() => parseQuotaOutput(fixture('under') + 'trailing junk\n', [2001]), QuotaOutputError);
  assert.throws(() => parseQuotaOutput('garbage\n', [1]), QuotaOutputError);
});
