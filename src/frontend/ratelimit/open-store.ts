// Opens the configured store; only that backend's driver is loaded. Every
// opener (the daemon, the start-up probe, check-config, the ratelimit
// commands) comes through here, so all of them use the same TLS settings.
import type { RateStore } from './store.js';
import { readStoreTls, type StoreTlsConfig } from './store-tls.js';

export interface StoreConfig extends StoreTlsConfig {
  backend: 'sqlite' | 'postgresql' | 'mysql' | 'redis';
  sqlite_path: string;
  url: string | null;
  /** Backend redis through these sentinels (rate_limit.redis_sentinels); url then names the master. */
  redis_sentinels?: readonly string[] | null;
  timeout_ms: number;
  sql_limits_by_id: string;
}

export async function openStore(c: StoreConfig): Promise<RateStore> {
  switch (c.backend) {
    case 'sqlite':
      return (await import('./stores/sqlite.js')).openSqlite(c.sqlite_path, c.sql_limits_by_id);
    case 'postgresql':
      return (await import('./stores/postgres.js')).openPostgres(
        c.url!,
        c.sql_limits_by_id,
        c.timeout_ms,
        readStoreTls(c),
      );
    case 'mysql':
      return (await import('./stores/mysql.js')).openMysql(c.url!, c.sql_limits_by_id, c.timeout_ms, readStoreTls(c));
    case 'redis':
      return (await import('./stores/redis.js')).openRedis(
        c.url!,
        c.timeout_ms,
        readStoreTls(c),
        c.redis_sentinels ?? null,
      );
  }
}

/** Tries the configured store without writing to it (stores/*: probe*); throws StoreError. */
export async function probeStore(c: StoreConfig): Promise<void> {
  switch (c.backend) {
    case 'sqlite':
      return (await import('./stores/sqlite.js')).probeSqlite(c.sqlite_path);
    case 'postgresql':
      return (await import('./stores/postgres.js')).probePostgres(c.url!, c.timeout_ms, readStoreTls(c));
    case 'mysql':
      return (await import('./stores/mysql.js')).probeMysql(c.url!, c.timeout_ms, readStoreTls(c));
    case 'redis':
      return (await import('./stores/redis.js')).probeRedis(
        c.url!,
        c.timeout_ms,
        readStoreTls(c),
        c.redis_sentinels ?? null,
      );
  }
}
