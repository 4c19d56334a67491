// Soak: 64 connections of mixed quota and rate-limit traffic for
// QP_SOAK_SECONDS (CI: 60; `npm run soak`: 600). Required: no errors, RSS
// growth under 10% after warm-up, no file-descriptor growth.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, chmodSync, chownSync, mkdirSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import userid from 'userid';
import { startDaemon, fakeQuota, quotaBlock, writeConfig } from './support/daemon.js';
import { rcpt } from './support/policy-client.js';

export const SOAK_SECONDS = Number(process.env.QP_SOAK_SECONDS ?? 60);
const CONNECTIONS = 64;
/**
 * Memory is compared after the warm-up (20% of the run, at least 30 s: V8 sizes its heap first). RSS saws up and down
 * with V8's heap, so the measure is the envelope: the peak of the last 10% of the run against the peak before it.
 */
const WARMUP_MS = Math.max(30_000, SOAK_SECONDS * 1000 * 0.2);

const rss = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024;
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;

test(`soak: ${CONNECTIONS} connections for ${SOAK_SECONDS} s, quota and rate-limit traffic`, { timeout: (SOAK_SECONDS + 120) * 1000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'qp-soak-'));
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
  const cfg = writeConfig(dir, `listen: ["unix:${sock}"]\nsocket_group: quotapolicy\nquota_path: ${fq.path}\nmin_uid: 100\nlog_level: warn\ncache_ttl_ms: 2000\n` +
    `checks: [quota, rate_limit]\nrate_limit:\n  sqlite_path: ${rl}/rl.sqlite3\n  limits: [[1000, 1], [1000000000, 3600]]\n`);
  const d = startDaemon(['--config', cfg]);
  const helperPid = d.proc.pid!;
  let frontPid = 0;
  for (let i = 0; i < 100 && frontPid === 0; i++) {
    try { frontPid = d.frontPid(); } catch { await new Promise((r) => setTimeout(r, 50)); }
  }
  for (let i = 0; i < 100; i++) { try { net.connect(sock).destroy(); break; } catch { await new Promise((r) => setTimeout(r, 50)); } }
  await new Promise((r) => setTimeout(r, 500));
  // One request first, so the store and caches exist, then the quiet fd count.
  await new Promise<void>((resolve) => { const s = net.connect(sock, () => s.write(rcpt('nobody@example.test', { sasl_username: 'warm' }))); s.on('data', () => { s.end(); }); s.on('close', () => resolve()); });
  await new Promise((r) => setTimeout(r, 300));
  const quietFds = { front: fds(frontPid), helper: fds(helperPid) };
  const mix = ['quotapolicy@example.test', 'nobody@example.test', 'nobody+x@example.test', 'root@example.test', 'nosuch@example.test'];
  const end = Date.now() + SOAK_SECONDS * 1000;
  const warmEnd = Date.now() + WARMUP_MS;
  let requests = 0;
  let errors = 0;
  const samples: { rssFront: number; rssHelper: number; fdsFront: number; fdsHelper: number }[] = [];
  let warm: (typeof samples)[number] | undefined;
  let warmIndex = 0;
  const sampler = setInterval(() => {
    const s = { rssFront: rss(frontPid), rssHelper: rss(helperPid), fdsFront: fds(frontPid), fdsHelper: fds(helperPid) };
    samples.push(s);
    if (!warm && Date.now() >= warmEnd) { warm = s; warmIndex = samples.length - 1; }
  }, 1000);
  const conn = async (n: number): Promise<void> => {
    while (Date.now() < end) {
      // A connection per 200 requests, as smtpd processes come and go.
      await new Promise<void>((resolve) => {
        const s = net.connect(sock);
        let buf = '';
        let sent = 0;
        let got = 0;
        const send = (): void => {
          if (sent >= 200 || Date.now() >= end) { s.end(); return; }
          sent++;
          s.write(rcpt(mix[(n + sent) % mix.length]!, { sasl_username: `user${n}-${sent % 7}`, client_address: `192.0.2.${n}` }));
        };
        s.on('connect', send);
        s.on('data', (b) => {
          buf += b.toString();
          let i;
          while ((i = buf.indexOf('\n\n')) !== -1) {
            const reply = buf.slice(0, i);
            buf = buf.slice(i + 2);
            got++;
            requests++;
            if (!/^action=(DUNNO|452 4\.2\.2 .*)$/.test(reply)) errors++;
            send();
          }
        });
        s.on('error', () => { errors++; });
        s.on('close', () => { if (got !== sent) errors += sent - got; resolve(); });
      });
    }
  };
  await Promise.all(Array.from({ length: CONNECTIONS }, (_, n) => conn(n)));
  clearInterval(sampler);
  await new Promise((r) => setTimeout(r, 1500));
  const last = { rssFront: rss(frontPid), rssHelper: rss(helperPid), fdsFront: fds(frontPid), fdsHelper: fds(helperPid) };
  await d.stop();
  const logErrors = d.lines.filter((l) => Number(l.level) >= 40 && l.msg !== 'connection closed in the middle of a request').length;
  const peak = samples.reduce((m, s) => ({ f: Math.max(m.f, s.rssFront), h: Math.max(m.h, s.rssHelper) }), { f: 0, h: 0 });
  const lastN = Math.max(5, Math.round(samples.length / 10));
  const before = samples.slice(warmIndex, -lastN);
  const tail = samples.slice(-lastN);
  const top = (xs: typeof samples, k: 'rssFront' | 'rssHelper'): number => Math.max(...xs.map((x) => x[k]));
  const envelope = {
    front_mb: [+(top(before, 'rssFront') / 1e6).toFixed(1), +(top(tail, 'rssFront') / 1e6).toFixed(1)],
    helper_mb: [+(top(before, 'rssHelper') / 1e6).toFixed(1), +(top(tail, 'rssHelper') / 1e6).toFixed(1)],
  };
  const report = {
    seconds: SOAK_SECONDS, connections: CONNECTIONS, requests, req_per_s: Math.round(requests / SOAK_SECONDS), errors, warn_or_error_log_lines: logErrors,
    front_rss_mb: { after_warmup: +(warm!.rssFront / 1e6).toFixed(1), end: +(last.rssFront / 1e6).toFixed(1), peak: +(peak.f / 1e6).toFixed(1) },
    helper_rss_mb: { after_warmup: +(warm!.rssHelper / 1e6).toFixed(1), end: +(last.rssHelper / 1e6).toFixed(1), peak: +(peak.h / 1e6).toFixed(1) },
    fds: { front: [quietFds.front, last.fdsFront], helper: [quietFds.helper, last.fdsHelper] },
    rss_peak_after_warmup_vs_last_10pct: envelope,
  };
  console.log(`soak: ${JSON.stringify(report)}`);
  console.log(`soak: front RSS MB per second: ${samples.map((s) => (s.rssFront / 1e6).toFixed(0)).join(' ')}`);
  console.log(`soak: helper RSS MB per second: ${samples.map((s) => (s.rssHelper / 1e6).toFixed(0)).join(' ')}`);
  assert.equal(errors, 0);
  assert.equal(logErrors, 0, 'no warnings or errors logged');
  assert.ok(before.length >= 5, 'enough samples after the warm-up');
  assert.ok(top(tail, 'rssFront') < top(before, 'rssFront') * 1.1, `front RSS envelope ${JSON.stringify(envelope.front_mb)} MB`);
  assert.ok(top(tail, 'rssHelper') < top(before, 'rssHelper') * 1.1, `helper RSS envelope ${JSON.stringify(envelope.helper_mb)} MB`);
  // fds: quiet at the end (all connections closed) against quiet... the warm-up sample has connections open, so compare with the quiet start.
  assert.ok(last.fdsFront <= quietFds.front && last.fdsHelper <= quietFds.helper, `fds ${JSON.stringify(report.fds)}, quiet start ${JSON.stringify(quietFds)}`);
});
