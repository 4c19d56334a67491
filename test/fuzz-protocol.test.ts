// Protocol fuzzing against a running daemon over its socket, seeded from a
// real Postfix request: mutations, random splits, over-long lines and
// requests, NUL and invalid UTF-8, 10,000 attributes; a 1-byte/s sender; a
// connection flood. The daemon must never crash or hang, memory and fds stay
// bounded, others keep being answered, bad connections are closed without a
// reply and logged once. QP_FUZZ_INPUTS sets the count (CI: 100,000).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, chmodSync, readFileSync, readdirSync, chownSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { startDaemon, fakeQuota, quotaBlock, writeConfig, freePort, type Daemon } from './support/daemon.js';
import { exchange, rcpt, actions } from './support/policy-client.js';
import { CAPTURE, prng, mutate, split } from './support/fuzz.js';

export const FUZZ_INPUTS = Number(process.env.QP_FUZZ_INPUTS ?? 100_000);
const CONCURRENCY = 64;
const SEED = Number(process.env.QP_FUZZ_SEED ?? 20261122);
/** A connection the server neither answers nor closes within this is a hang. */
const HANG_MS = 5000;
const WELL_FORMED = /^(action=[^\n]*\n\n)*$/;

let d: Daemon;
let port: number;
const rss = (pid: number): number =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-fuzz-'));
  chmodSync(dir, 0o755);
  const svc = userid.ids('quotapolicy');
  const rl = join(dir, 'rl');
  mkdirSync(rl, { recursive: true });
  chownSync(rl, svc.uid, svc.gid);
  const fq = fakeQuota();
  fq.setOutput(65534, quotaBlock(65534, '10', 100, 200));
  port = await freePort();
  const cfg = writeConfig(
    dir,
    `listen: ["inet:127.0.0.1:${port}"]\nquota_path: ${fq.path}\nmin_uid: 100\nlog_level: warn\nmax_connections: 256\n` +
      `request_timeout_ms: 3000\nidle_timeout_ms: 3000\nchecks: [quota, rate_limit]\nrate_limit:\n  sqlite_path: ${rl}/rl.sqlite3\n  limit_by_ip: true\n  limited_networks: ["0.0.0.0/0"]\n  limits: [[1000000, 1]]\n`,
  );
  d = startDaemon(['--config', cfg]);
  // log_level warn hides "front ready": wait until it answers.
  for (let i = 0; ; i++) {
    try {
      await control();
      break;
    } catch (e) {
      if (i > 100) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
});

after(async () => {
  assert.equal(await d.stop(), 0, 'still stops cleanly');
});

function feed(chunks: Buffer[]): Promise<{ text: string; localPort: number; hung: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let text = '';
    let localPort = 0;
    const t = setTimeout(() => {
      s.destroy();
      resolve({ text, localPort, hung: true });
    }, HANG_MS);
    const send = async (): Promise<void> => {
      localPort = s.localPort ?? 0;
      for (const c of chunks) {
        if (!s.destroyed) s.write(c);
        await new Promise((r) => setImmediate(r));
      }
      if (!s.destroyed) s.end();
    };
    s.on('connect', () => void send());
    s.on('data', (b) => {
      text += b.toString('latin1');
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve({ text, localPort, hung: false });
    });
  });
}

const control = async (): Promise<void> => {
  const r = await exchange({ host: '127.0.0.1', port }, [rcpt('nobody@example.test')], { replies: 1, timeoutMs: 2000 });
  assert.deepEqual(actions(r.text), ['DUNNO'], 'a good connection is answered during the fuzzing');
};

test(`protocol fuzzing: ${FUZZ_INPUTS} inputs (seed ${SEED}): no crash, no hang, well-formed replies only, bounded memory`, async () => {
  const front = d.frontPid();
  const rand = prng(SEED);
  // Memory and fds are compared from the end of a warm-up (JIT, heap, the store's files) to the end.
  const warmup = Math.floor(FUZZ_INPUTS / 10);
  let end = warmup;
  const kinds = new Map<string, number>();
  let next = 0;
  let answered = 0;
  let closedWithoutReply = 0;
  const problems: string[] = [];
  const t0 = Date.now();
  const worker = async (): Promise<void> => {
    while (next < end) {
      const i = next++;
      const m = mutate(rand);
      kinds.set(m.kind, (kinds.get(m.kind) ?? 0) + 1);
      const r = await feed(split(rand, m.bytes));
      if (r.hung) problems.push(`#${i} ${m.kind}: no answer and no close in ${HANG_MS} ms`);
      else if (!WELL_FORMED.test(r.text))
        problems.push(`#${i} ${m.kind}: malformed reply ${JSON.stringify(r.text.slice(0, 80))}`);
      else if (r.text === '') closedWithoutReply++;
      else answered++;
      if (i % 5000 === 0) await control();
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  await new Promise((r) => setTimeout(r, 500)); // quiet: no connection open
  const rss0 = rss(front);
  const fds0 = fds(front);
  end = FUZZ_INPUTS;
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const seconds = (Date.now() - t0) / 1000;
  await control();
  await new Promise((r) => setTimeout(r, 500));
  const rss1 = rss(front);
  const fds1 = fds(front);
  console.log(
    `fuzz: ${FUZZ_INPUTS} inputs in ${seconds.toFixed(1)} s (${Math.round(FUZZ_INPUTS / seconds)}/s); answered ${answered}, closed without a reply ${closedWithoutReply}; ` +
      `front RSS ${(rss0 / 1e6).toFixed(1)} -> ${(rss1 / 1e6).toFixed(1)} MB, fds ${fds0} -> ${fds1}; kinds ${JSON.stringify(Object.fromEntries(kinds))}`,
  );
  assert.deepEqual(problems.slice(0, 10), []);
  assert.equal(d.proc.exitCode, null, 'the daemon is alive');
  assert.equal(d.frontPid(), front, 'the same front: it never crashed');
  assert.ok(rss1 < rss0 * 1.25 + 16e6, `front RSS grew ${((rss1 - rss0) / 1e6).toFixed(1)} MB after warm-up`);
  assert.ok(fds1 <= fds0, `front fds ${fds0} -> ${fds1}`);
  assert.ok(closedWithoutReply > 0 && answered > 0, 'both outcomes were exercised');
});

test('a bad connection is logged once: never two warnings for one connection', async () => {
  const perPeer = new Map<number, number>();
  for (const l of d.lines)
    if (
      l.level === 40 &&
      typeof l.conn === 'number' &&
      /closing connection without a reply|middle of a request/.test(String(l.msg))
    ) {
      perPeer.set(l.conn, (perPeer.get(l.conn) ?? 0) + 1);
    }
  assert.ok(perPeer.size > 0);
  const twice = [...perPeer].filter(([, n]) => n > 1);
  assert.deepEqual(twice.slice(0, 5), []);
});

test('the real Postfix request split at every byte gets the same answer', async () => {
  const whole = (await feed([CAPTURE])).text;
  assert.match(whole, /^action=[^\n]*\n\n$/);
  for (let cut = 1; cut < CAPTURE.length; cut++) {
    const r = await feed([CAPTURE.subarray(0, cut), CAPTURE.subarray(cut)]);
    assert.equal(r.text, whole, `cut at ${cut}`);
  }
  const oneByOne = await feed([...CAPTURE].map((b) => Buffer.from([b])));
  assert.equal(oneByOne.text, whole);
});

test('a slow sender (1 byte/s) is cut off at request_timeout_ms; everyone else is answered meanwhile', async () => {
  const s = net.connect(port, '127.0.0.1');
  let closed = false;
  let got = '';
  s.on('data', (b) => {
    got += b.toString();
  });
  s.on('close', () => {
    closed = true;
  });
  s.on('error', () => {});
  const t0 = Date.now();
  let i = 0;
  const drip = setInterval(() => {
    if (!s.destroyed) s.write(CAPTURE.subarray(i, ++i));
  }, 1000);
  try {
    while (!closed && Date.now() - t0 < 8000) {
      await control();
      await new Promise((r) => setTimeout(r, 200));
    }
  } finally {
    clearInterval(drip);
  }
  assert.ok(closed, 'closed by the server');
  assert.equal(got, '', 'without a reply');
  const took = Date.now() - t0;
  assert.ok(took >= 2500 && took < 6000, `closed after ${took} ms (request_timeout_ms 3000)`);
  await d.waitFor((l) => l.msg === 'request not completed in time, closing connection without a reply');
});

test('a flood past max_connections: idle ones are closed to admit the newest, which are served; then all is normal', async () => {
  const held: net.Socket[] = [];
  for (let i = 0; i < 256 + 100; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    held.push(s);
  }
  await new Promise((r) => setTimeout(r, 1000));
  const open = held.filter((s) => !s.destroyed && s.readyState === 'open');
  // The newest connection is served: the oldest idle ones made room.
  const last = held.at(-1)!;
  const reply = new Promise<string>((resolve) => last.once('data', (b) => resolve(b.toString())));
  last.write(rcpt('nobody@example.test'));
  assert.match(await reply, /^action=DUNNO\n\n$/);
  console.log(`flood: ${held.length} connections opened, ${open.length} still open after 1 s`);
  assert.ok(open.length <= 256 && open.length > 200, `${open.length} open (max_connections 256)`);
  for (const s of held) s.destroy();
  await new Promise((r) => setTimeout(r, 300));
  await control();
  await d.waitFor((l) => l.msg === 'idle connections closed to admit new ones: max_connections reached', 8000);
});
