// The front's end of the channel against a scripted helper over TCP loopback
// (a stream like the real socketpair; the framing and timing are what is tested).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { HelperClient, HELPER_REPLY_MARGIN_MS, QUOTA_RUNS_AT_ONCE } from '../src/frontend/quota/helper-client.js';
import {
  FrameReader,
  MsgType,
  QuotaKind,
  WIRE_VERSION,
  QuotaStatus,
  MAX_INFLIGHT,
  type Message,
} from '../src/shared/wire.js';
import { encode, decode } from './support/wire.js';

async function pair(): Promise<[net.Socket, net.Socket]> {
  return new Promise((resolve) => {
    let b: net.Socket;
    const srv = net.createServer((a) => {
      srv.close();
      resolve([a, b]);
    });
    srv.listen(0, '127.0.0.1', () => {
      b = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
    });
  });
}

function fakeHelper(sock: net.Socket, onQuery: (m: Extract<Message, { type: MsgType.QuotaQuery }>) => void): void {
  const fr = new FrameReader();
  sock.on('data', (c: Buffer) => {
    for (const f of fr.push(c)) {
      const m = decode(f);
      if (m.type === MsgType.Hello) sock.write(encode({ type: MsgType.HelloAck, version: WIRE_VERSION, minUid: 1234 }));
      else if (m.type === MsgType.QuotaQuery) onQuery(m);
    }
  });
}

test("hello returns the helper's min_uid; lookups in one tick share one query", async () => {
  const [a, b] = await pair();
  const queries: number[][] = [];
  fakeHelper(b, (m) => {
    queries.push(m.uids);
    b.write(
      encode({
        type: MsgType.QuotaReply,
        seq: m.seq,
        kind: QuotaKind.User,
        users: m.uids.map((uid) => ({ uid, status: QuotaStatus.NoData, fs: [] })),
      }),
    );
  });
  const c = new HelperClient(a, 1000);
  assert.equal(await c.hello(), 1234);
  const r = await Promise.all([c.query(2001), c.query(2002), c.query(2001)]);
  assert.deepEqual(queries, [[2001, 2002]]);
  assert.deepEqual(
    r.map((q) => q.uid),
    [2001, 2002, 2001],
  );
  c.close('test');
  b.destroy();
});

test(`never more than QUOTA_RUNS_AT_ONCE (${QUOTA_RUNS_AT_ONCE} <= MAX_INFLIGHT ${MAX_INFLIGHT}) queries outstanding; the rest wait and gather into batches`, async () => {
  const [a, b] = await pair();
  const held: Extract<Message, { type: MsgType.QuotaQuery }>[] = [];
  let maxOutstanding = 0;
  const sizes: number[] = [];
  fakeHelper(b, (m) => {
    held.push(m);
    sizes.push(m.uids.length);
    maxOutstanding = Math.max(maxOutstanding, held.length);
  });
  const c = new HelperClient(a, 5000);
  await c.hello();
  const all: Promise<unknown>[] = [];
  for (let i = 0; i < 20; i++) {
    all.push(c.query(3000 + i));
    await new Promise((r) => setImmediate(r)); // one query per tick
  }
  await new Promise((r) => setTimeout(r, 100));
  assert.ok(QUOTA_RUNS_AT_ONCE <= MAX_INFLIGHT);
  assert.equal(held.length, QUOTA_RUNS_AT_ONCE);
  assert.ok(
    held.every((m) => m.uids.length === 1),
    'the first runs start at once, one user each',
  );
  while (held.length > 0) {
    const m = held.shift()!;
    b.write(
      encode({
        type: MsgType.QuotaReply,
        seq: m.seq,
        kind: QuotaKind.User,
        users: m.uids.map((uid) => ({ uid, status: QuotaStatus.NoData, fs: [] })),
      }),
    );
    await new Promise((r) => setTimeout(r, 20));
  }
  await Promise.all(all);
  assert.equal(maxOutstanding, QUOTA_RUNS_AT_ONCE);
  assert.deepEqual(sizes, [1, 1, 18], 'the 18 asked for while two runs were out went in one batch');
  c.close('test');
  b.destroy();
});

test('a silent helper: the caller gets a timeout by its deadline', async () => {
  const [a, b] = await pair();
  fakeHelper(b, () => {});
  const c = new HelperClient(a, 100);
  await c.hello();
  const t0 = Date.now();
  assert.equal((await c.query(2001)).status, QuotaStatus.Timeout);
  assert.ok(Date.now() - t0 < 100 + HELPER_REPLY_MARGIN_MS + 500);
  c.close('test');
  b.destroy();
});

test('the channel closing answers everyone waiting with an error and emits closed', async () => {
  const [a, b] = await pair();
  fakeHelper(b, () => b.destroy());
  const c = new HelperClient(a, 5000);
  await c.hello();
  const closed = new Promise((r) => c.on('closed', r));
  assert.equal((await c.query(2001)).status, QuotaStatus.ExecFailed);
  await closed;
  assert.equal((await c.query(2002)).status, QuotaStatus.ExecFailed, 'after close, at once');
});

test('garbage from the helper closes the channel', async () => {
  const [a, b] = await pair();
  const c = new HelperClient(a, 5000);
  const closed = new Promise<string>((r) => c.on('closed', r));
  b.write(Buffer.from([0, 0, 0, 1, 99]));
  assert.match(await closed, /bad data from helper/);
  b.destroy();
});

test('each caller keeps its own deadline: one giving up does not answer a later caller for the same uid, which shares the query already out', async (t) => {
  const [a, b] = await pair();
  const held: Extract<Message, { type: MsgType.QuotaQuery }>[] = [];
  fakeHelper(b, (m) => held.push(m));
  const c = new HelperClient(a, 100); // callers give up after 100 + HELPER_REPLY_MARGIN_MS
  t.after(() => {
    c.close('test');
    b.destroy();
  });
  await c.hello();
  const early = c.query(2001);
  await new Promise((r) => setTimeout(r, 600));
  const late = c.query(2001);
  assert.equal((await early).status, QuotaStatus.Timeout);
  b.write(
    encode({
      type: MsgType.QuotaReply,
      seq: held[0]!.seq,
      kind: QuotaKind.User,
      users: [{ uid: 2001, status: QuotaStatus.NoData, fs: [] }],
    }),
  );
  assert.equal((await late).status, QuotaStatus.NoData, 'the later caller still got the answer');
  assert.deepEqual(
    held.map((m) => m.uids),
    [[2001]],
    'asked for once',
  );
});

test('a uid whose callers all gave up while it was queued is dropped, not sent when a run frees up', async (t) => {
  const [a, b] = await pair();
  const held: Extract<Message, { type: MsgType.QuotaQuery }>[] = [];
  fakeHelper(b, (m) => held.push(m));
  const c = new HelperClient(a, 100);
  t.after(() => {
    c.close('test');
    b.destroy();
  });
  await c.hello();
  const busy = [c.query(2001)];
  await new Promise((r) => setImmediate(r));
  busy.push(c.query(2002));
  await new Promise((r) => setImmediate(r));
  assert.equal((await c.query(3000)).status, QuotaStatus.Timeout);
  await Promise.all(busy);
  for (const m of held.splice(0))
    b.write(encode({ type: MsgType.QuotaReply, seq: m.seq, kind: QuotaKind.User, users: [] }));
  await new Promise((r) => setTimeout(r, 100));
  assert.deepEqual(held, [], '3000 was not sent');
});
