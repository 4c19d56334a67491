// `node dist/bench/busy-id.js`: what one busy id costs a rate-limit store
// (issue 13). For each store, one id is given a day of history in the
// store's own format (SQLite and Redis: 86,400 busy seconds; MariaDB, 86,400
// busy seconds of 10 events; PostgreSQL, which keeps a row per event: 10
// events a second for a day), then:
//   fresh   CONNECTIONS loops check-and-record one id without history;
//   busy    the same loops on the busy id;
//   others  the loops over 1000 other ids: alone; while a second process
//           (another instance sharing the store) checks a fresh id at full
//           speed (the control: the two processes share the CPU); and while
//           it checks the busy id at full speed.
// Each figure is consume() calls answered per second, the call the front makes
// for each counted request (the protocol and the front's other work excluded,
// so the store's share is seen whole). Windows of a minute and a day, never
// reached, so every call is recorded, as in scenario (c).
//   --stores LIST   sqlite,redis,postgresql,mysql (default: all)
//   --seconds N     per figure (default 5; BUSY_BENCH_SECONDS too)
//   --connections N concurrent calls per process (default 32)
// Prints a Markdown table (docs/BENCHMARKS.md, "One busy id").
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { openStore, type StoreConfig } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import { StoreError, storedKey, type RateStore } from '../src/frontend/ratelimit/store.js';
import type { Limit } from '../src/frontend/ratelimit/decide.js';

type Backend = StoreConfig['backend'];
const { values: opts } = parseArgs({
  options: {
    stores: { type: 'string', default: 'sqlite,redis,postgresql,mysql' },
    seconds: { type: 'string', default: process.env.BUSY_BENCH_SECONDS ?? '5' },
    connections: { type: 'string', default: '32' },
    // Internal: the second process of "others with the busy id".
    role: { type: 'string' },
    store: { type: 'string' },
    path: { type: 'string' },
    key: { type: 'string' },
  },
});
const SECONDS = Number(opts.seconds);
const CONNECTIONS = Number(opts.connections);
/** Before each figure: the first checks (a store may build its totals then), not counted. */
const WARMUP_SECONDS = Math.min(1, SECONDS / 5);
/** A minute and a day, never reached (scenario (c)'s windows). */
const LIMITS: readonly Limit[] = [
  [10_000_000, 60],
  [100_000_000, 86400],
];
const DAY = 86_400;
/** Events a second of the busy id on the per-event store and MariaDB (the "10 events a second"). */
const EVENTS_PER_SECOND = 10;
const OTHER_IDS = 1000;

// Loopback and local sockets only, databases of this benchmark's own.
const URLS = {
  redis: 'redis://127.0.0.1:6379/2',
  postgresql: 'postgresql://root@%2Fvar%2Frun%2Fpostgresql/quotapolicy_busy_bench',
  mysql: 'mysql://root@localhost/quotapolicy_busy_bench?socketPath=/run/mysqld/mysqld.sock',
};

const open = (backend: Backend, path: string): Promise<RateStore> =>
  openStore({
    ...NO_STORE_TLS,
    backend,
    sqlite_path: path,
    url: backend === 'sqlite' ? null : URLS[backend],
    timeout_ms: 10_000,
    sql_limits_by_id: '',
  });

interface Rate {
  /** Calls answered per second (store errors excluded). */
  perSec: number;
  /** Calls that failed with a store error (a timeout, SQLite's lock wait): db_error_action in the daemon. */
  errors: number;
}

/** CONNECTIONS loops, each one call after another, for `seconds`. */
async function load(store: RateStore, key: (i: number) => string, seconds: number): Promise<Rate> {
  let done = 0;
  let errors = 0;
  let i = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) {
        let r;
        try {
          r = await store.consume({
            buckets: [{ key: key(i++), limits: LIMITS }],
            n: 1,
            nowSec: Math.floor(Date.now() / 1000),
            commit: true,
          });
        } catch (e) {
          if (!(e instanceof StoreError)) throw e;
          errors++;
          continue;
        }
        if (!r.ok) throw new Error(`refused: ${JSON.stringify(r)} (the windows are never reached)`);
        done++;
      }
    }),
  );
  return { perSec: done / seconds, errors };
}

async function figure(store: RateStore, key: (i: number) => string): Promise<Rate> {
  await load(store, key, WARMUP_SECONDS);
  return load(store, key, SECONDS);
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr || r.error?.message}`);
}

/** A day of history for `key` up to now - 1, written straight in the store's own format. */
async function prefill(backend: Backend, path: string, key: string): Promise<void> {
  const now = Math.floor(Date.now() / 1000);
  const from = now - DAY;
  const k = storedKey(key);
  if (backend === 'sqlite') {
    const { default: Database } = await import('better-sqlite3');
    const db = new Database(path);
    const ins = db.prepare('INSERT INTO qp_rate_counts (key, at, n) VALUES (?, ?, 1)');
    db.transaction(() => {
      for (let at = from; at < now; at++) ins.run(k, at);
    })();
    db.close();
  } else if (backend === 'redis') {
    const { Redis } = await import('ioredis');
    const r = new Redis(URLS.redis);
    for (let s = from; s < now; s += 5000) {
      const f: number[] = [];
      for (let at = s; at < Math.min(s + 5000, now); at++) f.push(at, 1);
      await r.hset(`qp:rl2:${k}`, ...f);
    }
    await r.expire(`qp:rl2:${k}`, DAY + 1);
    r.disconnect();
  } else if (backend === 'postgresql') {
    const { default: pg } = await import('pg');
    const c = new pg.Client({ host: '/var/run/postgresql', user: 'root', database: 'quotapolicy_busy_bench' });
    await c.connect();
    await c.query(
      'INSERT INTO qp_rate_events (key, at, n) SELECT $1, $2 + g / $3, 1 FROM generate_series(0, $4 - 1) g',
      [k, from, EVENTS_PER_SECOND, DAY * EVENTS_PER_SECOND],
    );
    await c.query('ANALYZE qp_rate_events');
    await c.end();
  } else {
    const { default: mysql } = await import('mysql2/promise');
    const c = await mysql.createConnection({
      socketPath: '/run/mysqld/mysqld.sock',
      user: 'root',
      database: 'quotapolicy_busy_bench',
    });
    // One row per key and second (schema 3), as SQLite's.
    for (let s = from; s < now; s += 10_000) {
      const rows: [string, number, number][] = [];
      for (let at = s; at < Math.min(s + 10_000, now); at++) rows.push([k, at, EVENTS_PER_SECOND]);
      await c.query('INSERT INTO qp_rate_counts (`key`, at, n) VALUES ?', [rows]);
    }
    await c.end();
  }
}

/** A fresh place for the store: a new SQLite file, Redis database 2 emptied, a new SQL database. */
function fresh(backend: Backend, dir: string): string {
  if (backend === 'redis') run('redis-cli', ['-h', '127.0.0.1', '-n', '2', 'FLUSHDB']);
  if (backend === 'postgresql') {
    run('su', ['postgres', '-c', 'psql -qAt -c "DROP DATABASE IF EXISTS quotapolicy_busy_bench"']);
    run('su', ['postgres', '-c', 'psql -qAt -c "CREATE DATABASE quotapolicy_busy_bench OWNER root"']);
  }
  if (backend === 'mysql')
    run('mysql', ['-e', 'DROP DATABASE IF EXISTS quotapolicy_busy_bench; CREATE DATABASE quotapolicy_busy_bench']);
  return join(dir, `${backend}.sqlite3`);
}

const BUSY = 'sasl:newsletter@example.test';
const FRESH = 'sasl:fresh@example.test';

if (opts.role === 'busy') {
  // The second instance: the busy id at full speed until killed.
  const store = await open(opts.store as Backend, opts.path!);
  process.stdout.write('ready\n');
  for (;;) await load(store, () => opts.key!, 3600);
}

const rows: string[] = [];
const dir = mkdtempSync(join(tmpdir(), 'qp-busy-bench-'));
for (const backend of opts.stores.split(',') as Backend[]) {
  const path = fresh(backend, dir);
  const store = await open(backend, path); // creates the tables
  await prefill(backend, path, BUSY);
  const t0 = performance.now();
  await store.consume({
    buckets: [{ key: BUSY, limits: LIMITS }],
    n: 1,
    nowSec: Math.floor(Date.now() / 1000),
    commit: true,
  });
  const firstMs = performance.now() - t0;
  const other = (i: number): string => `sasl:user${i % OTHER_IDS}@example.test`;
  const alone = await figure(store, other);
  const freshRate = await figure(store, () => FRESH);
  const busyRate = await figure(store, () => BUSY);
  /** The other ids while a second process checks `key` at full speed. */
  const beside = async (key: string): Promise<Rate> => {
    const child = spawn(
      process.execPath,
      [fileURLToPath(import.meta.url), '--role', 'busy', '--store', backend, '--path', path, '--key', key],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    try {
      await new Promise<void>((resolve, reject) => {
        child.stdout.once('data', () => resolve());
        child.once('exit', (c) => reject(new Error(`the second process exited (${c})`)));
      });
      return await figure(store, other);
    } finally {
      child.kill();
    }
  };
  // The control: the same second process on an id without a day of history. On a machine with few
  // cores the two processes also share the CPU; the busy id's own cost is the difference between the two.
  const besideFresh = await beside(FRESH);
  const besideBusy = await beside(BUSY);
  await store.close();
  const f = (r: Rate): string =>
    Math.round(r.perSec).toLocaleString('en-US') + (r.errors > 0 ? ` (${r.errors} errors)` : '');
  const line =
    `| ${backend} | ${firstMs.toFixed(0)} | ${f(freshRate)} | ${f(busyRate)} | ` +
    `${(freshRate.perSec / busyRate.perSec).toFixed(2)} | ${f(alone)} | ${f(besideFresh)} | ${f(besideBusy)} | ` +
    `${(besideBusy.perSec / besideFresh.perSec).toFixed(2)} |`;
  process.stderr.write(line + '\n');
  rows.push(line);
}
rmSync(dir, { recursive: true, force: true });
process.stdout.write(
  `${CONNECTIONS} concurrent calls per process, ${SECONDS} s per figure; calls/s\n\n` +
    '| store | first check of the busy id, ms | fresh id | busy id | fresh / busy | other ids alone | ' +
    'other ids, a fresh id beside | other ids, the busy id beside | busy beside / fresh beside |\n' +
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|\n' +
    rows.join('\n') +
    '\n',
);
process.exit(0);
