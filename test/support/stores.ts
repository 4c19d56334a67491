// The real backends the conformance suite runs against (servers this machine
// kind runs; .ci/run makes sure they are up). QP_STORES=sqlite,redis narrows.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/frontend/ratelimit/open-store.js';
import { NO_STORE_TLS } from '../../src/frontend/ratelimit/store-tls.js';
import type { RateStore } from '../../src/frontend/ratelimit/store.js';

// Unix sockets as root: peer/unix_socket authentication works both on a fresh
// Debian (scripts/start-test-services.sh creates the role and database) and on
// hosts with trust authentication. QP_PG_URL etc. override.
export const STORE_URLS = {
  postgresql: process.env.QP_PG_URL ?? 'postgresql://root@%2Fvar%2Frun%2Fpostgresql/test',
  mysql: process.env.QP_MYSQL_URL ?? 'mysql://root@localhost/test?socketPath=/run/mysqld/mysqld.sock',
  redis: process.env.QP_REDIS_URL ?? 'redis://127.0.0.1:6379/0',
} as const;

/** For the daemon under test, which connects as the service user. */
export const SERVICE_STORE_URLS = {
  postgresql: process.env.QP_SERVICE_PG_URL ?? 'postgresql://quotapolicy@%2Fvar%2Frun%2Fpostgresql/quotapolicy_test',
  mysql:
    process.env.QP_SERVICE_MYSQL_URL ??
    'mysql://quotapolicy@localhost/quotapolicy_test?socketPath=/run/mysqld/mysqld.sock',
  redis: process.env.QP_REDIS_URL ?? 'redis://127.0.0.1:6379/0',
} as const;

export type Backend = 'sqlite' | 'postgresql' | 'mysql' | 'redis';
export const BACKENDS: Backend[] = (process.env.QP_STORES?.split(',') as Backend[] | undefined) ?? [
  'sqlite',
  'postgresql',
  'mysql',
  'redis',
];

/** url: another server's (PostgreSQL through PgBouncer, say) instead of STORE_URLS'. */
export function storeConfig(
  backend: Backend,
  sqlLimitsById = '',
  url: string | null = backend === 'sqlite' ? null : STORE_URLS[backend],
) {
  return {
    ...NO_STORE_TLS,
    backend,
    sqlite_path: join(mkdtempSync(join(tmpdir(), 'qp-sqlite-')), 'rl.sqlite3'),
    url,
    timeout_ms: 2000,
    sql_limits_by_id: sqlLimitsById,
  };
}

export function open(backend: Backend, sqlLimitsById = ''): Promise<RateStore> {
  return openStore(storeConfig(backend, sqlLimitsById));
}

/** A key no other test uses. */
export const uniq = (label: string): string => `${label}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
