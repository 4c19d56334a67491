// Rate-limit commands: `clean` (purge, compact, report), `ratelimit show|reset
// KIND:ID`, `get-config`, and `migrate --from policyd-rate-limit FILE`.
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, stringify, isMap, isScalar, type Node, type Pair } from 'yaml';
import { loadConfig, parseConfig, ConfigError } from '../shared/config/load.js';
import { FIELDS } from '../shared/config/schema.js';
import { listenSpec, type Field } from '../shared/config/checks.js';
import { RATE_FIELDS, POLICYD_BACKENDS, POLICYD_COUNT_MODES } from '../shared/config/rate-schema.js';
import { flagOf, UsageError, type CommandLine } from '../shared/options.js';
import { dropToServiceUser } from './service-user.js';
import { EXIT } from '../shared/errors.js';
import { openStore } from '../frontend/ratelimit/open-store.js';
import { rulesFrom } from '../frontend/ratelimit/check.js';
import { longestWindow, type Limit } from '../frontend/ratelimit/decide.js';
import { sendReport } from './report/report.js';
import { parseTarget, applying, windowStates, KeyIdError, KEY_KINDS } from '../frontend/ratelimit/inspect.js';
import { storedKey, STORE_KEY_MAX_BYTES, type RateStore } from '../frontend/ratelimit/store.js';

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
    return EXIT.OK;
  } finally {
    await store.close();
  }
}

const RATELIMIT_USAGE = `usage: quotapolicy ratelimit show|reset KIND:ID (kinds: ${KEY_KINDS.join(', ')}; e.g. sender:bob@example.org, ip:192.0.2.7)`;

const when = (sec: number, nowSec: number): string =>
  `${new Date(sec * 1000).toISOString().replace('.000Z', 'Z')} (in ${sec - nowSec} s)`;
const limitsText = (l: readonly Limit[]): string => `[${l.map(([c, s]) => `[${c}, ${s}]`).join(', ')}]`;

/**
 * `quotapolicy ratelimit show|reset KIND:ID`: opens the configured store
 * itself, as `clean` does, so it works beside a running daemon on every
 * backend; a reset holds for the daemon's next request.
 */
export async function ratelimit(cl: CommandLine, out: (s: string) => void, err: (s: string) => void): Promise<number> {
  const [, sub, text, extra] = cl.positionals;
  if ((sub !== 'show' && sub !== 'reset') || text === undefined || extra !== undefined)
    throw new UsageError(RATELIMIT_USAGE);
  const { config } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  const rl = config.rate_limit;
  const rules = rulesFrom(rl);
  let target;
  try {
    target = parseTarget(text, rules);
  } catch (e) {
    if (e instanceof KeyIdError) throw new UsageError(`ratelimit ${sub}: ${e.message}`);
    throw e;
  }
  dropToServiceUser(config);
  const store = await openStore({ ...rl, timeout_ms: Math.max(rl.store_timeout_ms, 10_000) });
  try {
    const stored = storedKey(target.key);
    const shownKey =
      stored === target.key
        ? target.key
        : `${stored} (hashed, as the store holds a key over ${STORE_KEY_MAX_BYTES} bytes)`;
    if (sub === 'reset') {
      const n = await store.reset(target.key);
      if (n === 0) {
        err(
          `quotapolicy: ratelimit reset: nothing is held under ${shownKey} in ${store.name}: nothing to reset (is the id spelled as it is counted? \`quotapolicy ratelimit show\` tells)\n`,
        );
        // A mistyped id would otherwise pass for done.
        return EXIT.NOINPUT;
      }
      out(`reset ${shownKey}: ${n} events deleted from ${store.name}; its next request is counted from nothing\n`);
      return EXIT.OK;
    }
    return await show(
      store,
      rules,
      rl.sql_limits_by_id !== '',
      config.checks.includes('rate_limit'),
      target,
      shownKey,
      out,
    );
  } finally {
    await store.close();
  }
}

async function show(
  store: RateStore,
  rules: ReturnType<typeof rulesFrom>,
  sqlLimits: boolean,
  enabled: boolean,
  target: ReturnType<typeof parseTarget>,
  shownKey: string,
  out: (s: string) => void,
): Promise<number> {
  const nowSec = Math.floor(Date.now() / 1000);
  const isId = target.kind === 'sasl' || target.kind === 'sender' || target.kind === 'ip';
  const fromDb = isId && sqlLimits ? await store.limitsFor(target.id) : undefined;
  const a = applying(target, rules, fromDb);
  out(`key: ${shownKey}\nstore: ${store.name}\n`);
  if (!enabled) out('not counted: rate_limit is not in checks\n');
  for (const why of a.notCounted) out(`not counted: ${why}\n`);
  if (a.limits === undefined || a.limits.length === 0) {
    out(a.limits === undefined ? 'limits: none\n' : `limits: none, unlimited ([] in ${a.source})\n`);
    let held = 0;
    for (const e of await store.events(target.key, 0)) held += e.n;
    out(`held: ${held} ${target.kind === 'bytes' ? 'bytes' : 'events'}\n`);
    return EXIT.OK;
  }
  out(`limits: ${limitsText(a.limits)} (${a.source})\n`);
  const longest = Math.max(...a.limits.map(([, s]) => s));
  for (const w of windowStates(await store.events(target.key, nowSec - longest), a.limits, nowSec)) {
    const [count, seconds] = w.limit;
    const state = !w.full
      ? `${count - w.used} left`
      : w.freesAt === null
        ? 'full: a count of 0 never frees up'
        : `full: frees up at ${when(w.freesAt!, nowSec)}`;
    out(`  ${count} in ${seconds} s: ${w.used} used, ${state}\n`);
  }
  if (target.kind === 'sender') {
    const domain = target.id.slice(target.id.lastIndexOf('@') + 1);
    if (target.id.includes('@') && rules.limitsBySenderDomain.has(domain))
      out(`also counted: sender_domain:${domain} (limits_by_sender_domain; show and reset it on its own)\n`);
  }
  return EXIT.OK;
}

export function getConfig(cl: CommandLine, out: (s: string) => void): number {
  const { config, source } = loadConfig({ path: cl.configPath, overrides: cl.overrides, flagOf });
  const key = cl.positionals[1];
  if (key === undefined) {
    out(`# effective configuration (${source})\n${stringify(config)}`);
    return EXIT.OK;
  }
  let v: unknown = config;
  for (const part of key.split('.')) {
    if (v === null || typeof v !== 'object' || !(part in v)) throw new UsageError(`get-config: no setting ${key}`);
    v = (v as Record<string, unknown>)[part];
  }
  out(typeof v === 'string' ? `${v}\n` : `${JSON.stringify(v)}\n`);
  return EXIT.OK;
}

const enc = encodeURIComponent;
/** Which of its *_config mappings each policyd-rate-limit backend reads. */
const DRIVER_CONFIG: Record<string, string> = { sqlite: 'sqlite', mysql: 'mysql', postgresql: 'pgsql' };
/** policyd-rate-limit settings carried under rate_limit: as they are (same name, same meaning). */
const SAME = [
  'limits',
  'limits_by_id',
  'limit_by_sasl',
  'limit_by_sender',
  'limit_by_ip',
  'limited_networks',
  'success_action',
  'fail_action',
  'db_error_action',
  'report',
  'report_from',
  'report_to',
  'report_subject',
  'report_limits',
  'report_only_if_needed',
  'smtp_server',
  'smtp_starttls',
  'smtp_credentials',
];
/** RATE_FIELDS looked up by a name from the file (undefined for none). */
const RATE_BY_NAME: Readonly<Record<string, Field>> = RATE_FIELDS;
/** The connection settings of each driver mapping that make its URL (MySQLdb and psycopg2 spellings). */
const URL_KEYS: Record<string, string[]> = {
  mysql_config: ['user', 'passwd', 'password', 'db', 'database', 'host', 'port', 'unix_socket'],
  pgsql_config: ['user', 'password', 'database', 'dbname', 'host', 'port'],
};
/** What each count_mode counts, in policyd-rate-limit's words. */
const COUNT_MODE_MEANING =
  '0 (one per RCPT TO), 1 (the recipients of a message, at DATA; since 1.1.0) or 2 (one per message, at DATA; since 1.2.0)';

export interface Migration {
  yaml: string;
  notCarried: string[];
  notes: string[];
}

/**
 * policyd-rate-limit YAML -> quotapolicy YAML (rate limiting only). Every
 * setting is carried over, or named in notCarried; every one whose meaning
 * changes on the way is named in notes; a value policyd-rate-limit itself
 * would not take (a count_mode of 7, a backend of 3) is a ConfigError naming
 * the setting and its line in `source`, never a guess.
 */
export function migratePolicydRateLimit(text: string, source = 'policyd-rate-limit config'): Migration {
  // policyd-rate-limit reads its file with PyYAML: YAML 1.1 (0666 is octal, yes/no are booleans).
  const lc = new LineCounter();
  const doc = parseDocument(text, { version: '1.1', lineCounter: lc, prettyErrors: false });
  const syntax = doc.errors[0];
  if (syntax)
    throw new ConfigError(
      `${source} line ${lc.linePos(syntax.pos[0]).line}: YAML syntax error: ${syntax.message.split('\n')[0]}`,
    );
  if (doc.contents !== null && !isMap(doc.contents))
    throw new ConfigError(`${source}: not a YAML mapping of policyd-rate-limit settings`);
  const src = (doc.toJS() ?? {}) as Record<string, unknown>;
  const at = (k: string): string => {
    const pair = isMap(doc.contents)
      ? (doc.contents.items as Pair<Node, Node | null>[]).find((p) => isScalar(p.key) && String(p.key.value) === k)
      : undefined;
    return pair?.key.range ? ` (${source} line ${lc.linePos(pair.key.range[0]).line})` : ` (${source})`;
  };
  function refuse(k: string, why: string): never {
    throw new ConfigError(`${k}${at(k)}: ${why}`);
  }
  /** v, checked as quotapolicy's `dest` takes it; an error names policyd-rate-limit's key and line. */
  const carried = <T>(k: string, field: Field | undefined, dest: string, v: T): T => {
    const bad = field?.check(v);
    if (bad !== undefined) refuse(k, dest === k ? bad : `as ${dest}: ${bad}`);
    return v;
  };
  const has = (k: string): boolean => Object.hasOwn(src, k);

  const rl: Record<string, unknown> = {};
  const top: Record<string, unknown> = { checks: ['rate_limit'] };
  const notCarried: string[] = [];
  const notes: string[] = [];

  const rawBackend = has('backend') ? src.backend : 0;
  const backend =
    typeof rawBackend === 'number' && Object.hasOwn(POLICYD_BACKENDS, rawBackend)
      ? POLICYD_BACKENDS[rawBackend]!
      : undefined;
  if (backend === undefined)
    refuse(
      'backend',
      `${JSON.stringify(rawBackend)} is not a policyd-rate-limit backend: it takes 0 (sqlite3), 1 (mysql) or 2 (postgresql)`,
    );
  rl.backend = backend;

  // Absent, count_mode is 0: policyd-rate-limit's default, and how every release before 1.1.0 counted.
  const mode = has('count_mode') ? src.count_mode : 0;
  if (typeof mode !== 'number' || !Object.hasOwn(POLICYD_COUNT_MODES, mode)) {
    refuse(
      'count_mode',
      `${JSON.stringify(mode)} is not a policyd-rate-limit count_mode: it takes ${COUNT_MODE_MEANING}; with any other value it limits nothing, so there is no limit to carry over (a release before 1.1.0, such as Debian's 1.0.1.1, ignores count_mode and counts each RCPT TO: if one ran this file, write count_mode: 0)`,
    );
  }
  rl.count_mode = POLICYD_COUNT_MODES[mode];
  const modeSaid = has('count_mode') ? `count_mode ${String(mode)}` : 'count_mode (not set, so 0)';
  if (rl.count_mode === 'rcpt') {
    notes.push(
      `${modeSaid} -> rcpt: one per RCPT TO as before, but when one recipient of a message is refused, policyd-rate-limit (1.1.0 and later) un-counts the recipients of that message it had accepted; quotapolicy keeps them counted (Postfix delivers to them)`,
    );
  } else {
    notes.push(
      `${modeSaid} -> ${String(rl.count_mode)}: counted at DATA as before, and also at BDAT (CHUNKING), which policyd-rate-limit let pass uncounted; check_policy_service stays in smtpd_data_restrictions (a release before 1.1.0, such as Debian's 1.0.1.1, ignores count_mode and counts each RCPT TO: if one ran this file, write count_mode: rcpt)`,
    );
  }

  // The deprecated spelling wins over limited_networks, as in policyd-rate-limit.
  if (has('limited_netword'))
    rl.limited_networks = carried(
      'limited_netword',
      RATE_FIELDS.limited_networks,
      'rate_limit.limited_networks',
      src.limited_netword,
    );

  for (const [k, v] of Object.entries(src)) {
    if (SAME.includes(k)) {
      if (!(k === 'limited_networks' && has('limited_netword'))) rl[k] = carried(k, RATE_BY_NAME[k], k, v);
      else
        notes.push('limited_networks: the deprecated limited_netword is given too and wins, as in policyd-rate-limit');
    } else if (k === 'sql_limits_by_id') {
      if (typeof v !== 'string') refuse(k, 'must be a string (an SQL query with one %s)');
      rl.sql_limits_by_id = backend === 'postgresql' ? v.replace('%s', '$1') : v.replace('%s', '?');
    } else if (['limited_netword', 'backend', 'count_mode'].includes(k)) continue;
    else if (
      k.endsWith('_config') &&
      Object.values(DRIVER_CONFIG).includes(k.slice(0, -'_config'.length)) &&
      k !== `${DRIVER_CONFIG[backend]!}_config`
    ) {
      notes.push(`${k}: not used by backend ${backend}, left out`);
    } else if (k === 'sqlite_config') {
      if (v === null || typeof v !== 'object' || Array.isArray(v))
        refuse(k, 'must be a mapping with database: /path/to/file');
      const db = (v as Record<string, unknown>).database;
      if (db === undefined) refuse(k, 'has no database (the SQLite file)');
      for (const extra of Object.keys(v).filter((x) => x !== 'database')) notCarried.push(`${k}.${extra}`);
      rl.sqlite_path = carried(k, RATE_FIELDS.sqlite_path, 'rate_limit.sqlite_path', db);
    } else if (k === 'mysql_config' || k === 'pgsql_config') {
      if (v === null || typeof v !== 'object' || Array.isArray(v))
        refuse(k, 'must be a mapping of connection settings');
      const raw = v as Record<string, unknown>;
      for (const extra of Object.keys(raw).filter((x) => !URL_KEYS[k]!.includes(x))) notCarried.push(`${k}.${extra}`);
      // Connection settings are strings or numbers; a list or mapping would become "[object Object]".
      const m: Record<string, string | undefined> = {};
      for (const [name, value] of Object.entries(raw)) {
        if (value === null || value === undefined) continue;
        if (typeof value !== 'string' && typeof value !== 'number')
          refuse(`${k}.${name}`, 'must be a string or a number');
        m[name] = String(value);
      }
      const pass = m.passwd ?? m.password;
      const auth = `${enc(m.user ?? (k === 'mysql_config' ? 'root' : 'postgres'))}${pass ? `:${enc(pass)}` : ''}`;
      const host = m.host ?? 'localhost';
      const port = m.port ? `:${m.port}` : '';
      if (k === 'mysql_config') {
        const sock = m.unix_socket ? `?socketPath=${enc(m.unix_socket)}` : '';
        rl.url = `mysql://${auth}@${host}${port}/${enc(m.db ?? m.database ?? '')}${sock}`;
      } else {
        // A host that is a directory is a Unix socket: escaped, as the URL's host.
        const db = enc(m.database ?? m.dbname ?? '');
        rl.url = `postgresql://${auth}@${host.startsWith('/') ? enc(host) : host}${port}/${db}`;
      }
    } else if (k === 'SOCKET') {
      const spec =
        typeof v === 'string'
          ? `unix:${v}`
          : Array.isArray(v) && v.length === 2
            ? String(v[0]).includes(':')
              ? `inet:[${String(v[0])}]:${String(v[1])}`
              : `inet:${String(v[0])}:${String(v[1])}`
            : refuse(k, 'must be a socket path or [ip, port]');
      top.listen = [carried(k, { ...FIELDS.listen, check: listenSpec }, 'listen', spec)];
    } else if (k === 'socket_permission') {
      const perm = typeof v === 'number' ? v : typeof v === 'string' && /^0?[0-7]{3}$/.test(v) ? parseInt(v, 8) : NaN;
      if (!Number.isInteger(perm) || perm < 0 || perm > 0o777) refuse(k, 'must be an octal file mode like 0660');
      top.socket_mode = `0${(perm & 0o770).toString(8).padStart(3, '0')}`;
      if (perm & 0o7)
        notes.push(
          `socket_permission ${perm.toString(8)} gave access to everyone; carried as socket_mode "${String(top.socket_mode)}" with socket_group postfix`,
        );
    } else if (k === 'pidfile') top.pid_file = carried(k, FIELDS.pid_file, 'pid_file', v);
    else if (k === 'user') top.user = carried(k, FIELDS.user, 'user', v);
    else if (k === 'delay_to_close')
      top.idle_timeout_ms = carried(
        k,
        FIELDS.idle_timeout_ms,
        'idle_timeout_ms (its seconds x 1000)',
        Number(v) * 1000,
      );
    else if (k === 'debug') {
      if (v) top.log_level = 'debug';
    } else notCarried.push(k);
  }
  if (rl.smtp_credentials && !rl.smtp_starttls) {
    rl.smtp_starttls = true;
    notes.push('smtp_credentials: smtp_starttls set to true, quotapolicy never sends credentials in clear');
  }
  if (rl.limit_by_ip === true) {
    notes.push(
      'limit_by_ip: an IPv6 client is counted per /64 (rate_limit.ipv6_prefix: 64), where policyd-rate-limit counted each address; add ipv6_prefix: 128 to count each address',
    );
  }
  // Ids that may be mail addresses: SASL names (limit_by_sasl is on unless turned off), senders, limits_by_id keys, what sql_limits_by_id is asked.
  const byAddress = [
    ...(rl.limit_by_sasl !== false ? ['limit_by_sasl'] : []),
    ...(rl.limit_by_sender === true ? ['limit_by_sender'] : []),
    ...(Object.keys(rl.limits_by_id ?? {}).some((id) => id.includes('@')) ? ['limits_by_id'] : []),
    ...(rl.sql_limits_by_id ? ['sql_limits_by_id'] : []),
  ];
  if (byAddress.length > 0) {
    notes.push(
      `${byAddress.join(', ')}: ids that are mail addresses (senders, SASL names like user@example.org) compare as Postfix compares them, ` +
        `so Big@Example.org and big@example.org are one id with one count${rl.sql_limits_by_id ? ', and sql_limits_by_id is asked for big@example.org' : ''}; ` +
        'policyd-rate-limit compared them byte for byte (rate_limit.fold_local_part_case: false keeps local parts exact; domains always compare without case)',
    );
  }
  const yaml = stringify({ ...top, rate_limit: rl });
  parseConfig(yaml, 'migrated config'); // what we print must be valid
  return { yaml, notCarried, notes };
}

export function migrate(cl: CommandLine, out: (s: string) => void, err: (s: string) => void): number {
  // positionals: ['migrate', FILE]; anything after FILE is a mistake.
  const [, path, extra] = cl.positionals;
  if (cl.from !== 'policyd-rate-limit' || path === undefined || extra !== undefined) {
    throw new UsageError('usage: quotapolicy migrate --from policyd-rate-limit FILE');
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const r = migratePolicydRateLimit(text, path);
  out(`# quotapolicy configuration migrated from ${path} (policyd-rate-limit): rate limiting only\n${r.yaml}`);
  for (const k of r.notCarried) err(`quotapolicy migrate: not carried over: ${k}\n`);
  for (const n of r.notes) err(`quotapolicy migrate: note: ${n}\n`);
  return EXIT.OK;
}
