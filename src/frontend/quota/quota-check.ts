// The quota check: policy request -> verdict. It expands the recipient through
// Postfix's aliases (./aliases.ts), maps it to local users, asks the helper
// (through the caches) for each quota kind the kernel checks on a delivery
// (quota_kinds: the user's own, its primary group's, its mailbox directory's
// project: ./project.ts) and hands the numbers to
// the pure decideQuota(); any kind that refuses refuses. An alias's users'
// verdicts are combined by alias_refuse_when. The clock is passed in; every
// I/O dependency is injected.
import { readFileSync } from 'node:fs';
import { QuotaKind, QUOTA_KIND_NAMES, QuotaStatus, type FsQuota, type UserQuota } from '../../shared/wire.js';
import { QUOTA_STATUS_NAMES } from './wire-front.js';
import type { PolicyRequest } from '../protocol/parser.js';
import type { Config } from '../../shared/config/schema.js';
import { TtlCache } from './cache.js';
import { recipientToUser, type RecipientRules } from './recipient.js';
import { expandRecipient, type Expansion, type ExpandRules, type MapReader } from './aliases.js';
import { isUnixName } from '../../shared/unix-name.js';
import { decideQuota, SEVERITY, type QuotaDecision, type QuotaVerdict } from './quota-decision.js';
import { highestWarning, userAddress, warningText, type QuotaWarning } from './quota-warning.js';
import type { Fault } from '../metrics.js';
import type { MailboxProject } from './project.js';

/** The helper's per-user status as the front names it (wire.ts holds it as a number). */
export type QuotaStatusName = (typeof QUOTA_STATUS_NAMES)[number];

/**
 * The reason when quota(1) reports no file system with quotas on (no output,
 * or "none"): quotas are off everywhere, so the check can refuse no one.
 */
export const NO_QUOTA_FS = 'no file system has quotas on (quota(1) lists none)';

export type Verdict = QuotaVerdict | 'skip' | 'error' | 'nouser';

export type KindName = (typeof QUOTA_KIND_NAMES)[number];

export interface CheckResult {
  verdict: Verdict;
  reason: string;
  action: string;
  user?: string;
  /** With verdict error: which failure, as a code. */
  fault?: Fault;
  /** The quota kind the verdict comes from (the worst one), when a quota was judged. */
  kind?: KindName;
  /** With verdict pass or grace and quota_warnings.thresholds: the threshold crossed, if any. */
  warning?: QuotaWarning;
  /** With a pass or grace verdict: the user's address (userAddress()), for warnings and notices. */
  address?: string;
}

/** What the verdict is about: the recipient as Postfix sent it, the message size, and the stage. */
export interface Msg {
  recipient: string;
  size: number;
  /** PREPEND is taken only before the message content. */
  atRcpt: boolean;
}

export interface UserEntry {
  uid: number;
  /** Primary group: local(8) delivers with it, so its group quota is charged. */
  gid: number;
}
export interface QuotaCheckDeps {
  /** getpwnam(): the user's uid and primary gid, or undefined when there is no such user. */
  lookupUser(name: string): UserEntry | undefined;
  /** The helper's numbers for one id of a kind; never rejects. */
  queryQuota: (id: number, kind: QuotaKind) => Promise<UserQuota>;
  /** Mount points where the kernel enforces group quotas (default: read from /proc/self/mounts). */
  groupQuotaMounts?: () => ReadonlySet<string>;
  /** The project of the user's mailbox directory (./project.ts); never rejects. Without it, project quotas are not read. */
  mailboxProject?: ((name: string) => Promise<MailboxProject>) | undefined;
  /** Told of every cache lookup (for metrics). */
  onCacheLookup?(cache: 'quota' | 'user' | 'alias', hit: boolean): void;
  /** Postfix's alias tables; undefined: recipients are not expanded (expand_aliases off, or no maps). */
  aliases?: MapReader | undefined;
}

/** Refusals rank first, worst first; then what can take the message. */
const RANK: Readonly<Record<Verdict, number>> = {
  too_large: 0,
  over_quota: 1,
  does_not_fit: 2,
  grace: 3,
  pass: 4,
  skip: 5,
  nouser: 5,
  error: 6,
};
const refusal = (r: CheckResult): boolean => RANK[r.verdict] <= RANK.does_not_fit;
/** Users named in an alias's reason (the log line): enough to see who, not 64 of them. */
const USERS_SHOWN = 8;

/**
 * How long a mailbox's project id is kept (at least; cache_ttl_ms if longer). It changes only when an
 * admin runs chattr -p, and finding it costs two process runs (getent, lsattr) per user, while quota
 * numbers, which every delivery changes, keep cache_ttl_ms (0 in the cache-miss benchmark).
 */
export const PROJECT_CACHE_TTL_MS = 60_000;

/** Postfix sizes are bytes; more than 2^53 is not a size. */
const SIZE = /^\d{1,15}$/;

export class QuotaCheck {
  private readonly users: TtlCache<string, UserEntry | null>;
  private readonly expansions: TtlCache<string, Expansion>;
  /** Expansions under way: a burst for one recipient shares one. */
  private readonly expanding = new Map<string, Promise<Expansion>>();
  private readonly expandRules: ExpandRules;
  /** Keyed quotaKey(kind, id); a project's "2:id@mount,mount" (its rows are those of the mailbox's file system). */
  private readonly quotas: TtlCache<number | string, UserQuota>;
  /** By user name: its mailbox's project, for cache_ttl_ms (errors are not kept). */
  private readonly projects: TtlCache<string, MailboxProject>;
  private readonly rules: RecipientRules;
  private readonly exempt: ReadonlySet<string>;

  constructor(
    private readonly cfg: Config,
    delimiters: string,
    private readonly minUid: number,
    private readonly deps: QuotaCheckDeps,
  ) {
    this.users = new TtlCache(cfg.cache_ttl_ms, cfg.cache_max_entries);
    this.quotas = new TtlCache(cfg.cache_ttl_ms, cfg.cache_max_entries);
    this.projects = new TtlCache(Math.max(cfg.cache_ttl_ms, PROJECT_CACHE_TTL_MS), cfg.cache_max_entries);
    this.rules = { delimiters, domains: new Set(cfg.domains.map((d) => d.toLowerCase())) };
    this.exempt = new Set(cfg.exempt_users);
    this.expansions = new TtlCache(cfg.alias_cache_ttl_ms, cfg.cache_max_entries);
    const domains = this.rules.domains;
    this.expandRules = { delimiters, isLocal: (d) => domains.size === 0 || domains.has(d) };
  }

  private skip(reason: string, user?: string): CheckResult {
    return { verdict: 'skip', reason, action: 'DUNNO', ...(user === undefined ? {} : { user }) };
  }

  /** Which recipient and size this request is about, or why it does not apply. */
  static subject(req: PolicyRequest, states: readonly string[] = ['RCPT', 'END-OF-MESSAGE']): Msg | string {
    if (req.get('request') !== 'smtpd_access_policy') return 'not an smtpd_access_policy request';
    const state = req.get('protocol_state');
    const recipient = req.get('recipient') ?? '';
    const sizeText = req.get('size') ?? '';
    const size = SIZE.test(sizeText) ? Number(sizeText) : 0;
    if (state === 'RCPT' && states.includes(state))
      return recipient === '' ? 'no recipient' : { recipient, size, atRcpt: true };
    if (state === 'END-OF-MESSAGE' && states.includes(state)) {
      if (req.get('recipient_count') !== '1' || recipient === '') return 'not exactly one recipient';
      return { recipient, size, atRcpt: false };
    }
    return `protocol state ${state ?? '(none)'} is not checked`;
  }

  /** actions.nouser; with DUNNO (the default) the quota check does not apply, as before it existed. */
  private nouser(reason: string, user?: string): CheckResult {
    const action = this.cfg.actions.nouser;
    if (action.trim().toUpperCase() === 'DUNNO') return this.skip(reason, user);
    return { verdict: 'nouser', reason, action, ...(user === undefined ? {} : { user }) };
  }

  /** Synchronous on a cache hit; a promise only when the helper or Postfix's maps must be asked. Throws only if NSS does. */
  check(req: PolicyRequest, nowMs: number): CheckResult | Promise<CheckResult> {
    const subject = QuotaCheck.subject(req, this.cfg.quota_states);
    if (typeof subject === 'string') return this.skip(subject);
    const reader = this.deps.aliases;
    const msg = subject;
    if (reader === undefined) return this.direct(msg, nowMs);
    const key = subject.recipient.toLowerCase();
    const known = this.expansions.get(key, nowMs);
    this.deps.onCacheLookup?.('alias', known !== undefined);
    if (known !== undefined) return this.expanded(known, msg, nowMs);
    let p = this.expanding.get(key);
    if (p === undefined) {
      p = expandRecipient(key, this.expandRules, reader)
        .then((x) => {
          if (!('error' in x)) this.expansions.set(key, x, nowMs);
          return x;
        })
        .finally(() => this.expanding.delete(key));
      this.expanding.set(key, p);
    }
    return p.then((x) => this.expanded(x, msg, nowMs));
  }

  private expanded(x: Expansion, msg: Msg, nowMs: number): CheckResult | Promise<CheckResult> {
    if ('error' in x)
      return {
        verdict: 'error',
        reason: `alias expansion failed: ${x.error}`,
        action: this.cfg.actions.error,
        fault: 'alias',
      };
    if (!x.alias) return this.direct(msg, nowMs);
    const rs = x.users.map((u): CheckResult | Promise<CheckResult> =>
      isUnixName(u) ? this.forUser(u, msg, nowMs, this.skip.bind(this)) : this.skip('not a Unix user name', u),
    );
    const summary = (got: CheckResult[]): CheckResult => this.combine(x, got, msg.recipient);
    if (!rs.some((r) => r instanceof Promise)) return summary(rs as CheckResult[]);
    return Promise.all(rs.map((r) => Promise.resolve(r))).then(summary);
  }

  /**
   * An alias's answer from its users' (README, "Aliases"). Not refused: the
   * worst answer among those that can take the message (a grace warning over a
   * pass). all_full refuses only when no address can take it, with the most
   * hopeful refusal (452 before 552); any_full with the worst refusal of any,
   * and with the error action when a user's quota could not be read.
   */
  private combine(x: Extract<Expansion, { alias: true }>, rs: CheckResult[], recipient: string): CheckResult {
    const byRank = [...rs].sort((a, b) => RANK[a.verdict] - RANK[b.verdict]);
    const refused = byRank.filter(refusal);
    const taking = byRank.filter((r) => !refusal(r) && r.verdict !== 'error');
    const error = byRank.find((r) => r.verdict === 'error');
    const elsewhere = x.remote + x.unchecked.length;
    let pick: CheckResult | undefined;
    if (this.cfg.alias_refuse_when === 'any_full') pick = refused[0] ?? error ?? taking[0];
    else if (taking.length > 0) pick = taking[0];
    else if (elsewhere > 0) pick = undefined;
    else pick = error ?? refused.at(-1);
    const shown = rs.slice(0, USERS_SHOWN).map((r) => `${r.user ?? '?'}: ${r.verdict}`);
    if (rs.length > USERS_SHOWN) shown.push(`${rs.length - USERS_SHOWN} more`);
    const parts = [`${rs.length} local user${rs.length === 1 ? '' : 's'} (${shown.join(', ')})`];
    if (x.remote > 0) parts.push(`${x.remote} remote`);
    if (x.unchecked.length > 0) parts.push(`${x.unchecked.length} file/command/include not checked`);
    const head = `alias ${recipient} -> ${parts.join(', ')}`;
    if (pick === undefined)
      return this.skip(
        rs.length === 0 ? `${head}: no local user to check` : `${head}: not refused, the others take it`,
      );
    return { ...pick, reason: `${head}; ${this.cfg.alias_refuse_when}: ${pick.reason}` };
  }

  /** The recipient as its own user: local(8)'s mapping, then actions.nouser for no such user. */
  private direct(msg: Msg, nowMs: number): CheckResult | Promise<CheckResult> {
    const mapped = recipientToUser(msg.recipient, this.rules);
    if (!mapped.ok)
      return mapped.reason === 'domain is not local' ? this.skip(mapped.reason) : this.nouser(mapped.reason);
    return this.forUser(mapped.user, msg, nowMs, this.nouser.bind(this));
  }

  private forUser(
    name: string,
    msg: Msg,
    nowMs: number,
    unknown: (reason: string, user: string) => CheckResult,
  ): CheckResult | Promise<CheckResult> {
    let entry = this.users.get(name, nowMs);
    this.deps.onCacheLookup?.('user', entry !== undefined);
    if (entry === undefined) {
      entry = this.deps.lookupUser(name) ?? null;
      this.users.set(name, entry, nowMs, entry === null ? this.cfg.negative_cache_ttl_ms : this.cfg.cache_ttl_ms);
    }
    if (entry === null) return unknown('not a Unix user', name);
    if (entry.uid < this.minUid) return this.skip(`uid ${entry.uid} below min_uid`, name);
    if (this.exempt.has(name)) return this.skip('exempt user', name);
    const { uid, gid } = entry;
    const kinds = this.cfg.quota_kinds;
    const asks: QuotaKind[] = [];
    const ids: number[] = [];
    let project = false;
    // Id 0 (root's group) is never asked for: the helper refuses it for every kind. Indexed loops on
    // this path: a cache hit runs it for every request.
    for (let i = 0; i < kinds.length; i++) {
      const k = kinds[i]!;
      if (k === 'project') project = true;
      else if (k === 'user' || gid !== 0) {
        asks.push(k === 'user' ? QuotaKind.User : QuotaKind.Group);
        ids.push(k === 'user' ? uid : gid);
      }
    }
    const lookup = this.deps.mailboxProject;
    if (!project || lookup === undefined) return this.quotasFor(asks, ids, NO_MOUNTS, name, msg, nowMs);
    const known = this.projects.get(name, nowMs);
    if (known !== undefined) {
      if (!hasProject(known)) return this.quotasFor(asks, ids, NO_MOUNTS, name, msg, nowMs);
      asks.push(QuotaKind.Project);
      ids.push(known.id);
      return this.quotasFor(asks, ids, known.mounts, name, msg, nowMs);
    }
    // The user's and the group's quotas are asked for now, while the project is looked up: the
    // lookup's processes and quota(1) run side by side, not one after the other.
    const others = this.fetch(asks, ids, NO_MOUNTS, nowMs);
    // Awaited below, once the lookup ends; a failure before that is this request's error then, not an
    // unhandled rejection meanwhile (which would end the process).
    if (others instanceof Promise) others.catch(() => {});
    return lookup(name).then(async (p) => {
      if (!('error' in p)) this.projects.set(name, p, nowMs);
      if (!hasProject(p)) return this.judge(asks, await others, name, msg, nowMs, 'error' in p ? p.error : undefined);
      const project = this.fetch([QuotaKind.Project], [p.id], p.mounts, nowMs);
      const [qs, pq] = await Promise.all([others, project]);
      return this.judge([...asks, QuotaKind.Project], [...qs, ...pq], name, msg, nowMs);
    });
  }

  /** The quotas of these kinds and ids (a project's rows only on `projectMounts`), judged together. */
  private quotasFor(
    asks: QuotaKind[],
    ids: number[],
    projectMounts: ReadonlySet<string>,
    name: string,
    msg: Msg,
    nowMs: number,
  ): CheckResult | Promise<CheckResult> {
    const qs = this.fetch(asks, ids, projectMounts, nowMs);
    if (qs instanceof Promise) return qs.then((got) => this.judge(asks, got, name, msg, nowMs));
    return this.judge(asks, qs, name, msg, nowMs);
  }

  /** The quotas of these kinds and ids, from the cache or the helper: synchronous when all are cached. */
  private fetch(
    asks: QuotaKind[],
    ids: number[],
    projectMounts: ReadonlySet<string>,
    nowMs: number,
  ): UserQuota[] | Promise<UserQuota[]> {
    // The hot path (a cache hit runs it for every request): indexed loops, keys built only for a project.
    const keys = new Array<number | string>(asks.length);
    const got = new Array<UserQuota | undefined>(asks.length);
    let missing = false;
    for (let i = 0; i < asks.length; i++) {
      const kind = asks[i]!;
      const key =
        kind === QuotaKind.Project
          ? `${kind}:${ids[i]!}@${Array.from(projectMounts).join(',')}`
          : quotaKey(kind, ids[i]!);
      const q = this.cachedQuota(key, nowMs);
      keys[i] = key;
      got[i] = q;
      if (q === undefined) missing = true;
    }
    if (!missing) return got as UserQuota[];
    return Promise.all(got.map(async (q, i) => q ?? this.ask(asks[i]!, ids[i]!, keys[i]!, projectMounts, nowMs)));
  }

  private cachedQuota(key: number | string, nowMs: number): UserQuota | undefined {
    const cached = this.quotas.get(key, nowMs);
    this.deps.onCacheLookup?.('quota', cached !== undefined);
    return cached;
  }

  private async ask(
    kind: QuotaKind,
    id: number,
    key: number | string,
    projectMounts: ReadonlySet<string>,
    nowMs: number,
  ): Promise<UserQuota> {
    // A group quota binds only where the file system enforces group quotas (the kernel ignores the rest);
    // with none enforced anywhere, quota(1) is not run for the group at all. A project's binds only on
    // the mailbox's own file system (./project.ts found it enforcing project quotas).
    const enforced =
      kind === QuotaKind.Group
        ? (this.deps.groupQuotaMounts ?? groupQuotaMounts)()
        : kind === QuotaKind.Project
          ? projectMounts
          : undefined;
    if (enforced?.size === 0) {
      const none: UserQuota = { uid: id, status: QuotaStatus.NoData, fs: [] };
      this.quotas.set(key, none, nowMs);
      return none;
    }
    const q = await this.deps.queryQuota(id, kind);
    if (q.status !== QuotaStatus.Ok && q.status !== QuotaStatus.NoData) return q;
    const fs = enforced ? q.fs.filter((r: FsQuota) => enforced.has(r.mount)) : q.fs;
    const kept = { ...q, fs };
    this.quotas.set(key, kept, nowMs);
    return kept;
  }

  /** Any kind that refuses refuses the mail (the worst one answers); then errors; then the rest. */
  private judge(
    kinds: QuotaKind[],
    qs: UserQuota[],
    name: string,
    msg: Msg,
    nowMs: number,
    projectError?: string,
  ): CheckResult {
    // The hot path (a cache hit runs it for every request): indexed loops, no spreads.
    let worst: QuotaDecision | undefined;
    let worstKind = QuotaKind.User;
    let failed: CheckResult | undefined =
      projectError === undefined
        ? undefined
        : {
            verdict: 'error',
            reason: `project quota: mailbox project not found: ${projectError}`,
            action: this.cfg.actions.error,
            user: name,
            fault: 'project',
            kind: 'project',
          };
    let noData = projectError === undefined;
    for (let i = 0; i < qs.length; i++) {
      const q = qs[i]!;
      const kind = kinds[i]!;
      if (q.status !== QuotaStatus.NoData) noData = false;
      if (q.status !== QuotaStatus.Ok && q.status !== QuotaStatus.NoData) {
        const status = QUOTA_STATUS_NAMES[q.status];
        failed ??= {
          verdict: 'error',
          reason: `quota lookup failed: ${status}${kind === QuotaKind.User ? '' : ` (${QUOTA_KIND_NAMES[kind]} quota)`}`,
          action: this.cfg.actions.error,
          user: name,
          fault: `quota_${status}`,
          kind: QUOTA_KIND_NAMES[kind],
        };
        continue;
      }
      const d = decideQuota(q.fs, msg.size, Math.floor(nowMs / 1000), this.cfg.filesystems);
      if (d !== undefined && (worst === undefined || SEVERITY.indexOf(d.verdict) < SEVERITY.indexOf(worst.verdict))) {
        worst = d;
        worstKind = kind;
      }
    }
    if (worst !== undefined && REFUSED.has(worst.verdict)) return this.result(worst, worstKind, name, msg, qs);
    if (failed) return failed;
    if (noData) return this.skip(NO_QUOTA_FS, name);
    if (worst === undefined) return this.skip('no quota limits set', name);
    return this.result(worst, worstKind, name, msg, qs);
  }

  private result(d: QuotaDecision, dKind: QuotaKind, name: string, msg: Msg, qs: UserQuota[]): CheckResult {
    const a = this.cfg.actions;
    const action = actionFor(a, d.verdict);
    const kind = QUOTA_KIND_NAMES[dKind];
    const reason = dKind === QuotaKind.User ? d.reason : `${kind} quota: ${d.reason}`;
    const w = this.cfg.quota_warnings;
    // Without thresholds there is no warning and no notice, so no address is needed.
    if ((d.verdict !== 'pass' && d.verdict !== 'grace') || w.thresholds.length === 0)
      return { verdict: d.verdict, reason, action, user: name, kind };
    const address = userAddress(name, msg.recipient);
    // Warnings look at every kind's rows: the kernel charges the message to each.
    const warning = highestWarning(
      qs.flatMap((q) => q.fs),
      msg.size,
      w.thresholds,
      this.cfg.filesystems,
    );
    if (warning === undefined) return { verdict: d.verdict, reason, action, user: name, kind, address };
    // PREPEND only where Postfix takes it (before the content) and where it means what success would (DUNNO).
    const header = w.header !== null && msg.atRcpt && action === a.success;
    return {
      verdict: d.verdict,
      reason: `${reason}; ${warningText(address, warning)}`,
      action: header ? `PREPEND ${w.header!}: ${warningText(address, warning)}` : action,
      user: name,
      kind,
      warning,
      address,
    };
  }
}
const NO_MOUNTS: ReadonlySet<string> = new Set();

/** A user or group quota's cache key, a number: no string is built for it on every request. Ids are 32-bit. */
/** Project 0 is every file's without a project of its own: no limit of one mailbox. */
const hasProject = (p: MailboxProject): p is { id: number; mounts: ReadonlySet<string> } =>
  !('error' in p) && !('none' in p) && p.id !== 0;

const quotaKey = (kind: QuotaKind.User | QuotaKind.Group, id: number): number => kind * 2 ** 32 + id;

/** The configured action for a verdict (a switch: this runs for every request). */
function actionFor(a: Config['actions'], verdict: QuotaVerdict): string {
  switch (verdict) {
    case 'pass':
      return a.success;
    case 'grace':
      return a.grace ?? a.success;
    case 'over_quota':
      return a.over_quota;
    case 'too_large':
      return a.too_large;
    case 'does_not_fit':
      return a.does_not_fit;
  }
}
const REFUSED: ReadonlySet<QuotaVerdict> = new Set(['too_large', 'over_quota', 'does_not_fit']);

/** Mount options that make the kernel enforce group quotas (ext4, XFS; "gqnoenforce" only counts). */
const GROUP_ENFORCED = /(?:^|,)(?:grpquota|gquota|grpjquota=[^,]*|gqenforce)(?:,|$)/;

/** Mount points whose options in a mounts table (/proc/self/mounts) enforce group quotas. */
export function parseGroupQuotaMounts(table: string): Set<string> {
  const out = new Set<string>();
  for (const line of table.split('\n')) {
    const f = line.split(' ');
    // Fields: device, mount point (octal escapes for space, tab, newline, backslash), type, options.
    if (f.length >= 4 && GROUP_ENFORCED.test(f[3]!))
      out.add(f[1]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

/** Read afresh at each group quota lookup (a cache miss): a file system remounted with grpquota counts at once. */
export function groupQuotaMounts(): Set<string> {
  return parseGroupQuotaMounts(readFileSync('/proc/self/mounts', 'utf8'));
}
