// Every setting, its default and its check, in one place: the top-level and
// actions tables here, rate_limit's in rate-schema.ts. The Config type is
// derived from the tables' checks, so a setting cannot be added, dropped or
// retyped in one and not the other. The config reference in README.md is
// checked against the tables by test/config-reference.test.ts.
import { HELPER_DEFAULTS } from '../wire.js';
import { isUnixName } from '../unix-name.js';
import type { RateConfig } from './rate-schema.js';
import {
  absPath,
  action,
  bool,
  CONTROL,
  fieldTable,
  int,
  listenSpec,
  listOf,
  nullable,
  oneOf,
  refine,
  type Check,
  type ValuesOf,
} from './checks.js';

const octalMode: Check<string> = (v) =>
  typeof v === 'string' && /^0?[0-7]{3}$/.test(v) && (parseInt(v, 8) & 0o7) === 0
    ? undefined
    : 'must be an octal mode like "0660", with no permissions for others';
const userName: Check<string> = (v) =>
  typeof v === 'string' && isUnixName(v) ? undefined : 'must be a Unix user or group name';
const domainName: Check<string> = (v) =>
  typeof v === 'string' && /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/i.test(v) ? undefined : 'must be a domain name';

export const ACTION_FIELDS = fieldTable({
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
    doc: 'The quota lookup failed or timed out (fail open), or an alias could not be expanded. Logged as a warning.',
  },
  nouser: {
    default: 'DUNNO',
    check: action,
    doc: "The recipient's domain is local but it is neither a Unix user nor an alias (Dovecot's quota_status_nouser). Anything but DUNNO needs `domains`.",
  },
});

/** Thresholds per list: "80, 90, 95" is the usual; ten is plenty and bounds the header and the state. */
export const MAX_WARNING_THRESHOLDS = 10;
/** A header field name (RFC 5322: printable ASCII but colon), short enough to leave the action room. */
const headerName: Check<string> = (v) =>
  typeof v === 'string' && /^[!-9;-~]{1,64}$/.test(v) ? undefined : 'must be a header name like "X-Quota-Warning"';
const percentList: Check<number[]> = refine(listOf(int(1, 100), MAX_WARNING_THRESHOLDS), (v) =>
  v.every((t, i) => i === 0 || t > v[i - 1]!) ? undefined : 'must be in increasing order, each once',
);
const mailbox: Check<string> = (v) =>
  typeof v === 'string' && /^[^\s@<>()",;:\\[\]]+@[a-z0-9.-]+$/i.test(v) ? undefined : 'must be an e-mail address';

/** Goes into a header as it is: no encoding, so ASCII only; 200 keeps the line well under 998. */
const asciiLine: Check<string> = (v) =>
  typeof v === 'string' && /^[\x20-\x7e]{1,200}$/.test(v) ? undefined : 'must be 1 to 200 printable ASCII characters';

/** Warnings before the wall: how full (per cent of a hard limit) a mailbox may get unwarned. */
export const WARNING_FIELDS = fieldTable({
  thresholds: {
    default: [],
    check: percentList,
    doc: 'Per cent of a hard limit (blocks or files, on any checked file system) at which a recipient is warned, e.g. [80, 90]; the highest crossed counts. Counted with this message in (its size when known, one more file). Empty: no warnings.',
  },
  header: {
    default: 'X-Quota-Warning',
    check: nullable(headerName),
    doc: 'At RCPT, a warned recipient whose mail would be accepted (actions.success) gets "PREPEND <header>: <address>: mailbox N% full (blocks|files; warning at T%)" instead of DUNNO. PREPEND is not final, as DUNNO. null: no header.',
  },
  notify: {
    default: false,
    check: bool,
    doc: 'Also mail the user a notice when accepted mail takes them over a threshold they were under, at most once per notify_period_s for that threshold, through the local sendmail.',
  },
  notify_period_s: {
    default: 86_400,
    check: int(60, 31_536_000),
    doc: 'At most one notice per user and threshold within this many seconds, across restarts.',
  },
  notify_from: { default: null, check: nullable(mailbox), doc: 'Sender of notices; required with notify.' },
  notify_subject: {
    default: 'Your mailbox is nearly full',
    check: asciiLine,
    doc: 'Subject of notices (ASCII: it goes into the header as it is).',
  },
  notify_sendmail: {
    default: '/usr/sbin/sendmail',
    check: absPath,
    doc: "Postfix's sendmail, run as the service user with -i -f notify_from -- address, no shell, a fixed environment.",
  },
  notify_timeout_ms: {
    default: 10_000,
    check: int(100, 600_000),
    doc: 'A sendmail run taking longer is killed. A failed notice is logged at warn and tried again with the next accepted mail for that user.',
  },
  state_path: {
    default: '/var/lib/quotapolicy/warnings.sqlite3',
    check: absPath,
    doc: "SQLite file of who was notified of what and when (with notify). Its directory is handled as rate_limit.sqlite_path's.",
  },
});

export const FIELDS = fieldTable({
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
    check: nullable<string>((v) => (typeof v === 'string' && !CONTROL.test(v) ? undefined : 'must be a string')),
    doc: 'Characters that start an address extension, as in Postfix. null reads `postconf -h recipient_delimiter`, or "+" without Postfix. "" disables.',
  },
  postfix_config_dir: {
    default: null,
    check: nullable(absPath),
    doc: "Postfix configuration directory the front reads with `postconf -c DIR` (recipient_delimiter, alias_maps and virtual_alias_maps, the start-up stage check); postmap and postalias get it as -c. null: Postfix's default, /etc/postfix (MAIL_CONFIG is not passed on).",
  },
  expand_aliases: {
    default: true,
    check: bool,
    doc: "Expand recipients through Postfix's virtual_alias_maps and alias_maps (postmap/postalias -q, as the service user) and check the local users they reach.",
  },
  alias_refuse_when: {
    default: 'all_full',
    check: oneOf('all_full', 'any_full'),
    doc: 'An alias reaching several addresses is refused when all_full: none of them could take the message; any_full: one local user could not.',
  },
  alias_cache_ttl_ms: {
    default: 60_000,
    check: int(0, 3_600_000),
    doc: 'How long an alias expansion (or "not an alias") is reused. Failures are never cached.',
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
    check: refine(listOf(oneOf('RCPT', 'END-OF-MESSAGE'), 2), (v) =>
      v.length > 0 ? undefined : 'must name at least one state',
    ),
    doc: 'Protocol states the quota check answers (END-OF-MESSAGE only with exactly one recipient; there the real size is known). Others get DUNNO.',
  },
  quota_kinds: {
    default: ['user', 'group', 'project'],
    check: refine(listOf(oneOf('user', 'group', 'project'), 3), (v) =>
      v.length > 0 && new Set(v).size === v.length ? undefined : 'must name user, group or project, each at most once',
    ),
    doc: "Quotas the check reads, as the kernel charges a delivery: user (the recipient's own), group (its primary group's: local(8) writes as that group) and project (its home directory's project id, where home_mailbox puts mail). Any one full refuses the mail; the reason and the log name the kind. A group or project quota counts only where the file system enforces it (grpquota, gquota, grpjquota=; prjquota, pquota, prjjquota= in the mount options), as the kernel ignores it elsewhere: the default reads what the kernel would enforce.",
  },
  checks: {
    default: ['quota'],
    check: refine(listOf(oneOf('quota', 'rate_limit'), 2), (v) =>
      new Set(v).size === v.length ? undefined : 'must not repeat a check',
    ),
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
});

export type Actions = ValuesOf<typeof ACTION_FIELDS>;
export type WarningConfig = ValuesOf<typeof WARNING_FIELDS>;
export interface Config extends ValuesOf<typeof FIELDS> {
  actions: Actions;
  quota_warnings: WarningConfig;
  rate_limit: RateConfig;
}
