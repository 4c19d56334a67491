// The parser against what the real quota(1) printed under real kernel quotas.
// Fixtures: test/fixtures/quota, re-captured by test/uml/capture-fixtures.sh.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parseQuotaOutput, QuotaOutputError } from '../src/helper/quota-output.js';
import { QuotaKind } from '../src/shared/wire.js';

const fixture = (name: string): string =>
  readFileSync(new URL(`../../test/fixtures/quota/${name}.stdout`, import.meta.url), 'utf8');

test('under quota', () => {
  const r = parseQuotaOutput(fixture('under'), [2001], QuotaKind.User);
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
  const [row] = parseQuotaOutput(fixture('grace'), [2002], QuotaKind.User).get(2002)!;
  assert.equal(row!.blocks, 151);
  assert.ok(row!.blockGrace > 1_700_000_000);
});

test('at the hard limit, files at the hard limit, no quota, no passwd entry', () => {
  assert.equal(parseQuotaOutput(fixture('hard'), [2003], QuotaKind.User).get(2003)![0]!.blocks, 200);
  assert.equal(parseQuotaOutput(fixture('files'), [2004], QuotaKind.User).get(2004)![0]!.files, 5);
  assert.equal(parseQuotaOutput(fixture('noquota'), [2006], QuotaKind.User).get(2006)![0]!.blockHard, 0);
  assert.equal(parseQuotaOutput(fixture('nopasswd'), [4242], QuotaKind.User).get(4242)![0]!.blocks, 0);
});

test('a batch of several users', () => {
  const r = parseQuotaOutput(fixture('batch'), [2001, 2002, 2003, 4242], QuotaKind.User);
  assert.deepEqual([...r.keys()].sort(), [2001, 2002, 2003, 4242]);
});

test('strict: missing, unexpected or malformed blocks are refused', () => {
  assert.throws(() => parseQuotaOutput(fixture('batch'), [2001, 2002, 2003], QuotaKind.User), QuotaOutputError);
  assert.throws(() => parseQuotaOutput(fixture('under'), [2001, 2002], QuotaKind.User), QuotaOutputError);
  assert.throws(
    () => parseQuotaOutput(fixture('under').replace('/home', 'home'), [2001], QuotaKind.User),
    /mount point/,
  );
  assert.throws(
    () => parseQuotaOutput(fixture('under').replace('1000', '1e3'), [2001], QuotaKind.User),
    QuotaOutputError,
  );
  assert.throws(
    () => parseQuotaOutput(fixture('under').replace('Filesystem', 'Filesys'), [2001], QuotaKind.User),
    QuotaOutputError,
  );
  assert.throws(() => parseQuotaOutput(fixture('under') + 'trailing junk\n', [2001], QuotaKind.User), QuotaOutputError);
  assert.throws(() => parseQuotaOutput('garbage\n', [1], QuotaKind.User), QuotaOutputError);
});

test('group and project blocks (real quota -g and -P output); a block of another kind is refused', () => {
  const g = parseQuotaOutput(fixture('group'), [3000], QuotaKind.Group).get(3000)!;
  assert.deepEqual(
    g.map((r) => [r.mount, r.blocks, r.blockHard]),
    [
      ['/home', 200, 200],
      ['/home/prj', 0, 0],
    ],
  );
  assert.deepEqual(
    [...parseQuotaOutput(fixture('groupbatch'), [3000, 2102, 4343], QuotaKind.Group).keys()],
    [3000, 2102, 4343],
  );
  assert.equal(parseQuotaOutput(fixture('project'), [42], QuotaKind.Project).get(42)![0]!.blocks, 200);
  assert.throws(() => parseQuotaOutput(fixture('group'), [3000], QuotaKind.User), /unexpected block/);
  assert.throws(() => parseQuotaOutput(fixture('under'), [2001], QuotaKind.Group), /unexpected block/);
  assert.throws(() => parseQuotaOutput(fixture('project'), [42], QuotaKind.Group), /unexpected block/);
});
