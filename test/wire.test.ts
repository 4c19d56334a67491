import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encode, decode, DecodeError, FrameReader, MsgType, QuotaStatus, MAX_FRAME_BYTES, MAX_BATCH, type Message } from '../src/shared/wire.js';

const payload = (frame: Buffer): Buffer => frame.subarray(4);

test('every message type round-trips', () => {
  const msgs: Message[] = [
    { type: MsgType.Hello, version: 1 },
    { type: MsgType.HelloAck, version: 1, minUid: 1000 },
    { type: MsgType.QuotaQuery, seq: 7, uids: [1000, 4294967293] },
    { type: MsgType.QuotaReply, seq: 7, users: [
      { uid: 1000, status: QuotaStatus.Ok, fs: [{ mount: '/home', blocks: 1, blockSoft: 2, blockHard: 3, blockGrace: 4, files: 5, fileSoft: 6, fileHard: 7, fileGrace: 8 }] },
      { uid: 1001, status: QuotaStatus.Timeout, fs: [] },
    ] },
  ];
  for (const m of msgs) assert.deepEqual(decode(payload(encode(m))), m);
});

test('truncated and extended payloads are refused', () => {
  const frame = payload(encode({ type: MsgType.QuotaQuery, seq: 1, uids: [1000] }));
  for (let n = 0; n < frame.length; n++) assert.throws(() => decode(frame.subarray(0, n)), DecodeError);
  assert.throws(() => decode(Buffer.concat([frame, Buffer.from([0])])), /trailing/);
});

test('unknown types, bad counts and out-of-range uids are refused', () => {
  assert.throws(() => decode(Buffer.from([9])), /unknown message type/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, 0])), /batch size/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, MAX_BATCH + 1])), /batch size/);
  assert.throws(() => decode(Buffer.from([MsgType.QuotaQuery, 0, 0, 0, 1, 1, 0xff, 0xff, 0xff, 0xff])), /bad uid/);
  assert.throws(() => encode({ type: MsgType.QuotaQuery, seq: 1, uids: [-1] }), RangeError);
});

test('frame lengths of 0 or over the cap are refused before buffering', () => {
  assert.throws(() => new FrameReader().push(Buffer.from([0, 0, 0, 0])), DecodeError);
  const big = Buffer.alloc(4);
  big.writeUInt32BE(MAX_FRAME_BYTES + 1);
  assert.throws(() => new FrameReader().push(big), DecodeError);
});

test('frames split at any point reassemble', () => {
  const stream = Buffer.concat([encode({ type: MsgType.Hello, version: 1 }), encode({ type: MsgType.QuotaQuery, seq: 2, uids: [5000, 5001] })]);
  fc.assert(fc.property(fc.nat({ max: stream.length }), (cut) => {
    const r = new FrameReader();
    const got = [...r.push(stream.subarray(0, cut)), ...r.push(stream.subarray(cut))].map(decode);
    assert.equal(got.length, 2);
    assert.equal(r.pending, 0);
  }));
});

test('random payloads decode or throw DecodeError, nothing else', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (arr) => {
    try { decode(Buffer.from(arr)); } catch (e) { assert.ok(e instanceof DecodeError, String(e)); }
  }), { numRuns: 5000 });
});
