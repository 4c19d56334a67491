// The quota check: policy request -> verdict. It maps the recipient to a local
// user, asks the helper (through the caches) and hands the numbers to the pure
// decideQuota(). The clock is passed in; every I/O dependency is injected.
import { QuotaStatus, QUOTA_STATUS_NAMES, type UserQuota } from '../../shared/wire.js';
import type { PolicyRequest } from '../protocol/parser.js';
import type { Config } from '../../shared/config/schema.js';
import { TtlCache } from './cache.js';
import { recipientToUser, type RecipientRules } from './recipient.js';
import { decideQuota, type QuotaVerdict } from './quota-decision.js';
import type { Fault } from '../metrics.js';
import { highestWarning, userAddress, warningText, type QuotaWarning } from './quota-warning.js';

/** The helper's per-user status as the front names it (wire.ts holds it as a number). */
export type QuotaStatusName = (typeof QUOTA_STATUS_NAMES)[number];

/**
 * The reason when quota(1) reports no file system with quotas on (no output,
 * or "none"): quotas are off everywhere, so the check can refuse no one.
 */
export const NO_QUOTA_FS = 'no file system has quotas on (quota(1) lists none)';

export type Verdict = QuotaVerdict | 'skip' | 'error';

export interface CheckResult {
  verdict: Verdict;
  reason: string;
  action: string;
  user?: string;
  /** With verdict error: which failure, as a code. */
  fault?: Fault;
  /** With verdict pass or grace and quota_warnings.thresholds: the threshold crossed, if any. */
  warning?: QuotaWarning;
  /** With a pass or grace verdict: the user's address (userAddress()), for warnings and notices. */
  address?: string;
}

export interface UserEntry {
  uid: number;
}
export interface QuotaCheckDeps {
  /** getpwnam(): the user's uid, or undefined when there is no such user. */
  lookupUser(name: string): UserEntry | undefined;
  /** The helper's numbers for one uid; never rejects. */
  queryQuota: (uid: number) => Promise<UserQuota>;
  /** Told of every cache lookup (for metrics). */
  onCacheLookup?(cache: 'quota' | 'user', hit: boolean): void;
}

/** Postfix sizes are bytes; more than 2^53 is not a size. */
const SIZE = /^\d{1,15}$/;

export class QuotaCheck {
  private readonly users: TtlCache<string, UserEntry | null>;
  private readonly quotas: TtlCache<number, UserQuota>;
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
    this.rules = { delimiters, domains: new Set(cfg.domains.map((d) => d.toLowerCase())) };
    this.exempt = new Set(cfg.exempt_users);
  }

  private skip(reason: string, user?: string): CheckResult {
    return { verdict: 'skip', reason, action: 'DUNNO', ...(user === undefined ? {} : { user }) };
  }

  /** Which recipient and size this request is about, or why it does not apply. */
  static subject(
    req: PolicyRequest,
    states: readonly string[] = ['RCPT', 'END-OF-MESSAGE'],
  ): { recipient: string; size: number } | string {
    if (req.get('request') !== 'smtpd_access_policy') return 'not an smtpd_access_policy request';
    const state = req.get('protocol_state');
    const recipient = req.get('recipient') ?? '';
    const sizeText = req.get('size') ?? '';
    const size = SIZE.test(sizeText) ? Number(sizeText) : 0;
    if (state === 'RCPT' && states.includes(state)) return recipient === '' ? 'no recipient' : { recipient, size };
    if (state === 'END-OF-MESSAGE' && states.includes(state)) {
      if (req.get('recipient_count') !== '1' || recipient === '') return 'not exactly one recipient';
      return { recipient, size };
    }
    return `protocol state ${state ?? '(none)'} is not checked`;
  }

  /** Synchronous on a cache hit; a promise only when the helper must be asked. Throws only if NSS does. */
  check(req: PolicyRequest, nowMs: number): CheckResult | Promise<CheckResult> {
    const subject = QuotaCheck.subject(req, this.cfg.quota_states);
    if (typeof subject === 'string') return this.skip(subject);
    const mapped = recipientToUser(subject.recipient, this.rules);
    if (!mapped.ok) return this.skip(mapped.reason);
    const name = mapped.user;
    let entry = this.users.get(name, nowMs);
    this.deps.onCacheLookup?.('user', entry !== undefined);
    if (entry === undefined) {
      entry = this.deps.lookupUser(name) ?? null;
      this.users.set(name, entry, nowMs, entry === null ? this.cfg.negative_cache_ttl_ms : this.cfg.cache_ttl_ms);
    }
    if (entry === null) return this.skip('not a Unix user', name);
    if (entry.uid < this.minUid) return this.skip(`uid ${entry.uid} below min_uid`, name);
    if (this.exempt.has(name)) return this.skip('exempt user', name);
    const uid = entry.uid;
    const cached = this.quotas.get(uid, nowMs);
    this.deps.onCacheLookup?.('quota', cached !== undefined);
    const atRcpt = req.get('protocol_state') === 'RCPT';
    if (cached !== undefined) return this.judge(cached, name, subject, atRcpt, nowMs);
    return this.deps.queryQuota(uid).then((q) => {
      if (q.status === QuotaStatus.Ok || q.status === QuotaStatus.NoData) this.quotas.set(uid, q, nowMs);
      return this.judge(q, name, subject, atRcpt, nowMs);
    });
  }

  private judge(
    q: UserQuota,
    name: string,
    { recipient, size }: { recipient: string; size: number },
    atRcpt: boolean,
    nowMs: number,
  ): CheckResult {
    if (q.status === QuotaStatus.NoData) return this.skip(NO_QUOTA_FS, name);
    if (q.status !== QuotaStatus.Ok) {
      const status = QUOTA_STATUS_NAMES[q.status];
      return {
        verdict: 'error',
        reason: `quota lookup failed: ${status}`,
        action: this.cfg.actions.error,
        user: name,
        fault: `quota_${status}`,
      };
    }
    const d = decideQuota(q.fs, size, Math.floor(nowMs / 1000), this.cfg.filesystems);
    if (d === undefined) return this.skip('no quota limits set', name);
    const a = this.cfg.actions;
    const action = {
      pass: a.success,
      grace: a.grace ?? a.success,
      over_quota: a.over_quota,
      too_large: a.too_large,
      does_not_fit: a.does_not_fit,
    }[d.verdict];
    if (d.verdict !== 'pass' && d.verdict !== 'grace')
      return { verdict: d.verdict, reason: d.reason, action, user: name };
    const w = this.cfg.quota_warnings;
    const address = userAddress(name, recipient);
    const warning = highestWarning(q.fs, size, w.thresholds, this.cfg.filesystems);
    if (warning === undefined) return { verdict: d.verdict, reason: d.reason, action, user: name, address };
    // PREPEND only where Postfix takes it (before the content) and where it means what success would (DUNNO).
    const header = w.header !== null && atRcpt && action === a.success;
    return {
      verdict: d.verdict,
      reason: `${d.reason}; ${warningText(address, warning)}`,
      action: header ? `PREPEND ${w.header!}: ${warningText(address, warning)}` : action,
      user: name,
      warning,
      address,
    };
  }
}
