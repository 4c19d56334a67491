// PostgreSQL through PgBouncer (issue 13, "Real deployments"): Debian's
// pgbouncer, started here on a port of its own with a pool of POOL server
// connections per database, in transaction pooling mode (and statement
// pooling, which the README documents too), in front of the local server and
// databases made for this file (dropped after). Through it: tables created by
// several instances at once, version 1 tables converted, the whole store
// conformance suite, and one limit shared exactly by instances whose client
// connections outnumber the pool's server connections.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, chownSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { STORE_URLS, uniq } from './support/stores.js';
import { storeConformance } from './support/conformance.js';
import { openStore } from '../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../src/frontend/ratelimit/store-tls.js';
import { storedKey, type RateStore } from '../src/frontend/ratelimit/store.js';
import { PG_POOL_SIZE, PG_SCHEMA_VERSION } from '../src/frontend/ratelimit/stores/postgres.js';

/**
 * This file's port: not 6432, where the package's own pgbouncer service
 * listens on a machine whose systemd starts it on installation.
 */
const PORT = 6437;
/** PgBouncer's server connections per database and user: fewer than the store's clients, so it multiplexes. */
const POOL = 5;
const T = 1_800_000_000;
/** Advisory lock id the store takes while it creates or converts the tables (postgres.ts MIGRATION_LOCK). */
const MIGRATION_LOCK = 0x7170;
/** The databases, on the shared server: made here, dropped after. */
const DB = { main: 'qp_pgbouncer_test', v1: 'qp_pgbouncer_test_v1', fresh: 'qp_pgbouncer_test_fresh' } as const;
/** PgBouncer's names for them: [name, database, pool_mode]. */
const ROUTES = [
  ['qp_tx', DB.main, 'transaction'],
  ['qp_stmt', DB.main, 'statement'],
  ['qp_v1', DB.v1, 'transaction'],
  ['qp_fresh_stmt', DB.fresh, 'statement'],
] as const;
type Route = (typeof ROUTES)[number][0];
/** A client's URL through PgBouncer, as user qp (trust, listed in its auth_file). */
const via = (route: Route | 'pgbouncer'): string => `postgresql://qp@127.0.0.1:${PORT}/${route}`;
/** The shared server directly, as the other store tests connect. */
function direct(db: string): string {
  const u = new URL(STORE_URLS.postgresql);
  u.pathname = `/${db}`;
  return u.toString();
}

async function sql<R extends pg.QueryResultRow = Record<string, unknown>>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<R[]> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    return (await c.query<R>(text, values)).rows;
  } finally {
    await c.end();
  }
}

const open = (url: string): Promise<RateStore> =>
  openStore({ ...NO_STORE_TLS, backend: 'postgresql', url, sqlite_path: '', timeout_ms: 10_000, sql_limits_by_id: '' });

// Cleanup, in reverse order, whatever failed: pgbouncer stopped by its pid, databases dropped, the directory removed.
const cleanup: (() => Promise<void> | void)[] = [];
async function cleanAll(): Promise<void> {
  for (const f of cleanup.splice(0).reverse())
    await Promise.resolve()
      .then(f)
      .catch((e: unknown) => console.error('cleanup:', e));
}
after(cleanAll);

let bouncer: ChildProcess;
let bouncerLog = '';
try {
  const dir = mkdtempSync(join(tmpdir(), 'qp-pgbouncer-'));
  cleanup.push(() => rmSync(dir, { recursive: true, force: true }));
  for (const db of Object.values(DB)) {
    // A run that died before its cleanup may have left one.
    await sql(STORE_URLS.postgresql, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
    await sql(STORE_URLS.postgresql, `CREATE DATABASE ${db} ENCODING 'UTF8' TEMPLATE template0`);
    cleanup.push(() => sql(STORE_URLS.postgresql, `DROP DATABASE IF EXISTS ${db} WITH (FORCE)`).then(() => {}));
  }
  // PgBouncer refuses to run as root: it drops to postgres (-u), which the server's local peer or
  // trust authentication lets in as role postgres over its unix socket.
  writeFileSync(join(dir, 'users.txt'), '"qp" ""\n');
  writeFileSync(
    join(dir, 'pgbouncer.ini'),
    [
      '[databases]',
      ...ROUTES.map(
        ([name, db, mode]) => `${name} = host=/var/run/postgresql dbname=${db} user=postgres pool_mode=${mode}`,
      ),
      '[pgbouncer]',
      'listen_addr = 127.0.0.1',
      `listen_port = ${PORT}`,
      'unix_socket_dir =',
      'auth_type = trust',
      `auth_file = ${join(dir, 'users.txt')}`,
      'admin_users = qp',
      `default_pool_size = ${POOL}`,
      'max_client_conn = 500',
      '',
    ].join('\n'),
  );
  const pw = execFileSync('id', ['-u', 'postgres']).toString().trim();
  const gr = execFileSync('id', ['-g', 'postgres']).toString().trim();
  for (const f of ['', 'users.txt', 'pgbouncer.ini']) chownSync(join(dir, f), Number(pw), Number(gr));
  bouncer = spawn('pgbouncer', ['-u', 'postgres', join(dir, 'pgbouncer.ini')], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<void>((resolve) => bouncer.once('exit', () => resolve()));
  bouncer.once('error', (e) => {
    bouncerLog += `spawn: ${e.message}\n`;
  });
  cleanup.push(async () => {
    if (bouncer.exitCode === null && bouncer.signalCode === null) {
      bouncer.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (bouncer.exitCode === null && bouncer.signalCode === null) bouncer.kill('SIGKILL');
    }
  });
  for (const s of [bouncer.stdout!, bouncer.stderr!]) s.on('data', (d: Buffer) => (bouncerLog += d.toString()));
  for (let i = 0; ; i++) {
    if (bouncer.exitCode !== null || bouncerLog.includes('spawn:'))
      throw new Error(`pgbouncer did not start (is it installed? scripts/setup.sh --test):\n${bouncerLog}`);
    try {
      await sql(via('pgbouncer'), 'SHOW VERSION');
      break;
    } catch (e) {
      if (i >= 100)
        throw new Error(`pgbouncer does not answer on ${PORT}: ${(e as Error).message}\n${bouncerLog}`, {
          cause: e,
        });
      await new Promise((r) => setTimeout(r, 100));
    }
  }
} catch (e) {
  await cleanAll();
  throw e;
}

/** Whether some session still holds the migration lock in db. */
const migrationLockHeld = async (db: string): Promise<boolean> =>
  (
    await sql(
      STORE_URLS.postgresql,
      `SELECT 1 FROM pg_locks l JOIN pg_database d ON d.oid = l.database
       WHERE l.locktype = 'advisory' AND l.classid = 0 AND l.objid = $1 AND d.datname = $2`,
      [MIGRATION_LOCK, db],
    )
  ).length > 0;

test('statement pooling cannot create the tables (a transaction of several statements): one clear error, nothing created', async () => {
  await assert.rejects(open(via('qp_fresh_stmt')), {
    name: 'StoreError',
    message: `postgresql: the tables need creating or converting to schema ${PG_SCHEMA_VERSION}, one transaction of several statements, and the pooler refused it (transaction blocks not allowed in statement pooling mode): open the store once directly or through PgBouncer's transaction pooling`,
  });
  assert.deepEqual(await sql(direct(DB.fresh), "SELECT to_regclass('qp_schema') AS t"), [{ t: null }]);
});

test(`a fresh database: 6 instances open it at once through transaction pooling (${POOL} server connections), each succeeds, no lock is left`, async () => {
  const opened = await Promise.allSettled(Array.from({ length: 6 }, () => open(via('qp_tx'))));
  const stores = opened.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  try {
    assert.deepEqual(
      opened.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : [])),
      [],
    );
    assert.deepEqual(await sql(direct(DB.main), 'SELECT version FROM qp_schema'), [{ version: PG_SCHEMA_VERSION }]);
    assert.equal(await migrationLockHeld(DB.main), false, 'the migration lock went with its transaction');
    // Every instance works.
    const key = uniq('fresh');
    for (const s of stores)
      assert.equal(
        (await s.consume({ buckets: [{ key, limits: [[6, 60]] }], n: 1, nowSec: T, commit: true })).ok,
        true,
      );
    assert.equal(
      (await stores[0]!.consume({ buckets: [{ key, limits: [[6, 60]] }], n: 1, nowSec: T, commit: true })).ok,
      false,
    );
  } finally {
    for (const s of stores) await s.close();
  }
  // Current tables: statement pooling opens them too (two single statements).
  const s = await open(via('qp_stmt'));
  await s.close();
});

test('version 1 tables are converted through transaction pooling, by 3 instances at once: counts kept, long keys moved', async () => {
  const long = `sender:${'l'.repeat(1000)}`;
  const keys: Record<string, number> = { 'sasl:a': 3, [long]: 5 };
  await sql(
    direct(DB.v1),
    `CREATE TABLE qp_schema (version INTEGER NOT NULL); INSERT INTO qp_schema VALUES (1);
    CREATE TABLE qp_rate_events (key TEXT NOT NULL, at BIGINT NOT NULL, n INTEGER NOT NULL);
    CREATE INDEX qp_rate_events_key_at ON qp_rate_events (key, at);
    CREATE TABLE qp_rate_hits (key TEXT NOT NULL, seconds BIGINT NOT NULL, hits BIGINT NOT NULL, PRIMARY KEY (key, seconds))`,
  );
  for (const [k, n] of Object.entries(keys))
    await sql(direct(DB.v1), 'INSERT INTO qp_rate_events VALUES ($1, $2, 1), ($1, $3, $4)', [k, T - 1, T, n - 1]);
  const stores = await Promise.all(Array.from({ length: 3 }, () => open(via('qp_v1'))));
  try {
    for (const [k, n] of Object.entries(keys))
      for (const s of stores)
        assert.deepEqual(
          await s.consume({ buckets: [{ key: k, limits: [[n, 60]] }], n: 1, nowSec: T, commit: false }),
          { ok: false, key: k, limit: [n, 60], used: n },
          k.slice(0, 12),
        );
  } finally {
    for (const s of stores) await s.close();
  }
  assert.deepEqual(await sql(direct(DB.v1), 'SELECT version FROM qp_schema'), [{ version: PG_SCHEMA_VERSION }]);
  assert.deepEqual(
    (await sql<{ key: string }>(direct(DB.v1), 'SELECT DISTINCT key FROM qp_rate_events ORDER BY key')).map(
      (r) => r.key,
    ),
    Object.keys(keys).map(storedKey).sort(),
  );
  assert.equal(await migrationLockHeld(DB.v1), false);
});

storeConformance('postgresql', via('qp_tx'), 'postgresql through PgBouncer, transaction pooling');
storeConformance('postgresql', via('qp_stmt'), 'postgresql through PgBouncer, statement pooling');

test(`one limit L shared exactly by 6 instances (3 transaction, 3 statement pooling), more clients than the ${POOL} server connections`, async () => {
  const L = 37;
  const PER_INSTANCE = 100;
  const stores = await Promise.all(
    ['qp_tx', 'qp_tx', 'qp_tx', 'qp_stmt', 'qp_stmt', 'qp_stmt'].map((r) => open(via(r as Route))),
  );
  try {
    const key = uniq('shared');
    const req = { buckets: [{ key, limits: [[L, 3600]] as const }], n: 1, nowSec: T, commit: true };
    // Side traffic too (hits, events), so that each instance holds more of its PG_POOL_SIZE connections.
    const all = await Promise.all(
      stores.flatMap((s) => [
        ...Array.from({ length: PER_INSTANCE }, () => s.consume(req)),
        ...Array.from({ length: PG_POOL_SIZE }, () => s.recordHit(key, 3600).then(() => ({ ok: false }))),
        ...Array.from({ length: PG_POOL_SIZE }, () => s.events(key, 0).then(() => ({ ok: false }))),
      ]),
    );
    assert.equal(all.filter((r) => r.ok).length, L);
    assert.deepEqual(await sql(direct(DB.main), 'SELECT SUM(n)::int AS n FROM qp_rate_events WHERE key = $1', [key]), [
      { n: L },
    ]);
    // The stores' connections are still open (idle in their pools): PgBouncer's clients and servers per route.
    const clients = await sql<{ database: string }>(via('pgbouncer'), 'SHOW CLIENTS');
    const servers = await sql<{ database: string }>(via('pgbouncer'), 'SHOW SERVERS');
    for (const route of ['qp_tx', 'qp_stmt']) {
      const c = clients.filter((r) => r.database === route).length;
      const sv = servers.filter((r) => r.database === route).length;
      assert.ok(c > POOL, `${route}: ${c} clients, more than the pool of ${POOL}`);
      assert.ok(sv <= POOL, `${route}: ${sv} server connections, at most ${POOL}`);
    }
  } finally {
    for (const s of stores) await s.close();
  }
});
