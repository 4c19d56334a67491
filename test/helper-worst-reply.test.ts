// The largest honest reply: MAX_BATCH users, each with quotas on MAX_FS file
// systems whose mount points are MAX_MOUNT_BYTES long. It used to exceed the
// 64 KiB frame cap: encode threw inside the helper and root died. Real helper,
// quota(1) output in the real format through the stand-in quota(1).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HelperClient } from '../src/frontend/quota/helper-client.js';
import { MAX_QUOTA_OUTPUT_BYTES } from '../src/helper/quota-run.js';
import {
  FrameReader,
  MsgType,
  QuotaKind,
  QuotaStatus,
  WIRE_VERSION,
  MAX_BATCH,
  MAX_FS,
  MAX_MOUNT_BYTES,
  MAX_REPLY_BYTES,
  type Message,
} from '../src/shared/wire.js';
import { encode, decode } from './support/wire.js';
import { fakeQuota, type FakeQuota } from './support/daemon.js';
import { startHelper, sleep } from './support/helper-proc.js';

/** 15 digits: the most the parser takes, and still an exact double. */
const BIG = '999999999999999';
const UIDS = Array.from({ length: MAX_BATCH }, (_, i) => 2000 + i);
const mountOf = (f: number): string => `/srv/nfs/export${String(f).padStart(2, '0')}/`.padEnd(MAX_MOUNT_BYTES, 'd');

/** quota -w -p -v --show-mntpoint --hide-device output for one user: "%15s %7s%c %6s %7s %7s %7s%c %6s %7s %7s". */
function worstBlock(uid: number): string {
  const rows = Array.from(
    { length: MAX_FS },
    (_, f) =>
      `${mountOf(f).padStart(15)} ${BIG.padStart(7)}  ${BIG.padStart(6)} ${BIG.padStart(7)} ${BIG.padStart(7)} ${BIG.padStart(7)}  ${BIG.padStart(6)} ${BIG.padStart(7)} ${BIG.padStart(7)}\n`,
  );
  return (
    `Disk quotas for user mailbox-user-with-a-long-name-${uid} (uid ${uid}): \n` +
    '     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n' +
    rows.join('')
  );
}

function worstQuota(): { fq: FakeQuota; outputBytes: number } {
  const fq = fakeQuota();
  let outputBytes = 0;
  for (const uid of UIDS) {
    fq.setOutput(uid, worstBlock(uid));
    outputBytes += Buffer.byteLength(worstBlock(uid));
  }
  return { fq, outputBytes };
}

function assertWorstUser(
  u: { uid: number; status: number; fs: { mount: string; blocks: number; fileGrace: number }[] },
  uid: number,
): void {
  assert.equal(u.uid, uid);
  assert.equal(u.status, QuotaStatus.Ok);
  assert.equal(u.fs.length, MAX_FS);
  u.fs.forEach((fs, f) => {
    assert.equal(fs.mount, mountOf(f));
    assert.equal(Buffer.byteLength(fs.mount), MAX_MOUNT_BYTES);
    assert.equal(fs.blocks, Number(BIG));
    assert.equal(fs.fileGrace, Number(BIG));
  });
}

test(`worst-case quota(1) output (${MAX_BATCH} users x ${MAX_FS} file systems x ${MAX_MOUNT_BYTES}-byte mount points) fits MAX_QUOTA_OUTPUT_BYTES; the helper answers with a reply of exactly MAX_REPLY_BYTES and stays up`, async (t) => {
  const { fq, outputBytes } = worstQuota();
  assert.ok(outputBytes > 256 * 1024, `${outputBytes} bytes: over the old 256 KiB output cap`);
  assert.ok(outputBytes <= MAX_QUOTA_OUTPUT_BYTES, `${outputBytes} bytes <= ${MAX_QUOTA_OUTPUT_BYTES}`);
  const h = startHelper(fq.path, 10_000);
  t.after(() => h.kill());
  const frames = new FrameReader(MAX_REPLY_BYTES);
  const got: Buffer[] = [];
  h.p.stdout.on('data', (c: Buffer) => got.push(...frames.push(c)));
  h.p.stdin.write(encode({ type: MsgType.Hello, version: WIRE_VERSION }));
  h.p.stdin.write(encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: UIDS }));
  for (let i = 0; i < 500 && got.length < 2 && h.p.exitCode === null; i++) await sleep(20);
  assert.equal(h.p.exitCode, null, `the helper died: ${h.stderr()}`);
  assert.equal(got.length, 2);
  assert.equal(got[1]!.length, MAX_REPLY_BYTES, 'the computed bound is reached, not just approached');
  const reply = decode(got[1]!) as Extract<Message, { type: MsgType.QuotaReply }>;
  assert.equal(reply.seq, 1);
  reply.users.forEach((u, i) => assertWorstUser(u, UIDS[i]!));

  h.p.stdin.write(encode({ type: MsgType.QuotaQuery, seq: 2, kind: QuotaKind.User, uids: [2000] }));
  for (let i = 0; i < 500 && got.length < 3; i++) await sleep(20);
  assert.equal((decode(got[2]!) as Extract<Message, { type: MsgType.QuotaReply }>).seq, 2, 'still answering');
  h.p.stdin.end();
  assert.equal(await h.exit, 0);
});

test('the front takes the worst-case reply too: 32 lookups in one tick through HelperClient get all their numbers', async (t) => {
  const { fq } = worstQuota();
  const h = startHelper(fq.path, 10_000);
  t.after(() => h.kill());
  const c = new HelperClient(h.channel(), 10_000);
  await c.hello();
  const got = await Promise.all(UIDS.map((uid) => c.query(uid)));
  assert.equal(fq.argv().length, 1, 'one batch, one quota(1) run');
  got.forEach((u, i) => assertWorstUser(u, UIDS[i]!));
  c.close('test done');
  assert.equal(await h.exit, 0);
});
