// Wire fuzzing of the root helper: random, mutated and truncated frames. The
// helper ends the channel at the first bad frame and never runs quota(1) for
// it (or for anything after it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { serveChannel } from '../src/helper/channel.js';
import {
  FrameReader,
  MsgType,
  QuotaKind,
  QuotaStatus,
  WIRE_VERSION,
  MAX_INFLIGHT,
  type Message,
} from '../src/shared/wire.js';
import { encode, decode } from './support/wire.js';
import { prng } from './support/fuzz.js';
import { REPO, fakeQuota } from './support/daemon.js';

const MIN_UID = 1000;
export const HELPER_FUZZ_CASES = Number(process.env.QP_HELPER_FUZZ_CASES ?? 20_000);

function frames(rand: () => number): Buffer[] {
  const int = (n: number): number => Math.floor(rand() * n);
  const out: Buffer[] = [];
  if (rand() < 0.8) out.push(encode({ type: MsgType.Hello, version: rand() < 0.9 ? WIRE_VERSION : int(65536) }));
  for (let i = 0, n = int(6); i < n; i++) {
    const r = rand();
    const uids = Array.from({ length: 1 + int(4) }, () => (rand() < 0.8 ? 1000 + int(100) : int(2000)));
    const kind = rand() < 0.6 ? QuotaKind.User : ([QuotaKind.Group, QuotaKind.Project] as const)[int(2)]!;
    const good = encode({ type: MsgType.QuotaQuery, seq: int(1e6), kind, uids });
    if (r < 0.4) out.push(good);
    else if (r < 0.55) out.push(good.subarray(0, int(good.length)));
    else if (r < 0.7) {
      const b = Buffer.from(good);
      b[int(b.length)] = int(256);
      out.push(b);
    } else if (r < 0.8) out.push(Buffer.from(Array.from({ length: int(40) }, () => int(256))));
    else if (r < 0.9) {
      const b = Buffer.alloc(4 + int(20));
      b.writeUInt32BE(int(2) ? int(200_000) : b.length - 4);
      out.push(b);
    } else out.push(encode({ type: MsgType.Hello, version: WIRE_VERSION }));
  }
  return out;
}

/**
 * What a correct helper runs ([kind, ...ids]): valid queries after one valid HELLO, up to the first bad
 * frame. Id 0 is refused for every kind; min_uid bounds uids only; gids and project ids need only be in range.
 */
function expected(stream: Buffer): number[][] {
  const fr = new FrameReader();
  const runs: number[][] = [];
  let greeted = false;
  let inflight = 0;
  try {
    for (const p of fr.push(stream)) {
      const m: Message = decode(p);
      if (!greeted) {
        if (m.type !== MsgType.Hello || m.version !== WIRE_VERSION) return runs;
        greeted = true;
        continue;
      }
      if (
        m.type !== MsgType.QuotaQuery ||
        m.uids.some((u) => u === 0 || (m.kind === QuotaKind.User && u < MIN_UID)) ||
        new Set(m.uids).size !== m.uids.length ||
        ++inflight > MAX_INFLIGHT
      )
        return runs;
      runs.push([m.kind, ...m.uids]);
    }
  } catch {
    return runs;
  }
  return runs;
}

test(`helper channel: ${HELPER_FUZZ_CASES} random frame streams; quota runs only for valid queries before the first bad frame`, async () => {
  const rand = prng(4242);
  let violations = 0;
  // The helper logs each violation on stderr: count those lines instead of printing 20,000 of them.
  let logged = 0;
  const write = process.stderr.write.bind(process.stderr);
  process.stderr.write = (chunk: string | Uint8Array) => {
    logged += String(chunk).includes('channel protocol violation') ? 1 : 0;
    return true;
  };
  try {
    for (let c = 0; c < HELPER_FUZZ_CASES; c++) {
      const stream = Buffer.concat(frames(rand));
      const ran: number[][] = [];
      const input = new PassThrough();
      const output = new PassThrough();
      output.resume();
      const end = serveChannel(input, output, {
        minUid: MIN_UID,
        runQuota: async (uids, kind) => {
          ran.push([kind, ...uids]);
          return uids.map((uid) => ({ uid, status: QuotaStatus.NoData, fs: [] }));
        },
      });
      input.end(stream);
      const how = await end;
      if (how.kind === 'violation') violations++;
      assert.deepEqual(ran, expected(stream), `case ${c}: ${stream.toString('hex').slice(0, 120)}`);
    }
  } finally {
    process.stderr.write = write;
  }
  console.log(
    `helper fuzz: ${HELPER_FUZZ_CASES} streams, ${violations} ended by a violation, each logged once (${logged} lines)`,
  );
  assert.equal(logged, violations);
  assert.ok(violations > HELPER_FUZZ_CASES / 4);
});

test('the real helper process: a bad first frame after HELLO ends it with status 2 and quota(1) never runs', async () => {
  const rand = prng(99);
  for (let c = 0; c < 40; c++) {
    const fq = fakeQuota();
    const bad = Buffer.from(Array.from({ length: 4 + Math.floor(rand() * 30) }, () => Math.floor(rand() * 256)));
    bad.writeUInt32BE(Math.floor(rand() * 3) === 0 ? 0 : 0x7fffffff, 0);
    const p = spawn(process.execPath, [join(REPO, 'dist/src/helper/main.js'), '--quota-path', fq.path], {
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    p.stdin.end(Buffer.concat([encode({ type: MsgType.Hello, version: WIRE_VERSION }), bad]));
    assert.equal(await new Promise((r) => p.on('exit', r)), 2);
    assert.deepEqual(fq.argv(), []);
  }
});
