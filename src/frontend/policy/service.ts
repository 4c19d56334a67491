// The front's policy service: request in, action out, one log line per
// decision. Runs the configured checks and settles their precedence; no
// exception ever reaches a connection.
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import userid from 'userid';
import type { PolicyRequest } from '../protocol/parser.js';
import type { Config } from '../config/schema.js';
import { QuotaCheck, type UserEntry } from './quota-check.js';
import { RateLimitCheck } from '../ratelimit/check.js';
import type { RateStore } from '../ratelimit/store.js';
import type { UserQuota } from '../../shared/wire.js';
import type { Metrics } from '../metrics.js';

/** getpwnam() through NSS (userid's native binding); undefined when there is no such user. */
export function lookupUnixUser(name: string): UserEntry | undefined {
  try {
    return { uid: userid.ids(name).uid };
  } catch (e) {
    if (e instanceof Error && /not found/.test(e.message)) return undefined;
    throw e;
  }
}

/** Actions that refuse the mail now or later: a refused request is never counted. */
const REFUSING = /^(REJECT|DEFER|DEFER_IF_PERMIT|DEFER_IF_REJECT|[45]\d\d)(\s|$)/i;
export const refuses = (action: string): boolean => REFUSING.test(action);

export type CheckName = 'quota' | 'rate_limit';
export interface Outcome { verdict: string; reason: string; action: string; user?: string; id?: string }
export interface Decision extends Outcome { check: CheckName | 'none'; results: Partial<Record<CheckName, Outcome>> }

export interface ServiceDeps {
  queryQuota(uid: number): Promise<UserQuota>;
  metrics?: Metrics;
  lookupUser?: (name: string) => UserEntry | undefined;
  openStore?: () => Promise<RateStore>;
  now?: () => number;
}

/** After a reload, the old store gets this long to finish what it started. */
const OLD_STORE_CLOSE_DELAY_MS = 5000;

export class PolicyService {
  private quota: QuotaCheck;
  private rate: RateLimitCheck | undefined;
  constructor(private cfg: Config, private delimiters: string, private helperMinUid: number, private readonly deps: ServiceDeps, private readonly log: Logger) {
    this.quota = this.buildQuota(cfg);
    this.rate = this.buildRate(cfg);
  }

  private buildQuota(cfg: Config): QuotaCheck {
    const m = this.deps.metrics;
    return new QuotaCheck(cfg, this.delimiters, Math.max(cfg.min_uid, this.helperMinUid), {
      lookupUser: this.deps.lookupUser ?? lookupUnixUser,
      queryQuota: m === undefined ? this.deps.queryQuota : async (uid) => {
        const t0 = performance.now();
        const q = await this.deps.queryQuota(uid);
        m.helperLatency((performance.now() - t0) / 1000);
        return q;
      },
      onCacheLookup: m === undefined ? undefined : (cache, hit) => m.cacheLookup(cache, hit),
    });
  }

  private buildRate(cfg: Config): RateLimitCheck | undefined {
    return cfg.checks.includes('rate_limit') ? new RateLimitCheck(cfg.rate_limit, this.deps.openStore) : undefined;
  }

  /** Swaps in a new config (SIGHUP); caches start empty, the store is reopened. */
  reconfigure(cfg: Config, delimiters: string): void {
    const oldRate = this.rate;
    this.cfg = cfg;
    this.delimiters = delimiters;
    this.quota = this.buildQuota(cfg);
    this.rate = this.buildRate(cfg);
    if (oldRate) setTimeout(() => void oldRate.close().catch(() => {}), OLD_STORE_CLOSE_DELAY_MS).unref();
  }

  get config(): Config {
    return this.cfg;
  }

  get rateLimit(): RateLimitCheck | undefined {
    return this.rate;
  }

  async decide(req: PolicyRequest): Promise<Decision> {
    const now = (this.deps.now ?? Date.now)();
    const checks = this.cfg.checks;
    const results: Partial<Record<CheckName, Outcome>> = {};
    try {
      if (checks.includes('quota')) results.quota = await this.quota.check(req, now);
      if (this.rate) {
        const quotaRefused = results.quota !== undefined && refuses(results.quota.action);
        const quotaFirst = checks.indexOf('quota') !== -1 && checks.indexOf('quota') < checks.indexOf('rate_limit');
        // Refused mail is never counted: when the quota check refuses, the rate limit only looks (if it could answer first).
        if (!(quotaRefused && quotaFirst)) results.rate_limit = await this.rate.check(req, now, !quotaRefused);
      }
    } catch (e) {
      return { check: 'none', verdict: 'error', reason: `internal error: ${(e as Error).message}`, action: this.cfg.actions.error, results };
    }
    for (const c of checks) {
      const r = results[c];
      if (r && refuses(r.action)) return { check: c, ...r, results };
    }
    for (const c of checks) {
      const r = results[c];
      if (r && r.verdict !== 'skip') return { check: c, ...r, results };
    }
    // Nothing applied: the first check's own answer for "not mine" (DUNNO; success_action for rate_limit, as policyd-rate-limit).
    const first = results[checks[0]!];
    return { ...first, check: 'none', verdict: 'skip', reason: first?.reason ?? 'no check enabled', action: first?.action ?? 'DUNNO', results };
  }

  /** For connections: the action only, with the decision logged. */
  async answer(req: PolicyRequest): Promise<string> {
    const started = performance.now();
    const d = await this.decide(req);
    const q = d.results.quota;
    const rl = d.results.rate_limit;
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
      rate_verdict: rl?.verdict,
      rate_id: rl?.id,
      latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
    };
    const m = this.deps.metrics;
    if (q) m?.decision('quota', q.verdict);
    if (rl) m?.decision('rate_limit', rl.verdict);
    const errors = [q, rl].filter((r) => r?.verdict === 'error') as Outcome[];
    if (d.check === 'none' && d.verdict === 'error') errors.push(d);
    for (const e of errors) m?.error(e === rl ? 'store' : e.reason.replace(/^quota lookup failed: /, 'quota_').replace(/^internal error: .*/, 'internal'));
    if (errors.length > 0 || rl?.verdict === 'would_limit') this.log.warn(line, 'decision');
    else this.log.info(line, 'decision');
    return d.action;
  }
}
