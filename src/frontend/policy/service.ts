// The front's policy service: request in, action out, one log line per
// decision. Runs the configured checks and settles their precedence; no
// exception ever reaches a connection.
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import userid from 'userid';
import type { PolicyRequest } from '../protocol/parser.js';
import type { Config } from '../../shared/config/schema.js';
import { QuotaCheck, type UserEntry } from '../quota/quota-check.js';
import { RateLimitCheck } from '../ratelimit/check.js';
import { AlertMailer } from '../ratelimit/alert-mail.js';
import type { RateStore } from '../ratelimit/store.js';
import type { QuotaKind, UserQuota } from '../../shared/wire.js';
import type { Fault, Metrics } from '../metrics.js';
import type { Reply, DetailedReply } from '../protocol/reply.js';
import type { MapReader } from '../quota/aliases.js';
import { QUERY_ATTRIBUTE, QUERY_DRY, queryKind } from '../protocol/dry-query.js';
import { Notifier } from '../quota/notifier.js';
import type { QuotaWarning } from '../quota/quota-warning.js';
import type { MailboxProject } from '../quota/project.js';

/** getpwnam() through NSS (userid's native binding); undefined when there is no such user. */
export function lookupUnixUser(name: string): UserEntry | undefined {
  try {
    const { uid, gid } = userid.ids(name);
    return { uid, gid };
  } catch (e) {
    if (e instanceof Error && /not found/.test(e.message)) return undefined;
    throw e;
  }
}

/** Actions that refuse the mail now or later: a refused request is never counted. */
const REFUSING = /^(REJECT|DEFER|DEFER_IF_PERMIT|DEFER_IF_REJECT|[45]\d\d)(\s|$)/i;
/** The last action asked about and its answer: a request asks two or three times, mostly of the same few actions. */
let lastAction = '';
let lastRefuses = false;
export const refuses = (action: string): boolean => {
  if (action !== lastAction) {
    lastRefuses = REFUSING.test(action);
    lastAction = action;
  }
  return lastRefuses;
};

export type CheckName = 'quota' | 'rate_limit';
export interface Outcome {
  verdict: string;
  reason: string;
  action: string;
  user?: string;
  id?: string;
  /** With verdict error: which failure, as a code (the reason is prose for humans). */
  fault?: Fault;
  /** The quota check: whose quota (user, group) the verdict comes from. */
  kind?: string;
  /** The quota check's warning, if a threshold is crossed (quota_warnings). */
  warning?: QuotaWarning;
  address?: string;
  /** A warning of its own to log (alert_on_refusal). */
  alert?: string;
}
export interface Decision extends Outcome {
  check: CheckName | 'none';
  results: Partial<Record<CheckName, Outcome>>;
}

/** Spelled out, not spread: this runs for every request and spreads are slow. */
const decision = (check: CheckName, r: Outcome, results: Partial<Record<CheckName, Outcome>>): Decision => ({
  check,
  verdict: r.verdict,
  reason: r.reason,
  action: r.action,
  user: r.user,
  id: r.id,
  fault: r.fault,
  results,
});

export interface ServiceDeps {
  queryQuota: (id: number, kind: QuotaKind) => Promise<UserQuota>;
  metrics?: Metrics;
  lookupUser?: (name: string) => UserEntry | undefined;
  openStore?: () => Promise<RateStore>;
  now?: () => number;
  /** Postfix's alias tables (expand_aliases); replaced on reload. */
  aliases?: MapReader | undefined;
  /** The project of a user's mailbox directory (quota_kinds: project); without it project quotas are not read. */
  mailboxProject?: ((name: string) => Promise<MailboxProject>) | undefined;
}

/** Characters of an unknown quotapolicy_query value echoed in the reply and the log: enough to recognise it, not a whole 8 KiB line. */
const QUERY_VALUE_SHOWN = 64;

/** After a reload, the old store gets this long to finish what it started. */
const OLD_STORE_CLOSE_DELAY_MS = 5000;

export class PolicyService {
  private quota: QuotaCheck;
  private rate: RateLimitCheck | undefined;
  private notices: Notifier | undefined;
  private readonly alertMailer = new AlertMailer();
  constructor(
    private cfg: Config,
    private delimiters: string,
    private helperMinUid: number,
    private readonly deps: ServiceDeps,
    private readonly log: Logger,
  ) {
    this.quota = this.buildQuota(cfg);
    this.rate = this.buildRate(cfg);
    this.notices = this.buildNotices(cfg);
  }

  private buildNotices(cfg: Config): Notifier | undefined {
    return cfg.quota_warnings.notify ? new Notifier(cfg.quota_warnings, this.log) : undefined;
  }

  private buildQuota(cfg: Config): QuotaCheck {
    const m = this.deps.metrics;
    return new QuotaCheck(cfg, this.delimiters, Math.max(cfg.min_uid, this.helperMinUid), {
      lookupUser: this.deps.lookupUser ?? lookupUnixUser,
      queryQuota:
        m === undefined
          ? (id, kind) => this.deps.queryQuota(id, kind)
          : async (id, kind) => {
              const t0 = performance.now();
              const q = await this.deps.queryQuota(id, kind);
              m.helperLatency((performance.now() - t0) / 1000);
              return q;
            },
      onCacheLookup: m === undefined ? undefined : (cache, hit) => m.cacheLookup(cache, hit),
      aliases: this.deps.aliases,
      mailboxProject: this.deps.mailboxProject,
    });
  }

  private buildRate(cfg: Config): RateLimitCheck | undefined {
    return cfg.checks.includes('rate_limit') ? new RateLimitCheck(cfg.rate_limit, this.deps.openStore) : undefined;
  }

  /** Swaps in a new config (SIGHUP); caches start empty, the store is reopened. */
  reconfigure(cfg: Config, delimiters: string, aliases?: MapReader): void {
    const oldRate = this.rate;
    const oldNotices = this.notices;
    this.cfg = cfg;
    this.delimiters = delimiters;
    this.deps.aliases = aliases;
    this.quota = this.buildQuota(cfg);
    this.rate = this.buildRate(cfg);
    this.notices = this.buildNotices(cfg);
    // The old notifier finishes its queue (nothing new reaches it), then closes its state file.
    void oldNotices?.close().catch(() => {});
    if (oldRate) setTimeout(() => void oldRate.close().catch(() => {}), OLD_STORE_CLOSE_DELAY_MS).unref();
  }

  get config(): Config {
    return this.cfg;
  }

  get rateLimit(): RateLimitCheck | undefined {
    return this.rate;
  }

  /** The notice sender, when quota_warnings.notify is on. */
  get notifier(): Notifier | undefined {
    return this.notices;
  }

  /**
   * The decision for one request. Synchronous when every answer is at hand (a
   * quota cache hit, no rate limit): the hot path then costs no promise at all.
   */
  decide(req: PolicyRequest): Decision | Promise<Decision> {
    return this.decideAs(req, queryKind(req));
  }

  /** decide(), with the request's query kind already read (answer() reads it once for both). */
  private decideAs(req: PolicyRequest, kind: ReturnType<typeof queryKind>): Decision | Promise<Decision> {
    const now = (this.deps.now ?? Date.now)();
    const results: Partial<Record<CheckName, Outcome>> = {};
    // Only mail is counted (answer() refuses a query of an unknown kind before deciding anything).
    const count = kind === 'no' || kind === 'forged';
    try {
      if (!this.cfg.checks.includes('quota')) return this.rated(req, now, results, count);
      const q = this.quota.check(req, now);
      if (!(q instanceof Promise)) {
        results.quota = q;
        return this.rated(req, now, results, count);
      }
      return q
        .then((r) => {
          results.quota = r;
          return this.rated(req, now, results, count);
        })
        .catch((e: unknown) => this.failed(e, results));
    } catch (e) {
      return this.failed(e, results);
    }
  }

  /** Runs the rate limit (if on) after the quota check, then settles precedence. */
  private rated(
    req: PolicyRequest,
    now: number,
    results: Partial<Record<CheckName, Outcome>>,
    count: boolean,
  ): Decision | Promise<Decision> {
    const checks = this.cfg.checks;
    if (!this.rate) return this.settle(results);
    const quotaRefused = results.quota !== undefined && refuses(results.quota.action);
    const quotaFirst = checks.indexOf('quota') !== -1 && checks.indexOf('quota') < checks.indexOf('rate_limit');
    // Refused mail is never counted: when the quota check refuses, the rate limit only looks (if it could answer first).
    if (quotaRefused && quotaFirst) return this.settle(results);
    return this.rate.check(req, now, !quotaRefused && count).then(
      (r) => {
        results.rate_limit = r;
        return this.settle(results);
      },
      (e: unknown) => this.failed(e, results),
    );
  }

  private failed(e: unknown, results: Partial<Record<CheckName, Outcome>>): Decision {
    return {
      check: 'none',
      verdict: 'error',
      reason: `internal error: ${(e as Error).message}`,
      action: this.cfg.actions.error,
      fault: 'internal',
      results,
    };
  }

  private settle(results: Partial<Record<CheckName, Outcome>>): Decision {
    const checks = this.cfg.checks;
    // Indexed loops: this runs for every request.
    for (let i = 0; i < checks.length; i++) {
      const c = checks[i]!;
      const r = c === 'quota' ? results.quota : results.rate_limit;
      if (r && refuses(r.action)) return decision(c, r, results);
    }
    // hold_action (HOLD) does not refuse, but it must not give way to another check's pass.
    const rl = results.rate_limit;
    if (rl?.verdict === 'rate_limited') return decision('rate_limit', rl, results);
    const q = results.quota;
    // A warning header (PREPEND, which Postfix takes as DUNNO after adding the header) wins over a plain DUNNO.
    const warns = q?.warning !== undefined && /^PREPEND /.test(q.action);
    for (let i = 0; i < checks.length; i++) {
      const c = checks[i]!;
      const r = c === 'quota' ? results.quota : results.rate_limit;
      if (r && r.verdict !== 'skip')
        return warns && /^DUNNO$/i.test(r.action) ? decision('quota', q, results) : decision(c, r, results);
    }
    // Nothing applied: the first check's own answer for "not mine" (DUNNO; success_action for rate_limit, as policyd-rate-limit).
    const first = results[checks[0]!];
    return {
      check: 'none',
      verdict: 'skip',
      reason: first?.reason ?? 'no check enabled',
      action: first?.action ?? 'DUNNO',
      user: first?.user,
      id: first?.id,
      results,
    };
  }

  /**
   * For connections: the action only, with the decision logged (synchronous
   * when decide() is). A dry query (QUERY_ATTRIBUTE) is counted nowhere, not
   * in the metrics either, and gets its explanation when `explain` (the
   * connection came in on a unix socket).
   */
  answer(req: PolicyRequest, explain = false): Reply | Promise<Reply> {
    const kind = queryKind(req);
    if (kind === 'unknown') {
      const value = req.get(QUERY_ATTRIBUTE)!.slice(0, QUERY_VALUE_SHOWN);
      this.log.warn({ [QUERY_ATTRIBUTE]: value }, 'query of an unknown kind: nothing decided or counted');
      return {
        action: this.cfg.actions.error,
        attrs: [
          [
            'quotapolicy_error',
            `${QUERY_ATTRIBUTE}=${value}: unknown (quotapolicy query sends ${QUERY_DRY}); nothing decided or counted`,
          ],
        ],
      };
    }
    if (kind === 'forged')
      this.log.warn(
        { queue_id: req.get('queue_id') || undefined, sender: req.get('sender') },
        `${QUERY_ATTRIBUTE} in a request from Postfix: ignored, counted as mail`,
      );
    const started = performance.now();
    const d = this.decideAs(req, kind);
    if (kind !== 'dry')
      return d instanceof Promise ? d.then((x) => this.record(req, x, started)) : this.record(req, d, started);
    return d instanceof Promise
      ? d.then((x) => this.explained(req, x, started, explain))
      : this.explained(req, d, started, explain);
  }

  private explained(req: PolicyRequest, d: Decision, started: number, explain: boolean): DetailedReply {
    this.record(req, d, started, true);
    const attrs: [string, string][] = [['quotapolicy_counted', 'no']];
    if (!explain) {
      attrs.push([
        'quotapolicy_details',
        'withheld: asked on an inet listener, which any local user may reach; ask on a unix socket (listen: unix:PATH)',
      ]);
      return { action: d.action, attrs };
    }
    attrs.push(['quotapolicy_check', d.check], ['quotapolicy_verdict', d.verdict], ['quotapolicy_reason', d.reason]);
    if (d.user !== undefined) attrs.push(['quotapolicy_user', d.user]);
    if (d.id !== undefined) attrs.push(['quotapolicy_rate_id', d.id]);
    for (const c of ['quota', 'rate_limit'] as const) {
      const r = d.results[c];
      if (r) attrs.push([`quotapolicy_${c}`, `${r.verdict}: ${r.reason} (action ${r.action})`]);
    }
    return { action: d.action, attrs };
  }

  /** alert_on_refusal's warning, and with alert_mail its mail (sent after the reply, its outcome logged). */
  private alert(req: PolicyRequest, id: string | undefined, alert: string): void {
    const queueId = req.get('queue_id') || undefined;
    this.log.warn({ queue_id: queueId, rate_id: id, alert }, 'rate limit alert');
    const rl = this.cfg.rate_limit;
    if (!rl.alert_mail) return;
    void this.alertMailer.mail(rl, alert).then((m) => {
      if (m.sent)
        this.log.info({ queue_id: queueId, rate_id: id, to: [rl.report_to].flat() }, 'rate limit alert mailed');
      else this.log.warn({ queue_id: queueId, rate_id: id, reason: m.reason }, 'rate limit alert not mailed');
    });
  }

  private record(req: PolicyRequest, d: Decision, started: number, query = false): string {
    const q = d.results.quota;
    const rl = d.results.rate_limit;
    const m = query ? undefined : this.deps.metrics;
    // Notices follow mail that is accepted (a refused message fills nothing); a query changes nothing.
    if (!query && this.notices && q?.address !== undefined && q.user !== undefined && !refuses(d.action))
      this.notices.observe({
        user: q.user,
        address: q.address,
        warning: q.warning,
        nowSec: Math.floor((this.deps.now ?? Date.now)() / 1000),
      });
    if (q) m?.decision('quota', q.verdict, q.kind);
    if (rl) m?.decision('rate_limit', rl.verdict);
    // No array for the faults unless there is one: this runs for every request.
    let faults: Fault[] | undefined;
    if (q?.verdict === 'error') (faults ??= []).push(q.fault ?? 'internal');
    if (rl?.verdict === 'error') (faults ??= []).push(rl.fault ?? 'internal');
    if (d.check === 'none' && d.verdict === 'error') (faults ??= []).push(d.fault ?? 'internal');
    if (faults !== undefined) for (const f of faults) m?.error(f);
    if (rl?.alert !== undefined && !query) this.alert(req, rl.id, rl.alert);
    const warn = faults !== undefined || rl?.verdict === 'would_limit';
    // The log line is built only when it will be written: this runs for every request.
    if (warn || this.log.isLevelEnabled('info')) {
      const line = {
        queue_id: req.get('queue_id') || undefined,
        state: req.get('protocol_state'),
        recipient: req.get('recipient'),
        user: q?.user,
        check: d.check,
        verdict: d.verdict,
        reason: d.reason,
        action: d.action,
        quota_verdict: q?.verdict,
        quota_kind: q?.kind,
        quota_warning: q?.warning?.threshold,
        rate_verdict: rl?.verdict,
        rate_id: rl?.id,
        error_kind: faults,
        query: query ? QUERY_DRY : undefined,
        latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
      };
      if (warn) this.log.warn(line, 'decision');
      else this.log.info(line, 'decision');
    }
    return d.action;
  }
}
