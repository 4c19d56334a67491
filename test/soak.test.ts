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
/** Memory and fds are compared from the end of the warm-up: 20% of the run, at least 30 s (V8 sizes its heap in the first half minute). */
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
  const mix = ['quotapolicy@example.test', 'nobody@example.test', 'nobody+x@example.test', 'root@example.test', 'nosuch@example.test'];
  const end = Date.now() + SOAK_SECONDS * 1000;
  const warmEnd = Date.now() + WARMUP_MS;
  let requests = 0;
  let errors = 0;
  const samples: { rssFront: number; rssHelper: number; fdsFront: number; fdsHelper: number }[] = [];
  let warm: (typeof samples)[number] | undefined;
  const sampler = setInterval(() => {
    const s = { rssFront: rss(frontPid), rssHelper: rss(helperPid), fdsFront: fds(frontPid), fdsHelper: fds(helperPid) };
    samples.push(s);
    if (!warm && Date.now() >= warmEnd) warm = s;
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
  const report = {
    seconds: SOAK_SECONDS, connections: CONNECTIONS, requests, req_per_s: Math.round(requests / SOAK_SECONDS), errors, warn_or_error_log_lines: logErrors,
    front_rss_mb: { after_warmup: +(warm!.rssFront / 1e6).toFixed(1), end: +(last.rssFront / 1e6).toFixed(1), peak: +(peak.f / 1e6).toFixed(1) },
    helper_rss_mb: { after_warmup: +(warm!.rssHelper / 1e6).toFixed(1), end: +(last.rssHelper / 1e6).toFixed(1), peak: +(peak.h / 1e6).toFixed(1) },
    fds: { front: [warm!.fdsFront, last.fdsFront], helper: [warm!.fdsHelper, last.fdsHelper] },
  };
  console.log(`soak: ${JSON.stringify(report)}`);
  console.log(`soak: front RSS MB per second: ${samples.map((s) => (s.rssFront / 1e6).toFixed(0)).join(' ')}`);
  console.log(`soak: helper RSS MB per second: ${samples.map((s) => (s.rssHelper / 1e6).toFixed(0)).join(' ')}`);
  assert.equal(errors, 0);
  assert.equal(logErrors, 0, 'no warnings or errors logged');
  assert.ok(last.rssFront < warm!.rssFront * 1.1, `front RSS ${report.front_rss_mb.after_warmup} -> ${report.front_rss_mb.end} MB`);
  assert.ok(last.rssHelper < warm!.rssHelper * 1.1, `helper RSS ${report.helper_rss_mb.after_warmup} -> ${report.helper_rss_mb.end} MB`);
  assert.ok(last.fdsFront <= warm!.fdsFront && last.fdsHelper <= warm!.fdsHelper, `fds ${JSON.stringify(report.fds)}`);
});
