// The rate-limit check: request -> verdict, with the store's atomic
// check-and-record. Needs no root; lives wholly in the front.
import type { PolicyRequest } from '../protocol/parser.js';
import type { RateConfig } from '../../shared/config/rate-schema.js';
import { subject, type RateRules, type Limit, type Bucket } from './decide.js';
import { parseNetwork, type Network } from '../../shared/network.js';
import { StoreError, storedKey, type RateStore } from './store.js';
import { openStore } from './open-store.js';
import { addressKey } from '../../shared/address.js';
import type { Fault } from '../metrics.js';

export type RateVerdict = 'pass' | 'rate_limited' | 'would_limit' | 'skip' | 'error';
export interface RateResult {
  verdict: RateVerdict;
  reason: string;
  action: string;
  id?: string;
  /** With verdict error: always the store. */
  fault?: Extract<Fault, 'store'>;
  /** alert_on_refusal: the key's first refusal in the window, for a warning of its own. */
  alert?: string;
}

/** Events go unnamed in log lines, as they always have; bytes are said. */
const unitText = (unit: string): string => (unit === 'events' ? '' : ` ${unit}`);

/** The mark alert_on_refusal keeps in the store: one event per key and window length, held for that window. */
export const alertKey = (key: string, seconds: number): string => `alert:${seconds}:${key}`;

/** After a failed open, wait this long before trying the store again. */
export const STORE_RETRY_MS = 1000;

/** The config check parsed each of these with this same parseNetwork, so none is undefined. */
function nets(list: readonly string[]): Network[] {
  return list.map((c) => parseNetwork(c)!);
}

/**
 * The rules a config makes. Ids in limits_by_id and exempt_ids are already as
 * addressKey() makes them when the config came through parseConfig (which
 * refuses two keys that fold into one); folding them again here is a no-op
 * that keeps a hand-built RateConfig right too.
 */
export function rulesFrom(c: RateConfig): RateRules {
  const fold = c.fold_local_part_case;
  const m = (o: Record<string, [number, number][]>, key: (k: string) => string): Map<string, readonly Limit[]> =>
    new Map(Object.entries(o).map(([k, v]) => [key(k), v]));
  const id = (k: string): string => addressKey(k, fold);
  const domain = (k: string): string => k.toLowerCase();
  return {
    limits: c.limits,
    limitsById: m(c.limits_by_id, id),
    limitsByKind: c.limits_by_kind,
    serverLimits: c.server_limits,
    volumeLimits: c.volume_limits,
    volumeLimitsById: m(c.volume_limits_by_id, id),
    bySasl: c.limit_by_sasl,
    bySender: c.limit_by_sender,
    byIp: c.limit_by_ip,
    limitedNetworks: nets(c.limited_networks),
    ipv4Prefix: c.ipv4_prefix,
    ipv6Prefix: c.ipv6_prefix,
    countMode: c.count_mode,
    foldLocalPart: fold,
    exemptIds: new Set(c.exempt_ids.map(id)),
    exemptNetworks: nets(c.exempt_networks),
    limitsByRecipientDomain: m(c.limits_by_recipient_domain, domain),
    limitsBySenderDomain: m(c.limits_by_sender_domain, domain),
  };
}

export class RateLimitCheck {
  private readonly rules: RateRules;
  private store: RateStore | undefined;
  private opening: Promise<RateStore> | undefined;
  private nextOpenAt = 0;

  constructor(
    private readonly c: RateConfig,
    private readonly open: () => Promise<RateStore> = () => openStore({ ...c, timeout_ms: c.store_timeout_ms }),
  ) {
    this.rules = rulesFrom(c);
  }

  /** The store, opened on first use and again after a failed open (at most once per STORE_RETRY_MS). */
  private async getStore(nowMs: number): Promise<RateStore> {
    if (this.store) return this.store;
    if (!this.opening) {
      if (nowMs < this.nextOpenAt) throw new StoreError('store unavailable (retrying)');
      this.nextOpenAt = nowMs + STORE_RETRY_MS;
      this.opening = this.open().then(
        (s) => (this.store = s),
        (e: unknown) => {
          this.opening = undefined;
          throw e instanceof StoreError ? e : new StoreError(String(e));
        },
      );
    }
    return this.opening;
  }

  private timed<T>(p: Promise<T>): Promise<T> {
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      t = setTimeout(
        () => reject(new StoreError(`store did not answer in ${this.c.store_timeout_ms} ms`)),
        this.c.store_timeout_ms,
      );
    });
    return Promise.race([p, timeout]).finally(() => clearTimeout(t));
  }

  /** commit=false only looks: used when another check already refuses. */
  async check(req: PolicyRequest, nowMs: number, commit: boolean): Promise<RateResult> {
    const c = this.c;
    let sub = subject(req, this.rules);
    // Like policyd-rate-limit: a request it does not count still gets success_action.
    if (!sub.applies) return { verdict: 'skip', reason: sub.reason, action: c.success_action };
    const id = sub.id;
    try {
      const store = await this.timed(this.getStore(nowMs));
      if (c.sql_limits_by_id !== '') {
        const fromDb = await this.timed(store.limitsFor(id));
        if (fromDb !== undefined) sub = subject(req, this.rules, fromDb);
        if (!sub.applies) return { verdict: 'skip', reason: sub.reason, action: c.success_action };
      }
      if (sub.steps.length === 0) return { verdict: 'pass', reason: 'unlimited id', action: c.success_action, id };
      const nowSec = Math.floor(nowMs / 1000);
      const done: string[] = [];
      for (const step of sub.steps) {
        // consume() records only what passes every window, so a dry run counts exactly what a real run would.
        const record = commit && step.record;
        const r = await this.timed(store.consume({ buckets: step.buckets, n: step.n, nowSec, commit: record }));
        if (!r.ok) return this.refused(store, id, sub.ownKeys, r, step.n, step.unit, commit, nowSec);
        // Keys as the store holds them (a long one hashed, as the report lists it), so log lines stay short.
        const keys = step.buckets.map((b: Bucket) => storedKey(b.key)).join(', ');
        done.push(
          record
            ? `${step.n}${unitText(step.unit)} counted for ${keys}`
            : `within limits, ${step.n}${unitText(step.unit)} not counted for ${keys}`,
        );
      }
      return { verdict: 'pass', reason: done.join('; '), action: c.success_action, id };
    } catch (e) {
      // Pools and ioredis reconnect by themselves; a failed open is retried by getStore().
      if (!(e instanceof StoreError)) throw e;
      return { verdict: 'error', reason: e.message, action: c.db_error_action, id, fault: 'store' };
    }
  }

  /** The answer for a refusal by one window of `r.key`; alerts and counts hits as configured. */
  private async refused(
    store: RateStore,
    id: string,
    ownKeys: readonly string[],
    r: { key: string; limit: Limit; used: number },
    n: number,
    unit: string,
    commit: boolean,
    nowSec: number,
  ): Promise<RateResult> {
    const c = this.c;
    const reason = `${storedKey(r.key)}: ${r.used} + ${n}${unitText(unit)} over ${r.limit[0]} in ${r.limit[1]} s`;
    if (c.report && c.report_limits.includes(r.limit[1]) && commit) store.recordHit(r.key, r.limit[1]).catch(() => {});
    if (c.dry_run)
      return { verdict: 'would_limit', reason: `dry run, would refuse: ${reason}`, action: c.success_action, id };
    const held = c.hold_action !== null && ownKeys.includes(r.key);
    const result: RateResult = {
      verdict: 'rate_limited',
      reason: held ? `${reason} (hold_action)` : reason,
      action: held ? c.hold_action! : c.fail_action,
      id,
    };
    if (c.alert_on_refusal && commit) {
      // The store keeps the mark, so every process and host sharing it alerts once; if it cannot say, alert anyway.
      const mark = alertKey(r.key, r.limit[1]);
      const first = await this.timed(
        store.consume({ buckets: [{ key: mark, limits: [[1, r.limit[1]]] }], n: 1, nowSec, commit: true }),
      ).then(
        (m) => m.ok,
        () => true,
      );
      if (first)
        result.alert = `first refusal of ${storedKey(r.key)} in ${r.limit[1]} s: ${reason}; answered ${result.action}`;
    }
    return result;
  }

  async close(): Promise<void> {
    await this.store?.close();
  }
}
