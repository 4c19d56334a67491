// serveConnection over real unix sockets, in this process, where its socket
// can be looked at: a peer that pipelines and never reads is no longer read
// once MAX_UNSENT_BYTES of replies wait, and gets every reply in order once it
// reads; a pipelining connection takes turns with the others; idle() says
// which connection may be closed at max_connections.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import {
  serveConnection,
  MAX_UNSENT_BYTES,
  MAX_PIPELINED,
  type Connection,
} from '../src/frontend/server/connection.js';
import type { PolicyRequest } from '../src/frontend/protocol/parser.js';

const silent = pino({ level: 'silent' });
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Served {
  socket: net.Socket;
  conn: Connection;
}

async function server(
  answer: (req: PolicyRequest, s: Served) => string | Promise<string>,
): Promise<{ path: string; served: Served[]; close(): void }> {
  const path = join(mkdtempSync(join(tmpdir(), 'qp-conn-')), 's.sock');
  const served: Served[] = [];
  const srv = net.createServer({ allowHalfOpen: true }, (socket) => {
    const s = { socket } as Served;
    s.conn = serveConnection(socket, {
      idleTimeoutMs: 60_000,
      requestTimeoutMs: 60_000,
      answer: (req) => answer(req, s),
      log: silent,
    });
    served.push(s);
  });
  srv.listen(path);
  await once(srv, 'listening');
  return {
    path,
    served,
    close: () => {
      for (const s of served) s.socket.destroy();
      srv.close();
    },
  };
}

test(
  'a peer that pipelines and never reads: at most MAX_UNSENT_BYTES of replies wait, reading stops, and once it reads every reply comes, in order',
  { timeout: 60_000 },
  async () => {
    let maxUnsent = 0;
    const srv = await server((req, s) => {
      maxUnsent = Math.max(maxUnsent, s.socket.writableLength);
      return `DUNNO ${req.get('n')}`;
    });
    try {
      const client = net.connect(srv.path);
      client.on('error', () => {});
      client.pause();
      await once(client, 'connect');
      const TOTAL = 300_000;
      const batch = 1000;
      let sent = 0;
      let sentBytes = 0;
      let writing = true;
      const write = (): void => {
        while (sent < TOTAL) {
          const chunk = Array.from({ length: batch }, (_, i) => `n=${sent + i}\n\n`).join('');
          sent += batch;
          sentBytes += chunk.length;
          if (!client.write(chunk)) return;
        }
        client.end();
        writing = false;
      };
      client.on('drain', write);
      write();
      const sampler = setInterval(() => {
        maxUnsent = Math.max(maxUnsent, srv.served[0]?.socket.writableLength ?? 0);
      }, 5);
      // The front stops reading: what it has read stops growing, far short of what the client has to send.
      let read = -1;
      for (let i = 0; i < 100 && srv.served[0]!.socket.bytesRead !== read; i++) {
        read = srv.served[0]!.socket.bytesRead;
        await sleep(300);
      }
      clearInterval(sampler);
      assert.equal(srv.served[0]!.socket.bytesRead, read, 'reading stopped');
      assert.ok(
        writing && client.writableLength > 0,
        `the client still has bytes to send (read ${read} of ${sentBytes})`,
      );
      // Under the cap before the last reply of a turn was added.
      const cap = Math.max(MAX_UNSENT_BYTES, srv.served[0]!.socket.writableHighWaterMark);
      assert.ok(maxUnsent < cap + `action=DUNNO ${TOTAL}\n\n`.length, `at most ${maxUnsent} bytes waited to be sent`);
      assert.ok(srv.served[0]!.conn.idle() !== undefined, 'a peer that does not read may be closed to admit another');
      // Now it reads: everything is answered, in order, and the connection ends.
      let text = '';
      client.setEncoding('latin1');
      client.on('data', (d: string) => {
        text += d;
      });
      client.resume();
      await once(client, 'end');
      const got = text.split('\n\n').slice(0, -1);
      assert.equal(got.length, TOTAL);
      for (let i = 0; i < TOTAL; i++) if (got[i] !== `action=DUNNO ${i}`) assert.fail(`reply ${i} is ${got[i]}`);
      client.destroy();
    } finally {
      srv.close();
    }
  },
);

test('a connection pipelining 20,000 requests in one write does not hold up another connection', async () => {
  const order: string[] = [];
  const srv = await server((req) => {
    order.push(req.get('n') ?? 'other');
    return 'DUNNO';
  });
  try {
    const a = net.connect(srv.path);
    const b = net.connect(srv.path);
    a.resume();
    await Promise.all([once(a, 'connect'), once(b, 'connect')]);
    const N = 20_000;
    a.write(Array.from({ length: N }, (_, i) => `n=${i}\n\n`).join(''));
    b.write('x=1\n\n');
    await once(b, 'data');
    const at = order.indexOf('other');
    console.log(`the other connection was answered after ${at} of the ${N} pipelined requests`);
    assert.ok(at >= 0 && at < N / 10, `answered after ${at} of ${N}`);
    for (let i = 0; i < 200 && order.length < N + 1; i++) await sleep(25);
    assert.equal(order.length, N + 1, 'and the pipeline is answered in full');
    a.destroy();
    b.destroy();
  } finally {
    srv.close();
  }
});

test('at most MAX_PIPELINED answers are awaited per connection; the rest is read when they come', async () => {
  const waiting: (() => void)[] = [];
  const srv = await server(() => new Promise<string>((resolve) => waiting.push(() => resolve('DUNNO'))));
  try {
    const c = net.connect(srv.path);
    let replies = 0;
    c.on('data', (d: Buffer) => {
      replies += d.toString().split('\n\n').length - 1;
    });
    await once(c, 'connect');
    c.write('a=b\n\n'.repeat(MAX_PIPELINED * 3));
    await sleep(200);
    assert.equal(waiting.length, MAX_PIPELINED, 'no more asked for until one is answered');
    while (waiting.length > 0) {
      waiting.splice(0).forEach((f) => f());
      await sleep(50);
    }
    assert.equal(replies, MAX_PIPELINED * 3);
    c.destroy();
  } finally {
    srv.close();
  }
});

test('idle(): none while a request is in progress; otherwise how many were answered and since when', async () => {
  let release: (() => void) | undefined;
  const srv = await server((req) =>
    req.get('slow')
      ? new Promise<string>((r) => {
          release = () => r('DUNNO');
        })
      : 'DUNNO',
  );
  try {
    const c = net.connect(srv.path);
    c.resume();
    await once(c, 'connect');
    await sleep(50);
    const conn = srv.served[0]!.conn;
    const opened = conn.idle();
    assert.equal(opened?.answered, 0);
    c.write('a=b\n');
    await sleep(50);
    assert.equal(conn.idle(), undefined, 'a request begun');
    c.write('\n');
    await once(c, 'data');
    const after = conn.idle();
    assert.equal(after?.answered, 1);
    assert.ok(after.since > opened.since);
    c.write('slow=1\n\n');
    await sleep(50);
    assert.equal(conn.idle(), undefined, 'an answer awaited');
    release!();
    await once(c, 'data');
    assert.equal(conn.idle()?.answered, 2);
    c.destroy();
  } finally {
    srv.close();
  }
});
