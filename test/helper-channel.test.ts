// The stand-alone root helper over its stdin/stdout channel: strict handshake,
// fatal on anything unexpected, and quota(1) never run for a bad frame.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO, fakeQuota, quotaBlock } from './support/daemon.js';
import {
  FrameReader,
  MsgType,
  QuotaKind,
  QuotaStatus,
  WIRE_VERSION,
  MAX_REPLY_BYTES,
  type Message,
} from '../src/shared/wire.js';
import { encode, decode } from './support/wire.js';

const HELPER = join(REPO, 'dist/src/helper/main.js');

function helper(quotaPath: string, extra: string[] = []) {
  const p = spawn(
    process.execPath,
    [HELPER, '--quota-path', quotaPath, '--timeout-ms', '1000', '--min-uid', '1000', ...extra],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  const frames = new FrameReader(MAX_REPLY_BYTES); // the front's reader: it takes replies
  const got: Message[] = [];
  let stderr = '';
  p.stdout.on('data', (c: Buffer) => {
    for (const f of frames.push(c)) got.push(decode(f));
  });
  p.stderr.on('data', (c: Buffer) => {
    stderr += c.toString();
  });
  const exit = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
  const waitFor = async (n: number): Promise<void> => {
    for (let i = 0; i < 200 && got.length < n; i++) await new Promise((r) => setTimeout(r, 10));
  };
  return { p, got, exit, waitFor, stderr: () => stderr };
}

const HELLO = encode({ type: MsgType.Hello, version: WIRE_VERSION });

test('hello, then a batch query answered with numbers', async () => {
  const fq = fakeQuota();
  fq.setOutput(2001, quotaBlock(2001, '150*', 100, 200, 1234567890));
  const h = helper(fq.path);
  h.p.stdin.write(HELLO);
  h.p.stdin.write(encode({ type: MsgType.QuotaQuery, seq: 9, kind: QuotaKind.User, uids: [2001, 2002] }));
  await h.waitFor(2);
  assert.deepEqual(h.got[0], { type: MsgType.HelloAck, version: WIRE_VERSION, minUid: 1000 });
  const reply = h.got[1] as Extract<Message, { type: MsgType.QuotaReply }>;
  assert.equal(reply.seq, 9);
  assert.equal(reply.users[0]!.fs[0]!.blocks, 150);
  assert.equal(reply.users[0]!.fs[0]!.blockGrace, 1234567890);
  assert.equal(reply.users[1]!.status, QuotaStatus.Ok);
  h.p.stdin.end();
  assert.equal(await h.exit, 0, 'channel closed by the front: clean exit');
});

const violations: [string, Buffer[]][] = [
  ['query before hello', [encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [2001] })]],
  ['wrong version', [encode({ type: MsgType.Hello, version: 99 })]],
  ['second hello', [HELLO, HELLO]],
  ['a reply type from the front', [HELLO, encode({ type: MsgType.HelloAck, version: WIRE_VERSION, minUid: 1 })]],
  ['uid below min_uid', [HELLO, encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [0] })]],
  [
    'uid below min_uid, not 0',
    [HELLO, encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [999] })],
  ],
  ["gid 0 (root's group)", [HELLO, encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.Group, uids: [0] })]],
  ['project 0', [HELLO, encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.Project, uids: [0] })]],
  ['duplicate uid', [HELLO, encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [2001, 2001] })]],
  ['zero-length frame', [HELLO, Buffer.from([0, 0, 0, 0])]],
  ['oversized frame length', [HELLO, Buffer.from([0x7f, 0, 0, 0])]],
  ['unknown type', [HELLO, Buffer.from([0, 0, 0, 1, 42])]],
  ['trailing bytes', [HELLO, Buffer.from([0, 0, 0, 4, MsgType.Hello, 0, 1, 0])]],
  ['truncated frame then EOF', [HELLO, Buffer.from([0, 0, 0, 10, MsgType.QuotaQuery])]],
  [
    'too many queries in flight',
    [
      HELLO,
      ...Array.from({ length: 9 }, (_, i) =>
        encode({ type: MsgType.QuotaQuery, seq: i, kind: QuotaKind.User, uids: [3000 + i] }),
      ),
    ],
  ],
];

for (const [name, frames] of violations) {
  test(`fatal: ${name}; quota(1) is not run for it`, async () => {
    const fq = fakeQuota();
    if (name.startsWith('too many')) fq.setMode('sleep');
    const h = helper(fq.path);
    for (const f of frames) h.p.stdin.write(f);
    h.p.stdin.end();
    assert.equal(await h.exit, 2);
    assert.match(h.stderr(), /channel protocol violation/);
    if (!name.startsWith('too many')) assert.deepEqual(fq.argv(), []);
    else assert.ok(fq.argv().length <= 8);
  });
}

test('bad arguments are refused with a usage line', async () => {
  for (const args of [
    ['--quota-path', 'relative'],
    ['--min-uid', '0'],
    ['--timeout-ms', '1e3'],
    ['--frob', 'x'],
    ['--quota-path'],
  ]) {
    const p = spawn(process.execPath, [HELPER, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    p.stderr.on('data', (c: Buffer) => {
      err += c.toString();
    });
    assert.equal(await new Promise((r) => p.on('exit', r)), 64, args.join(' '));
    assert.match(err, /usage: quotapolicy-helper/);
  }
});

test('a hanging quota(1) is killed at the timeout and answered as a timeout', async () => {
  const fq = fakeQuota();
  fq.setMode('sleep');
  const h = helper(fq.path);
  const t0 = Date.now();
  h.p.stdin.write(HELLO);
  h.p.stdin.write(encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [2001] }));
  await h.waitFor(2);
  const reply = h.got[1] as Extract<Message, { type: MsgType.QuotaReply }>;
  assert.equal(reply.users[0]!.status, QuotaStatus.Timeout);
  assert.ok(Date.now() - t0 < 3000);
  h.p.stdin.end();
  await h.exit;
});

for (const [mode, status] of [
  ['garbage', QuotaStatus.Unparsable],
  ['exit3', QuotaStatus.ExecFailed],
  ['stderr', QuotaStatus.Complained],
] as const) {
  test(`quota misbehaving (${mode}) is reported as a status, not numbers`, async () => {
    const fq = fakeQuota();
    fq.setMode(mode);
    const h = helper(fq.path);
    h.p.stdin.write(HELLO);
    h.p.stdin.write(encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [2001] }));
    await h.waitFor(2);
    assert.deepEqual((h.got[1] as Extract<Message, { type: MsgType.QuotaReply }>).users, [
      { uid: 2001, status, fs: [] },
    ]);
    h.p.stdin.end();
    await h.exit;
  });
}
