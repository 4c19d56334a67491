// A front that sends valid queries but never reads the replies must not grow
// root's memory: the helper stops reading the channel (and starts no quota(1)
// run) while its replies are backed up, and carries on once the front reads.
// The attacker stays clear of the helper's MAX_INFLIGHT rule: it sends a query
// only while fewer than ATTACK_WINDOW of its queries have no finished quota(1)
// run, so the old helper ran every one and queued every 320 KiB reply.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, writeFileSync, chmodSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveChannel } from '../src/helper/channel.js';
import {
  FrameReader,
  MsgType,
  QuotaKind,
  QuotaStatus,
  WIRE_VERSION,
  MAX_BATCH,
  MAX_FS,
  MAX_MOUNT_BYTES,
  MAX_INFLIGHT,
  MAX_REPLY_BYTES,
  type Message,
  type UserQuota,
} from '../src/shared/wire.js';
import { encode, decode } from './support/wire.js';
import { startHelper, vmRssBytes, sleep } from './support/helper-proc.js';

/** Queries the attacker keeps ahead of finished quota(1) runs: under MAX_INFLIGHT, never a violation. */
const ATTACK_WINDOW = MAX_INFLIGHT / 2;
/** Replies root may hold for a front that does not read: those of the runs already started (~2.5 MiB). */
const HELD_REPLIES_BOUND = MAX_INFLIGHT * MAX_REPLY_BYTES;
/** VmRSS growth allowed on top: V8 heap growth while it parses ~400 KB outputs and encodes replies. */
const RSS_GROWTH_BOUND = HELD_REPLIES_BOUND + 20 * 1024 * 1024;
const UIDS = Array.from({ length: MAX_BATCH }, (_, i) => 2000 + i);
const HELLO = encode({ type: MsgType.Hello, version: WIRE_VERSION });
const query = (seq: number): Buffer => encode({ type: MsgType.QuotaQuery, seq, kind: QuotaKind.User, uids: UIDS });

const row = (f: number): string =>
  `${`/srv/nfs/export${f}/`.padEnd(MAX_MOUNT_BYTES, 'd')}  1234567  2000000  3000000       0   12345   100000   200000       0\n`;
const block = (uid: number): string =>
  `Disk quotas for user user${uid} (uid ${uid}): \n     Filesystem  blocks   quota   limit   grace   files   quota   limit   grace\n` +
  Array.from({ length: MAX_FS }, (_, f) => row(f)).join('');

/** A stand-in quota(1) that prints the worst-case output for UIDS, then logs the run as done. */
function catQuota(): { path: string; runs(): number } {
  const dir = mkdtempSync(join(tmpdir(), 'qp-catquota-'));
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'all.out'), UIDS.map(block).join(''));
  const path = join(dir, 'quota');
  writeFileSync(path, `#!/bin/sh\ncat ${dir}/all.out\necho done >> ${dir}/runs.log\n`, { mode: 0o755 });
  const log = join(dir, 'runs.log');
  return { path, runs: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').length - 1 : 0) };
}

function worstUsers(uids: number[]): UserQuota[] {
  return uids.map((uid) => ({
    uid,
    status: QuotaStatus.Ok,
    fs: Array.from({ length: MAX_FS }, (_, f) => ({
      mount: `/srv/nfs/export${f}/`.padEnd(MAX_MOUNT_BYTES, 'd'),
      blocks: 1,
      blockSoft: 2,
      blockHard: 3,
      blockGrace: 0,
      files: 4,
      fileSoft: 5,
      fileHard: 6,
      fileGrace: 0,
    })),
  }));
}

/** Replies read from a stream, once the test lets it be read. */
function replies(stream: NodeJS.ReadableStream): Message[] {
  const frames = new FrameReader(MAX_REPLY_BYTES);
  const got: Message[] = [];
  stream.on('data', (c: Buffer) => {
    for (const f of frames.push(c)) got.push(decode(f));
  });
  return got;
}

async function waitUntil(cond: () => boolean, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; !cond(); await sleep(20))
    if (Date.now() > end) throw new Error('timed out waiting');
}

test(`serveChannel over a real socket: a front that never reads holds root to at most MAX_INFLIGHT replies (${HELD_REPLIES_BOUND} bytes) and no new quota runs; it answers everything once the front reads`, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-backpressure-'));
  const server = net.createServer();
  await new Promise<void>((r) => server.listen(join(dir, 's'), r));
  const accepted = new Promise<net.Socket>((r) => server.once('connection', r));
  const front = net.connect(join(dir, 's'));
  const root = await accepted;
  server.close();
  t.after(() => {
    front.destroy();
    root.destroy();
  });
  let runs = 0;
  const end = serveChannel(root, root, {
    minUid: 1000,
    runQuota: async (uids) => {
      await sleep(1);
      runs++;
      return worstUsers(uids);
    },
  });
  front.pause(); // the front never reads
  front.write(HELLO);
  let [sent, maxHeld] = [0, 0];
  for (const stop = Date.now() + 1500; Date.now() < stop; await sleep(5)) {
    while (sent - runs < ATTACK_WINDOW) front.write(query(++sent));
    maxHeld = Math.max(maxHeld, root.writableLength);
  }
  console.log(`front sent ${sent} queries, ${runs} quota runs, root held at most ${maxHeld} reply bytes`);
  assert.ok(maxHeld <= HELD_REPLIES_BOUND, `root held ${maxHeld} bytes of replies`);
  assert.ok(runs <= MAX_INFLIGHT, `${runs} quota runs while the front did not read`);
  assert.ok(sent > runs, 'the front kept sending');

  const got = replies(front);
  front.resume();
  await waitUntil(() => got.length === 1 + sent);
  assert.equal(runs, sent, 'every query answered once the front reads');
  front.write(query(++sent));
  await waitUntil(() => got.length === 1 + sent);
  assert.deepEqual(
    got.slice(1).map((m) => (m as Extract<Message, { type: MsgType.QuotaReply }>).seq),
    Array.from({ length: sent }, (_, i) => i + 1),
  );
  front.end();
  assert.deepEqual(await end, { kind: 'closed' });
});

test(`the real helper and a front that sends for 4 s but never reads: VmRSS grows by at most ${RSS_GROWTH_BOUND} bytes, quota(1) stops being run, and the helper answers once the front reads`, async (t) => {
  const fq = catQuota();
  const h = startHelper(fq.path, 10_000);
  t.after(() => h.kill());
  const got = replies(h.p.stdout);
  h.p.stdin.write(HELLO);
  let sent = 0;
  for (let round = 0; round < 3; round++) {
    // warm-up, read: execa loaded, V8's heap grown to its working size
    for (let i = 0; i < ATTACK_WINDOW; i++) h.p.stdin.write(query(++sent));
    await waitUntil(() => got.length === 1 + sent);
  }
  await sleep(200);
  const base = vmRssBytes(h.p.pid!);

  h.p.stdout.pause(); // from here on the front never reads
  const warmUp = sent;
  let maxRss = base;
  const runsBefore = fq.runs();
  for (const stop = Date.now() + 4000; Date.now() < stop; await sleep(25)) {
    while (sent - fq.runs() < ATTACK_WINDOW) h.p.stdin.write(query(++sent));
    maxRss = Math.max(maxRss, vmRssBytes(h.p.pid!));
  }
  const attackRuns = fq.runs() - runsBefore;
  console.log(
    `front sent ${sent - warmUp} queries unread, ${attackRuns} quota runs; VmRSS ${base} -> max ${maxRss} (+${maxRss - base})`,
  );
  assert.ok(maxRss - base <= RSS_GROWTH_BOUND, `VmRSS grew by ${maxRss - base} bytes`);
  assert.ok(attackRuns <= MAX_INFLIGHT, `${attackRuns} quota runs while the front did not read`);
  assert.equal(h.p.exitCode, null);

  h.p.stdout.resume();
  await waitUntil(() => got.length === 1 + sent);
  h.p.stdin.write(query(++sent));
  await waitUntil(() => got.length === 1 + sent);
  const last = got.at(-1) as Extract<Message, { type: MsgType.QuotaReply }>;
  assert.equal(last.seq, sent);
  assert.deepEqual(
    last.users.map((u) => [u.status, u.fs.length]),
    UIDS.map(() => [QuotaStatus.Ok, MAX_FS]),
  );
  assert.doesNotMatch(h.stderr(), /protocol violation/);
  h.p.stdin.end();
  assert.equal(await h.exit, 0);
});
