// Reads the YAML config once, checks every key against schema.ts, rejects
// unknown keys, names the key and line in every error, and freezes the result.
import { readFileSync } from 'node:fs';
import { LineCounter, parseDocument, isMap, isScalar, type Node, type Pair } from 'yaml';
import { FIELDS, ACTION_FIELDS, WARNING_FIELDS, type Config } from './schema.js';
import type { Field, FieldsOf } from './checks.js';
import { RATE_FIELDS } from './rate-schema.js';
import { storeTlsProblem } from './store-tls.js';
import { parseSentinelUrl } from './redis-sentinel.js';
import { addressKey } from '../address.js';
import { QpError } from '../errors.js';

export const DEFAULT_CONFIG_PATH = '/etc/quotapolicy/quotapolicy.yaml';
/** A config file is a few KiB; this refuses a wrong file (a log, a binary) early. */
export const MAX_CONFIG_BYTES = 1024 * 1024;

export class ConfigError extends QpError {
  override name = 'ConfigError';
  constructor(message: string) {
    super('QP_CONFIG', message);
  }
}

function defaultsOf<V>(fields: FieldsOf<V>): V {
  const entries = Object.entries<Field>(fields).map(([k, f]) => [k, structuredClone(f.default)]);
  // Sound: every key of the table is set, to its field's default, which
  // fieldTable() checked is of that field's type.
  return Object.fromEntries(entries) as V;
}

export function defaultConfig(): Config {
  return {
    ...defaultsOf(FIELDS),
    actions: defaultsOf(ACTION_FIELDS),
    quota_warnings: defaultsOf(WARNING_FIELDS),
    rate_limit: defaultsOf(RATE_FIELDS),
  };
}

/** Own keys only: "constructor" or "toString" is an unknown key, not Object's. */
function isField<V>(fields: FieldsOf<V>, key: string): key is Extract<keyof V, string> {
  return Object.hasOwn(fields, key);
}

/** Sets into[key] to value if its field's check accepts it; else returns what is wrong. */
function setChecked<V, K extends keyof V>(fields: FieldsOf<V>, into: V, key: K, value: unknown): string | undefined {
  const bad = fields[key].check(value);
  // Sound: the check accepted value, and fields[key] is a Field<V[K]>, whose check passes only a V[K].
  if (bad === undefined) into[key] = value as V[K];
  return bad;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}

/** Levenshtein distance, for "did you mean" on misspelt keys. */
function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

function closest(name: string, known: string[]): string {
  const near = known.find((k) => distance(k, name.replace(/-/g, '_')) <= 2);
  return near === undefined ? '' : ` (did you mean ${near}?)`;
}

const MIGRATE = 'quotapolicy migrate --from policyd-rate-limit converts a whole file';
/** policyd-rate-limit's own settings that quotapolicy spells otherwise, and where each went. */
export const POLICYD_RATE_LIMIT_ONLY: Readonly<Record<string, string>> = {
  SOCKET: 'here it is listen: ["unix:/path"] or ["inet:IP:PORT"], at the top level',
  socket_permission: 'here it is socket_mode (with socket_group), at the top level',
  pidfile: 'here it is pid_file, at the top level',
  debug: 'here it is log_level: debug, at the top level',
  delay_to_close: 'here it is idle_timeout_ms, in milliseconds, at the top level',
  group: "quotapolicy runs with the service user's own group",
  sqlite_config: 'here it is rate_limit.sqlite_path',
  mysql_config: 'here it is rate_limit.url: mysql://USER:PASSWORD@HOST/DB',
  pgsql_config: 'here it is rate_limit.url: postgresql://USER:PASSWORD@HOST/DB',
  limited_netword: 'here it is rate_limit.limited_networks',
  config_file: 'policyd-rate-limit sets it itself; leave it out',
};

/** Why a key is unknown, when it is a classic slip rather than a typo. */
function unknownHint(key: string, prefix: string, known: string[]): string {
  if (prefix === '' && Object.hasOwn(RATE_FIELDS, key) && !Object.hasOwn(FIELDS, key))
    return `: a rate-limit setting, it belongs under rate_limit:`;
  if (Object.hasOwn(POLICYD_RATE_LIMIT_ONLY, key))
    return `: policyd-rate-limit's ${key}; ${POLICYD_RATE_LIMIT_ONLY[key]!} (${MIGRATE})`;
  return closest(key, known);
}

/** Sections: keys whose value is a mapping of its own fields, each read by its own applyMap. */
type Sections = Readonly<Record<string, (node: Node | null) => void>>;

function applyMap<V>(
  node: Node | null,
  fields: FieldsOf<V>,
  into: NoInfer<V>,
  where: (n: Node | null) => string,
  prefix: string,
  sections: Sections = {},
): void {
  if (node === null || (isScalar(node) && node.value === null)) return;
  if (!isMap(node)) throw new ConfigError(`${prefix || 'config'}${where(node)}: must be a mapping of keys to values`);
  const seen = new Set<string>();
  for (const pair of node.items as Pair<Node, Node | null>[]) {
    const keyNode = pair.key;
    const key = isScalar(keyNode) ? String(keyNode.value) : '';
    const name = prefix + key;
    if (seen.has(key)) throw new ConfigError(`${name}${where(keyNode)}: key given twice`);
    seen.add(key);
    // Own keys only: "constructor" or "toString" is an unknown key, not Object's.
    if (Object.hasOwn(sections, key)) {
      sections[key]!(pair.value);
      continue;
    }
    if (!isField(fields, key)) {
      const known = [...Object.keys(fields), ...Object.keys(sections)];
      throw new ConfigError(`unknown key ${name}${where(keyNode)}${unknownHint(key, prefix, known)}`);
    }
    const value: unknown = pair.value === null ? null : pair.value.toJSON();
    const bad = setChecked(fields, into, key, value);
    if (bad !== undefined) throw new ConfigError(`${name}${where(pair.value ?? keyNode)}: ${bad}`);
  }
}

/** Parses config text; `source` names it in errors. */
export function parseConfig(text: string, source: string, base: Config = defaultConfig()): Config {
  const lc = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lc, prettyErrors: false, uniqueKeys: false });
  const where = (n: Node | null): string =>
    n?.range ? ` (${source} line ${lc.linePos(n.range[0]).line})` : ` (${source})`;
  const err = doc.errors[0];
  if (err)
    throw new ConfigError(
      `${source} line ${lc.linePos(err.pos[0]).line}: YAML syntax error: ${err.message.split('\n')[0]}`,
    );
  const cfg = structuredClone(base);
  applyMap(doc.contents as Node | null, FIELDS, cfg, where, '', {
    actions: (n) => applyMap(n, ACTION_FIELDS, cfg.actions, where, 'actions.'),
    quota_warnings: (n) => applyMap(n, WARNING_FIELDS, cfg.quota_warnings, where, 'quota_warnings.'),
    rate_limit: (n) => applyMap(n, RATE_FIELDS, cfg.rate_limit, where, 'rate_limit.'),
  });
  crossCheck(cfg, source);
  foldIds(cfg, (field, k) => {
    const map = doc.getIn(['rate_limit', field], true);
    const pair = isMap(map)
      ? (map.items as Pair<Node, Node | null>[]).find((p) => isScalar(p.key) && String(p.key.value) === k)
      : undefined;
    return where(pair?.key ?? null);
  });
  return cfg;
}

/** Rules that involve several keys. */
function crossCheck(c: Config, source: string): void {
  const r = c.rate_limit;
  const at = ` (${source})`;
  if (c.domains.length === 0 && c.actions.nouser.trim().toUpperCase() !== 'DUNNO')
    throw new ConfigError(
      `actions.nouser${at}: needs domains: with an empty domains list every domain counts as local, so it would answer every other domain's recipients too`,
    );
  const w = c.quota_warnings;
  if (w.thresholds.length > 0 && w.header !== null) {
    // The header replaces the success answer: only DUNNO means the same with a PREPEND (neither is final).
    if (!/^DUNNO$/i.test(c.actions.success))
      throw new ConfigError(
        `quota_warnings.header${at}: the warning header replaces actions.success, so it must be DUNNO (it is ${c.actions.success}); or set header: null`,
      );
    if (!c.quota_states.includes('RCPT'))
      throw new ConfigError(
        `quota_warnings.header${at}: Postfix takes PREPEND only before the message content; add RCPT to quota_states, or set header: null`,
      );
  }
  if (w.notify && w.thresholds.length === 0)
    throw new ConfigError(`quota_warnings.notify${at}: needs thresholds (e.g. [80, 90])`);
  if (w.notify && w.notify_from === null) throw new ConfigError(`quota_warnings.notify${at}: notify_from is required`);
  const tls = storeTlsProblem(r);
  if (tls !== undefined) throw new ConfigError(`rate_limit.${tls.key}${at}: ${tls.why}`);
  if (r.backend !== 'sqlite' && r.url === null)
    throw new ConfigError(`rate_limit.url${at}: required with backend ${r.backend}`);
  if (
    r.url !== null &&
    r.backend !== 'sqlite' &&
    !r.url.startsWith(r.backend === 'postgresql' ? 'postgres' : `${r.backend}:`)
  ) {
    throw new ConfigError(
      `rate_limit.url${at}: a ${r.backend} URL must start with ${r.backend === 'postgresql' ? 'postgresql://' : `${r.backend}://`}`,
    );
  }
  if (r.backend === 'redis' && r.url !== null) {
    const bad = redisUrlParam(r.url);
    if (bad !== undefined)
      throw new ConfigError(
        `rate_limit.url${at}: "${bad}" is not taken in a redis url (ioredis would read it as an option of its own); use ${REDIS_URL_PARAMS.join(', ')} only`,
      );
  }
  if (r.redis_sentinels !== null) {
    if (r.backend !== 'redis')
      throw new ConfigError(`rate_limit.redis_sentinels${at}: needs backend redis (backend is ${r.backend})`);
    const master = parseSentinelUrl(r.url!);
    if ('bad' in master) throw new ConfigError(`rate_limit.url${at}: ${master.bad}`);
    if (r.store_tls)
      throw new ConfigError(
        `rate_limit.store_tls${at}: not available with redis_sentinels (TLS to the sentinels is not built); use a TLS tunnel, or a plain server url`,
      );
  }
  if (r.sql_limits_by_id !== '' && r.backend === 'redis')
    throw new ConfigError(`rate_limit.sql_limits_by_id${at}: needs an SQL backend`);
  if (r.report && (r.report_from === null || r.report_to === null))
    throw new ConfigError(`rate_limit.report${at}: report_from and report_to are required`);
  if (r.alert_mail && (!r.alert_on_refusal || r.report_from === null || r.report_to === null))
    throw new ConfigError(`rate_limit.alert_mail${at}: needs alert_on_refusal: true, report_from and report_to`);
  if (r.smtp_credentials !== null && !r.smtp_starttls)
    throw new ConfigError(
      `rate_limit.smtp_credentials${at}: set smtp_starttls: true, credentials are never sent in clear`,
    );
}

/**
 * limits_by_id, volume_limits_by_id and exempt_ids keys as the rate limiter
 * compares ids (addressKey, with fold_local_part_case): Big@Example.org
 * becomes big@example.org. Two keys of one mapping that fold into one
 * address are refused (which of their limits was meant cannot be guessed);
 * a repeated exempt id is only said twice, and kept once.
 */
function foldIds(c: Config, whereId: (field: string, key: string) => string): void {
  const r = c.rate_limit;
  const fold = r.fold_local_part_case;
  const folded = (field: 'limits_by_id' | 'volume_limits_by_id'): Record<string, [number, number][]> => {
    const seen = new Map<string, string>();
    for (const k of Object.keys(r[field])) {
      const key = addressKey(k, fold);
      const other = seen.get(key);
      if (other !== undefined)
        throw new ConfigError(
          `rate_limit.${field}${whereId(field, k)}: ${JSON.stringify(other)} and ${JSON.stringify(k)} are one address, ${key}, as Postfix compares addresses` +
            `${fold ? ' (fold_local_part_case: true)' : ''}: give it once`,
        );
      seen.set(key, k);
    }
    return Object.fromEntries(Object.entries(r[field]).map(([k, v]) => [addressKey(k, fold), v]));
  };
  r.limits_by_id = folded('limits_by_id');
  r.volume_limits_by_id = folded('volume_limits_by_id');
  r.exempt_ids = [...new Set(r.exempt_ids.map((k) => addressKey(k, fold)))];
}

/** Command-line overrides, checked like file keys; `flagOf` names the flag in errors. */
export function applyOverrides(
  cfg: Config,
  overrides: Record<string, unknown>,
  flagOf: (key: string) => string,
): Config {
  const out = structuredClone(cfg);
  for (const [key, value] of Object.entries(overrides)) {
    if (!isField(FIELDS, key)) throw new ConfigError(`internal: no setting ${key}`);
    const bad = setChecked(FIELDS, out, key, value);
    if (bad !== undefined) throw new ConfigError(`${flagOf(key)}: ${bad}`);
  }
  return out;
}

export interface LoadOptions {
  path?: string | undefined;
  overrides?: Record<string, unknown>;
  flagOf?: (key: string) => string;
  /** How to read the file; root passes one that checks what it opened (src/helper/startup/serve.ts). */
  read?: (path: string) => string;
}

/**
 * Loads the file named by --config (must exist), or the default path (may be
 * absent: built-in defaults), then applies command-line overrides. Frozen.
 */
export function loadConfig(opts: LoadOptions = {}): { config: Config; source: string } {
  const path = opts.path ?? DEFAULT_CONFIG_PATH;
  let text: string | undefined;
  try {
    text = (opts.read ?? ((p: string) => readFileSync(p, 'utf8')))(path);
  } catch (e) {
    // A QpError's code is no errno: it is a refusal of the reader's own (root's trust checks), as is no code at all.
    const code = e instanceof QpError ? undefined : (e as NodeJS.ErrnoException).code;
    if (code === undefined) throw e;
    if (!(code === 'ENOENT' && opts.path === undefined)) throw new ConfigError(`cannot read config ${path}: ${code}`);
  }
  if (text !== undefined && Buffer.byteLength(text) > MAX_CONFIG_BYTES)
    throw new ConfigError(`${path}: larger than ${MAX_CONFIG_BYTES} bytes`);
  let config = text === undefined ? defaultConfig() : parseConfig(text, path);
  if (opts.overrides) config = applyOverrides(config, opts.overrides, opts.flagOf ?? ((k) => k));
  return { config: deepFreeze(config), source: text === undefined ? 'built-in defaults' : path };
}

/**
 * Query parameters a redis url may carry. ioredis copies every one into its options, over the
 * store's own (sentinels, name, Connector, retryStrategy, commandTimeout...), which could turn
 * off what the store relies on, TLS to a master found through sentinels included.
 */
const REDIS_URL_PARAMS: readonly string[] = ['family', 'password', 'username', 'db', 'path'];

/** The first query parameter of a redis url that is not in REDIS_URL_PARAMS (a url that does not parse: none). */
function redisUrlParam(url: string): string | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  for (const k of u.searchParams.keys()) if (!REDIS_URL_PARAMS.includes(k)) return k.slice(0, 64);
  return undefined;
}
