// Rate-limit commands: `clean` (purge, compact, report), `get-config`, and
// `migrate --from policyd-rate-limit FILE`.
import { readFileSync } from 'node:fs';
import { parse as parseYaml, stringify } from 'yaml';
import userid from 'userid';
import { loadConfig, parseConfig, ConfigError } from '../shared/config/load.js';
import type { Config } from '../shared/config/schema.js';
import { flagOf, UsageError, type CommandLine } from '../shared/options.js';
import { openStore } from '../frontend/ratelimit/open-store.js';
import { rulesFrom } from '../frontend/ratelimit/check.js';
import { longestWindow } from '../frontend/ratelimit/decide.js';
import { sendReport } from '../frontend/ratelimit/report.js';

/** Run as the service user, so that an SQLite file (and its WAL) stays the front's. */
function dropToServiceUser(cfg: Config): void {
  if (process.getuid?.() !== 0) return;
  const { uid, gid } = userid.ids(cfg.user);
  process.setgroups?.([]);
  process.setgid?.(gid);
  process.setuid?.(uid);
}

export async function clean(cl: CommandLine, out: (s: string) => void): Promise<number> {
  const { config } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  const rl = config.rate_limit;
  dropToServiceUser(config);
  const store = await openStore({ ...rl, timeout_ms: Math.max(rl.store_timeout_ms, 10_000) });
  try {
    const keep = longestWindow(rulesFrom(rl));
    const removed = await store.clean(Math.floor(Date.now() / 1000) - keep);
    out(`removed ${removed} events older than ${keep} s from ${store.name}\n`);
    if (rl.report) {
      const sent = await sendReport(rl, await store.hits());
      await store.clearHits();
      out(sent ? `report sent to ${[rl.report_to].flat().join(', ')}\n` : 'no report needed\n');
    }
    return 0;
  } finally {
    await store.close();
  }
}

export function getConfig(cl: CommandLine, out: (s: string) => void): number {
  const { config, source } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  const key = cl.positionals[1];
  if (key === undefined) {
    out(`# effective configuration (${source})\n${stringify(config)}`);
    return 0;
  }
  let v: unknown = config;
  for (const part of key.split('.')) {
    if (v === null || typeof v !== 'object' || !(part in (v as object))) throw new UsageError(`get-config: no setting ${key}`);
    v = (v as Record<string, unknown>)[part];
  }
  out(typeof v === 'string' ? `${v}\n` : `${JSON.stringify(v)}\n`);
  return 0;
}

const enc = encodeURIComponent;
/** Which of its *_config mappings each policyd-rate-limit backend reads. */
const DRIVER_CONFIG: Record<string, string> = { sqlite: 'sqlite', mysql: 'mysql', postgresql: 'pgsql' };

/** policyd-rate-limit YAML -> quotapolicy YAML (rate limiting only). */
export function migratePolicydRateLimit(text: string): { yaml: string; notCarried: string[]; notes: string[] } {
  // policyd-rate-limit reads its file with PyYAML: YAML 1.1 (0666 is octal, yes/no are booleans).
  const src = (parseYaml(text, { version: '1.1' }) ?? {}) as Record<string, unknown>;
  if (typeof src !== 'object' || Array.isArray(src)) throw new ConfigError('policyd-rate-limit config: not a YAML mapping');
  const rl: Record<string, unknown> = {};
  const top: Record<string, unknown> = { checks: ['rate_limit'] };
  const notCarried: string[] = [];
  const notes: string[] = [];
  const same = ['limits', 'limits_by_id', 'limit_by_sasl', 'limit_by_sender', 'limit_by_ip', 'limited_networks', 'success_action',
    'fail_action', 'db_error_action', 'report', 'report_from', 'report_to', 'report_subject', 'report_limits', 'report_only_if_needed',
    'smtp_server', 'smtp_starttls', 'smtp_credentials'];
  const backend = ({ 0: 'sqlite', 1: 'mysql', 2: 'postgresql' } as Record<string, string>)[String(src.backend ?? 0)];
  for (const [k, v] of Object.entries(src)) {
    if (same.includes(k)) rl[k] = v;
    else if (k === 'limited_netword') rl.limited_networks = v;
    else if (k === 'count_mode') rl.count_mode = Number(v) === 1 ? 'data_recipients' : 'rcpt';
    else if (k === 'sql_limits_by_id') rl.sql_limits_by_id = typeof v === 'string' ? (backend === 'postgresql' ? v.replace('%s', '$1') : v.replace('%s', '?')) : v;
    else if (k === 'backend') rl.backend = backend ?? v;
    else if (k.endsWith('_config') && k !== `${DRIVER_CONFIG[backend ?? ''] ?? '-'}_config`) notes.push(`${k}: not used by backend ${String(backend)}, left out`);
    else if (k === 'sqlite_config') rl.sqlite_path = (v as Record<string, unknown>)?.database;
    else if (k === 'mysql_config') {
      const m = (v ?? {}) as Record<string, unknown>;
      rl.url = `mysql://${enc(String(m.user ?? 'root'))}${m.passwd ? `:${enc(String(m.passwd))}` : ''}@${String(m.host ?? 'localhost')}${m.port ? `:${String(m.port)}` : ''}/${enc(String(m.db ?? ''))}`;
    } else if (k === 'pgsql_config') {
      const p = (v ?? {}) as Record<string, unknown>;
      rl.url = `postgresql://${enc(String(p.user ?? 'postgres'))}${p.password ? `:${enc(String(p.password))}` : ''}@${String(p.host ?? 'localhost')}${p.port ? `:${String(p.port)}` : ''}/${enc(String(p.database ?? ''))}`;
    } else if (k === 'SOCKET') top.listen = [typeof v === 'string' ? `unix:${v}` : Array.isArray(v) ? (String(v[0]).includes(':') ? `inet:[${String(v[0])}]:${String(v[1])}` : `inet:${String(v[0])}:${String(v[1])}`) : v];
    else if (k === 'socket_permission') {
      const mode = typeof v === 'number' ? v : parseInt(String(v), 8);
      top.socket_mode = `0${(mode & 0o770).toString(8).padStart(3, '0')}`;
      if (mode & 0o7) notes.push(`socket_permission ${mode.toString(8)} gave access to everyone; carried as socket_mode "${String(top.socket_mode)}" with socket_group postfix`);
    } else if (k === 'pidfile') top.pid_file = v;
    else if (k === 'user') top.user = v;
    else if (k === 'delay_to_close') top.idle_timeout_ms = Number(v) * 1000;
    else if (k === 'debug') { if (v === true) top.log_level = 'debug'; }
    else notCarried.push(k);
  }
  if (rl.smtp_credentials && !rl.smtp_starttls) {
    rl.smtp_starttls = true;
    notes.push('smtp_credentials: smtp_starttls set to true, quotapolicy never sends credentials in clear');
  }
  const yaml = stringify({ ...top, rate_limit: rl });
  parseConfig(yaml, 'migrated config'); // what we print must be valid
  return { yaml, notCarried, notes };
}

export function migrate(cl: CommandLine, out: (s: string) => void, err: (s: string) => void): number {
  const [, from, file] = cl.positionals;
  if (cl.from !== 'policyd-rate-limit' || from !== undefined && file !== undefined) {
    throw new UsageError('usage: quotapolicy migrate --from policyd-rate-limit FILE');
  }
  const path = cl.positionals[1];
  if (path === undefined) throw new UsageError('usage: quotapolicy migrate --from policyd-rate-limit FILE');
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const r = migratePolicydRateLimit(text);
  out(`# quotapolicy configuration migrated from ${path} (policyd-rate-limit): rate limiting only\n${r.yaml}`);
  for (const k of r.notCarried) err(`quotapolicy migrate: not carried over: ${k}\n`);
  for (const n of r.notes) err(`quotapolicy migrate: note: ${n}\n`);
  return 0;
}
