// Every setting, its default and its check, in one place. The config reference
// in README.md is checked against this table by test/config-reference.test.ts.
import { isIP } from 'node:net';
import { HELPER_DEFAULTS } from '../wire.js';
import { parseNetwork } from '../network.js';
import { isUnixName } from '../unix-name.js';

export type Check = (v: unknown) => string | undefined;

export interface Field {
  default: unknown;
  check: Check;
  doc: string;
}

const CONTROL = /[\0-\x1f\x7f]/;
/** Postfix reads a policy reply line up to its line_length_limit (2048); keep actions well inside. */
export const MAX_ACTION_LENGTH = 512;

export const str: Check = (v) =>
  typeof v === 'string' && v !== '' && !CONTROL.test(v)
    ? undefined
    : 'must be a non-empty string without control characters';
export const bool: Check = (v) => (typeof v === 'boolean' ? undefined : 'must be true or false');
export const absPath: Check = (v) => str(v) ?? ((v as string).startsWith('/') ? undefined : 'must be an absolute path');
export const int =
  (min: number, max: number): Check =>
  (v) =>
    typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max
      ? undefined
      : `must be an integer from ${min} to ${max}`;
export const oneOf =
  (...allowed: string[]): Check =>
  (v) =>
    typeof v === 'string' && allowed.includes(v) ? undefined : `must be one of ${allowed.join(', ')}`;
export const nullable =
  (c: Check): Check =>
  (v) =>
    v === null ? undefined : c(v);
export const listOf =
  (c: Check, max: number): Check =>
  (v) => {
    if (!Array.isArray(v)) return 'must be a list';
    if (v.length > max) return `must have at most ${max} entries`;
    for (const [i, item] of v.entries()) {
      const bad = c(item);
      if (bad !== undefined) return `entry ${i + 1} ${bad}`;
    }
    return undefined;
  };

export type SocketAddress = { path: string } | { host: string; port: number; ipv6: boolean };

/** Where a listen spec points (the spec already checked by listenSpec). */
export function socketAddress(spec: string): SocketAddress {
  const m = /^inet:(?:\[(.+)\]|([^:]+)):(\d+)$/.exec(spec);
  return m
    ? { host: m[1] ?? m[2]!, port: Number(m[3]), ipv6: m[1] !== undefined }
    : { path: spec.replace(/^unix:/, '') };
}

/** A listen spec as Node's net.connect() and server.listen() take it. */
export function netOptions(spec: string): { path: string } | { host: string; port: number } {
  const a = socketAddress(spec);
  return 'path' in a ? { path: a.path } : { host: a.host, port: a.port };
}

/** unix:/abs/path, or inet:IPV4:PORT / inet:[IPV6]:PORT. */
export const listenSpec: Check = (v) => {
  if (typeof v !== 'string') return 'must be a string';
  if (v.startsWith('unix:')) return absPath(v.slice(5)) === undefined ? undefined : 'unix: needs an absolute path';
  const m = /^inet:(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):(\d{1,5})$/.exec(v);
  if (!m) return 'must be unix:/path, inet:IPV4:PORT or inet:[IPV6]:PORT';
  const host = m[1] ?? m[2]!;
  if (isIP(host) !== (m[1] !== undefined ? 6 : 4)) return `${host} is not an IP address`;
  const port = Number(m[3]);
  return port >= 1 && port <= 65535 ? undefined : 'port must be from 1 to 65535';
};

const ACTION_WORDS = new Set([
  'OK',
  'DUNNO',
  'REJECT',
  'DEFER',
  'DEFER_IF_REJECT',
  'DEFER_IF_PERMIT',
  'BCC',
  'DISCARD',
  'FILTER',
  'HOLD',
  'PREPEND',
  'REDIRECT',
  'INFO',
  'WARN',
]);
/** An access(5) action: a known word, or "4NN"/"5NN" text with a matching enhanced status. */
export const action: Check = (v) => {
  if (typeof v !== 'string' || v.trim() === '' || CONTROL.test(v))
    return 'must be a non-empty action without control characters';
  if (v.length > MAX_ACTION_LENGTH) return `must be at most ${MAX_ACTION_LENGTH} characters`;
  const code = /^([45])\d\d(?: +(\d)\.\d{1,3}\.\d{1,3})?(?: |$)/.exec(v);
  if (code)
    return code[2] === undefined || code[2] === code[1] ? undefined : 'enhanced status class must match the reply code';
  if (/^[1-9]/.test(v)) return 'a numeric reply must be 4NN or 5NN';
  const word = v.split(/[ :]/, 1)[0]!.toUpperCase();
  return ACTION_WORDS.has(word) ? undefined : `"${word}" is not a Postfix access(5) action`;
};

const octalMode: Check = (v) =>
  typeof v === 'string' && /^0?[0-7]{3}$/.test(v) && (parseInt(v, 8) & 0o7) === 0
    ? undefined
    : 'must be an octal mode like "0660", with no permissions for others';
const userName: Check = (v) =>
  typeof v === 'string' && isUnixName(v) ? undefined : 'must be a Unix user or group name';
const domainName: Check = (v) =>
  typeof v === 'string' && /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i.test(v) ? undefined : 'must be a domain name';

export const ACTION_FIELDS: Record<string, Field> = {
  over_quota: {
    default: '452 4.2.2 Mailbox full, try again later',
    check: action,
    doc: 'Recipient is at a hard limit, or over a soft limit whose grace has expired (blocks or files).',
  },
  too_large: {
    default: "552 5.2.2 Message is larger than the recipient's whole quota",
    check: action,
    doc: "The message size alone is over the recipient's hard block limit.",
  },
  does_not_fit: {
    default: "452 4.2.2 Message does not fit in the recipient's remaining quota",
    check: action,
    doc: 'The message would push usage past the hard block limit.',
  },
  grace: {
    default: null,
    check: nullable(action),
    doc: 'Recipient is over a soft limit with grace running; null answers like success. Example: "PREPEND X-Quota-Warning: mailbox over soft quota".',
  },
  success: { default: 'DUNNO', check: action, doc: 'Quota is fine. DUNNO, not OK, so later restrictions still run.' },
  error: {
    default: 'DUNNO',
    check: action,
    doc: 'The quota lookup failed or timed out (fail open). Logged as a warning.',
  },
};

export const FIELDS: Record<string, Field> = {
  user: {
    default: 'quotapolicy',
    check: userName,
    doc: 'Service user the front process runs as (looked up through NSS).',
  },
  listen: {
    default: ['unix:/var/spool/postfix/private/quotapolicy'],
    check: listOf(listenSpec, 16),
    doc: 'Sockets to listen on: unix:/path, inet:IPV4:PORT, inet:[IPV6]:PORT. Ignored when systemd passes sockets (LISTEN_FDS).',
  },
  socket_owner: {
    default: null,
    check: nullable(userName),
    doc: 'Owner of unix sockets; null means the service user.',
  },
  socket_group: {
    default: 'postfix',
    check: userName,
    doc: "Group of unix sockets: the group Postfix's smtpd runs as.",
  },
  socket_mode: { default: '0660', check: octalMode, doc: 'Mode of unix sockets; permissions for others are refused.' },
  quota_path: {
    default: HELPER_DEFAULTS.quotaPath,
    check: absPath,
    doc: 'The quota(1) binary the root helper runs. Must be root-owned and not writable by others.',
  },
  quota_timeout_ms: {
    default: HELPER_DEFAULTS.timeoutMs,
    check: int(100, 600_000),
    doc: 'Kill quota(1) after this long (NFS can hang) and answer the error action.',
  },
  filesystems: {
    default: [],
    check: listOf(absPath, 64),
    doc: 'Mount points to check; empty means every file system quota reports.',
  },
  min_uid: {
    default: HELPER_DEFAULTS.minUid,
    check: int(1, 0xfffffffd),
    doc: 'Users with a lower uid (system users) are never checked: DUNNO.',
  },
  exempt_users: { default: [], check: listOf(userName, 10_000), doc: 'Users never checked: DUNNO.' },
  domains: {
    default: [],
    check: listOf(domainName, 10_000),
    doc: 'Recipient domains that are local; others get DUNNO. Empty means any domain.',
  },
  recipient_delimiter: {
    default: null,
    check: nullable((v) => (typeof v === 'string' && !CONTROL.test(v) ? undefined : 'must be a string')),
    doc: 'Characters that start an address extension, as in Postfix. null reads `postconf -h recipient_delimiter`, or "+" without Postfix. "" disables.',
  },
  cache_ttl_ms: {
    default: 10_000,
    check: int(0, 3_600_000),
    doc: "How long a user's quota numbers are reused. 0 disables the cache.",
  },
  negative_cache_ttl_ms: {
    default: 60_000,
    check: int(0, 3_600_000),
    doc: 'How long "not a Unix user" is remembered.',
  },
  cache_max_entries: {
    default: 10_000,
    check: int(1, 10_000_000),
    doc: 'Entries kept in each cache; the oldest go first.',
  },
  idle_timeout_ms: {
    default: 330_000,
    check: int(1000, 86_400_000),
    doc: 'Close a policy connection idle this long (Postfix itself closes after 300 s).',
  },
  request_timeout_ms: {
    default: 10_000,
    check: int(100, 600_000),
    doc: 'A request begun must be complete within this, or the connection is closed without a reply (a slow sender cannot hold it).',
  },
  max_connections: {
    default: 512,
    check: int(1, 100_000),
    doc: 'Policy connections open at once, all listeners together. At the cap, the longest-idle connection (no request in progress) is closed to admit a new one, as Postfix reconnects; only when every one is busy is the new one closed on arrival. Both are logged.',
  },
  log_level: { default: 'info', check: oneOf('debug', 'info', 'warn', 'error'), doc: 'Lowest level logged.' },
  quota_states: {
    default: ['RCPT', 'END-OF-MESSAGE'],
    check: (v) =>
      listOf(oneOf('RCPT', 'END-OF-MESSAGE'), 2)(v) ??
      ((v as string[]).length > 0 ? undefined : 'must name at least one state'),
    doc: 'Protocol states the quota check answers (END-OF-MESSAGE only with exactly one recipient; there the real size is known). Others get DUNNO.',
  },
  checks: {
    default: ['quota'],
    check: (v) =>
      listOf(oneOf('quota', 'rate_limit'), 2)(v) ??
      (new Set(v as string[]).size === (v as string[]).length ? undefined : 'must not repeat a check'),
    doc: 'Checks that run, in order of precedence: when several refuse, the first one listed answers. Leave one out to turn it off.',
  },
  privilege_mode: {
    default: 'root',
    check: oneOf('root', 'sudo'),
    doc: 'root: `serve` starts as root and keeps the root helper (systemd). sudo: `serve` starts as the service user and runs the helper through `sudo -n sudo_helper`.',
  },
  sudo_helper: {
    default: '/usr/lib/quotapolicy/quotapolicy-helper',
    check: absPath,
    doc: 'The helper command the sudoers drop-in allows (sudo mode only).',
  },
  pid_file: {
    default: null,
    check: nullable(absPath),
    doc: 'Write the main pid here (non-systemd setups); a live pid in it refuses a second start, a stale one is replaced.',
  },
  metrics: { default: false, check: bool, doc: 'Serve Prometheus metrics at /metrics.' },
  metrics_listen: {
    default: 'inet:127.0.0.1:9163',
    check: listenSpec,
    doc: 'Where /metrics listens (loopback by default; unix:/path also works).',
  },
};

const limitPair: Check = (v) =>
  Array.isArray(v) &&
  v.length === 2 &&
  Number.isSafeInteger(v[0]) &&
  v[0] >= 0 &&
  Number.isSafeInteger(v[1]) &&
  v[1] >= 1
    ? undefined
    : 'must be [count, seconds] with count >= 0 and seconds >= 1';
/** Windows per id: policyd-rate-limit users list two or three; 16 is plenty. */
export const MAX_LIMIT_WINDOWS = 16;
/**
 * A list of windows. One window written without its own brackets
 * ([2, 500] for [[2, 500]]) is the classic slip: said so, with the fix.
 */
export const limitList: Check = (v) =>
  Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')
    ? `must be a list of [count, seconds] windows: for one window of ${String(v[0])} in ${String(v[1])} s, nest it: [[${String(v[0])}, ${String(v[1])}]]`
    : listOf(limitPair, MAX_LIMIT_WINDOWS)(v);
const limitsMap =
  (what: Check): Check =>
  (v) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'must be a mapping';
    for (const [k, l] of Object.entries(v)) {
      const bad = what(k) ?? limitList(l);
      if (bad !== undefined) return `${k}: ${bad}`;
    }
    return undefined;
  };
const anyId: Check = (v) =>
  typeof v === 'string' && v !== '' && v.length <= 255 && !CONTROL.test(v) ? undefined : 'must be a non-empty id';
/** As the rate limiter reads it (parseNetwork), so what passes here is what it uses. */
const cidr: Check = (v) => {
  if (typeof v === 'string' && parseNetwork(v) !== undefined) return undefined;
  const addr = typeof v === 'string' ? v.split('/')[0]! : '';
  return addr.includes(':') && parseNetwork(addr)?.family === 4
    ? 'an IPv4-mapped address is taken as IPv4: write a.b.c.d/bits, bits at most 32'
    : 'must be an IP network in CIDR notation';
};
const email: Check = (v) =>
  typeof v === 'string' && /^[^\s@<>]+@[^\s@<>]+$/.test(v) ? undefined : 'must be an e-mail address';
const hostPort: Check = (v) =>
  Array.isArray(v) &&
  v.length >= 1 &&
  v.length <= 2 &&
  typeof v[0] === 'string' &&
  v[0] !== '' &&
  (v[1] === undefined || (Number.isInteger(v[1]) && v[1] >= 1 && v[1] <= 65535))
    ? undefined
    : 'must be [host, port]';
const credentials: Check = (v) =>
  Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'string' && x !== '')
    ? undefined
    : 'must be [user, password]';
const oneOrMany =
  (c: Check): Check =>
  (v) =>
    Array.isArray(v) ? listOf(c, 100)(v) : c(v);

export type CountModeName = 'rcpt' | 'data_recipients' | 'data_messages';
/**
 * policyd-rate-limit's count_mode numbers and what each is here. 0 (its
 * default, and how every release before 1.1.0 counted): one per RCPT TO.
 * 1 (1.1.0): the message's recipient_count at DATA. 2 (1.2.0): one per
 * message at DATA. It accepts no other value (any other limits nothing).
 */
export const POLICYD_COUNT_MODES: Readonly<Record<number, CountModeName>> = {
  0: 'rcpt',
  1: 'data_recipients',
  2: 'data_messages',
};
/** policyd-rate-limit's backend numbers. */
export const POLICYD_BACKENDS: Readonly<Record<number, RateConfig['backend']>> = {
  0: 'sqlite',
  1: 'mysql',
  2: 'postgresql',
};
/** A policyd-rate-limit number where we take a name: the hint says which name. */
const orPolicydNumber =
  (names: Readonly<Record<number, string>>, c: Check): Check =>
  (v) =>
    typeof v === 'number' && Object.hasOwn(names, v)
      ? `${v} is policyd-rate-limit's numbering; here it is ${JSON.stringify(names[v])}`
      : c(v);

/** Rate limiting: policyd-rate-limit's settings, same names and meaning, plus ours. */
export const RATE_FIELDS: Record<string, Field> = {
  limits: {
    default: [
      [10, 60],
      [150, 86400],
    ],
    check: limitList,
    doc: "Windows [count, seconds]: more than count events in the last seconds refuses (policyd-rate-limit's limits).",
  },
  limits_by_id: {
    default: {},
    check: limitsMap(anyId),
    doc: 'Per-id overrides (SASL user, sender, or client IP/group); [] means unlimited. Addresses match in any case (fold_local_part_case).',
  },
  sql_limits_by_id: {
    default: '',
    check: (v) => (typeof v === 'string' ? undefined : 'must be a string'),
    doc: 'SQL backends: a query with one placeholder (? for sqlite/mysql, $1 for postgresql) returning "[[count, seconds], ...]" for an id, or no row. An address is asked for in lower case (fold_local_part_case).',
  },
  limit_by_sasl: { default: true, check: bool, doc: 'Count by SASL user name when there is one.' },
  limit_by_sender: { default: false, check: bool, doc: 'Else count by envelope sender.' },
  limit_by_ip: { default: false, check: bool, doc: 'Else count by client IP, if it is in limited_networks.' },
  limited_networks: {
    default: [],
    check: listOf(cidr, 1000),
    doc: 'Client networks limited by IP (CIDR, IPv4 and IPv6); empty = none, as in policyd-rate-limit.',
  },
  ipv4_prefix: { default: 32, check: int(8, 32), doc: 'IPv4 clients are counted per this prefix.' },
  ipv6_prefix: {
    default: 64,
    check: int(16, 128),
    doc: 'IPv6 clients are counted per this prefix (one /64 is usually one host).',
  },
  count_mode: {
    default: 'rcpt',
    check: orPolicydNumber(POLICYD_COUNT_MODES, oneOf('rcpt', 'data_recipients', 'data_messages')),
    doc: 'rcpt: one per RCPT TO; data_recipients: recipient_count at DATA/BDAT; data_messages: one per message at DATA/BDAT. Postfix must call the policy at that stage.',
  },
  success_action: { default: 'DUNNO', check: action, doc: 'Under every limit.' },
  fail_action: {
    default: 'DEFER_IF_PERMIT Rate limit reach, retry later',
    check: action,
    doc: 'Over a limit (not counted).',
  },
  db_error_action: { default: 'DUNNO', check: action, doc: 'The store is unreachable or failed; logged as a warning.' },
  dry_run: {
    default: false,
    check: bool,
    doc: 'Log what would be refused, answer success_action (and do not count it).',
  },
  exempt_ids: {
    default: [],
    check: listOf(anyId, 10_000),
    doc: 'Ids never limited. Addresses match in any case (fold_local_part_case).',
  },
  fold_local_part_case: {
    default: true,
    check: bool,
    doc: 'Ids that are mail addresses (they contain @: senders, SASL names like user@example.org) compare as Postfix lookups do: the domain in any case and, when true, the local part too, so Big@Example.org and big@example.org are one id. Applies to counters, limits_by_id and exempt_ids keys, and the id sql_limits_by_id is asked for (lower case). false: local parts compare exactly.',
  },
  exempt_networks: { default: [], check: listOf(cidr, 1000), doc: 'Clients never limited, whatever their id.' },
  limits_by_recipient_domain: {
    default: {},
    check: limitsMap(anyId),
    doc: 'Extra windows per recipient domain (at RCPT, or DATA with one recipient), shared by all senders.',
  },
  limits_by_sender_domain: {
    default: {},
    check: limitsMap(anyId),
    doc: 'Extra windows per envelope sender domain, shared by its senders.',
  },
  backend: {
    default: 'sqlite',
    check: orPolicydNumber(POLICYD_BACKENDS, oneOf('sqlite', 'postgresql', 'mysql', 'redis')),
    doc: 'Where counts live. sqlite is embedded; the others let several MX hosts share exact limits.',
  },
  sqlite_path: {
    default: '/var/lib/quotapolicy/ratelimit.sqlite3',
    check: absPath,
    doc: 'SQLite file (WAL); its directory must be writable by the service user. serve creates a missing directory (service user, 0750) when only root can write its parent; check-config and serve refuse otherwise.',
  },
  url: {
    default: null,
    check: nullable(str),
    doc: 'postgresql://..., mysql://... or redis://... for the other backends.',
  },
  store_timeout_ms: {
    default: 1000,
    check: int(50, 60_000),
    doc: 'A store call taking longer answers db_error_action.',
  },
  report: {
    default: false,
    check: bool,
    doc: 'On `quotapolicy clean`, mail a report of ids that hit report_limits windows.',
  },
  report_from: { default: null, check: nullable(email), doc: 'Report sender; required with report.' },
  report_to: { default: null, check: nullable(oneOrMany(email)), doc: 'One address or a list; required with report.' },
  report_subject: { default: 'policyd-rate-limit report', check: str, doc: 'Report subject.' },
  report_limits: {
    default: [86400],
    check: listOf(int(1, 100_000_000), 16),
    doc: 'Window lengths (seconds) whose hits are reported.',
  },
  report_only_if_needed: { default: true, check: bool, doc: 'Send nothing when nobody hit a reported window.' },
  smtp_server: { default: ['localhost', 25], check: hostPort, doc: 'SMTP server for reports, [host, port].' },
  smtp_starttls: { default: false, check: bool, doc: 'Use STARTTLS (required before smtp_credentials are sent).' },
  smtp_credentials: { default: null, check: nullable(credentials), doc: '[user, password] for SMTP AUTH, or null.' },
  smtp_tls_ca_file: {
    default: null,
    check: nullable(absPath),
    doc: "PEM file of the CA(s) that sign the report server's certificate; null uses the system's CAs. The certificate is always verified.",
  },
};

export interface RateConfig {
  limits: [number, number][];
  limits_by_id: Record<string, [number, number][]>;
  sql_limits_by_id: string;
  limit_by_sasl: boolean;
  limit_by_sender: boolean;
  limit_by_ip: boolean;
  limited_networks: string[];
  ipv4_prefix: number;
  ipv6_prefix: number;
  count_mode: CountModeName;
  success_action: string;
  fail_action: string;
  db_error_action: string;
  dry_run: boolean;
  exempt_ids: string[];
  fold_local_part_case: boolean;
  exempt_networks: string[];
  limits_by_recipient_domain: Record<string, [number, number][]>;
  limits_by_sender_domain: Record<string, [number, number][]>;
  backend: 'sqlite' | 'postgresql' | 'mysql' | 'redis';
  sqlite_path: string;
  url: string | null;
  store_timeout_ms: number;
  report: boolean;
  report_from: string | null;
  report_to: string | string[] | null;
  report_subject: string;
  report_limits: number[];
  report_only_if_needed: boolean;
  smtp_server: [string, number?];
  smtp_starttls: boolean;
  smtp_credentials: [string, string] | null;
  smtp_tls_ca_file: string | null;
}

export interface Actions {
  over_quota: string;
  too_large: string;
  does_not_fit: string;
  grace: string | null;
  success: string;
  error: string;
}
export interface Config {
  user: string;
  listen: string[];
  socket_owner: string | null;
  socket_group: string;
  socket_mode: string;
  quota_path: string;
  quota_timeout_ms: number;
  filesystems: string[];
  min_uid: number;
  exempt_users: string[];
  domains: string[];
  recipient_delimiter: string | null;
  cache_ttl_ms: number;
  negative_cache_ttl_ms: number;
  cache_max_entries: number;
  idle_timeout_ms: number;
  request_timeout_ms: number;
  max_connections: number;
  log_level: 'debug' | 'info' | 'warn' | 'error';
  privilege_mode: 'root' | 'sudo';
  sudo_helper: string;
  pid_file: string | null;
  metrics: boolean;
  metrics_listen: string;
  quota_states: ('RCPT' | 'END-OF-MESSAGE')[];
  checks: ('quota' | 'rate_limit')[];
  actions: Actions;
  rate_limit: RateConfig;
}
