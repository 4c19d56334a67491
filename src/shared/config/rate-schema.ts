// The rate_limit section: policyd-rate-limit's settings (same names and
// meaning) plus quotapolicy's own, with their checks and defaults. RateConfig
// is derived from the table, as Config is in schema.ts.
import { parseNetwork } from '../network.js';
import { parseSentinelAddress } from './redis-sentinel.js';
import {
  CONTROL,
  absPath,
  action,
  bool,
  fieldTable,
  int,
  listOf,
  nullable,
  oneOf,
  refine,
  str,
  type Check,
  type ValuesOf,
} from './checks.js';

const limitPair: Check<[number, number]> = (v) =>
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
export const limitList: Check<[number, number][]> = (v) =>
  Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'number')
    ? `must be a list of [count, seconds] windows: for one window of ${String(v[0])} in ${String(v[1])} s, nest it: [[${String(v[0])}, ${String(v[1])}]]`
    : listOf(limitPair, MAX_LIMIT_WINDOWS)(v);
const limitsMap =
  (what: Check<string>): Check<Record<string, [number, number][]>> =>
  (v) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'must be a mapping';
    for (const [k, l] of Object.entries(v)) {
      const bad = what(k) ?? limitList(l);
      if (bad !== undefined) return `${k}: ${bad}`;
    }
    return undefined;
  };
/** The identity kinds an id is counted under (decide.ts identify()). */
export const ID_KINDS = ['sasl', 'sender', 'ip'] as const;
export type IdKind = (typeof ID_KINDS)[number];
const limitsByKind: Check<Partial<Record<IdKind, [number, number][]>>> = (v) => {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return 'must be a mapping';
  for (const [k, l] of Object.entries(v)) {
    if (!(ID_KINDS as readonly string[]).includes(k)) return `${k}: not an id kind (kinds: ${ID_KINDS.join(', ')})`;
    const bad = limitList(l);
    if (bad !== undefined) return `${k}: ${bad}`;
  }
  return undefined;
};
const anyId: Check<string> = (v) =>
  typeof v === 'string' && v !== '' && v.length <= 255 && !CONTROL.test(v) ? undefined : 'must be a non-empty id';
const anyString: Check<string> = (v) => (typeof v === 'string' ? undefined : 'must be a string');
/** As the rate limiter reads it (parseNetwork), so what passes here is what it uses. */
const cidr: Check<string> = (v) => {
  if (typeof v === 'string' && parseNetwork(v) !== undefined) return undefined;
  const addr = typeof v === 'string' ? v.split('/')[0]! : '';
  return addr.includes(':') && parseNetwork(addr)?.family === 4
    ? 'an IPv4-mapped address is taken as IPv4: write a.b.c.d/bits, bits at most 32'
    : 'must be an IP network in CIDR notation';
};
const email: Check<string> = (v) =>
  typeof v === 'string' && /^[^\s@<>]+@[^\s@<>]+$/.test(v) ? undefined : 'must be an e-mail address';
const hostPort: Check<[string, number?]> = (v) =>
  Array.isArray(v) &&
  v.length >= 1 &&
  v.length <= 2 &&
  typeof v[0] === 'string' &&
  v[0] !== '' &&
  (v[1] === undefined || (Number.isInteger(v[1]) && v[1] >= 1 && v[1] <= 65535))
    ? undefined
    : 'must be [host, port]';
const credentials: Check<[string, string]> = (v) =>
  Array.isArray(v) && v.length === 2 && v.every((x) => typeof x === 'string' && x !== '')
    ? undefined
    : 'must be [user, password]';
const oneOrMany =
  <T>(c: Check<T>): Check<T | T[]> =>
  (v) =>
    Array.isArray(v) ? listOf(c, 100)(v) : c(v);

/**
 * Sentinels listed for one master: Redis' docs deploy three or five; 16 is
 * plenty. It also caps the connections the Redis store keeps to them (one
 * each, to hear of a failover at once).
 */
export const MAX_REDIS_SENTINELS = 16;
const sentinelList: Check<string[]> = refine(
  listOf(
    (v) =>
      typeof v === 'string' && parseSentinelAddress(v) !== undefined
        ? undefined
        : 'must be "host:port" (an IPv6 address in brackets: "[::1]:26379")',
    MAX_REDIS_SENTINELS,
  ),
  (l) => (l.length === 0 ? 'must list at least one sentinel "host:port" (or be null: no Sentinel)' : undefined),
);

const COUNT_MODES = ['rcpt', 'data_recipients', 'data_messages'] as const;
export type CountModeName = (typeof COUNT_MODES)[number];
const BACKENDS = ['sqlite', 'postgresql', 'mysql', 'redis'] as const;
export type BackendName = (typeof BACKENDS)[number];
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
export const POLICYD_BACKENDS: Readonly<Record<number, BackendName>> = {
  0: 'sqlite',
  1: 'mysql',
  2: 'postgresql',
};
/** A policyd-rate-limit number where we take a name: the hint says which name. */
const orPolicydNumber =
  <T>(names: Readonly<Record<number, string>>, c: Check<T>): Check<T> =>
  (v) =>
    typeof v === 'number' && Object.hasOwn(names, v)
      ? `${v} is policyd-rate-limit's numbering; here it is ${JSON.stringify(names[v])}`
      : c(v);

/** Rate limiting: policyd-rate-limit's settings, same names and meaning, plus ours. */
export const RATE_FIELDS = fieldTable({
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
  limits_by_kind: {
    default: {},
    check: limitsByKind,
    doc: 'Default windows per identity kind ({sasl: ..., sender: ..., ip: ...}), over limits and under limits_by_id and sql_limits_by_id; [] means unlimited.',
  },
  server_limits: {
    default: [],
    check: limitList,
    doc: 'Windows [count, seconds] for all ids together (key all:): every counted request counts here too, ids with no windows of their own ([]) included; exempt ones do not. [] = none.',
  },
  volume_limits: {
    default: [],
    check: limitList,
    doc: 'Windows [bytes, seconds] per id (key bytes:KIND:ID): the real size of each message at END-OF-MESSAGE is counted, once per message; the size declared in MAIL FROM is looked at when count_mode counts, to refuse early. Needs check_policy_service in smtpd_end_of_data_restrictions. [] = none.',
  },
  volume_limits_by_id: {
    default: {},
    check: limitsMap(anyId),
    doc: 'Per-id overrides of volume_limits; [] means no volume limit for that id. Addresses match in any case (fold_local_part_case).',
  },
  sql_limits_by_id: {
    default: '',
    check: anyString,
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
    check: orPolicydNumber(POLICYD_COUNT_MODES, oneOf(...COUNT_MODES)),
    doc: 'rcpt: one per RCPT TO; data_recipients: recipient_count at DATA/BDAT; data_messages: one per message at DATA/BDAT. Postfix must call the policy at that stage.',
  },
  success_action: { default: 'DUNNO', check: action, doc: 'Under every limit.' },
  fail_action: {
    default: 'DEFER_IF_PERMIT Rate limit reach, retry later',
    check: action,
    doc: 'Over a limit (not counted).',
  },
  hold_action: {
    default: null,
    check: nullable(action),
    doc: "Answered instead of fail_action when an id's own windows (count or volume) refuse, e.g. HOLD, so a compromised account's mail waits in the hold queue; a domain or server_limits refusal keeps fail_action. null = fail_action.",
  },
  alert_on_refusal: {
    default: false,
    check: bool,
    doc: 'Log a warning the first time a key is refused in a window: at most once per key and window length in any span of that length, across every host sharing the store (the store keeps the mark, key alert:SECONDS:KEY).',
  },
  alert_mail: {
    default: false,
    check: bool,
    doc: 'With alert_on_refusal: also mail each alert to report_to, from report_from, through smtp_server (smtp_starttls, smtp_credentials, smtp_tls_ca_file as for the report), sent by the daemon as it happens; a few at once at most, beyond that and on failure the alert is only logged, with the reason.',
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
    check: orPolicydNumber(POLICYD_BACKENDS, oneOf(...BACKENDS)),
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
    doc: 'postgresql://..., mysql://... or redis://... for the other backends. A redis url takes only the query parameters family, password, username, db and path (ioredis would read any other as an option of its own).',
  },
  store_tls: {
    default: false,
    check: bool,
    doc: "postgresql, mysql and redis: connect over TLS and verify the server's certificate, its chain up to store_tls_ca_file and its name against url's host (as PostgreSQL's sslmode=verify-full); a connection that fails either check is not used. url then needs a TCP host (no unix socket; for mysql a name, not an IP address) and no TLS parameters of its own (rediss://, sslmode, ssl...): this key is the one way to say TLS.",
  },
  store_tls_ca_file: {
    default: null,
    check: nullable(absPath),
    doc: "With store_tls: PEM file of the CA(s) that sign the store server's certificate; null trusts the public CAs built into Node.js (not /etc/ssl/certs). Read by the front as the service user whenever it connects; check-config and serve refuse a file it cannot read or that holds no certificate.",
  },
  store_tls_cert_file: {
    default: null,
    check: nullable(absPath),
    doc: 'With store_tls: PEM client certificate shown to a store server that asks for one (with store_tls_key_file); null = none.',
  },
  store_tls_key_file: {
    default: null,
    check: nullable(absPath),
    doc: "With store_tls_cert_file: the client certificate's private key (PEM, unencrypted), readable by the service user (and no one else).",
  },
  redis_sentinels: {
    default: null,
    check: nullable(sentinelList),
    doc: 'Backend redis through Redis Sentinel: the sentinels, ["host:port", ...] (every one of them: no other is learnt). url then names the master as they know it (sentinel monitor NAME), with no port: redis://[[user]:password@]NAME[/db]. The store asks them where the master is, and again after a failover; until a new master is known, calls answer db_error_action. null = url is the server itself.',
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
});

export type RateConfig = ValuesOf<typeof RATE_FIELDS>;
