// The real backends the conformance suite runs against (servers this machine
// kind runs; .ci/run makes sure they are up). QP_STORES=sqlite,redis narrows.
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openStore } from '../../src/frontend/ratelimit/open-store.js';
import type { RateStore } from '../../src/frontend/ratelimit/store.js';

export const STORE_URLS = {
  postgresql: 'postgresql://postgres@127.0.0.1:5432/test',
  mysql: 'mysql://root@127.0.0.1:3306/test',
  redis: 'redis://127.0.0.1:6379/0',
} as const;

export type Backend = 'sqlite' | 'postgresql' | 'mysql' | 'redis';
export const BACKENDS: Backend[] = (process.env.QP_STORES?.split(',') as Backend[] | undefined) ?? ['sqlite', 'postgresql', 'mysql', 'redis'];

export function storeConfig(backend: Backend, sqlLimitsById = '') {
  return {
    backend,
    sqlite_path: join(mkdtempSync(join(tmpdir(), 'qp-sqlite-')), 'rl.sqlite3'),
    url: backend === 'sqlite' ? null : STORE_URLS[backend],
    timeout_ms: 2000,
    sql_limits_by_id: sqlLimitsById,
  };
}

export function open(backend: Backend, sqlLimitsById = ''): Promise<RateStore> {
  return openStore(storeConfig(backend, sqlLimitsById));
}

/** A key no other test uses. */
export const uniq = (label: string): string => `${label}-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
