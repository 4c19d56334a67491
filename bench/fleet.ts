// `node dist/bench/fleet.js`: a fleet sharing one store (issue 13). For
// PostgreSQL and Redis, FLEET_INSTANCES quotapolicy daemons (each its front
// and its root helper, as `serve` runs them) share one store, and the load
// generator spreads CONNECTIONS connections over them; the same connections
// on one daemon alone are the comparison. Scenario (c)'s requests and
// windows (never reached, every request counted), in both of its shapes:
// 1000 reused SASL users and a new one per request. Then the limits must
// stay exact: EXACT_REQUESTS requests for one id with a limit of EXACT_LIMIT,
// all at once, spread over the daemons, and exactly EXACT_LIMIT accepted.
//   --stores LIST   postgresql,redis (default both)
//   --seconds N     per figure (default 5; BENCH_SECONDS too)
// Prints a Markdown table (docs/BENCHMARKS.md, "A fleet sharing one store").
import { mkdtempSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawnSync } from 'node:child_process';
import { quotapolicy, standInQuota, ask, type System } from './systems.js';
import { runLoad, postfixRequest, encode, REQUEST_SEQ } from './loadgen.js';

const { values: opts } = parseArgs({
  options: {
    stores: { type: 'string', default: 'postgresql,redis' },
    seconds: { type: 'string', default: process.env.BENCH_SECONDS ?? '5' },
  },
});
if (process.getuid?.() !== 0) {
  process.stderr.write('fleet: run as root (quotapolicy serve starts as root)\n');
  process.exit(1);
}
const SECONDS = Number(opts.seconds);
const WARMUP_SECONDS = Math.min(1, SECONDS / 5);
/** The issue's fleet: four MX hosts' daemons. */
const FLEET_INSTANCES = 4;
/** Scenario (c)'s best point for the shared stores: 32 connections in all. */
const CONNECTIONS = 32;
const EXACT_LIMIT = 150;
const EXACT_REQUESTS = 4 * EXACT_LIMIT;
const EXACT_ID = 'fleet-exact';
/** Scenario (c)'s windows, never reached. */
const LIMITS: [number, number][] = [
  [10_000_000, 60],
  [100_000_000, 86400],
];
// Loopback and local sockets only; a database of this benchmark's own, and Redis database 3.
const URLS = {
  postgresql: 'postgresql://quotapolicy@%2Fvar%2Frun%2Fpostgresql/quotapolicy_fleet_bench',
  redis: 'redis://127.0.0.1:6379/3',
} as const;
type Store = keyof typeof URLS;

const reused = (i: number): Record<string, string> => ({
  ...postfixRequest(i),
  sasl_username: `user${i % 1000}`,
  recipient: `r${i % 500}@example.net`,
});
const fresh = (i: number): Record<string, string> => ({ ...reused(i), sasl_username: `fleet${REQUEST_SEQ}` });

function sh(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}
function emptyStore(store: Store): void {
  if (store === 'redis') sh('redis-cli', ['-h', '127.0.0.1', '-n', '3', 'FLUSHDB']);
  else {
    sh('su', ['postgres', '-c', 'psql -qAt -c "DROP DATABASE IF EXISTS quotapolicy_fleet_bench WITH (FORCE)"']);
    sh('su', ['postgres', '-c', 'psql -qAt -c "CREATE DATABASE quotapolicy_fleet_bench OWNER quotapolicy"']);
  }
}

async function start(work: string, store: Store, n: number): Promise<System[]> {
  const quota = standInQuota(join(work, 'fake-quota'));
  const config =
    `quota_path: ${quota}\nchecks: [rate_limit]\nrate_limit:\n  backend: ${store}\n  url: "${URLS[store]}"\n` +
    `  limits: ${JSON.stringify(LIMITS)}\n  limits_by_id: {"${EXACT_ID}": [[${EXACT_LIMIT}, 86400]]}\n`;
  const out: System[] = [];
  try {
    for (let i = 0; i < n; i++) out.push(await quotapolicy(`${store} ${i}`, join(work, `qp-${store}-${i}`), config));
  } catch (e) {
    for (const s of out) await s.stop();
    throw e;
  }
  return out;
}

/** Every daemon loaded at once, the connections spread evenly; req/s of them all. */
async function aggregate(daemons: System[], template: (i: number) => Record<string, string>): Promise<number> {
  const each = (seconds: number) =>
    Promise.all(
      daemons.map((d) =>
        runLoad({ to: d.to, connections: CONNECTIONS / daemons.length, seconds, pipeline: 1, template }),
      ),
    );
  await each(WARMUP_SECONDS);
  const rs = await each(SECONDS);
  const errors = rs.reduce((a, r) => a + r.errors, 0);
  if (errors > 0) throw new Error(`${errors} requests not answered with an action`);
  return rs.reduce((a, r) => a + r.requests, 0) / Math.max(...rs.map((r) => r.seconds));
}

/** EXACT_REQUESTS at once for one id, spread over the daemons: how many were accepted. */
async function exact(daemons: System[]): Promise<number> {
  const text = encode({ ...reused(0), sasl_username: EXACT_ID });
  const replies = await Promise.all(
    Array.from({ length: EXACT_REQUESTS }, (_, i) => ask(daemons[i % daemons.length]!.to.slice(5), text, 30_000)),
  );
  const bad = replies.filter((r) => !r.startsWith('action='));
  if (bad.length > 0) throw new Error(`not an action: ${bad[0]}`);
  return replies.filter((r) => r.startsWith('action=DUNNO\n')).length;
}

const rows: string[] = [];
const work = mkdtempSync(join(tmpdir(), 'qp-fleet-'));
chmodSync(work, 0o755);
try {
  for (const store of opts.stores.split(',') as Store[]) {
    if (!(store in URLS)) throw new Error(`--stores: ${store} is not one of ${Object.keys(URLS).join(', ')}`);
    const figures: number[] = [];
    let accepted = NaN;
    for (const n of [1, FLEET_INSTANCES]) {
      for (const [shape, template] of [
        ['reused', reused],
        ['fresh', fresh],
      ] as const) {
        emptyStore(store);
        const daemons = await start(join(work, `${store}-${n}-${shape}`), store, n);
        try {
          const rps = await aggregate(daemons, template);
          figures.push(rps);
          process.stderr.write(`${store}, ${n} instance(s), ${shape} ids: ${Math.round(rps)} req/s\n`);
          if (n === FLEET_INSTANCES && shape === 'fresh') accepted = await exact(daemons);
        } finally {
          for (const d of daemons) await d.stop();
        }
      }
    }
    const f = (x: number): string => Math.round(x).toLocaleString('en-US');
    rows.push(
      `| ${store} | ${f(figures[0]!)} | ${f(figures[2]!)} | ${f(figures[1]!)} | ${f(figures[3]!)} | ${accepted} of ${EXACT_REQUESTS} (limit ${EXACT_LIMIT})${accepted === EXACT_LIMIT ? '' : ' **not exact**'} |`,
    );
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
process.stdout.write(
  `${CONNECTIONS} connections in all, ${SECONDS} s per figure; req/s of every instance together\n\n` +
    `| store | 1 instance, 1000 reused ids | ${FLEET_INSTANCES} instances, 1000 reused ids | 1 instance, new id per request | ${FLEET_INSTANCES} instances, new id per request | one id hammered by ${FLEET_INSTANCES} instances: accepted |\n` +
    '|---|---:|---:|---:|---:|---|\n' +
    rows.join('\n') +
    '\n',
);
if (rows.some((r) => r.includes('not exact'))) process.exitCode = 1;
