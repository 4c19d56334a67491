import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decideQuota } from '../src/frontend/quota/quota-decision.js';
import type { FsQuota } from '../src/shared/wire.js';

const NOW = 1_800_000_000;
const fs = (o: Partial<FsQuota>): FsQuota => ({
  mount: '/home',
  blocks: 10,
  blockSoft: 100,
  blockHard: 200,
  blockGrace: 0,
  files: 2,
  fileSoft: 10,
  fileHard: 20,
  fileGrace: 0,
  ...o,
});

const table: [string, FsQuota[], number, string | undefined][] = [
  ['under quota', [fs({})], 0, 'pass'],
  ['usage equal to soft: not over', [fs({ blocks: 100 })], 0, 'pass'],
  ['over soft, grace running', [fs({ blocks: 150, blockGrace: NOW + 60 })], 0, 'grace'],
  ['over soft, grace expired', [fs({ blocks: 150, blockGrace: NOW - 1 })], 0, 'over_quota'],
  ['over soft, grace ends this second', [fs({ blocks: 150, blockGrace: NOW })], 0, 'over_quota'],
  ['blocks at hard limit', [fs({ blocks: 200, blockGrace: NOW + 60 })], 0, 'over_quota'],
  ['files at hard limit', [fs({ files: 20, fileGrace: NOW + 60 })], 0, 'over_quota'],
  ['files over soft, grace expired', [fs({ files: 11, fileGrace: NOW - 5 })], 0, 'over_quota'],
  ['files over soft, grace running', [fs({ files: 11, fileGrace: NOW + 5 })], 0, 'grace'],
  ['message fits', [fs({})], 100 * 1024, 'pass'],
  ['message fits exactly', [fs({ blocks: 100 })], 100 * 1024, 'pass'],
  ['message does not fit', [fs({ blocks: 150, blockGrace: NOW + 60 })], 60 * 1024, 'does_not_fit'],
  ['message larger than the whole quota', [fs({})], 201 * 1024, 'too_large'],
  ['too large wins over full', [fs({ blocks: 200 })], 300 * 1024, 'too_large'],
  ['a partial KiB counts as one', [fs({ blocks: 199 })], 1025, 'does_not_fit'],
  ['soft only: a message past soft is allowed (starts grace)', [fs({ blockHard: 0 })], 500 * 1024, 'pass'],
  ['no limits at all', [fs({ blockSoft: 0, blockHard: 0, fileSoft: 0, fileHard: 0 })], 0, undefined],
  ['worst file system decides', [fs({}), fs({ mount: '/var/mail', blocks: 200 })], 0, 'over_quota'],
];

for (const [name, rows, size, want] of table) {
  test(`decision: ${name}`, () => {
    assert.equal(decideQuota(rows, size, NOW, [])?.verdict, want);
  });
}

test('only the configured file systems count', () => {
  const rows = [fs({}), fs({ mount: '/var/mail', blocks: 200 })];
  assert.equal(decideQuota(rows, 0, NOW, ['/home'])?.verdict, 'pass');
  assert.equal(decideQuota(rows, 0, NOW, ['/var/mail'])?.verdict, 'over_quota');
  assert.equal(decideQuota(rows, 0, NOW, ['/srv']), undefined);
});

test('reasons name the file system and the numbers', () => {
  assert.match(decideQuota([fs({ blocks: 200 })], 0, NOW, [])!.reason, /hard limit on \/home \(200\/200 KiB\)/);
});
