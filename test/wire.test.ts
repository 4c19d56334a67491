import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  DecodeError,
  FrameReader,
  MsgType,
  QuotaKind,
  WIRE_VERSION,
  QuotaStatus,
  MAX_QUERY_BYTES,
  MAX_REPLY_BYTES,
  MAX_BATCH,
  MAX_FS,
  MAX_MOUNT_BYTES,
  type Message,
  type UserQuota,
} from '../src/shared/wire.js';
import { encode, decode } from './support/wire.js';

const payload = (frame: Buffer): Buffer => frame.subarray(4);

test('every message type round-trips', () => {
  const msgs: Message[] = [
    { type: MsgType.Hello, version: WIRE_VERSION },
    { type: MsgType.HelloAck, version: WIRE_VERSION, minUid: 1000 },
    { type: MsgType.QuotaQuery, seq: 7, kind: QuotaKind.User, uids: [1000, 4294967293] },
    {
      type: MsgType.QuotaReply,
      seq: 7,
      kind: QuotaKind.User,
      users: [
        {
          uid: 1000,
          status: QuotaStatus.Ok,
          fs: [
            {
              mount: '/home',
              blocks: 1,
              blockSoft: 2,
              blockHard: 3,
              blockGrace: 4,
              files: 5,
              fileSoft: 6,
              fileHard: 7,
              fileGrace: 8,
            },
          ],
        },
        { uid: 1001, status: QuotaStatus.Timeout, fs: [] },
      ],
    },
  ];
  for (const m of msgs) assert.deepEqual(decode(payload(encode(m))), m);
});

test('truncated and extended payloads are refused', () => {
  const frame = payload(encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [1000] }));
  for (let n = 0; n < frame.length; n++) assert.throws(() => decode(frame.subarray(0, n)), DecodeError);
  assert.throws(() => decode(Buffer.concat([frame, Buffer.from([0])])), /trailing/);
});

test('unknown types, bad counts and out-of-range uids are refused', () => {
  assert.throws(() => decode(Buffer.from([9])), /unknown message type/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, 0, 0])), /batch size/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, 0, MAX_BATCH + 1])), /batch size/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, 0, 1, 0xff, 0xff, 0xff, 0xff])), /bad id/);
  // The quota kind: 0 user, 1 group, 2 project; nothing else, in either direction.
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, 3, 1, 0, 0, 3, 0xe8])), /quota kind/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaReply, 0, 0, 0, 1, 3, 0])), /quota kind/);
  for (const kind of [QuotaKind.Group, QuotaKind.Project]) {
    const q: Message = { type: MsgType.QuotaQuery, seq: 7, kind, uids: [0, 100, 0xfffffffd] };
    assert.deepEqual(decode(payload(encode(q))), q);
  }
  assert.throws(() => encode({ type: MsgType.QuotaQuery, seq: 1, kind: QuotaKind.User, uids: [-1] }), RangeError);
});

const lengthOnly = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
};

test("frame lengths of 0 or over the cap are refused before buffering: the helper's reader caps at a full query, the front's at a full reply", () => {
  assert.throws(() => new FrameReader().push(Buffer.from([0, 0, 0, 0])), DecodeError);
  assert.equal(MAX_QUERY_BYTES, 135);
  assert.equal(
    encode({
      type: MsgType.QuotaQuery,
      seq: 1,
      kind: QuotaKind.User,
      uids: Array.from({ length: MAX_BATCH }, (_, i) => 1000 + i),
    }).length,
    4 + MAX_QUERY_BYTES,
  );
  assert.deepEqual(new FrameReader().push(lengthOnly(MAX_QUERY_BYTES)), [], 'a full query length is waited for');
  assert.throws(() => new FrameReader().push(lengthOnly(MAX_QUERY_BYTES + 1)), DecodeError);
  assert.deepEqual(new FrameReader(MAX_REPLY_BYTES).push(lengthOnly(MAX_REPLY_BYTES)), []);
  assert.throws(() => new FrameReader(MAX_REPLY_BYTES).push(lengthOnly(MAX_REPLY_BYTES + 1)), DecodeError);
});

/** MAX_BATCH users, each on MAX_FS file systems with MAX_MOUNT_BYTES mount points. */
function worstReply(users = MAX_BATCH, fsPerUser = MAX_FS): UserQuota[] {
  return Array.from({ length: users }, (_, u) => ({
    uid: 1000 + u,
    status: QuotaStatus.Ok,
    fs: Array.from({ length: fsPerUser }, (_, f) => ({
      mount: `/srv/${f}/`.padEnd(MAX_MOUNT_BYTES, 'm'),
      blocks: 2 ** 53 - 1,
      blockSoft: 1,
      blockHard: 2,
      blockGrace: 3,
      files: 4,
      fileSoft: 5,
      fileHard: 6,
      fileGrace: 1795923751,
    })),
  }));
}

test(`the worst-case reply (${MAX_BATCH} users x ${MAX_FS} file systems x ${MAX_MOUNT_BYTES}-byte mount points) is exactly MAX_REPLY_BYTES (${MAX_REPLY_BYTES}) and round-trips`, () => {
  const frame = encode({ type: MsgType.QuotaReply, seq: 1, kind: QuotaKind.User, users: worstReply() });
  assert.equal(frame.length, 4 + MAX_REPLY_BYTES);
  assert.ok(MAX_REPLY_BYTES > 64 * 1024, 'the old 64 KiB cap could not carry it');
  const [p] = new FrameReader(MAX_REPLY_BYTES).push(frame);
  assert.deepEqual(decode(p!), { type: MsgType.QuotaReply, seq: 1, kind: QuotaKind.User, users: worstReply() });
});

test('encode refuses a reply decode would refuse for its counts: more than MAX_BATCH users or MAX_FS file systems', () => {
  assert.throws(
    () => encode({ type: MsgType.QuotaReply, seq: 1, kind: QuotaKind.User, users: worstReply(MAX_BATCH + 1, 0) }),
    /bad reply/,
  );
  assert.throws(
    () => encode({ type: MsgType.QuotaReply, seq: 1, kind: QuotaKind.User, users: worstReply(1, MAX_FS + 1) }),
    /bad reply/,
  );
});

test('frames split at any point reassemble', () => {
  const stream = Buffer.concat([
    encode({ type: MsgType.Hello, version: WIRE_VERSION }),
    encode({ type: MsgType.QuotaQuery, seq: 2, kind: QuotaKind.User, uids: [5000, 5001] }),
  ]);
  fc.assert(
    fc.property(fc.nat({ max: stream.length }), (cut) => {
      const r = new FrameReader();
      const got = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))].map(decode);
      assert.equal(got.length, 2);
      assert.equal(r.pending, 0);
    }),
  );
});

test('random payloads decode or throw DecodeError, nothing else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (arr) => {
      try {
        decode(Buffer.from(arr));
      } catch (e) {
        assert.ok(e instanceof DecodeError, String(e));
      }
    }),
    { numRuns: 5000 },
  );
});
