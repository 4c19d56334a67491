// Soak: 64 connections of mixed quota and rate-limit traffic for
// QP_SOAK_SECONDS (CI: 60; `npm run soak`: 600), twice: alone, then beside
// hostile clients (non-readers, one-byte drippers, connection floods past
// max_connections, garbage; support/hostile.ts, in a process of their own)
// with quota(1) hanging for a fifth of the run. Required: no errors, RSS
// growth under 10% after warm-up, no file-descriptor growth; with the hostile
// clients also the same two processes at the end and the front's peak RSS
// under HOSTILE_FRONT_RSS_BOUND_MB.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { mkdtempSync, chmodSync, chownSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { startDaemon, fakeQuota, quotaBlock, writeConfig, type Daemon, type FakeQuota } from './support/daemon.js';
import { rcpt } from './support/policy-client.js';
import { startHostile } from './support/hostile.js';
import { HELPER_REPLY_MARGIN_MS } from '../src/frontend/quota/helper-client.js';

export const SOAK_SECONDS = Number(process.env.QP_SOAK_SECONDS ?? 60);
const CONNECTIONS = 64;
/**
 * Memory is compared after the warm-up (20% of the run, at least 30 s: V8 sizes its heap first). RSS saws up and down
 * with V8's heap, so the measure is the envelope: the peak of the last 10% of the run against the peak before it.
 */
const WARMUP_MS = Math.max(30_000, SOAK_SECONDS * 1000 * 0.2);
/** quota(1) is killed after this in the hostile soak: short, so that the hang is felt many times over. */
const QUOTA_TIMEOUT_MS = 1000;
/**
 * A well-behaved request must be answered within this, whatever else goes on:
 * a lookup that hangs is answered (the error action) by quota_timeout_ms plus
 * the helper's reply margin; the rest is slack for a loaded 2-core machine.
 */
const DEADLINE_MS = QUOTA_TIMEOUT_MS + HELPER_REPLY_MARGIN_MS + 2000;
/** The front's peak RSS (VmHWM) in the hostile soak: ~100 MB alone, plus the hostile connections' bounded buffers. */
export const HOSTILE_FRONT_RSS_BOUND_MB = 192;
const ERROR_ACTION = '451 4.3.0 quota lookup failed';

const rss = (pid: number): number =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const hwm = (pid: number): number =>
  Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const mb = (n: number): number => +(n / 1e6).toFixed(1);

async function soakDaemon(
  label: string,
  yaml: string,
): Promise<{ d: Daemon; sock: string; fq: FakeQuota; helperPid: number; frontPid: number }> {
  const dir = mkdtempSync(join(tmpdir(), `qp-${label}-`));
  chmodSync(dir, 0o755);
  const svc = userid.ids('quotapolicy');
  const rl = join(dir, 'rl');
  mkdirSync(rl);
  chownSync(rl, svc.uid, svc.gid);
  const fq = fakeQuota();
  const nobody = userid.ids('nobody').uid;
  fq.setOutput(svc.uid, quotaBlock(svc.uid, '200*', 100, 200, 1));
  fq.setOutput(nobody, quotaBlock(nobody, '10', 100, 200));
  const sock = join(dir, 'p.sock');
  const cfg = writeConfig(
    dir,
    `listen: ["unix:${sock}"]\nsocket_group: quotapolicy\nquota_path: ${fq.path}\nmin_uid: 100\nlog_level: warn\ncache_ttl_ms: 2000\n` +
      `checks: [quota, rate_limit]\nrate_limit:\n  sqlite_path: ${rl}/rl.sqlite3\n  limits: [[1000, 1], [1000000000, 3600]]\n${yaml}`,
  );
  const d = startDaemon(['--config', cfg]);
  const helperPid = d.proc.pid!;
  let frontPid = 0;
  for (let i = 0; i < 100 && frontPid === 0; i++) {
    try {
      frontPid = d.frontPid();
    } catch {
      await sleep(50);
    }
  }
  for (let i = 0; i < 100; i++) {
    try {
      net.connect(sock).destroy();
      break;
    } catch {
      await sleep(50);
    }
  }
  await sleep(500);
  // One request first, so the store and caches exist, then the quiet fd count.
  await new Promise<void>((resolve) => {
    const s = net.connect(sock, () => s.write(rcpt('nobody@example.test', { sasl_username: 'warm' })));
    s.on('data', () => {
      s.end();
    });
    s.on('close', () => resolve());
  });
  await sleep(300);
  return { d, sock, fq, helperPid, frontPid };
}

interface Sample {
  rssFront: number;
  rssHelper: number;
  fdsFront: number;
  fdsHelper: number;
}

/** Samples both processes every second; the envelope compares the peak of the last 10% with the peak between warm-up and then. */
function sampler(
  frontPid: number,
  helperPid: number,
): { samples: Sample[]; warm(): Sample; stop(): { before: Sample[]; tail: Sample[] } } {
  const samples: Sample[] = [];
  const warmEnd = Date.now() + WARMUP_MS;
  let warmIndex = -1;
  const take = (): Sample => ({
    rssFront: rss(frontPid),
    rssHelper: rss(helperPid),
    fdsFront: fds(frontPid),
    fdsHelper: fds(helperPid),
  });
  const timer = setInterval(() => {
    samples.push(take());
    if (warmIndex === -1 && Date.now() >= warmEnd) warmIndex = samples.length - 1;
  }, 1000);
  return {
    samples,
    warm: () => samples[warmIndex]!,
    stop: () => {
      clearInterval(timer);
      const lastN = Math.max(5, Math.round(samples.length / 10));
      return { before: samples.slice(warmIndex, -lastN), tail: samples.slice(-lastN) };
    },
  };
}

const top = (xs: Sample[], k: 'rssFront' | 'rssHelper'): number => Math.max(...xs.map((x) => x[k]));

interface Traffic {
  requests: number;
  errors: string[];
  retried: number;
  latencies: number[];
  hangLatencies: number[];
}

/**
 * CONNECTIONS clients as Postfix's smtpd: one request at a time, a new connection per 200 requests. When the server
 * closes a connection with a request unanswered, it reconnects and sends it again once, as Postfix does
 * (smtpd_policy_service_try_limit 2); a second failure is an error. `allowed(sentAt)` tells which replies are right.
 */
async function wellBehaved(
  sock: string,
  end: number,
  allowed: (reply: string, sentAt: number) => boolean,
  inHang: (sentAt: number) => boolean,
): Promise<Traffic> {
  const mix = [
    'quotapolicy@example.test',
    'nobody@example.test',
    'nobody+x@example.test',
    'root@example.test',
    'nosuch@example.test',
  ];
  const t: Traffic = { requests: 0, errors: [], retried: 0, latencies: [], hangLatencies: [] };
  const error = (e: string): void => {
    if (t.errors.length < 1000) t.errors.push(e);
  };
  const conn = async (n: number): Promise<void> => {
    /** A request to send again on a new connection: the server closed the last one without answering it. */
    let carry: { req: string; sentAt: number } | undefined;
    while (Date.now() < end || carry) {
      await new Promise<void>((resolve) => {
        const s = net.connect(sock);
        let buf = '';
        let sent = 0;
        let connected = false;
        let out: { req: string; sentAt: number; again: boolean; t0: number; deadline: NodeJS.Timeout } | undefined;
        const send = (again?: { req: string; sentAt: number }): void => {
          if (!again && (sent >= 200 || Date.now() >= end)) {
            s.end();
            return;
          }
          sent++;
          const req =
            again?.req ??
            rcpt(mix[(n + sent) % mix.length]!, {
              sasl_username: `user${n}-${sent % 7}`,
              client_address: `192.0.2.${n}`,
            });
          const deadline = setTimeout(() => {
            error(`no answer in ${DEADLINE_MS} ms`);
            out = undefined;
            s.destroy();
          }, DEADLINE_MS);
          out = {
            req,
            sentAt: again?.sentAt ?? Date.now(),
            again: again !== undefined,
            t0: performance.now(),
            deadline,
          };
          s.write(req);
        };
        s.on('connect', () => {
          connected = true;
          const again = carry;
          carry = undefined;
          send(again);
        });
        s.on('data', (b) => {
          buf += b.toString();
          let i;
          while ((i = buf.indexOf('\n\n')) !== -1) {
            const reply = buf.slice(0, i);
            buf = buf.slice(i + 2);
            if (!out) {
              error(`unasked reply ${reply}`);
              continue;
            }
            clearTimeout(out.deadline);
            (inHang(out.sentAt) ? t.hangLatencies : t.latencies).push(performance.now() - out.t0);
            t.requests++;
            if (!allowed(reply, out.sentAt)) error(`${reply} at ${new Date(out.sentAt).toISOString()}`);
            out = undefined;
            send();
          }
        });
        s.on('error', (e) => {
          if (!connected) error(`cannot connect: ${e.message}`);
        });
        s.on('close', () => {
          if (out) {
            clearTimeout(out.deadline);
            if (out.again) error('closed without an answer, twice');
            else {
              t.retried++;
              carry = { req: out.req, sentAt: out.sentAt };
            }
          }
          resolve();
        });
      });
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, n) => conn(n)));
  return t;
}

const NORMAL = /^action=(DUNNO|452 4\.2\.2 .*)$/;

test(
  `soak: ${CONNECTIONS} connections for ${SOAK_SECONDS} s, quota and rate-limit traffic`,
  { timeout: (SOAK_SECONDS + 120) * 1000 },
  async () => {
    const { d, sock, helperPid, frontPid } = await soakDaemon('soak', '');
    const quietFds = { front: fds(frontPid), helper: fds(helperPid) };
    const end = Date.now() + SOAK_SECONDS * 1000;
    const sm = sampler(frontPid, helperPid);
    const t = await wellBehaved(
      sock,
      end,
      (r) => NORMAL.test(r),
      () => false,
    );
    const { before, tail } = sm.stop();
    const samples = sm.samples;
    const warm = sm.warm();
    await sleep(1500);
    const last = {
      rssFront: rss(frontPid),
      rssHelper: rss(helperPid),
      fdsFront: fds(frontPid),
      fdsHelper: fds(helperPid),
    };
    await d.stop();
    const logErrors = d.lines.filter(
      (l) => Number(l.level) >= 40 && l.msg !== 'connection closed in the middle of a request',
    ).length;
    const peak = samples.reduce((m, s) => ({ f: Math.max(m.f, s.rssFront), h: Math.max(m.h, s.rssHelper) }), {
      f: 0,
      h: 0,
    });
    const envelope = {
      front_mb: [mb(top(before, 'rssFront')), mb(top(tail, 'rssFront'))],
      helper_mb: [mb(top(before, 'rssHelper')), mb(top(tail, 'rssHelper'))],
    };
    const report = {
      seconds: SOAK_SECONDS,
      connections: CONNECTIONS,
      requests: t.requests,
      req_per_s: Math.round(t.requests / SOAK_SECONDS),
      errors: t.errors.length,
      retried: t.retried,
      warn_or_error_log_lines: logErrors,
      front_rss_mb: { after_warmup: mb(warm.rssFront), end: mb(last.rssFront), peak: mb(peak.f) },
      helper_rss_mb: { after_warmup: mb(warm.rssHelper), end: mb(last.rssHelper), peak: mb(peak.h) },
      fds: { front: [quietFds.front, last.fdsFront], helper: [quietFds.helper, last.fdsHelper] },
      rss_peak_after_warmup_vs_last_10pct: envelope,
    };
    console.log(`soak: ${JSON.stringify(report)}`);
    console.log(`soak: front RSS MB per second: ${samples.map((s) => (s.rssFront / 1e6).toFixed(0)).join(' ')}`);
    console.log(`soak: helper RSS MB per second: ${samples.map((s) => (s.rssHelper / 1e6).toFixed(0)).join(' ')}`);
    assert.deepEqual(t.errors.slice(0, 5), []);
    // Nothing here closes a connection: a retry would be a connection lost.
    assert.equal(t.retried, 0);
    assert.equal(logErrors, 0, 'no warnings or errors logged');
    assert.ok(before.length >= 5, 'enough samples after the warm-up');
    assert.ok(
      top(tail, 'rssFront') < top(before, 'rssFront') * 1.1,
      `front RSS envelope ${JSON.stringify(envelope.front_mb)} MB`,
    );
    assert.ok(
      top(tail, 'rssHelper') < top(before, 'rssHelper') * 1.1,
      `helper RSS envelope ${JSON.stringify(envelope.helper_mb)} MB`,
    );
    // fds: quiet at the end (all connections closed) against quiet... the warm-up sample has connections open, so compare with the quiet start.
    assert.ok(
      last.fdsFront <= quietFds.front && last.fdsHelper <= quietFds.helper,
      `fds ${JSON.stringify(report.fds)}, quiet start ${JSON.stringify(quietFds)}`,
    );
  },
);

const pct = (xs: number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : +s[Math.min(s.length - 1, Math.ceil(s.length * p) - 1)]!.toFixed(1);
};

test(
  `hostile soak: ${CONNECTIONS} connections for ${SOAK_SECONDS} s beside non-readers, drippers, floods past max_connections and garbage; quota(1) hangs for a fifth of it`,
  { timeout: (SOAK_SECONDS + 120) * 1000 },
  async () => {
    const MAX_CONNECTIONS = 256;
    const { d, sock, fq, helperPid, frontPid } = await soakDaemon(
      'soak-hostile',
      `max_connections: ${MAX_CONNECTIONS}\nquota_timeout_ms: ${QUOTA_TIMEOUT_MS}\nactions:\n  error: "${ERROR_ACTION}"\n`,
    );
    const quietFds = { front: fds(frontPid), helper: fds(helperPid) };
    const start = Date.now();
    const end = start + SOAK_SECONDS * 1000;
    // quota(1) hangs from 40% to 60% of the run (a stand-in that sleeps, killed at quota_timeout_ms).
    const hangFrom = start + SOAK_SECONDS * 400;
    const hangTo = start + SOAK_SECONDS * 600;
    const hangTimers = [
      setTimeout(() => fq.setMode('sleep'), hangFrom - Date.now()),
      setTimeout(() => fq.setMode(''), hangTo - Date.now()),
    ];
    // A request sent while quota(1) hangs, or whose lookup began then, may get the error action: answered by its deadline.
    const inHang = (sentAt: number): boolean => sentAt >= hangFrom - DEADLINE_MS && sentAt <= hangTo + DEADLINE_MS;
    const allowed = (r: string, sentAt: number): boolean =>
      NORMAL.test(r) || (r === `action=${ERROR_ACTION}` && inHang(sentAt));
    const hostile = startHostile({
      path: sock,
      seconds: SOAK_SECONDS,
      nonReaders: 8,
      drippers: 50,
      garbage: 4,
      flood: { everyMs: 5000, count: 300, holdMs: 2000 },
    });
    const sm = sampler(frontPid, helperPid);
    const [t, st] = await Promise.all([wellBehaved(sock, end, allowed, inHang), hostile.done]);
    hangTimers.forEach(clearTimeout);
    const { before, tail } = sm.stop();
    const samples = sm.samples;
    await sleep(1500);
    const last = {
      rssFront: rss(frontPid),
      rssHelper: rss(helperPid),
      fdsFront: fds(frontPid),
      fdsHelper: fds(helperPid),
    };
    const peaks = { front: hwm(frontPid), helper: hwm(helperPid) };
    const sameFront = d.frontPid();
    const helperAlive = d.proc.exitCode === null;
    await d.stop();
    const warnings = new Map<string, number>();
    for (const l of d.lines)
      if (Number(l.level) >= 40) warnings.set(String(l.msg), (warnings.get(String(l.msg)) ?? 0) + 1);
    const severe = d.lines.filter((l) => Number(l.level) >= 50);
    const closedIdle = d.lines
      .filter((l) => l.msg === 'idle connections closed to admit new ones: max_connections reached')
      .reduce((n, l) => n + Number(l.closed), 0);
    const refused = d.lines
      .filter((l) => l.msg === 'connections refused: max_connections reached')
      .reduce((n, l) => n + Number(l.dropped), 0);
    const envelope = {
      front_mb: [mb(top(before, 'rssFront')), mb(top(tail, 'rssFront'))],
      helper_mb: [mb(top(before, 'rssHelper')), mb(top(tail, 'rssHelper'))],
    };
    const report = {
      seconds: SOAK_SECONDS,
      connections: CONNECTIONS,
      requests: t.requests,
      errors: t.errors.length,
      retried: t.retried,
      latency_ms: { p50: pct(t.latencies, 0.5), p99: pct(t.latencies, 0.99), max: pct(t.latencies, 1) },
      while_quota_hangs_ms: {
        requests: t.hangLatencies.length,
        p50: pct(t.hangLatencies, 0.5),
        p99: pct(t.hangLatencies, 0.99),
        max: pct(t.hangLatencies, 1),
      },
      hostile: st,
      closed_idle_at_cap: closedIdle,
      refused_at_cap: refused,
      front_rss_mb: { peak_hwm: mb(peaks.front), end: mb(last.rssFront), envelope: envelope.front_mb },
      helper_rss_mb: { peak_hwm: mb(peaks.helper), end: mb(last.rssHelper), envelope: envelope.helper_mb },
      fds: { front: [quietFds.front, last.fdsFront], helper: [quietFds.helper, last.fdsHelper] },
      pids: { helper: helperPid, front: [frontPid, sameFront] },
      warnings: Object.fromEntries(warnings),
    };
    console.log(`hostile soak: ${JSON.stringify(report)}`);
    console.log(
      `hostile soak: front RSS MB per second: ${samples.map((s) => (s.rssFront / 1e6).toFixed(0)).join(' ')}`,
    );
    console.log(`hostile soak: front fds per second: ${samples.map((s) => s.fdsFront).join(' ')}`);
    assert.deepEqual(t.errors.slice(0, 5), [], 'every well-behaved request answered rightly by its deadline');
    assert.ok(t.hangLatencies.length > 0 && t.latencies.length > 0);
    // A retry follows a connection the server closed at the cap: never more than it says it closed.
    assert.ok(
      t.retried <= closedIdle + refused,
      `${t.retried} retries, ${closedIdle} idle connections closed, ${refused} refused`,
    );
    assert.deepEqual(
      severe.map((l) => l.msg),
      [],
      'nothing logged at error or fatal',
    );
    assert.ok(helperAlive && sameFront === frontPid, 'the same root helper and front as at the start');
    // The hostile clients were there: the floods passed the cap, the garbage was refused.
    assert.ok(closedIdle > 0 && st.floodClosedByServer > 0, 'floods past max_connections');
    assert.ok((warnings.get('bad policy request, closing connection without a reply') ?? 0) > 0, 'garbage');
    assert.ok(peaks.front < HOSTILE_FRONT_RSS_BOUND_MB * 1e6, `front peak RSS ${mb(peaks.front)} MB`);
    assert.ok(before.length >= 5, 'enough samples after the warm-up');
    assert.ok(
      top(tail, 'rssFront') < top(before, 'rssFront') * 1.1,
      `front RSS envelope ${JSON.stringify(envelope.front_mb)} MB`,
    );
    assert.ok(
      top(tail, 'rssHelper') < top(before, 'rssHelper') * 1.1,
      `helper RSS envelope ${JSON.stringify(envelope.helper_mb)} MB`,
    );
    assert.ok(
      last.fdsFront <= quietFds.front && last.fdsHelper <= quietFds.helper,
      `fds ${JSON.stringify(report.fds)}, quiet start ${JSON.stringify(quietFds)}`,
    );
  },
);
