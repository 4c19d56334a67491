// Hostile load against a running daemon (root helper + front as the service
// user), each load for QP_HOSTILE_SECONDS (CI: 20): clients that pipeline and
// never read (one, then 50), 200 clients dripping one byte per write, and idle
// connections holding every slot of max_connections. The hostile clients run
// in a process of their own (support/hostile.ts); a well-behaved client here
// sends one request at a time and times each answer. Required: the front's
// peak RSS (VmHWM: no sample can miss a peak) stays under FRONT_RSS_BOUND_MB,
// every well-behaved request is answered, and its p99 stays under
// PROBE_P99_MS while non-readers pipeline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { mkdtempSync, chmodSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { startDaemon, fakeQuota, quotaBlock, writeConfig, type Daemon } from './support/daemon.js';
import { rcpt, request, exchange, actions } from './support/policy-client.js';
import { startHostile } from './support/hostile.js';

export const HOSTILE_SECONDS = Number(process.env.QP_HOSTILE_SECONDS ?? 20);
/**
 * The front's peak RSS under each load. Quiet, it is ~56 MB; before the caps
 * one non-reader took it to 1.9 GB in 20 s and 200 drippers to 945 MB. With
 * them, a hostile connection holds at most one read, one unfinished request and
 * 16 KiB of replies: 50 non-readers or 200 drippers peak near 85 MB.
 */
export const FRONT_RSS_BOUND_MB = 128;
/** A well-behaved client's 99th-percentile answer time while the non-readers pipeline (cache hits). */
export const PROBE_P99_MS = 50;
/** Pause between the well-behaved client's requests: ~100 a second, enough samples for a p99. */
const PROBE_GAP_MS = 10;

/** A field of /proc/PID/status, in MB (10^6 bytes, as the soak reports). */
const mbOf = (pid: number, field: 'VmRSS' | 'VmHWM'): number =>
  (Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024) / 1e6;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function daemon(label: string, yaml = ''): Promise<{ d: Daemon; sock: string; front: number }> {
  const dir = mkdtempSync(join(tmpdir(), `qp-hostile-${label}-`));
  chmodSync(dir, 0o755);
  const fq = fakeQuota();
  const nobody = userid.ids('nobody').uid;
  fq.setOutput(nobody, quotaBlock(nobody, '10', 100, 200));
  const sock = join(dir, 'p.sock');
  const d = startDaemon([
    '--config',
    writeConfig(
      dir,
      `listen: ["unix:${sock}"]\nsocket_group: quotapolicy\nquota_path: ${fq.path}\nmin_uid: 100\nlog_level: warn\n${yaml}`,
    ),
  ]);
  // log_level warn hides "front ready": wait until it answers.
  for (let i = 0; ; i++) {
    try {
      const r = await exchange({ path: sock }, [rcpt('nobody@example.test')], { replies: 1, timeoutMs: 2000 });
      if (actions(r.text)[0] === 'DUNNO') break;
    } catch (e) {
      if (i > 100) throw e;
    }
    await sleep(100);
  }
  return { d, sock, front: d.frontPid() };
}

/** One connection, one request at a time, each timed; every answer must be DUNNO within 5 s. */
async function wellBehaved(
  sock: string,
  seconds: number,
): Promise<{ latencies: number[]; errors: string[]; p99: number; max: number }> {
  const s = net.connect(sock);
  s.on('error', () => {});
  await once(s, 'connect');
  let buf = '';
  let waiting: ((reply: string) => void) | undefined;
  s.on('data', (b: Buffer) => {
    buf += b.toString();
    let i;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const reply = buf.slice(0, i);
      buf = buf.slice(i + 2);
      waiting?.(reply);
    }
  });
  s.on('close', () => waiting?.('connection closed'));
  const latencies: number[] = [];
  const errors: string[] = [];
  const req = rcpt('nobody@example.test');
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end && !s.destroyed) {
    const t0 = performance.now();
    const reply = await new Promise<string>((resolve) => {
      const t = setTimeout(() => resolve('no answer in 5 s'), 5000);
      waiting = (r) => {
        clearTimeout(t);
        resolve(r);
      };
      s.write(req);
    });
    latencies.push(performance.now() - t0);
    if (reply !== 'action=DUNNO') errors.push(reply);
    await sleep(PROBE_GAP_MS);
  }
  s.destroy();
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    latencies,
    errors,
    p99: sorted[Math.ceil(sorted.length * 0.99) - 1] ?? Infinity,
    max: sorted.at(-1) ?? Infinity,
  };
}

for (const n of [1, 50]) {
  test(
    `${n} client(s) pipelining a=b and never reading, ${HOSTILE_SECONDS} s: front RSS under ${FRONT_RSS_BOUND_MB} MB, well-behaved p99 under ${PROBE_P99_MS} ms`,
    { timeout: (HOSTILE_SECONDS + 60) * 1000 },
    async () => {
      const { d, sock, front } = await daemon(`nonread${n}`);
      try {
        await wellBehaved(sock, 1);
        const quiet = mbOf(front, 'VmRSS');
        const hostile = startHostile({ path: sock, seconds: HOSTILE_SECONDS, nonReaders: n });
        const [probe, st] = await Promise.all([wellBehaved(sock, HOSTILE_SECONDS), hostile.done]);
        const peak = mbOf(front, 'VmHWM');
        const after = await wellBehaved(sock, 1);
        console.log(
          `non-readers ${n}: ${JSON.stringify({ front_rss_mb: { quiet: +quiet.toFixed(1), peak: +peak.toFixed(1) }, probe: { requests: probe.latencies.length, p99_ms: +probe.p99.toFixed(1), max_ms: +probe.max.toFixed(1), errors: probe.errors.length }, sent_mb: +(st.nonReaderBytesSent / 1e6).toFixed(1), connections: st.nonReaderConnections })}`,
        );
        assert.deepEqual(probe.errors.slice(0, 5), [], 'every well-behaved request answered DUNNO');
        assert.deepEqual(after.errors, []);
        assert.ok(probe.latencies.length > HOSTILE_SECONDS * 20, `${probe.latencies.length} well-behaved requests`);
        assert.ok(peak < FRONT_RSS_BOUND_MB, `front peak RSS ${peak.toFixed(1)} MB`);
        assert.ok(probe.p99 < PROBE_P99_MS, `well-behaved p99 ${probe.p99.toFixed(1)} ms`);
        // Held, not cut off: the non-readers kept their connections all along (idle_timeout_ms is 330 s).
        assert.equal(st.nonReaderConnections, n);
        assert.equal(d.frontPid(), front, 'the same front');
      } finally {
        await d.stop();
      }
    },
  );
}

test(
  `200 clients dripping one byte per write, ${HOSTILE_SECONDS} s: front RSS under ${FRONT_RSS_BOUND_MB} MB, a well-behaved client still served`,
  { timeout: (HOSTILE_SECONDS + 60) * 1000 },
  async () => {
    // request_timeout_ms past the run: the drippers' requests stay unfinished as long as they like.
    const { d, sock, front } = await daemon('drip', `request_timeout_ms: ${(HOSTILE_SECONDS + 30) * 1000}\n`);
    try {
      await wellBehaved(sock, 1);
      const quiet = mbOf(front, 'VmRSS');
      const hostile = startHostile({ path: sock, seconds: HOSTILE_SECONDS, drippers: 200 });
      const [probe, st] = await Promise.all([wellBehaved(sock, HOSTILE_SECONDS), hostile.done]);
      const peak = mbOf(front, 'VmHWM');
      console.log(
        `drippers 200: ${JSON.stringify({ front_rss_mb: { quiet: +quiet.toFixed(1), peak: +peak.toFixed(1) }, probe: { requests: probe.latencies.length, p99_ms: +probe.p99.toFixed(1), max_ms: +probe.max.toFixed(1), errors: probe.errors.length }, dripped_bytes: st.drippedBytes, connections: st.dripperConnections, replies: st.dripperReplies })}`,
      );
      assert.deepEqual(probe.errors.slice(0, 5), [], 'every well-behaved request answered DUNNO');
      assert.ok(probe.latencies.length > HOSTILE_SECONDS * 5, `${probe.latencies.length} well-behaved requests`);
      assert.ok(peak < FRONT_RSS_BOUND_MB, `front peak RSS ${peak.toFixed(1)} MB`);
      // The load was real: on average over 1,000 one-byte writes per connection.
      assert.ok(st.drippedBytes > 200 * 1000, `${st.drippedBytes} bytes dripped`);
      assert.equal(st.dripperConnections, 200, 'no dripper was cut off');
      assert.equal(d.frontPid(), front, 'the same front');
    } finally {
      await d.stop();
    }
  },
);

test(
  'max_connections held by idle connections: a new one is served, the longest-idle is closed (never-used first), logged; all busy: refused, logged',
  { timeout: 60_000 },
  async () => {
    const MAX = 8;
    const { d, sock } = await daemon('cap', `max_connections: ${MAX}\n`);
    const open: net.Socket[] = [];
    const connect = async (): Promise<net.Socket & { gone: boolean; replies: string[] }> => {
      const s = Object.assign(net.connect(sock), { gone: false, replies: [] as string[] });
      s.on('error', () => {});
      s.on('close', () => {
        s.gone = true;
      });
      s.on('data', (b: Buffer) => s.replies.push(...actions(b.toString())));
      open.push(s);
      await once(s, 'connect');
      return s;
    };
    const ask = async (s: net.Socket & { replies: string[] }): Promise<void> => {
      const had = s.replies.length;
      s.write(rcpt('nobody@example.test'));
      for (let i = 0; i < 100 && s.replies.length === had; i++) await sleep(20);
      assert.deepEqual(s.replies.slice(had), ['DUNNO']);
    };
    const closedSoon = async (s: { gone: boolean }): Promise<boolean> => {
      for (let i = 0; i < 50 && !s.gone; i++) await sleep(20);
      return s.gone;
    };
    try {
      // MAX connections that each asked once, as Postfix's smtpd processes keep theirs open between sessions.
      const used = [];
      for (let i = 0; i < MAX; i++) {
        const s = await connect();
        await ask(s);
        used.push(s);
      }
      const newcomer = await connect();
      await ask(newcomer);
      assert.ok(await closedSoon(used[0]!), 'the longest-idle connection was closed');
      assert.ok(
        used.slice(1).every((s) => !s.gone),
        'only that one',
      );
      await ask(used[1]!);
      // A connection that never sends a request goes before those in use, even if they have been idle longer.
      const silent = await connect();
      assert.ok(await closedSoon(used[2]!), 'the longest-idle was closed for the silent one');
      const next = await connect();
      await ask(next);
      assert.ok(await closedSoon(silent), 'the silent one was closed first');
      assert.ok(!used[3]!.gone, 'not the longest-idle in use');
      const closedLine = await d.waitFor(
        (l) => l.msg === 'idle connections closed to admit new ones: max_connections reached',
        8000,
      );
      assert.equal(closedLine.max_connections, MAX);
      assert.ok(Number(closedLine.closed) >= 3, `closed ${String(closedLine.closed)}`);

      // Every connection with a request in progress (begun, not complete): nothing to close, the new one is refused.
      for (const s of open) s.destroy();
      await sleep(200);
      const busy = [];
      for (let i = 0; i < MAX; i++) {
        const s = await connect();
        s.write('request=smtpd_access_policy\n');
        busy.push(s);
      }
      await sleep(200);
      const refused = await connect();
      refused.write(rcpt('nobody@example.test'));
      assert.ok(await closedSoon(refused), 'refused');
      assert.deepEqual(refused.replies, [], 'without a reply');
      assert.ok(
        busy.every((s) => !s.gone),
        'the busy ones are kept',
      );
      await d.waitFor(
        (l) => l.msg === 'connections refused: max_connections reached' && l.max_connections === MAX,
        8000,
      );
      // One finishes its request: it is answered, idle again, and makes room.
      busy[0]!.write(request({ recipient: 'nobody@example.test' }));
      for (let i = 0; i < 100 && busy[0]!.replies.length === 0; i++) await sleep(20);
      assert.deepEqual(busy[0]!.replies, ['DUNNO']);
      await ask(await connect());
      assert.ok(await closedSoon(busy[0]!), 'the one no longer busy made room');
    } finally {
      for (const s of open) s.destroy();
      await d.stop();
    }
  },
);
