// Prometheus metrics (text format 0.0.4), kept by the front and served at
// /metrics when `metrics: true`. No client library: five metric families do
// not need one.
import http from 'node:http';
import { netOptions } from '../shared/config/checks.js';
import type { QuotaStatusName } from './quota/quota-check.js';

/**
 * Why a decision fell back to an error action, as a code: the helper's
 * QuotaStatus for a failed quota lookup, the rate-limit store, or a bug. The
 * reason beside it is prose for humans; labels and log fields use this.
 */
export type Fault = `quota_${Exclude<QuotaStatusName, 'ok' | 'no_data'>}` | 'alias' | 'project' | 'store' | 'internal';
/** Every kind quotapolicy_errors_total counts: a closed set, so no label is ever made from prose. */
export type ErrorKind = Fault | 'protocol' | 'connection_limit' | 'connection_limit_idle_closed';

/** Helper round-trip buckets, seconds: cache-miss lookups take ~2-80 ms, NFS up to the timeout. */
export const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

const escape = (v: string): string => v.replace(/["\\\n]/g, '_');

/** A counter with one or two fixed label names, counted per value tuple without building keys (this runs for every request). */
class Counter {
  /** Each series' count in a cell of its own: counting is two lookups, no store into a Map. */
  private readonly values = new Map<string, Map<string, { n: number }>>();
  constructor(private readonly names: readonly [string] | readonly [string, string]) {}
  inc(a: string, b = ''): void {
    let inner = this.values.get(a);
    if (inner === undefined) this.values.set(a, (inner = new Map<string, { n: number }>()));
    const cell = inner.get(b);
    if (cell === undefined) inner.set(b, { n: 1 });
    else cell.n++;
  }
  *series(): Iterable<[string, number]> {
    const [first, second] = this.names;
    for (const [a, inner] of this.values) {
      for (const [b, { n }] of inner)
        yield [`${first}="${escape(a)}"${second === undefined ? '' : `,${second}="${escape(b)}"`}`, n];
    }
  }
}

export class Metrics {
  readonly decisions = new Counter(['check', 'verdict']);
  readonly quotaKinds = new Counter(['kind', 'verdict']);
  readonly cache = new Counter(['cache', 'result']);
  readonly errors = new Counter(['kind']);
  private readonly buckets = LATENCY_BUCKETS.map(() => 0);
  private latencyCount = 0;
  private latencySum = 0;
  openConnections: () => number = () => 0;

  /** kind: for the quota check, whose quota the verdict comes from (user, group). */
  decision(check: string, verdict: string, kind?: string): void {
    this.decisions.inc(check, verdict);
    if (kind !== undefined) this.quotaKinds.inc(kind, verdict);
  }
  cacheLookup(cache: 'quota' | 'user' | 'alias', hit: boolean): void {
    this.cache.inc(cache, hit ? 'hit' : 'miss');
  }
  error(kind: ErrorKind): void {
    this.errors.inc(kind);
  }
  helperLatency(seconds: number): void {
    this.latencyCount++;
    this.latencySum += seconds;
    LATENCY_BUCKETS.forEach((b, i) => {
      if (seconds <= b) this.buckets[i]!++;
    });
  }

  render(): string {
    const out: string[] = [];
    const family = (name: string, type: string, help: string, c: Counter): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [k, v] of c.series()) out.push(`${name}{${k}} ${v}`);
    };
    family('quotapolicy_decisions_total', 'counter', 'Policy decisions by check and verdict.', this.decisions);
    family(
      'quotapolicy_quota_verdicts_total',
      'counter',
      'Quota check verdicts by the quota kind they come from (user, group) and verdict.',
      this.quotaKinds,
    );
    family(
      'quotapolicy_cache_lookups_total',
      'counter',
      'Cache lookups by cache and result (hit or miss).',
      this.cache,
    );
    family('quotapolicy_errors_total', 'counter', 'Errors by kind.', this.errors);
    out.push(
      '# HELP quotapolicy_helper_latency_seconds Time from asking the root helper to its answer.',
      '# TYPE quotapolicy_helper_latency_seconds histogram',
    );
    LATENCY_BUCKETS.forEach((b, i) =>
      out.push(`quotapolicy_helper_latency_seconds_bucket{le="${b}"} ${this.buckets[i]}`),
    );
    out.push(
      `quotapolicy_helper_latency_seconds_bucket{le="+Inf"} ${this.latencyCount}`,
      `quotapolicy_helper_latency_seconds_sum ${this.latencySum}`,
      `quotapolicy_helper_latency_seconds_count ${this.latencyCount}`,
    );
    out.push(
      '# HELP quotapolicy_open_connections Policy connections open now.',
      '# TYPE quotapolicy_open_connections gauge',
      `quotapolicy_open_connections ${this.openConnections()}`,
    );
    return out.join('\n') + '\n';
  }

  /** Serves GET /metrics; anything else is 404. */
  serve(spec: string): Promise<http.Server> {
    const server = http.createServer((req, res) => {
      if (req.method === 'GET' && req.url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(this.render());
      } else res.writeHead(404).end();
    });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(netOptions(spec), () => resolve(server));
    });
  }
}
