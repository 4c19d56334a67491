// The front's policy service: request in, action out, one log line per
// decision. Wraps the checks so that no exception ever reaches a connection.
import { performance } from 'node:perf_hooks';
import type { Logger } from 'pino';
import userid from 'userid';
import type { PolicyRequest } from '../protocol/parser.js';
import type { Config } from '../config/schema.js';
import { QuotaCheck, type CheckResult, type UserEntry } from './quota-check.js';
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

export interface ServiceDeps {
  queryQuota(uid: number): Promise<UserQuota>;
  metrics?: Metrics;
  lookupUser?: (name: string) => UserEntry | undefined;
  now?: () => number;
}

export class PolicyService {
  private quota: QuotaCheck;
  constructor(private cfg: Config, private delimiters: string, private helperMinUid: number, private readonly deps: ServiceDeps, private readonly log: Logger) {
    this.quota = this.build(cfg);
  }

  private build(cfg: Config): QuotaCheck {
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

  /** Swaps in a new config (SIGHUP); the caches start empty. */
  reconfigure(cfg: Config, delimiters: string): void {
    this.cfg = cfg;
    this.delimiters = delimiters;
    this.quota = this.build(cfg);
  }

  get config(): Config {
    return this.cfg;
  }

  async decide(req: PolicyRequest): Promise<CheckResult> {
    try {
      return await this.quota.check(req, (this.deps.now ?? Date.now)());
    } catch (e) {
      return { verdict: 'error', reason: `internal error: ${(e as Error).message}`, action: this.cfg.actions.error };
    }
  }

  /** For connections: the action only, with the decision logged. */
  async answer(req: PolicyRequest): Promise<string> {
    const started = performance.now();
    const r = await this.decide(req);
    const line = {
      queue_id: req.get('queue_id') || undefined,
      state: req.get('protocol_state'),
      recipient: req.get('recipient'),
      user: r.user,
      verdict: r.verdict,
      reason: r.reason,
      action: r.action,
      latency_ms: Math.round((performance.now() - started) * 1000) / 1000,
    };
    this.deps.metrics?.decision('quota', r.verdict);
    if (r.verdict === 'error') {
      this.deps.metrics?.error(r.reason.replace(/^quota lookup failed: /, 'quota_').replace(/^internal error: .*/, 'internal'));
      this.log.warn(line, 'decision');
    } else this.log.info(line, 'decision');
    return r.action;
  }
}
