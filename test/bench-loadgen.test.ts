// The load generator counts what it measures: every reply once, wrong replies
// and replies that never come as errors, and it never waits past its drain time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { runLoad, postfixRequest } from '../bench/loadgen.js';

/** A policy server on a fresh unix socket; reply(n) answers the n-th request on a connection, or stays silent with null. */
async function server(reply: (n: number) => string | null): Promise<{ to: string; close: () => void }> {
  const path = join(mkdtempSync(join(tmpdir(), 'qp-loadgen-')), 's.sock');
  const srv = net.createServer((c) => {
    let buf = '';
    let n = 0;
    c.on('data', (d) => {
      buf += d.toString('latin1');
      let i;
      while ((i = buf.indexOf('\n\n')) !== -1) {
        buf = buf.slice(i + 2);
        const r = reply(n++);
        if (r !== null) c.write(r);
      }
    });
    c.on('error', () => {});
  });
  await new Promise<void>((r) => srv.listen(path, r));
  return { to: `unix:${path}`, close: () => srv.close() };
}

test('every reply is counted once; no errors from a server that answers', async () => {
  const s = await server(() => 'action=DUNNO\n\n');
  const r = await runLoad({
    to: s.to,
    connections: 4,
    seconds: 0.2,
    pipeline: 1,
    template: postfixRequest,
    drainMs: 500,
  });
  s.close();
  assert.equal(r.errors, 0);
  assert.ok(r.requests > 4);
  assert.ok(r.p50Ms <= r.p99Ms && r.p99Ms <= r.maxMs);
});

test('a reply that is not an action is an error', async () => {
  const s = await server((n) => (n % 2 === 0 ? 'action=DUNNO\n\n' : 'what?\n\n'));
  const r = await runLoad({
    to: s.to,
    connections: 2,
    seconds: 0.2,
    pipeline: 1,
    template: postfixRequest,
    drainMs: 500,
  });
  s.close();
  assert.ok(r.errors > 0 && Math.abs(r.errors - r.requests / 2) <= 2, `${r.errors} errors of ${r.requests}`);
});

test('a server that stops answering: replies still out are errors, and the run ends after the drain time', async () => {
  const s = await server((n) => (n < 3 ? 'action=DUNNO\n\n' : null));
  const t0 = performance.now();
  const r = await runLoad({
    to: s.to,
    connections: 5,
    seconds: 0.2,
    pipeline: 2,
    template: postfixRequest,
    drainMs: 300,
  });
  const took = performance.now() - t0;
  s.close();
  assert.equal(r.requests, 15, 'three answered requests on each of five connections');
  assert.equal(r.errors, 10, 'two requests still out on each connection');
  assert.ok(took >= 500 && took < 3000, `ended after ${took.toFixed(0)} ms`);
});
