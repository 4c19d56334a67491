// Benchmarks, work in progress for issue #5: scenario (d), the trivial DUNNO
// server, and (a), quotapolicy's quota decision on a cache hit, at 1, 8, 32
// and 128 connections, with the peak RSS (VmHWM) of every process of the
// system under test. Run as root: `npm run bench` (BENCH_SECONDS per point).
// Not yet: (b) real quota in user-mode-linux vs Dovecot quota-status, (c)
// rate limits vs policyd-rate-limit and postfwd, the plot, docs/BENCHMARKS.md.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, chmodSync, copyFileSync, mkdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runLoad, type LoadResult } from './loadgen.js';

const REPO = new URL('../../', import.meta.url).pathname;
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5);
const CONNECTIONS = [1, 8, 32, 128];

function vmhwm(pid: number): number {
  try { return Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) * 1024; } catch { return NaN; }
}

function tree(pid: number): number[] {
  const kids = existsSync(`/proc/${pid}/task/${pid}/children`) ? readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number) : [];
  return [pid, ...kids.flatMap(tree)];
}

async function waitReady(p: ChildProcess, pattern: RegExp): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const t = setTimeout(() => reject(new Error(`not ready: ${out.slice(-500)}`)), 15_000);
    const on = (d: Buffer): void => { out += d.toString(); if (pattern.test(out)) { clearTimeout(t); resolve(); } };
    p.stdout?.on('data', on);
    p.stderr?.on('data', on);
  });
}

interface Row extends LoadResult { system: string; connections: number; peakRssMb: Record<string, number> }

async function measure(system: string, to: string, pids: () => number[], template: (i: number) => Record<string, string>): Promise<Row[]> {
  const rows: Row[] = [];
  for (const connections of CONNECTIONS) {
    const r = await runLoad({ to, connections, seconds: SECONDS, pipeline: 1, template });
    const peak = Object.fromEntries(pids().map((p) => [String(p), +(vmhwm(p) / 1e6).toFixed(1)]));
    rows.push({ system, connections, ...r, peakRssMb: peak });
    process.stderr.write(`${system} c=${connections}: ${Math.round(r.reqPerSec)} req/s, p99 ${r.p99Ms.toFixed(2)} ms, errors ${r.errors}\n`);
  }
  return rows;
}

const dir = mkdtempSync(join(tmpdir(), 'qp-bench-'));
chmodSync(dir, 0o755);
const rcpt = (recipient: string) => (i: number) => ({ request: 'smtpd_access_policy', protocol_state: 'RCPT', recipient, sender: `s${i % 1000}@example.org`, client_address: `192.0.2.${i % 250}`, size: '0' });
const rows: Row[] = [];

// (d) trivial server
const trivial = spawn(process.execPath, [join(REPO, 'dist/bench/trivial-server.js'), `unix:${dir}/trivial.sock`], { stdio: ['ignore', 'pipe', 'pipe'] });
await waitReady(trivial, /ready/);
rows.push(...await measure('trivial DUNNO server (d)', `unix:${dir}/trivial.sock`, () => [trivial.pid!], rcpt('nobody@example.test')));
trivial.kill();

// (a) quotapolicy, quota decision, cache hit (a stand-in quota fills the cache once)
const fq = join(dir, 'fq');
mkdirSync(join(fq, 'fake-quota.d'), { recursive: true });
chmodSync(fq, 0o755);
copyFileSync(join(REPO, 'test/support/fake-quota.sh'), join(fq, 'quota'));
chmodSync(join(fq, 'quota'), 0o755);
writeFileSync(join(dir, 'q.yaml'), `listen: ["unix:${dir}/qp.sock"]\nsocket_group: quotapolicy\nquota_path: ${fq}/quota\nmin_uid: 100\nlog_level: warn\ncache_ttl_ms: 3600000\n`);
chmodSync(join(dir, 'q.yaml'), 0o644);
const qp = spawn(process.execPath, [join(REPO, 'bin/quotapolicy.js'), 'serve', '--config', join(dir, 'q.yaml')], { stdio: ['ignore', 'pipe', 'pipe'] });
await waitReady(qp, /starting front/);
await new Promise((r) => setTimeout(r, 1500));
rows.push(...await measure('quotapolicy quota, cache hit (a)', `unix:${dir}/qp.sock`, () => tree(qp.pid!), rcpt('nobody@example.test')));
qp.kill('SIGTERM');

console.log(JSON.stringify(rows, null, 1));
