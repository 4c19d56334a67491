// A uid asked for again after its caller gave up must not reach the root
// helper twice in one QUOTA_QUERY: the helper calls that a protocol violation
// and ends the channel, which takes the whole daemon down. A hung NFS server
// (quota(1) hanging) and ordinary traffic were enough. Real helper process,
// real HelperClient, a stand-in quota(1) that hangs, then answers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HelperClient, HELPER_REPLY_MARGIN_MS, QUOTA_RUNS_AT_ONCE } from '../src/frontend/quota/helper-client.js';
import { QuotaStatus, type UserQuota } from '../src/shared/wire.js';
import { fakeQuota } from './support/daemon.js';
import { startHelper, runUids, tick, sleep } from './support/helper-proc.js';

/** The front's reply timeout: its callers give up after this plus HELPER_REPLY_MARGIN_MS (1.5 s). */
const CLIENT_TIMEOUT_MS = 500;
/** The helper kills the hung quota(1) runs after this: 1 s after the first callers gave up. */
const HELPER_TIMEOUT_MS = 2500;

test('a lookup timed out while queued, asked again and again mixed with other uids: the helper never sees a uid twice in a query and stays up', async (t) => {
  assert.equal(QUOTA_RUNS_AT_ONCE, 2, 'the scenario fills both runs with hung lookups');
  const fq = fakeQuota();
  fq.setMode('sleep'); // NFS server gone: every quota(1) run hangs
  const h = startHelper(fq.path, HELPER_TIMEOUT_MS);
  t.after(() => h.kill());
  const c = new HelperClient(h.channel(), CLIENT_TIMEOUT_MS);
  await c.hello();

  // Two hung runs take both slots; 3000 waits in the queue behind them.
  const hung = [c.query(2001)];
  await tick();
  hung.push(c.query(2002));
  await tick();
  const first = c.query(3000);
  const t0 = Date.now();
  for (let i = 0; i < 100 && fq.argv().length < 2; i++) await sleep(20);
  assert.deepEqual(runUids(fq.argv()), [[2001], [2002]]);

  // 3000's caller gives up while 3000 is still queued; so do 2001's and 2002's (in flight).
  assert.equal((await first).status, QuotaStatus.Timeout);
  assert.ok(Date.now() - t0 < CLIENT_TIMEOUT_MS + HELPER_REPLY_MARGIN_MS + 500);
  for (const q of await Promise.all(hung)) assert.equal(q.status, QuotaStatus.Timeout);

  // Ordinary traffic goes on: 3000 again, several times, mixed with other uids,
  // in one tick and across ticks; 2001 again while its hung run is still out.
  fq.setMode(''); // quota(1) answers again from now on
  const again: Promise<UserQuota>[] = [c.query(3000), c.query(3001), c.query(3000)];
  await tick();
  again.push(c.query(3002), c.query(3000), c.query(2001));
  await tick();
  again.push(c.query(3000), c.query(3001));
  assert.doesNotMatch(h.stderr(), /quota timed out/, 'premise: the hung runs are still out, so all of this is queued');

  const got = await Promise.all(again);
  assert.doesNotMatch(h.stderr(), /protocol violation|duplicate uid/);
  assert.equal(h.p.exitCode, null, 'the helper is still running');
  assert.deepEqual(
    got.map((q) => [q.uid, q.status]),
    [
      [3000, QuotaStatus.Ok],
      [3001, QuotaStatus.Ok],
      [3000, QuotaStatus.Ok],
      [3002, QuotaStatus.Ok],
      [3000, QuotaStatus.Ok],
      [2001, QuotaStatus.Timeout], // shared the hung run's answer: the helper killed it at its timeout
      [3000, QuotaStatus.Ok],
      [3001, QuotaStatus.Ok],
    ],
  );
  const runs = runUids(fq.argv());
  for (const r of runs) assert.equal(new Set(r).size, r.length, `quota(1) run with a uid twice: ${r.join(' ')}`);
  assert.deepEqual(
    runs,
    [[2001], [2002], [3000, 3001, 3002]],
    'one run for the re-asked uids; 2001 not sent again while out',
  );

  // And afterwards it still answers, 2001 included.
  assert.deepEqual(
    (await Promise.all([c.query(2001), c.query(3000)])).map((q) => q.status),
    [QuotaStatus.Ok, QuotaStatus.Ok],
  );
  assert.equal(runUids(fq.argv()).length, 4);
  c.close('test done');
  assert.equal(await h.exit, 0, 'channel closed by the front: clean exit');
});
